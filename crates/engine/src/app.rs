//! One run of the client, start to finish: check the flags, bind the listener,
//! then, for as long as the conversation lasts, meet the peer through the
//! mediator, connect, confirm keys, record the session and chat; when the link
//! drops, go back to the mediator with backoff and resume with key continuity.
//! With no `--server` the peer is found on the local network instead ([`lan`]).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use dhke::{Group, Identity, IdentityKey, KeyPair, ResumeSecret, RoomCode};
use rand::rngs::OsRng;
use rand::Rng;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;
use wire::handshake::{HostHandshake, JoinerHandshake};
use wire::{ClientMsg, ErrorCode, HandshakeInput, Role, PROTOCOL_VERSION};

use crate::chat::{self, Conversation, ConversationId, Ending, PeerInfo};
use crate::config::{parse_listen, Config};
use crate::connect::{self, Connected, Path};
use crate::conversation::Shared;
use crate::error::ClientError;
use crate::events::InputEvent;
use crate::events::{Event, Events};
use crate::history::History;
use crate::lan;
use crate::peerlink::PeerLink;
use crate::ports::LocalPort;
use crate::records::{self, PeerLine};
use crate::rendezvous::{Matched, MediatorLink};
use crate::roomcode;
use crate::transfer::{Transfers, Update};

/// First reconnect delay; it doubles up to [`BACKOFF_CAP`], each with jitter.
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// What stays fixed for the whole run.
struct Setup {
    /// The mediator; `None` is LAN mode.
    server: Option<String>,
    lan: lan::LanConfig,
    room: String,
    /// `room` parsed once: its tag (an Argon2id for a typed name) is kept for
    /// every reconnect round.
    code: RoomCode,
    name: String,
    group: Group,
    listen: SocketAddr,
    keylog: Option<PathBuf>,
    history: Option<PathBuf>,
    /// Our long-term identity (§15), from the profile.
    identity: Identity,
    /// The identity the peer must prove: the contact of `--to`.
    expect_peer: Option<IdentityKey>,
    /// The name we know the contact of `--to` by (LAN mode shows it: no name
    /// goes on the air there, docs/protocol.md §14.4).
    contact_name: Option<String>,
    /// LAN mode, `--to`: the pair's presence key, to call the contact (§14.4).
    call: Option<wire::lan::PresenceKey>,
    /// A token run: `client token` (filled in once the port is bound) or
    /// `--connect`.
    token: Option<TokenRun>,
    config: Config,
}

/// The two sides of a token run (§16).
enum TokenRun {
    Hold(wire::token::Token),
    Dial(wire::token::Token),
}

impl Setup {
    /// `--connect TOKEN`: the token's room (§16.2), its identity as the one the
    /// holder must prove, and its mediator, which wins over our own `--server`
    /// for meeting the holder.
    fn dialing(mut self) -> Result<Setup, ClientError> {
        let Some(text) = &self.config.connect else {
            return Ok(self);
        };
        let token = crate::token::parse(text)?;
        self.code = crate::token::room_of(&token);
        self.expect_peer = Some(IdentityKey(token.identity));
        self.server.clone_from(&token.mediator);
        self.token = Some(TokenRun::Dial(token));
        Ok(self)
    }
}

/// Shows a generated room code and the command the other side should run.
fn show_room(server: Option<&str>, room: &str, group_room: bool, out: &Events) {
    let server_flag = server.map(|s| format!("--server {s} ")).unwrap_or_default();
    let group_flag = if group_room { " --group" } else { "" };
    out.show(&Event::Room {
        command: format!("client {server_flag}--room {room}{group_flag}"),
        room: room.to_owned(),
    });
}

/// Runs the client with parsed flags, showing events on `out`.
pub async fn run(
    config: Config,
    out: &Events,
    mut input: mpsc::Receiver<InputEvent>,
    shared: Shared,
) -> Result<(), ClientError> {
    let _closing = shared.closing();
    let mut setup = prepare(config, out)?;
    // The listener lives for the whole run, so an advertised port stays valid
    // across reconnects; it exists before the first Hello that advertises it.
    // Its port is the run's one port (§12.1): the mediator link and every dial
    // leave from it too.
    let (port, listener) = bind_listener(setup.listen)?;
    if let Some(ttl) = setup.config.token_ttl {
        let addrs = token_addrs(setup.config.advertise, port.addr());
        let mediator = token_mediator(&setup, out)?;
        let token = crate::token::issue(&setup.identity, addrs, mediator, ttl);
        setup.code = crate::token::room_of(&token);
        let text = token.encode();
        out.show(&Event::Token {
            command: format!("client --connect {text}"),
            token: text,
            expires_in_secs: ttl.as_secs(),
        });
        setup.token = Some(TokenRun::Hold(token));
    }
    // No room given and a mediator: it allocates the nameplate of a fresh code,
    // and that link carries our first Hello.
    // The messenger's one connection to the store, else our own.
    let history = match (shared.store(), &setup.history) {
        (_, None) => None,
        (Some(db), Some(_)) => Some(db),
        (None, Some(path)) => Some(History::open(path)?),
    };
    if let Some(to) = setup.config.to.clone() {
        meet_contact(&mut setup, history.as_ref(), &to)?;
    }
    let mut first_link = None;
    if setup.room.is_empty() {
        if let Some(server) = setup.server.clone() {
            let mut link = MediatorLink::connect(&server, &port).await?;
            let nameplate = link.allocate().await?;
            setup.room = roomcode::code_for_nameplate(nameplate, &mut OsRng);
            setup.code = RoomCode::parse(&setup.room);
            show_room(Some(&server), &setup.room, setup.config.group_room, out);
            first_link = Some(link);
        }
    }
    // The conversation id (docs/protocol.md §7.1): the code's (a room code, a
    // group's, or `--to`'s contact pair secret), or a token pair's; a holder
    // learns its dialer's only from the handshake.
    let ids = match &setup.token {
        Some(TokenRun::Hold(token)) => {
            ConversationId::TokenPair(zeroize::Zeroizing::new(token.room_secret()))
        }
        Some(TokenRun::Dial(token)) => ConversationId::Fixed(chat::token_pair_id(
            &token.room_secret(),
            &setup.identity.public(),
            &IdentityKey(token.identity),
        )),
        None => ConversationId::Fixed(setup.code.conversation()),
    };
    if let ConversationId::Fixed(id) = &ids {
        let label = if setup.config.group_room {
            format!("group {}", setup.room)
        } else {
            setup.room.clone()
        };
        out.named(id, &label);
    }
    if setup.config.group_room {
        let server = setup.server.clone().ok_or_else(|| {
            ClientError::Usage("--group needs --server: group rooms meet at a mediator".into())
        })?;
        let run = crate::group::GroupRun {
            server,
            room: setup.room.clone(),
            code: setup.code.clone(),
            name: setup.name.clone(),
            group: setup.group,
            identity: setup.identity.clone(),
            history,
            port,
            first_link,
            config: &setup.config,
        };
        return crate::group::run(run, listener, &mut input, shared, out).await;
    }
    let reveals = connect::Reveals::default();
    let downloads = setup
        .config
        .downloads
        .clone()
        .unwrap_or_else(crate::files::default_downloads_dir);
    let (transfers, mut updates) = Transfers::new(downloads, setup.config.yes);
    let mut convo = Conversation::new(
        &setup.room,
        &setup.name,
        setup.identity.clone(),
        ids,
        history,
        transfers,
        shared,
        out,
    )?;
    convo.allow_read_receipts(setup.config.read_receipts);
    if let Some(server) = &setup.server {
        let peer = match &setup.token {
            Some(TokenRun::Dial(token)) => Some(IdentityKey(token.identity)),
            _ => setup.expect_peer,
        };
        convo.start_mailbox(server, peer, out);
    }
    let net = Net {
        port,
        listener: &listener,
        reveals: &reveals,
        first_link: std::sync::Mutex::new(first_link),
        waited: std::sync::atomic::AtomicBool::new(false),
    };
    let result = converse(&setup, &net, &mut convo, &mut input, &mut updates, out).await;
    let reason = match &result {
        Ok(reason) => reason.clone(),
        Err(e) => e.to_string(),
    };
    convo.finish(&reason, out);
    result.map(|_| ())
}

/// The mediator a held token names (§16.1): our `--server`, where we wait for
/// dialers through presence; none without a server, or with `--no-presence`
/// (then only direct dials reach us, and we say so).
fn token_mediator(setup: &Setup, out: &Events) -> Result<Option<String>, ClientError> {
    let Some(server) = &setup.server else {
        return Ok(None);
    };
    if setup.config.no_presence {
        out.show(&Event::Info {
            text: "With --no-presence the token names no mediator: only direct dials to the \
                   addresses in it reach you."
                .into(),
        });
        return Ok(None);
    }
    crate::token::mediator_of(server).map(Some)
}

/// `--to NAME`: the room of us and that contact (§15.3), and its identity as the
/// one the peer must prove.
fn meet_contact(setup: &mut Setup, history: Option<&History>, to: &str) -> Result<(), ClientError> {
    let Some(history) = history else {
        return Err(ClientError::Usage(
            "--to needs the contacts, which live in the history database: drop --no-history".into(),
        ));
    };
    let contact = match history.find_contact(to)? {
        crate::history::ContactMatch::One(c) => c,
        crate::history::ContactMatch::None => {
            return Err(ClientError::Usage(format!(
                "--to {}: no contact by that name or fingerprint; `client contacts` lists them. \
                 Meet once with a room code (or a token) first.",
                wire::sanitize_for_terminal(to)
            )))
        }
        crate::history::ContactMatch::Many(all) => {
            let fps: Vec<String> = all.iter().map(|c| c.fingerprint.clone()).collect();
            return Err(ClientError::Usage(format!(
                "--to {}: several contacts use that name; pass a fingerprint instead: {}",
                wire::sanitize_for_terminal(to),
                fps.join(", ")
            )));
        }
    };
    let key = contact.key().ok_or_else(|| {
        ClientError::File("a contact's identity key is damaged in the history database".into())
    })?;
    let secret = setup
        .identity
        .contact_secret(&key)
        .map_err(|e| ClientError::Usage(format!("--to: {e}")))?;
    let label = format!("contact {}", contact.name);
    setup.code = RoomCode::from_secret(&label, &secret);
    setup.room = label;
    setup.expect_peer = Some(key);
    setup.contact_name = Some(contact.name.clone());
    setup.call = Some(wire::lan::presence_key(&secret));
    Ok(())
}

/// The run's network state, kept across reconnects.
struct Net<'a> {
    port: LocalPort,
    listener: &'a TcpListener,
    reveals: &'a connect::Reveals,
    /// The link that allocated our nameplate, for the first `Hello`.
    first_link: std::sync::Mutex<Option<MediatorLink>>,
    /// A mediator has told us `Waiting` in this run: our room was open there.
    waited: std::sync::atomic::AtomicBool,
}

/// Sessions, one after another, until the conversation ends; returns why.
async fn converse(
    setup: &Setup,
    net: &Net<'_>,
    convo: &mut Conversation,
    input: &mut mpsc::Receiver<InputEvent>,
    updates: &mut mpsc::UnboundedReceiver<Update>,
    out: &Events,
) -> Result<String, ClientError> {
    // Set while reconnecting: when the link dropped and the attempt count.
    let mut lost: Option<(Instant, u32)> = None;

    loop {
        let previous = convo.previous();
        let attempt = establish(setup, net, previous.clone(), out);
        let established = match offline(
            attempt,
            convo,
            input,
            out,
            lost.map(|(at, _)| at + setup.config.reconnect_for),
        )
        .await
        {
            Offline::Quit => {
                out.show(&Event::Disconnected {
                    reason: "you left".into(),
                });
                return Ok("you left".into());
            }
            Offline::GaveUp => {
                return Err(ClientError::ConnectionLost(format!(
                    "could not reconnect within {}; the conversation is over",
                    humantime::format_duration(setup.config.reconnect_for)
                )))
            }
            Offline::Done(result) => result,
        };
        // The mediator went away while our room was open there (an instance
        // killed or restarted, or a store outage): before the first meeting too,
        // come back through it, or behind a balancer through another instance.
        if let (Err(e), None) = (&established, lost) {
            if net.waited.load(std::sync::atomic::Ordering::Relaxed) && mediator_went_away(e) {
                lost = Some((Instant::now(), 0));
            }
        }
        let (mut conn, matched) = match established {
            Ok(pair) => pair,
            Err(e) => match lost {
                Some((since, attempts)) if retryable(&e) => {
                    let delay = backoff(attempts);
                    let deadline = since + setup.config.reconnect_for;
                    if Instant::now() + delay >= deadline {
                        return Err(e);
                    }
                    out.show(&Event::Reconnecting {
                        reason: e.to_string(),
                        attempt: attempts + 1,
                        retry_in_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    });
                    match offline(tokio::time::sleep(delay), convo, input, out, Some(deadline))
                        .await
                    {
                        Offline::Done(()) => {}
                        Offline::Quit => return Ok("you left".into()),
                        Offline::GaveUp => return Err(e),
                    }
                    lost = Some((since, attempts + 1));
                    continue;
                }
                _ => return Err(e),
            },
        };

        let mut accepted = false;
        if matches!(setup.token, Some(TokenRun::Hold(_))) {
            match admit(setup, &mut conn, &matched, convo, input, out).await? {
                Admission::Refused => continue,
                Admission::Accepted => accepted = true,
                Admission::Known => {}
            }
        }
        let info = PeerInfo {
            name: matched.peer_name.clone(),
            addr: conn.addr,
            path: conn.path.as_str().to_string(),
            sas: conn.session.sas().to_string(),
            identity: conn.session.peer_identity(),
        };
        let resumed = conn.session.resumed();
        let verified = convo.begin_session(
            info.clone(),
            resumed,
            conn.session.resume_secret().clone(),
            out,
        )?;
        out.show(&Event::Connected {
            peer: info.name.clone(),
            addr: info.addr.to_string(),
            path: info.path.clone(),
            sas: info.sas.clone(),
            role: matched.role.to_string(),
            resumed,
            verified,
            fingerprint: info.identity.fingerprint().to_string(),
        });
        if previous.is_some() && !resumed {
            out.show(&Event::Info {
                text: format!(
                    "The keys are new: this is not provably the same {} as before. Compare the security code {} again.",
                    wire::sanitize_for_terminal(&info.name),
                    info.sas
                ),
            });
        }
        if accepted {
            convo.remember_token_admission(&info.identity, out);
        }
        record_session(setup, &conn, &info)?;

        let link = PeerLink::start(conn);
        match chat::run(link, convo, out, input, updates).await {
            Ending::Quit => {
                out.show(&Event::Disconnected {
                    reason: "you left".into(),
                });
                return Ok("you left".into());
            }
            Ending::PeerLeft(reason) => return Ok(reason),
            Ending::Lost(ClientError::Integrity) => return Err(ClientError::Integrity),
            // A relay cap is the operator's word: reconnecting would only be
            // relayed again.
            Ending::Lost(e @ ClientError::RelayEnded(_)) => return Err(e),
            Ending::Lost(e) => {
                let delay = backoff(0);
                out.show(&Event::Reconnecting {
                    reason: e.to_string(),
                    attempt: 1,
                    retry_in_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                });
                let since = Instant::now();
                let deadline = since + setup.config.reconnect_for;
                match offline(tokio::time::sleep(delay), convo, input, out, Some(deadline)).await {
                    Offline::Done(()) => {}
                    Offline::Quit => return Ok("you left".into()),
                    Offline::GaveUp => return Err(e),
                }
                lost = Some((since, 1));
            }
        }
    }
}

/// Checks the flags and settles the room and name.
fn prepare(config: Config, out: &Events) -> Result<Setup, ClientError> {
    let server = config.server.clone();
    let mut lan = lan::LanConfig::new(
        config.lan_port,
        config.lan_timeout,
        config.lan_interface.clone(),
    );
    if let Some(instance) = config.lan_instance {
        lan.instance = instance;
    }
    let name = match &config.name {
        Some(name) => {
            wire::validate_name(name)
                .map_err(|e| ClientError::Usage(format!("--name `{name}`: {e}")))?;
            name.clone()
        }
        None => roomcode::friendly_name(&mut OsRng),
    };
    let group = Group::from_id(config.dh_group).map_err(|e| ClientError::Usage(e.to_string()))?;
    let listen = parse_listen(&config.listen).map_err(ClientError::Usage)?;
    let room = match &config.room {
        Some(room) => {
            roomcode::check_room(room).map_err(|e| ClientError::Usage(format!("--room: {e}")))?;
            room.clone()
        }
        // With a mediator, `run` asks it for a nameplate first (§13.2) and
        // fills the room in then.
        None if config.connect.is_some() || config.token_ttl.is_some() => "token".to_string(),
        None if server.is_some() => String::new(),
        // `--to`: the contact's room, filled in by `meet_contact`.
        None if config.to.is_some() => String::new(),
        None => {
            let room = roomcode::generate(&mut OsRng);
            show_room(None, &room, false, out);
            room
        }
    };
    let profile = crate::identity::profile_dir(config.profile.as_deref())?;
    let (identity, created) = crate::identity::load_or_create(&profile)?;
    let history = if config.no_history {
        None
    } else {
        config
            .history
            .clone()
            .or_else(|| Some(profile.join("history.sqlite3")))
    };
    let keylog = records::keylog_path();
    if let Some(path) = &keylog {
        out.show(&Event::Info {
            text: format!(
                "warning: P2PCHAT_KEYLOG is set; session keys will be written to {}. Anyone with that file can read this chat.",
                path.display()
            ),
        });
    }
    // After the keylog warning: that one matters more.
    if created {
        out.show(&Event::Info {
            text: format!(
                "Created your identity in {} (fingerprint {}). Keep that directory private.",
                profile.display(),
                identity.public().fingerprint()
            ),
        });
    }
    Setup {
        code: RoomCode::parse(&room),
        server,
        lan,
        room,
        name,
        group,
        listen,
        keylog,
        history,
        identity,
        expect_peer: None,
        contact_name: None,
        call: None,
        token: None,
        config,
    }
    .dialing()
}

/// Errors a later attempt may not repeat: the network, the mediator's
/// availability, the peer's reachability. Asked only while reconnecting: on the
/// first meeting every error ends the run, unless the mediator went away while
/// our room was open there ([`mediator_went_away`]). `NoPath` is here because a path worked
/// before: a round whose connections were cut mid-handshake is tried again.
fn retryable(e: &ClientError) -> bool {
    mediator_went_away(e)
        || matches!(
            e,
            ClientError::WaitTimeout(_)
                | ClientError::PeerUnreachable(_)
                | ClientError::NoPath(_)
                | ClientError::ConnectionLost(_)
        )
}

/// The mediator itself is gone or says it cannot serve now, as opposed to
/// anything about the room, the peer or the path.
fn mediator_went_away(e: &ClientError) -> bool {
    match e {
        ClientError::MediatorUnreachable { .. } => true,
        ClientError::MediatorRefused { code, .. } => matches!(
            code,
            ErrorCode::ShuttingDown | ErrorCode::TooManyConnections
        ),
        _ => false,
    }
}

/// 1 s, 2 s, 4 s … capped at 30 s, each scaled by a random factor in [0.5, 1].
fn backoff(attempt: u32) -> Duration {
    let base = BACKOFF_START
        .saturating_mul(1u32 << attempt.min(5))
        .min(BACKOFF_CAP);
    base.mul_f64(OsRng.gen_range(0.5..=1.0))
}

/// What became of a wait while no session is up.
enum Offline<T> {
    Done(T),
    Quit,
    GaveUp,
}

/// Runs `work` while the person may keep typing (lines are queued as pending)
/// or leave; gives up at `deadline`.
async fn offline<T>(
    work: impl Future<Output = T>,
    convo: &mut Conversation,
    input: &mut mpsc::Receiver<InputEvent>,
    out: &Events,
    deadline: Option<Instant>,
) -> Offline<T> {
    tokio::pin!(work);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let shared = convo.shared();
    loop {
        tokio::select! {
            result = &mut work => return Offline::Done(result),
            () = shared.woken() => {
                convo.after_say(false, out);
                if convo.input_closed() && convo.drained() {
                    return Offline::Quit;
                }
            }
            event = input.recv(), if convo.accepts_input() => {
                if convo.on_input(event, None, out).is_some() {
                    return Offline::Quit;
                }
            }
            Some(news) = convo.mailbox_news() => {
                convo.on_mailbox(news, None, out);
                // Input ended and everything typed is held by the peer or
                // its mailbox: nothing keeps us here.
                if convo.input_closed() && convo.drained() {
                    return Offline::Quit;
                }
            }
            _ = &mut ctrl_c => return Offline::Quit,
            () = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => {
                return Offline::GaveUp;
            }
        }
    }
}

/// One pass through the mediator to a confirmed peer connection.
async fn establish(
    setup: &Setup,
    net: &Net<'_>,
    previous: Option<ResumeSecret>,
    out: &Events,
) -> Result<(Connected, Matched), ClientError> {
    if let Some(run) = &setup.token {
        return establish_token(setup, net, run, previous, out).await;
    }
    let Some(server) = &setup.server else {
        return establish_lan(setup, net, previous, out).await;
    };
    establish_at(setup, net, server, None, previous, out).await
}

/// One pass through `server` to a confirmed peer connection; with `wait_limit`,
/// waiting there for the peer ends after that long.
async fn establish_at(
    setup: &Setup,
    net: &Net<'_>,
    server: &str,
    wait_limit: Option<Duration>,
    previous: Option<ResumeSecret>,
    out: &Events,
) -> Result<(Connected, Matched), ClientError> {
    let listen_addr = net.port.addr();
    let first = net
        .first_link
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let mediator = match first {
        Some(link) => link,
        None => MediatorLink::connect(server, &net.port).await?,
    };
    let (code, keys) = room_keys(setup)?;
    let (listen_port, local_addrs) = advertised(&setup.config, listen_addr, mediator.local_addr());
    let hello = ClientMsg::Hello {
        version: PROTOCOL_VERSION,
        room: code.tag().0,
        name: setup.name.clone(),
        group: setup.group.id(),
        public: keys.public().to_vec(),
        listen_port,
        local_addrs: local_addrs.clone(),
        no_relay: setup.config.no_relay,
    };
    let listen_text = listen_addr.to_string();
    let meeting = mediator.rendezvous(hello, &setup.room, |expires_in_secs| {
        net.waited.store(true, std::sync::atomic::Ordering::Relaxed);
        out.show(&Event::Waiting {
            listen: listen_text.clone(),
            expires_in_secs,
        })
    });
    let (matched, link) = match wait_limit {
        None => meeting.await?,
        Some(limit) => tokio::time::timeout(limit, meeting).await.map_err(|_| {
            ClientError::WaitTimeout(format!(
                "nobody came to the mediator within {}",
                humantime::format_duration(limit)
            ))
        })??,
    };
    wire::validate_name(&matched.peer_name).map_err(|e| {
        ClientError::PeerUnreachable(format!(
            "the mediator announced an invalid peer name ({e}); it may be faulty or hostile"
        ))
    })?;
    let input = matched_input(setup, code, keys, &matched, previous, out);
    // The link stays up until the race ends, for the punch timing and then for
    // our path report (§4), with `--no-punch` too.
    let (punch, mut report) = link.watch_punch();
    let punch = (!setup.config.no_punch).then_some(punch);
    let race = new_race(setup, net, &matched, &local_addrs, server, punch);
    let conn = connect_peer(race, input, out).await;
    if let Some(path) = connect::reached(conn.as_ref().map(|c| c.path)) {
        report.send(path);
    }
    Ok((conn?, matched))
}

/// The room code as typed and our CPace key pair for it (§13).
fn room_keys(setup: &Setup) -> Result<(RoomCode, KeyPair), ClientError> {
    // Computed on `setup.code` so the clone (and every later round) carries it.
    setup.code.tag();
    let code = setup.code.clone();
    let keys = KeyPair::generate_cpace(setup.group, &code, &mut OsRng)
        .map_err(|e| ClientError::Usage(format!("--room: {e}")))?;
    Ok((code, keys))
}

/// Shows the match and builds the handshake's input from it.
fn matched_input(
    setup: &Setup,
    code: RoomCode,
    keys: KeyPair,
    matched: &Matched,
    previous: Option<ResumeSecret>,
    out: &Events,
) -> HandshakeInput {
    out.show(&Event::Matched {
        peer: matched.peer_name.clone(),
        role: matched.role.to_string(),
    });
    HandshakeInput {
        room: code,
        local_name: setup.name.clone(),
        local: keys,
        peer_name: matched.peer_name.clone(),
        peer_public: matched.public.clone(),
        previous,
        keylog: setup.keylog.is_some(),
        identity: setup.identity.clone(),
        expect_peer: setup.expect_peer,
    }
}

/// The connection race for `matched`, its clock started now.
fn new_race<'a>(
    setup: &Setup,
    net: &Net<'a>,
    matched: &'a Matched,
    own_locals: &'a [SocketAddr],
    server: &'a str,
    punch: Option<crate::rendezvous::PunchWatch>,
) -> connect::Race<'a> {
    let matched_at = Instant::now();
    connect::Race {
        matched,
        port: net.port,
        incoming: connect::Incoming::Listener(net.listener),
        own_locals,
        server,
        punch,
        matched_at,
        deadline: matched_at + setup.config.connect_timeout,
        relay_after: setup.config.relay_after,
        reveals: net.reveals,
    }
}

/// LAN mode: the peer found by UDP announcements ([`lan::discover`], the same
/// `Matched` a mediator would give), then the usual connect path, labelled `lan`.
async fn establish_lan(
    setup: &Setup,
    net: &Net<'_>,
    previous: Option<ResumeSecret>,
    out: &Events,
) -> Result<(Connected, Matched), ClientError> {
    let (code, keys) = room_keys(setup)?;
    // A contact's conversation names nobody on the air (§14.4): the
    // announcement and both sides' transcripts carry a fixed name instead.
    let contact = setup.contact_name.as_deref();
    let us = lan::Us {
        name: if contact.is_some() {
            wire::lan::CONTACT_NAME
        } else {
            &setup.name
        },
        group: setup.group,
        public: keys.public(),
        listen: net.port.addr(),
        advertise: setup.config.advertise,
    };
    // `_announcing` keeps announcing until the connection stands: the peer may
    // not have heard us yet.
    let (mut matched, own_locals, _announcing) =
        lan::find_peer(&setup.lan, &setup.code, setup.call.clone(), us, out).await?;
    if let Some(name) = contact {
        matched.peer_name = name.to_owned();
    }
    let mut input = matched_input(setup, code, keys, &matched, previous, out);
    if contact.is_some() {
        input.local_name = wire::lan::CONTACT_NAME.to_owned();
        input.peer_name = wire::lan::CONTACT_NAME.to_owned();
    }
    // No mediator: nothing to punch with, no relay (`matched.relay` is `Off`).
    let race = new_race(setup, net, &matched, &own_locals, "", None);
    let mut conn = connect_peer(race, input, out).await.map_err(|e| match e {
        // There is no relay without a mediator: say what fails on a LAN instead.
        ClientError::NoPath(_) => ClientError::PeerUnreachable(format!(
            "found {} on the local network, but no TCP connection between us got through \
             within the connect timeout: a firewall on either side may block incoming TCP. \
             Allow the client's port, or pass --listen PORT with an allowed port.",
            wire::sanitize_for_terminal(&matched.peer_name)
        )),
        other => other,
    })?;
    conn.path = Path::Lan;
    Ok((conn, matched))
}

/// A token run: the holder waits for a dialer (at its port, and through
/// presence at the mediator its token names), the dialer dials the token's
/// addresses and then meets the holder at that mediator (§16.5).
async fn establish_token(
    setup: &Setup,
    net: &Net<'_>,
    run: &TokenRun,
    previous: Option<ResumeSecret>,
    out: &Events,
) -> Result<(Connected, Matched), ClientError> {
    match run {
        TokenRun::Hold(token) => {
            out.show(&Event::Waiting {
                listen: net.port.addr().to_string(),
                expires_in_secs: u32::try_from(crate::token::remaining(token).as_secs())
                    .unwrap_or(u32::MAX),
            });
            match &token.mediator {
                None => host_token(setup, net, token, previous, out).await,
                Some(server) => hold_at(setup, net, token, server, previous, out).await,
            }
        }
        TokenRun::Dial(token) => {
            let (mut conn, matched) = dial_token(setup, net, token, previous, out).await?;
            out.show(&Event::Info {
                text: format!(
                    "Reached {}; waiting for them to let us in…",
                    wire::sanitize_for_terminal(&matched.peer_name)
                ),
            });
            crate::token::await_admission(&mut conn, &matched.peer_name).await?;
            Ok((conn, matched))
        }
    }
}

/// What both ends of a token connection share, for `previous`.
fn token_ends(setup: &Setup, previous: Option<ResumeSecret>) -> crate::token::Ends<'_> {
    crate::token::Ends {
        name: &setup.name,
        group: setup.group,
        identity: &setup.identity,
        previous,
        keylog: setup.keylog.is_some(),
    }
}

/// The holder at its port: the first dialer that completes the token handshake.
async fn host_token(
    setup: &Setup,
    net: &Net<'_>,
    token: &wire::token::Token,
    previous: Option<ResumeSecret>,
    out: &Events,
) -> Result<(Connected, Matched), ClientError> {
    let ends = token_ends(setup, previous);
    crate::token::host(net.listener, token, ends, |turned| match turned {
        crate::token::Turned::Away { addr, reason } => out.show(&Event::Rejected {
            addr: addr.to_string(),
            reason,
        }),
        crate::token::Turned::Unshown { text } => out.show(&Event::Warning {
            code: "token_flood".into(),
            text,
        }),
    })
    .await
}

/// How long a holder that was rung waits at the mediator for the dialer who
/// rang (it was waiting there a moment ago; a longer wait would only keep
/// direct dialers out).
const RUNG_WAIT: Duration = Duration::from_secs(30);

/// The holder of a token that names `server`: waits at its port and, through a
/// presence connection to `server` under the token's tag (§21), for a dialer
/// waiting there; a ring stops the port's wait (connections being judged are
/// dropped; their dialers go on to the mediator) and meets the dialer at
/// `server` as any pair meets (punched or relayed). A meeting that fails is
/// shown and the wait goes on.
async fn hold_at(
    setup: &Setup,
    net: &Net<'_>,
    token: &wire::token::Token,
    server: &str,
    previous: Option<ResumeSecret>,
    out: &Events,
) -> Result<(Connected, Matched), ClientError> {
    let tag = setup.code.tag().0;
    let mut failed = 0u32;
    loop {
        tokio::select! {
            direct = host_token(setup, net, token, previous.clone(), out) => return direct,
            () = token_ring(server, tag, out) => {}
        }
        out.show(&Event::Info {
            text: format!(
                "Someone with your token is at the mediator {server}: meeting them there…"
            ),
        });
        let meeting = establish_at(setup, net, server, Some(RUNG_WAIT), previous.clone(), out);
        let why = match meeting.await {
            Ok(pair) => return Ok(pair),
            Err(e) => e,
        };
        // The wait goes on: a dialer who gave up, a stranger with a stale
        // ring, or a mediator hiccup must not end the holder's run.
        out.show(&Event::Info {
            text: format!(
                "Could not meet them through the mediator ({why}); still waiting for dialers."
            ),
        });
        if crate::token::remaining(token).is_zero() {
            return Err(ClientError::TokenExpired(
                "the token expired and nobody connected with it; run `client token` for a new one"
                    .into(),
            ));
        }
        // Failed meetings come back no faster than the reconnect backoff.
        tokio::time::sleep(backoff(failed)).await;
        failed = failed.saturating_add(1);
    }
}

/// Returns when the mediator at `server` rings for the token's `tag` (a dialer
/// waits there); keeps the presence connection up meanwhile, reconnecting with
/// backoff, and says once when dialers cannot reach us there.
async fn token_ring(server: &str, tag: [u8; 32], out: &Events) {
    let mut attempt = 0u32;
    let mut said_lost = false;
    loop {
        let why = match MediatorLink::wait_for_contacts(server, &[tag]).await {
            Ok((mut link, mut alive)) => {
                attempt = 0;
                if said_lost {
                    said_lost = false;
                    out.show(&Event::Info {
                        text: "Dialers of your token can meet you at the mediator again.".into(),
                    });
                }
                loop {
                    match link.next_ring(&mut alive).await {
                        Ok(rung) if rung == tag => return,
                        // Not our tag: the mediator's mistake, nothing to meet.
                        Ok(_) => {}
                        Err(e) => break e,
                    }
                }
            }
            Err(e) => e,
        };
        if let ClientError::MediatorRefused {
            code: ErrorCode::PresenceLimit,
            ..
        } = why
        {
            out.show(&Event::Info {
                text: format!(
                    "The mediator will not wait for your token's dialers ({why}); only direct \
                     dials reach you."
                ),
            });
            return std::future::pending().await;
        }
        if !said_lost {
            said_lost = true;
            out.show(&Event::Info {
                text: format!(
                    "Dialers of your token cannot meet you at the mediator until it is back \
                     ({why}); direct dials still reach you. Retrying."
                ),
            });
        }
        tokio::time::sleep(backoff(attempt)).await;
        attempt = attempt.saturating_add(1);
    }
}

/// The dialer: the token's addresses first, then the token's mediator, where
/// the holder waits through presence; errors say what to do next.
async fn dial_token(
    setup: &Setup,
    net: &Net<'_>,
    token: &wire::token::Token,
    previous: Option<ResumeSecret>,
    out: &Events,
) -> Result<(Connected, Matched), ClientError> {
    let direct = crate::token::dial(net.port, token, token_ends(setup, previous.clone())).await;
    let unreachable = match direct {
        Err(ClientError::PeerUnreachable(why)) => why,
        other => return other,
    };
    let Some(server) = token.mediator.as_deref() else {
        return Err(ClientError::PeerUnreachable(format!(
            "{unreachable} This token names no mediator, so only a direct connection reaches its \
             holder: ask them for a token made with `client token --server HOST`, which also \
             works across the internet."
        )));
    };
    // The token's text passed `check_mediator` (no spaces or controls); it is
    // still the person's input, so it is shown through the sanitiser.
    let shown = wire::sanitize_for_terminal(server);
    out.show(&Event::Info {
        text: format!(
            "No direct connection to the token's holder; meeting them through its mediator {shown}…"
        ),
    });
    // Waiting past the token's expiry is useless: the holder stops waiting then.
    let left = crate::token::remaining(token);
    match establish_at(setup, net, server, Some(left), previous, out).await {
        Ok(pair) => Ok(pair),
        Err(ClientError::MediatorUnreachable { addr, reason }) => {
            Err(ClientError::MediatorUnreachable {
                addr,
                reason: format!(
                    "{reason}. That is the mediator the token names, and its holder was not \
                     reachable directly either; ask the holder whether that mediator still \
                     runs, or for a new token"
                ),
            })
        }
        Err(ClientError::WaitTimeout(_)) if crate::token::remaining(token).is_zero() => {
            Err(ClientError::TokenExpired(
                "the token expired while we waited for its holder at the mediator; ask them \
                 for a new one (`client token`)"
                    .into(),
            ))
        }
        Err(ClientError::WaitTimeout(_)) => Err(ClientError::WaitTimeout(format!(
            "the token's holder did not come to the mediator {shown} in time: is their \
             `client token --server {shown}` (or messenger) still running? Try again later, or \
             ask them for a new token"
        ))),
        Err(e) => Err(e),
    }
}

/// How the token holder decided about a dialer.
enum Admission {
    /// Let in without asking: `--yes`, a verified contact, or one the person
    /// let in through a token before.
    Known,
    /// The person typed `/accept`: remembered, so next time it is `Known`.
    Accepted,
    Refused,
}

/// The token holder's decision about a dialer (§16.3): `--yes`, a verified
/// contact or one let in through a token before comes in; anyone else (other
/// contacts too) waits for `/accept` or `/deny` (or end of input: deny).
async fn admit(
    setup: &Setup,
    conn: &mut Connected,
    matched: &Matched,
    convo: &Conversation,
    input: &mut mpsc::Receiver<InputEvent>,
    out: &Events,
) -> Result<Admission, ClientError> {
    let key = conn.session.peer_identity();
    let known = setup.config.yes || convo.admits_without_asking(&key);
    let decision = if known {
        Ok(())
    } else {
        out.show(&Event::Admission {
            peer: matched.peer_name.clone(),
            fingerprint: key.fingerprint().to_string(),
            sas: conn.session.sas().to_string(),
        });
        let until = Instant::now() + crate::token::ADMISSION_WAIT;
        loop {
            match tokio::time::timeout_at(until, input.recv()).await {
                Ok(Some(InputEvent::Line(line))) => match line.trim() {
                    "/accept" => break Ok(()),
                    "/deny" => break Err("the token's holder said no".to_string()),
                    _ => out.show(&Event::Info {
                        text: "Answer /accept or /deny first.".into(),
                    }),
                },
                Ok(Some(InputEvent::TooLong { .. } | InputEvent::Seen { .. })) => {}
                Ok(Some(InputEvent::Eof) | None) => break Err("the holder left".to_string()),
                Err(_) => break Err("no answer in time".to_string()),
            }
        }
    };
    let admission = match (&decision, known) {
        (Err(_), _) => Admission::Refused,
        (Ok(()), true) => Admission::Known,
        (Ok(()), false) => Admission::Accepted,
    };
    crate::token::send_admission(conn, decision).await?;
    if matches!(admission, Admission::Refused) {
        out.show(&Event::Info {
            text: format!(
                "Turned {} away; still waiting for others with the token.",
                wire::sanitize_for_terminal(&matched.peer_name)
            ),
        });
    }
    Ok(admission)
}

/// The addresses a token names: `--advertise`, or the listener's own address,
/// or for a wildcard listener every address of every interface that is up.
fn token_addrs(advertise: Option<SocketAddr>, listen: SocketAddr) -> Vec<SocketAddr> {
    if let Some(addr) = advertise {
        return vec![addr];
    }
    if !listen.ip().is_unspecified() {
        return vec![listen];
    }
    let mut addrs: Vec<SocketAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.ip())
        .filter(|ip| match ip {
            IpAddr::V4(v4) => !v4.is_loopback(),
            IpAddr::V6(v6) => !v6.is_loopback() && (v6.segments()[0] & 0xffc0) != 0xfe80,
        })
        .map(|ip| SocketAddr::new(ip, listen.port()))
        .collect();
    addrs.truncate(wire::token::MAX_ADDRS);
    if addrs.is_empty() {
        addrs.push(SocketAddr::from(([127, 0, 0, 1], listen.port())));
    }
    addrs
}

/// Appends the session to `peers.txt` and, when asked, the keylog.
fn record_session(setup: &Setup, conn: &Connected, info: &PeerInfo) -> Result<(), ClientError> {
    if let (Some(path), Some(line)) = (&setup.keylog, conn.session.keylog_line()) {
        records::append_keylog(path, line)?;
    }
    records::append_peer(
        &setup.config.peers_file,
        &PeerLine {
            at: chrono::Utc::now(),
            peer_name: &info.name,
            peer_addr: info.addr,
            room: &setup.room,
            path: &info.path,
            sas: &info.sas,
        },
    )
}

fn bind_listener(addr: SocketAddr) -> Result<(LocalPort, TcpListener), ClientError> {
    LocalPort::listen(addr).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                "another program uses that port: pick another with --listen, or 0 for any free port"
            }
            std::io::ErrorKind::PermissionDenied => {
                "ports below 1024 need privileges: pick a higher one with --listen"
            }
            _ => "check the --listen address",
        };
        ClientError::ListenFailed(format!("cannot listen on {addr}: {e}; {hint}"))
    })
}

/// The listen port and local addresses our `Hello` advertises: `--advertise` if
/// given; otherwise the listener's own address, or, for a wildcard listener, the
/// interface address our mediator connection uses.
fn advertised(
    config: &Config,
    listen: SocketAddr,
    toward_mediator: Option<SocketAddr>,
) -> (u16, Vec<SocketAddr>) {
    advertised_addrs(config.advertise, listen, toward_mediator)
}

/// [`advertised`] from `--advertise` alone.
pub(crate) fn advertised_addrs(
    advertise: Option<SocketAddr>,
    listen: SocketAddr,
    toward_mediator: Option<SocketAddr>,
) -> (u16, Vec<SocketAddr>) {
    if let Some(addr) = advertise {
        return (addr.port(), vec![addr]);
    }
    let ip: Option<IpAddr> = if listen.ip().is_unspecified() {
        toward_mediator.map(|a| a.ip())
    } else {
        Some(listen.ip())
    };
    let locals = ip
        .filter(|ip| !ip.is_unspecified())
        .map(|ip| vec![SocketAddr::new(ip, listen.port())])
        .unwrap_or_default();
    (listen.port(), locals)
}

async fn connect_peer(
    race: connect::Race<'_>,
    input: HandshakeInput,
    out: &Events,
) -> Result<Connected, ClientError> {
    let peer_name = race.matched.peer_name.clone();
    let refused = |e| connect::handshake_failure(e, &peer_name);
    let side = match race.matched.role {
        Role::Host => connect::Side::Host(HostHandshake::new(input).map_err(refused)?),
        Role::Joiner => connect::Side::Joiner(JoinerHandshake::new(input).map_err(refused)?),
    };
    connect::connect(race, side, |addr, reason| {
        out.show(&Event::Rejected {
            addr: addr.to_string(),
            reason: reason.to_string(),
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        for attempt in 0..10 {
            let d = backoff(attempt);
            let base = BACKOFF_START
                .saturating_mul(1 << attempt.min(5))
                .min(BACKOFF_CAP);
            assert!(d <= base && d >= base / 2, "{attempt}: {d:?}");
        }
        assert!(backoff(20) <= BACKOFF_CAP);
    }

    /// docs/protocol.md §4 and §12.1: `Hello` names at most one address (never
    /// every interface), with the listener's port; a v4-mapped address from a
    /// dual-stack socket is sent as it is.
    #[test]
    fn hello_announces_one_address_never_every_interface() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        // `--advertise` wins, port included.
        assert_eq!(
            advertised_addrs(
                Some(addr("203.0.113.7:4000")),
                addr("[::]:7000"),
                Some(addr("[::ffff:192.168.1.5]:7000"))
            ),
            (4000, vec![addr("203.0.113.7:4000")])
        );
        // A listener on one address: that address.
        assert_eq!(
            advertised_addrs(None, addr("192.168.1.5:7000"), Some(addr("10.0.0.2:7000"))),
            (7000, vec![addr("192.168.1.5:7000")])
        );
        // A dual-stack wildcard listener and an IPv4 mediator: the mediator
        // connection's local address, still v4-mapped, and nothing else.
        assert_eq!(
            advertised_addrs(
                None,
                addr("[::]:7000"),
                Some(addr("[::ffff:192.168.1.5]:7000"))
            ),
            (7000, vec![addr("[::ffff:192.168.1.5]:7000")])
        );
        // A mediator connection from another port (its 4-tuple was taken): the
        // listener's port, not that one.
        assert_eq!(
            advertised_addrs(None, addr("0.0.0.0:7000"), Some(addr("10.0.0.2:41000"))),
            (7000, vec![addr("10.0.0.2:7000")])
        );
        // No address known: none.
        assert_eq!(
            advertised_addrs(None, addr("0.0.0.0:7000"), None),
            (7000, vec![])
        );
    }
}
