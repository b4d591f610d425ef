//! A group room (docs/protocol.md §19): the mediator tells us who is in the
//! room; we link with each member by the two-party handshake ([`links`]); the
//! conversation is the signed, causally ordered log of [`wire::group`], which
//! every link carries both ways. A new or returning link swaps summaries and
//! sends what the other lacks, so a member who was away catches up, even on
//! authors who have left. Members swap rosters (who each is linked with, under
//! which identity key): a disagreement means someone sits between two members,
//! and it is an alert. A member who sends a bad message is cut off and named;
//! an author who signed two messages with one number is refused by everyone who
//! sees the proof, and the proof travels on (never blaming who forwarded it).
//! An author is named only by a link that proved its key or by a contact.
//!
//! The log itself (delivery, catch-up, storing, receipts, proofs, names) is
//! the one conversation core of [`crate::conversation`], which two-party chats
//! use too; this module keeps the mediator, the mesh of links and the rosters.

mod links;

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use dhke::{Group, Identity, IdentityKey, KeyPair, RoomCode};
use rand::rngs::OsRng;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use wire::group::{Roster, RosterEntry, MAX_AUTHORS};
use wire::{ClientMsg, PeerMsg, PROTOCOL_VERSION};

use self::links::{FromLink, LinkHandle, PairSetup, Paired, Routes};
use crate::conversation::{self, Core, Effects, Kind, Shared, To};
use crate::error::ClientError;
use crate::events::InputEvent;
use crate::events::{Event, Events, GROUP_HELP};
use crate::history::now_ms;
use crate::history::History;
use crate::mailbox::{self, Job, Mailbox, News};
use crate::ports::LocalPort;
use crate::records::{self, PeerLine};
use crate::rendezvous::{GroupPlace, MediatorLink, PathReport, RoomNotice};

/// Every link is pinged this often (for `/peers`' round trip and to notice a
/// dead one).
const PING_EVERY: Duration = Duration::from_secs(5);
/// A link silent this long (no record at all) is closed.
const SILENT_LIMIT: Duration = Duration::from_secs(30);
/// A member that others' rosters list but we hold no link with is reported
/// after this long (our race towards it has ended by then, one way or another).
const HIDDEN_AFTER: Duration = Duration::from_secs(20);
/// Mediator reconnects back off from 1 s up to this.
const REJOIN_CAP: Duration = Duration::from_secs(30);
/// A link that ends by itself while races are under way may be one the other
/// side is replacing (both relink after a mediator restart, and whichever
/// confirms first closes its old link): it is announced as left only if no new
/// link with that identity comes within this long, or once no race is left.
const RELINK_GRACE: Duration = Duration::from_secs(20);
/// Messages from every link waiting for the mesh: at most 4 MiB of records
/// (64 of at most [`wire::peer::MAX_PLAINTEXT`] bytes), on top of each link's
/// own small queue. Links that find it full wait their turn in order, so one
/// member streaming large records delays the others' messages but cannot
/// grow memory or push them out.
const FROM_LINKS: usize = 64;

/// What a group run needs from the command line and the profile.
#[derive(Debug)]
pub struct GroupRun<'a> {
    pub server: String,
    pub room: String,
    pub code: RoomCode,
    pub name: String,
    pub group: Group,
    pub identity: Identity,
    pub history: Option<History>,
    pub port: LocalPort,
    /// The link that allocated our nameplate, for the first `GroupHello`.
    pub first_link: Option<MediatorLink>,
    pub config: &'a crate::config::Config,
}

/// One live link with another member.
struct Member {
    /// The member's number from the mediator (§19.1), for rosters and events.
    member: u32,
    name: String,
    identity: IdentityKey,
    addr: SocketAddr,
    path: String,
    sas: String,
    verified: bool,
    link: LinkHandle,
    /// A send failed (the member stopped reading): the next tick closes it.
    stalled: Cell<bool>,
    task: JoinHandle<()>,
    rtt_ms: Option<u64>,
    ping: Option<(u64, Instant)>,
    last_heard: Instant,
    roster: Option<Roster>,
}

impl Member {
    fn send(&self, msg: PeerMsg) {
        if self.link.send(msg).is_err() {
            self.stalled.set(true);
        }
    }
}

/// A member whose link ended, waiting to see whether a new link replaces it.
struct Lingering {
    since: Instant,
    member: u32,
    name: String,
    identity: IdentityKey,
    why: String,
}

/// The mediator session: its notices, where our path report goes, and the key
/// pair our `GroupHello` named.
struct Session {
    place: GroupPlace,
    notices: mpsc::Receiver<RoomNotice>,
    watcher: JoinHandle<()>,
    report: PathReport,
    setup: PairSetup,
}

type Joining = JoinHandle<Result<Session, ClientError>>;

struct Mesh<'a> {
    run: GroupRun<'a>,
    out: &'a Events,
    /// The conversation: the log and everything done with it, shared with
    /// the messenger, which writes typed text through it.
    shared: Shared,
    me: u32,
    /// Live links by a serial of ours: member numbers of two mediator sessions
    /// (a restart) may collide, serials never do.
    members: HashMap<u64, Member>,
    races: HashMap<u32, JoinHandle<()>>,
    /// Identity keys cut off this run; never linked again.
    banned: HashSet<[u8; 32]>,
    /// (roster sender's link, member) pairs already alerted about.
    alerted: HashSet<(u64, u32)>,
    /// Identity keys others list that we hold no link with, since when.
    unseen: HashMap<[u8; 32], Instant>,
    /// Keys already reported as unseen.
    reported_unseen: HashSet<[u8; 32]>,
    /// Members whose link ended while races were under way, not yet announced
    /// as left ([`RELINK_GRACE`]).
    lingering: Vec<Lingering>,
    routes: Routes,
    next_serial: u64,
    paired_tx: mpsc::Sender<Paired>,
    from_links_tx: mpsc::Sender<FromLink>,
    /// The room's mailbox (docs/protocol.md §22): our queue, emptied when we
    /// come, and the queues of members who are away.
    mailbox: Option<Mailbox>,
    /// Every member identity met this run or found in the log: who gets our
    /// messages at the mailbox while not linked.
    known: HashSet<[u8; 32]>,
    /// Our messages shown as stored at a mailbox already.
    stored: HashSet<u64>,
}

/// Runs a group room until the person leaves.
pub async fn run(
    run: GroupRun<'_>,
    listener: TcpListener,
    input: &mut mpsc::Receiver<InputEvent>,
    shared: Shared,
    out: &Events,
) -> Result<(), ClientError> {
    // The log is bound to the whole code, never to the tag the mediator
    // matches on: two codes with one nameplate are two conversations.
    let (core, restored) = Core::open(
        run.code.conversation(),
        Kind::Group,
        run.identity.clone(),
        &run.name,
        &run.room,
        run.history.as_ref(),
    )?;
    let conversation = core.conversation();
    shared.set_store(run.history.clone());
    shared.state().core = Some(core);
    shared.set_ready();
    let routes: Routes = Default::default();
    let _acceptor = AbortOnDrop(links::spawn_acceptor(listener, routes.clone()));
    let (paired_tx, mut paired_rx) = mpsc::channel(64);
    let (from_links_tx, mut from_links) = mpsc::channel(FROM_LINKS);
    let mut mesh = Mesh {
        run,
        out,
        shared: shared.clone(),
        me: 0,
        members: HashMap::new(),
        races: HashMap::new(),
        banned: HashSet::new(),
        alerted: HashSet::new(),
        unseen: HashMap::new(),
        reported_unseen: HashSet::new(),
        lingering: Vec::new(),
        routes,
        next_serial: 0,
        paired_tx,
        from_links_tx,
        mailbox: None,
        known: HashSet::new(),
        stored: HashSet::new(),
    };
    mesh.apply(restored);
    mesh.known.extend(mesh.core(|c| c.other_authors()));
    mesh.mailbox = Some(Mailbox::start(
        mesh.run.server.clone(),
        conversation,
        mesh.run.identity.clone(),
    ));

    // The first join's refusal (a full room, a wrong DH group) ends the run;
    // later, a lost mediator only means retrying while the links carry on.
    let first = mesh.run.first_link.take();
    let mut session = Some(join(&mesh, first).await?);
    mesh.joined(session.as_ref().map(|s| s.place));
    let mut joining: Option<Joining> = None;
    let mut rejoin_at: Option<Instant> = None;
    let mut rejoins = 0u32;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);

    let reason = loop {
        tokio::select! {
            event = input.recv() => {
                if let Some(reason) = mesh.on_input(event) {
                    break reason;
                }
            }
            notice = next_notice(&mut session) => match notice {
                RoomNotice::Member { member, matched } => {
                    let setup = session.as_ref().map(|s| s.setup.clone());
                    if let Some(setup) = setup {
                        mesh.on_member(member, matched, setup);
                    }
                }
                RoomNotice::Left { member } => mesh.on_member_left(member),
                RoomNotice::Lost(e) => {
                    if let Some(s) = session.take() {
                        s.watcher.abort();
                    }
                    let delay = rejoin_delay(rejoins);
                    out.show(&Event::Reconnecting {
                        reason: format!("lost the mediator ({e}); the links stay up"),
                        attempt: rejoins + 1,
                        retry_in_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    });
                    rejoin_at = Some(Instant::now() + delay);
                }
            },
            Some(result) = wait_joining(&mut joining) => {
                joining = None;
                match result {
                    Ok(s) => {
                        rejoins = 0;
                        mesh.joined(Some(s.place));
                        session = Some(s);
                    }
                    Err(e) => {
                        rejoins += 1;
                        let delay = rejoin_delay(rejoins);
                        out.show(&Event::Reconnecting {
                            reason: e.to_string(),
                            attempt: rejoins + 1,
                            retry_in_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        });
                        rejoin_at = Some(Instant::now() + delay);
                    }
                }
            }
            Some(paired) = paired_rx.recv() => {
                // The mediator counts one path per link (§4): the first pair's.
                if let Some(s) = session.as_mut() {
                    let outcome = match &paired {
                        Paired::Linked { conn, .. } => Ok(conn.path),
                        Paired::Failed { error, .. } => Err(error),
                    };
                    if let Some(path) = crate::connect::reached(outcome) {
                        s.report.send(path);
                    }
                }
                mesh.on_paired(paired)
            }
            Some(from) = from_links.recv() => mesh.on_link(from),
            () = shared.woken() => mesh.after_say(),
            Some(news) = mailbox::news(&mut mesh.mailbox) => mesh.on_mailbox(news),
            _ = tick.tick() => {
                mesh.on_tick();
                if rejoin_at.is_some_and(|at| Instant::now() >= at) && joining.is_none() {
                    rejoin_at = None;
                    joining = Some(spawn_join(&mesh));
                }
            }
            _ = &mut ctrl_c => break "you left".to_owned(),
        }
    };
    if let Some(s) = session.take() {
        s.watcher.abort();
    }
    if let Some(j) = joining.take() {
        j.abort();
    }
    mesh.leave().await;
    out.show(&Event::Disconnected { reason });
    Ok(())
}

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn rejoin_delay(attempt: u32) -> Duration {
    Duration::from_secs(1)
        .saturating_mul(1 << attempt.min(5))
        .min(REJOIN_CAP)
}

async fn next_notice(session: &mut Option<Session>) -> RoomNotice {
    match session {
        Some(s) => match s.notices.recv().await {
            Some(notice) => notice,
            None => RoomNotice::Lost(ClientError::ConnectionLost(
                "the mediator link ended".into(),
            )),
        },
        None => std::future::pending().await,
    }
}

async fn wait_joining(joining: &mut Option<Joining>) -> Option<Result<Session, ClientError>> {
    match joining {
        Some(task) => Some(match task.await {
            Ok(result) => result,
            Err(e) => Err(ClientError::Internal(e.into())),
        }),
        None => std::future::pending().await,
    }
}

/// What a join needs, owned, so it can run in its own task.
struct JoinInput {
    server: String,
    room: String,
    code: RoomCode,
    name: String,
    group: Group,
    identity: Identity,
    port: LocalPort,
    no_relay: bool,
    advertise: Option<SocketAddr>,
    connect_timeout: Duration,
    relay_after: Duration,
    no_punch: bool,
}

fn join_input(mesh: &Mesh<'_>) -> JoinInput {
    let r = &mesh.run;
    JoinInput {
        server: r.server.clone(),
        room: r.room.clone(),
        code: r.code.clone(),
        name: r.name.clone(),
        group: r.group,
        identity: r.identity.clone(),
        port: r.port,
        no_relay: r.config.no_relay,
        advertise: r.config.advertise,
        connect_timeout: r.config.connect_timeout,
        relay_after: r.config.relay_after,
        no_punch: r.config.no_punch,
    }
}

fn spawn_join(mesh: &Mesh<'_>) -> Joining {
    let input = join_input(mesh);
    tokio::spawn(async move { join_with(input, None).await })
}

async fn join(mesh: &Mesh<'_>, first: Option<MediatorLink>) -> Result<Session, ClientError> {
    join_with(join_input(mesh), first).await
}

/// Connects to the mediator (or uses `first`), sends `GroupHello` with a fresh
/// CPace key pair, and waits for `GroupJoined`.
async fn join_with(input: JoinInput, first: Option<MediatorLink>) -> Result<Session, ClientError> {
    let link = match first {
        Some(link) => link,
        None => MediatorLink::connect(&input.server, &input.port).await?,
    };
    let keys = KeyPair::generate_cpace(input.group, &input.code, &mut OsRng)
        .map_err(|e| ClientError::Usage(format!("--room: {e}")))?;
    let (listen_port, own_locals) =
        crate::app::advertised_addrs(input.advertise, input.port.addr(), link.local_addr());
    let hello = ClientMsg::GroupHello {
        version: PROTOCOL_VERSION,
        room: input.code.tag().0,
        name: input.name.clone(),
        group: input.group.id(),
        public: keys.public().to_vec(),
        listen_port,
        local_addrs: own_locals.clone(),
        no_relay: input.no_relay,
    };
    let joined = link.join_group(hello, &input.room).await?;
    Ok(Session {
        place: joined.place,
        notices: joined.notices,
        watcher: joined.watcher,
        report: joined.report,
        setup: PairSetup {
            code: input.code,
            name: input.name,
            keys,
            identity: input.identity,
            port: input.port,
            own_locals,
            server: input.server,
            connect_timeout: input.connect_timeout,
            relay_after: input.relay_after,
            no_punch: input.no_punch,
        },
    })
}

impl Mesh<'_> {
    fn our_key(&self) -> [u8; 32] {
        self.run.identity.public().0
    }

    fn joined(&mut self, place: Option<GroupPlace>) {
        let Some(place) = place else { return };
        self.me = place.member;
        self.out.show(&Event::GroupJoined {
            room: self.run.room.clone(),
            member: place.member,
            present: place.present,
            max_members: place.max_members,
        });
        // Our member number changed: everyone gets our new roster.
        self.send_rosters();
    }

    /// Does what the conversation core asked: records on links, events on
    /// the screen, and the links of authors it proved to equivocate closed.
    fn apply(&mut self, fx: Effects) {
        for (to, msg) in fx.sends {
            match to {
                To::Link(serial) => {
                    if let Some(m) = self.members.get(&serial) {
                        m.send(msg);
                    }
                }
                To::AllBut(except) => {
                    for (serial, m) in &self.members {
                        if Some(*serial) != except {
                            m.send(msg.clone());
                        }
                    }
                }
            }
        }
        for event in &fx.events {
            self.out.show(event);
        }
        for author in fx.proven {
            self.refuse(author);
        }
    }

    /// How an author is shown ([`Core::author_name`]).
    fn author_name(&self, author: &[u8; 32]) -> (String, bool) {
        let db = self.run.history.as_ref();
        self.core(|c| c.author_name(author, db))
    }

    fn on_input(&mut self, event: Option<InputEvent>) -> Option<String> {
        let line = match event {
            Some(InputEvent::Line(line)) => line,
            Some(InputEvent::TooLong { limit }) => {
                self.out.show(&Event::Error {
                    code: "too_long".into(),
                    text: format!("that line is over {limit} bytes and was not sent"),
                });
                return None;
            }
            Some(InputEvent::Eof) | None => return Some("you left".into()),
            // Read receipts are for two-party conversations.
            Some(InputEvent::Seen { .. }) => return None,
        };
        match conversation::command(&line) {
            Some(command) => self.on_command(command),
            // The messenger writes text through the shared conversation
            // itself; text that reaches us anyway is written the same way.
            None => {
                self.shared.write_now(&line);
                None
            }
        }
    }

    /// Runs `f` on the conversation core (there from the start of the run).
    fn core<T: Default>(&self, f: impl FnOnce(&mut Core) -> T) -> T {
        self.shared.state().core.as_mut().map(f).unwrap_or_default()
    }

    /// What a write left for us ([`Shared::woken`]): links whose queue was
    /// full are closed at the next tick, and our messages wait at the
    /// mailbox for every member we know who is not linked.
    fn after_say(&mut self) {
        for serial in self.shared.take_stalled() {
            if let Some(m) = self.members.get(&serial) {
                m.stalled.set(true);
            }
        }
        let written = self.shared.take_written();
        self.deposit_for_absent(written);
    }

    /// Leaves `msgs` (our log messages) in the queue of every member we know
    /// who is not linked now.
    fn deposit_for_absent(&mut self, msgs: Vec<PeerMsg>) {
        let Some(mailbox) = &self.mailbox else {
            return;
        };
        let linked: HashSet<[u8; 32]> = self.members.values().map(|m| m.identity.0).collect();
        for member in self.known.iter().filter(|k| !linked.contains(*k)) {
            for msg in &msgs {
                let PeerMsg::Group(m) = msg else { continue };
                mailbox.ask(Job::Deposit {
                    recipient: IdentityKey(*member),
                    seq: Some(m.body.seq),
                    msg: Box::new(msg.clone()),
                });
            }
        }
    }

    /// What the room's mailbox reported.
    fn on_mailbox(&mut self, news: News) {
        match news {
            News::Fetched {
                records,
                ids,
                dropped,
                more,
            } => {
                let db = self.run.history.as_ref();
                let (fx, authors) = self.core(|c| (c.from_mailbox(records, db), c.other_authors()));
                self.known.extend(authors);
                self.apply(fx);
                if let Some(error) = self
                    .mailbox
                    .as_ref()
                    .and_then(|m| m.fetched(ids, dropped, more))
                {
                    self.out.show(&error);
                }
            }
            News::Stored { seq, expires_unix } => {
                if self.stored.insert(seq) {
                    self.out.show(&Event::Stored {
                        id: seq,
                        expires_unix,
                    });
                }
            }
            News::Taken { .. } | News::ReceiptLeft => {}
            News::Failed {
                seq: Some(seq),
                why,
                ..
            } => self.out.show(&Event::Error {
                code: "mailbox".into(),
                text: format!("message #{seq} could not be left at the mailbox ({why})"),
            }),
            News::Failed { seq: None, why, .. } => self.out.show(&Event::Info {
                text: format!(
                    "The mediator's mailbox could not be reached ({why}); members who are linked still get everything."
                ),
            }),
        }
    }

    fn on_command(&mut self, command: &str) -> Option<String> {
        let mut words = command.split_whitespace();
        let verb = words.next().unwrap_or("");
        let rest: Vec<&str> = words.collect();
        match verb {
            "quit" | "exit" => return Some("you left".into()),
            "help" => self.out.show(&Event::Info {
                text: GROUP_HELP.into(),
            }),
            "peers" => {
                if self.members.is_empty() {
                    self.out.show(&Event::Info {
                        text: "No other member is linked with you right now.".into(),
                    });
                }
                let mut linked: Vec<&Member> = self.members.values().collect();
                linked.sort_by_key(|m| m.member);
                for m in linked {
                    self.out.show(&Event::Member {
                        member: m.member,
                        name: m.name.clone(),
                        fingerprint: m.identity.fingerprint().to_string(),
                        addr: m.addr.to_string(),
                        path: m.path.clone(),
                        sas: m.sas.clone(),
                        rtt_ms: m.rtt_ms,
                        verified: m.verified,
                    });
                }
            }
            "verify" => self.verify(&rest),
            "history" => {
                let n = rest.first().and_then(|n| n.parse().ok()).unwrap_or(20u32);
                let db = self.run.history.as_ref();
                let lines = match self
                    .core(|c| Some(c.history(n, db)))
                    .unwrap_or(Ok(Vec::new()))
                {
                    Ok(lines) => lines,
                    Err(e) => {
                        self.out.show(&Event::Error {
                            code: "history".into(),
                            text: e.to_string(),
                        });
                        Vec::new()
                    }
                };
                self.out.show(&Event::History { lines });
            }
            "send" | "accept" | "reject" | "cancel" => self.out.show(&Event::Error {
                code: "not_in_groups".into(),
                text: "file transfer is not available in group rooms (yet): send files in a \
                       two-party room"
                    .into(),
            }),
            other => self.out.show(&Event::Error {
                code: "unknown_command".into(),
                text: format!(
                    "unknown command /{}; /help lists the commands (start a message with // to send a /)",
                    wire::sanitize_for_terminal(other)
                ),
            }),
        }
        None
    }

    /// `/verify [NAME] [yes]`: shows the security code of each link (or of the
    /// named member), and with `yes` marks it compared.
    fn verify(&mut self, config: &[&str]) {
        let (name, yes) = match config {
            [] => (None, false),
            ["yes"] => (None, true),
            [name] => (Some(*name), false),
            [name, "yes", ..] => (Some(*name), true),
            [name, ..] => (Some(*name), false),
        };
        let chosen: Vec<u64> = self
            .members
            .iter()
            .filter(|(_, m)| name.map_or(true, |n| m.name == n))
            .map(|(id, _)| *id)
            .collect();
        if chosen.is_empty() {
            self.out.show(&Event::Error {
                code: "no_such_member".into(),
                text: "no linked member by that name; /peers lists them".into(),
            });
            return;
        }
        if yes && chosen.len() > 1 {
            self.out.show(&Event::Error {
                code: "which_member".into(),
                text: "say whose code you compared: /verify NAME yes".into(),
            });
            return;
        }
        for id in chosen {
            let Some(m) = self.members.get_mut(&id) else {
                continue;
            };
            if yes {
                m.verified = true;
                if let Some(db) = &self.run.history {
                    let _ = db.set_contact_verified(&m.identity, true);
                }
            }
            self.out.show(&Event::Verify {
                sas: m.sas.clone(),
                peer: m.name.clone(),
                verified: m.verified,
            });
        }
    }

    /// A member announced by the mediator: race for a link. One we are linked
    /// with already is announced again after *we* rejoined the mediator (under a
    /// new number, which it is now waiting for): the new link replaces the old.
    fn on_member(&mut self, member: u32, matched: crate::rendezvous::Matched, setup: PairSetup) {
        if member == self.me {
            return;
        }
        self.out.show(&Event::Matched {
            peer: matched.peer_name.clone(),
            role: matched.role.to_string(),
        });
        let task = links::spawn_race(
            setup,
            member,
            matched,
            self.routes.clone(),
            self.paired_tx.clone(),
        );
        if let Some(old) = self.races.insert(member, task) {
            old.abort();
        }
    }

    fn on_member_left(&mut self, member: u32) {
        // A race towards someone who left cannot finish; a live link ends by
        // itself if the member is gone (it may only have lost the mediator).
        if let Some(race) = self.races.remove(&member) {
            race.abort();
        }
    }

    fn on_paired(&mut self, paired: Paired) {
        match paired {
            Paired::Failed {
                member,
                name,
                error,
            } => {
                self.races.remove(&member);
                self.out.show(&Event::Warning {
                    code: "no_link".into(),
                    text: format!(
                        "could not link with {}: {error}",
                        wire::sanitize_for_terminal(&name)
                    ),
                });
            }
            Paired::Linked {
                member,
                matched,
                conn,
            } => {
                self.races.remove(&member);
                let identity = conn.session.peer_identity();
                if self.banned.contains(&identity.0) || identity.0 == self.our_key() {
                    return;
                }
                let name = matched.peer_name.clone();
                let sas = conn.session.sas().to_string();
                let path = conn.path.as_str().to_string();
                let addr = conn.addr;
                let verified = self.remember_contact(&identity, &name, addr, &sas);
                if let Err(e) = records::append_peer(
                    &self.run.config.peers_file,
                    &PeerLine {
                        at: chrono::Utc::now(),
                        peer_name: &name,
                        peer_addr: addr,
                        room: &self.run.room,
                        path: &path,
                        sas: &sas,
                    },
                ) {
                    self.out.show(&Event::Error {
                        code: "peers_file".into(),
                        text: e.to_string(),
                    });
                }
                // The same member came back through the mediator under a new
                // number while its old link lived: the new link replaces it.
                let stale: Vec<u64> = self
                    .members
                    .iter()
                    .filter(|(_, m)| m.identity == identity)
                    .map(|(id, _)| *id)
                    .collect();
                let stale_is_empty = stale.is_empty();
                for id in stale {
                    if let Some(mut old) = self.remove_member(id) {
                        old.link.close(None);
                    }
                }
                // A link the other side replaced may have ended here first.
                let lingered = self.lingering.len();
                self.lingering.retain(|l| l.identity != identity);
                let relinked = !stale_is_empty || self.lingering.len() < lingered;
                self.next_serial += 1;
                let serial = self.next_serial;
                let (link, task) = links::spawn_link(serial, *conn, self.from_links_tx.clone());
                let now = Instant::now();
                let m = Member {
                    member,
                    name: name.clone(),
                    identity,
                    addr,
                    path: path.clone(),
                    sas: sas.clone(),
                    verified,
                    link,
                    stalled: Cell::new(false),
                    task,
                    rtt_ms: None,
                    ping: None,
                    last_heard: now,
                    roster: None,
                };
                self.members.insert(serial, m);
                self.known.insert(identity.0);
                self.shared
                    .link_up(serial, self.members[&serial].link.sender());
                let fx = self.core(|c| c.link_up(serial, identity, &name));
                self.apply(fx);
                if relinked {
                    tracing::debug!(member, "relinked with a member already linked");
                } else {
                    self.out.show(&Event::MemberJoined {
                        member,
                        peer: name,
                        fingerprint: identity.fingerprint().to_string(),
                        addr: addr.to_string(),
                        path,
                        sas,
                        verified,
                    });
                }
                self.send_rosters();
                // Rosters that came before this link can be judged now.
                let ids: Vec<u64> = self.members.keys().copied().collect();
                for id in ids {
                    self.compare_roster(id);
                }
            }
        }
    }

    /// Records the member as a contact; whether the person verified it before.
    /// A member using a verified contact's name under another key is a warning
    /// (`impersonation`), as in a two-party room.
    fn remember_contact(
        &self,
        identity: &IdentityKey,
        name: &str,
        addr: SocketAddr,
        sas: &str,
    ) -> bool {
        let Some(db) = &self.run.history else {
            return false;
        };
        if let Ok(others) = db.verified_others_named(name, identity) {
            if let Some(other) = others.first() {
                self.out.show(&Event::Warning {
                    code: "impersonation".into(),
                    text: format!(
                        "{} uses the name of your verified contact, but with another identity \
                         ({} instead of {}). It may be someone else. Do not trust it until you \
                         compare the security code {sas} over another channel.",
                        wire::sanitize_for_terminal(name),
                        identity.fingerprint(),
                        other.fingerprint,
                    ),
                });
            }
        }
        match db.contact_seen(identity, name, &addr.to_string(), now_ms()) {
            Ok(contact) => contact.verified,
            Err(e) => {
                self.out.show(&Event::Error {
                    code: "history".into(),
                    text: e.to_string(),
                });
                false
            }
        }
    }

    fn roster(&self) -> Roster {
        let mut members = vec![RosterEntry {
            member: self.me,
            identity: self.our_key(),
            name: self.run.name.clone(),
        }];
        let mut linked: Vec<&Member> = self.members.values().collect();
        linked.sort_by_key(|m| m.member);
        members.extend(
            linked
                .into_iter()
                .take(MAX_AUTHORS - 1)
                .map(|m| RosterEntry {
                    member: m.member,
                    identity: m.identity.0,
                    name: m.name.clone(),
                }),
        );
        Roster { members }
    }

    fn send_rosters(&self) {
        let roster = self.roster();
        for m in self.members.values() {
            m.send(PeerMsg::Roster(roster.clone()));
        }
    }

    fn on_link(&mut self, from: FromLink) {
        match from {
            FromLink::Ended(serial, why) => {
                if let Some(m) = self.remove_member(serial) {
                    if self.races.is_empty() {
                        self.out.show(&Event::MemberLeft {
                            member: m.member,
                            peer: m.name,
                            reason: why,
                        });
                    } else {
                        self.lingering.push(Lingering {
                            since: Instant::now(),
                            member: m.member,
                            name: m.name,
                            identity: m.identity,
                            why,
                        });
                    }
                    self.send_rosters();
                }
            }
            FromLink::Msg(serial, msg) => {
                if let Some(m) = self.members.get_mut(&serial) {
                    m.last_heard = Instant::now();
                } else {
                    return;
                }
                if let Err(why) = self.on_peer_msg(serial, msg) {
                    self.expel(serial, &why);
                }
            }
        }
    }

    /// Takes a member off the mesh: its link is gone, and what it brought that
    /// still waits in the log is dropped with it.
    fn remove_member(&mut self, serial: u64) -> Option<Member> {
        self.shared.link_down(serial);
        self.core(|c| c.link_down(serial));
        self.members.remove(&serial)
    }

    /// An author the core proved to have signed two messages with one number
    /// (it said so and forwarded the proof): close its links, and never link
    /// with it again.
    fn refuse(&mut self, author: [u8; 32]) {
        let theirs: Vec<u64> = self
            .members
            .iter()
            .filter(|(_, m)| m.identity.0 == author)
            .map(|(id, _)| *id)
            .collect();
        for id in theirs {
            if let Some(mut m) = self.remove_member(id) {
                m.link.close(Some(
                    "you signed two different messages with one number".into(),
                ));
                self.out.show(&Event::MemberLeft {
                    member: m.member,
                    peer: m.name,
                    reason: "refused: it signed two different messages with one number".into(),
                });
            }
        }
        self.banned.insert(author);
        self.send_rosters();
    }

    /// One message from member `member`'s link; `Err` names what it did wrong.
    fn on_peer_msg(&mut self, serial: u64, msg: PeerMsg) -> Result<(), String> {
        if !self.members.contains_key(&serial) {
            return Ok(());
        }
        match msg {
            log @ (PeerMsg::Group(_)
            | PeerMsg::GroupSummary(_)
            | PeerMsg::GroupCatchup(_)
            | PeerMsg::Equivocation(_)) => {
                let queued = self
                    .members
                    .get(&serial)
                    .map_or(0, |m| m.link.queued_bytes());
                let db = self.run.history.as_ref();
                let fx = self
                    .core(|c| Some(c.on_peer(serial, log, queued, db)))
                    .transpose()?
                    .unwrap_or_default();
                self.apply(fx);
            }
            PeerMsg::Roster(roster) => {
                // A roster names keys and claims names: it is compared with our
                // links (§19.4), but it never names an author on our screen.
                check_roster(&roster)?;
                if let Some(m) = self.member(serial) {
                    m.roster = Some(roster);
                }
                self.compare_roster(serial);
            }
            PeerMsg::Expelled { identity, reason } => {
                let accuser = self
                    .member(serial)
                    .map(|m| m.name.clone())
                    .unwrap_or_default();
                let (name, _) = self.author_name(&identity);
                self.out.show(&Event::Warning {
                    code: "expelled".into(),
                    text: format!(
                        "{} cut off {} ({}): {}",
                        wire::sanitize_for_terminal(&accuser),
                        wire::sanitize_for_terminal(&name),
                        IdentityKey(identity).fingerprint(),
                        wire::sanitize_for_terminal(&reason)
                    ),
                });
            }
            PeerMsg::Ping { nonce } => {
                if let Some(m) = self.member(serial) {
                    m.send(PeerMsg::Pong { nonce });
                }
            }
            // Read receipts are a two-party conversation's (§7.1): a group
            // member has no use for one and ignores it.
            PeerMsg::Read { .. } => {}
            PeerMsg::Pong { nonce } => {
                let Some(m) = self.member(serial) else {
                    return Ok(());
                };
                if let Some((sent, at)) = m.ping {
                    if sent == nonce {
                        m.rtt_ms =
                            Some(u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX));
                        m.ping = None;
                    }
                }
            }
            PeerMsg::Bye { reason } => {
                if let Some(mut m) = self.remove_member(serial) {
                    m.link.close(None);
                    self.out.show(&Event::MemberLeft {
                        member: m.member,
                        peer: m.name,
                        reason: if reason.is_empty() {
                            "left".into()
                        } else {
                            format!("left ({reason})")
                        },
                    });
                    self.send_rosters();
                }
            }
            PeerMsg::FileOffer { id, .. } => {
                let Some(m) = self.member(serial) else {
                    return Ok(());
                };
                m.send(PeerMsg::FileReject { id });
                let name = m.name.clone();
                self.out.show(&Event::Info {
                    text: format!(
                        "{} offered a file; file transfer is not available in group rooms",
                        wire::sanitize_for_terminal(&name)
                    ),
                });
            }
            // Answers to offers we never make, and two-party messages: ignored
            // as the spec says for unknown transfer ids (§7.1), or refused.
            PeerMsg::FileAccept { .. }
            | PeerMsg::FileReject { .. }
            | PeerMsg::FileChunk { .. }
            | PeerMsg::FileDone { .. }
            | PeerMsg::FileCancel { .. } => {}
            PeerMsg::Chat { .. }
            | PeerMsg::Ack { .. }
            | PeerMsg::Admitted
            | PeerMsg::Denied { .. } => {
                return Err("a two-party message in a group room".into());
            }
        }
        Ok(())
    }

    /// Member `member`'s link, if it is still linked.
    fn member(&mut self, serial: u64) -> Option<&mut Member> {
        self.members.get_mut(&serial)
    }

    /// Compares link `from`'s roster with our own links: the same member
    /// number under another identity key means one of the two links is not
    /// with whom the mediator said (§19.4).
    fn compare_roster(&mut self, from: u64) {
        let Some(roster) = self.members.get(&from).and_then(|m| m.roster.clone()) else {
            return;
        };
        let from_name = self.members[&from].name.clone();
        for e in roster.members {
            let ours = if e.member == self.me {
                Some((self.our_key(), self.run.name.clone()))
            } else {
                self.members
                    .values()
                    .find(|m| m.member == e.member)
                    .map(|m| (m.identity.0, m.name.clone()))
            };
            let Some((key, name)) = ours else { continue };
            if key == e.identity || !self.alerted.insert((from, e.member)) {
                continue;
            }
            let text = if e.member == self.me {
                format!(
                    "{} is linked with someone who claims to be you (identity {}): someone \
                     is between you and {}. Compare security codes with /verify.",
                    wire::sanitize_for_terminal(&from_name),
                    IdentityKey(e.identity).fingerprint(),
                    wire::sanitize_for_terminal(&from_name),
                )
            } else {
                format!(
                    "{} sees member {} with identity {}, but your link with {} proved {}: \
                     someone is between you and {}, or between {} and {}. Compare security \
                     codes with /verify.",
                    wire::sanitize_for_terminal(&from_name),
                    wire::sanitize_for_terminal(&name),
                    IdentityKey(e.identity).fingerprint(),
                    wire::sanitize_for_terminal(&name),
                    IdentityKey(key).fingerprint(),
                    wire::sanitize_for_terminal(&name),
                    wire::sanitize_for_terminal(&from_name),
                    wire::sanitize_for_terminal(&name),
                )
            };
            self.out.show(&Event::Warning {
                code: "roster_mismatch".into(),
                text,
            });
        }
    }

    /// Cuts the member of link `serial` off for `why`, and tells the others.
    fn expel(&mut self, serial: u64, why: &str) {
        let Some(mut m) = self.remove_member(serial) else {
            return;
        };
        self.banned.insert(m.identity.0);
        m.link.close(Some(format!("you were cut off: {why}")));
        self.out.show(&Event::Warning {
            code: "bad_member".into(),
            text: format!(
                "{} ({}) sent {why}; disconnected. Nothing it sent that failed the checks was \
                 shown or stored.",
                wire::sanitize_for_terminal(&m.name),
                m.identity.fingerprint()
            ),
        });
        self.out.show(&Event::MemberLeft {
            member: m.member,
            peer: m.name.clone(),
            reason: format!("cut off: {why}"),
        });
        for other in self.members.values() {
            other.send(PeerMsg::Expelled {
                identity: m.identity.0,
                reason: why.to_owned(),
            });
        }
        self.send_rosters();
    }

    /// Members that others are linked with and we are not, for long: the
    /// mediator may hide them from us (or their network keeps us apart).
    fn check_unseen(&mut self, now: Instant) {
        let linked: HashSet<[u8; 32]> = self.members.values().map(|m| m.identity.0).collect();
        // Who lists each key. The name a roster gives it is a claim about a
        // key that proved nothing to us: it is never shown (§19.4).
        let mut listed: HashMap<[u8; 32], String> = HashMap::new();
        for m in self.members.values() {
            for e in m.roster.iter().flat_map(|r| &r.members) {
                // One we refused (cut off, or proven to equivocate) is no news.
                if e.identity != self.our_key()
                    && !linked.contains(&e.identity)
                    && !self.banned.contains(&e.identity)
                {
                    listed.insert(e.identity, m.name.clone());
                }
            }
        }
        self.unseen.retain(|k, _| listed.contains_key(k));
        // Bounded by what the rosters list now (members x roster size).
        self.reported_unseen.retain(|k| listed.contains_key(k));
        for (key, by) in listed {
            let since = *self.unseen.entry(key).or_insert(now);
            if now.duration_since(since) >= HIDDEN_AFTER && self.reported_unseen.insert(key) {
                self.out.show(&Event::Warning {
                    code: "member_unseen".into(),
                    text: format!(
                        "{} is linked with {} (not linked with you), but you have had no link \
                         with it for {} s: the mediator may be keeping it from you, or a network \
                         between you blocks every path.",
                        wire::sanitize_for_terminal(&by),
                        IdentityKey(key).fingerprint(),
                        HIDDEN_AFTER.as_secs()
                    ),
                });
            }
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        self.check_unseen(now);
        let no_races = self.races.is_empty();
        let (gone, waiting): (Vec<Lingering>, Vec<Lingering>) = std::mem::take(&mut self.lingering)
            .into_iter()
            .partition(|l| no_races || now.duration_since(l.since) >= RELINK_GRACE);
        self.lingering = waiting;
        for l in gone {
            self.out.show(&Event::MemberLeft {
                member: l.member,
                peer: l.name,
                reason: l.why,
            });
        }
        let fx = self.core(Core::tick);
        self.apply(fx);
        let mut silent = Vec::new();
        let mut stalled = Vec::new();
        for (id, m) in self.members.iter_mut() {
            if m.stalled.get() {
                stalled.push(*id);
                continue;
            }
            if now.duration_since(m.last_heard) >= SILENT_LIMIT {
                silent.push(*id);
                continue;
            }
            if m.ping
                .map_or(true, |(_, at)| now.duration_since(at) >= PING_EVERY)
            {
                let nonce = rand::random();
                m.ping = Some((nonce, now));
                m.send(PeerMsg::Ping { nonce });
            }
        }
        let gone = silent
            .into_iter()
            .map(|id| (id, format!("silent for {}s", SILENT_LIMIT.as_secs())))
            .chain(stalled.into_iter().map(|id| {
                (
                    id,
                    "it stopped reading what we send (its queue is full)".to_owned(),
                )
            }));
        let gone: Vec<(u64, String)> = gone.collect();
        for (id, reason) in gone {
            if let Some(mut m) = self.remove_member(id) {
                m.link.close(None);
                self.out.show(&Event::MemberLeft {
                    member: m.member,
                    peer: m.name,
                    reason,
                });
            }
        }
    }

    /// Says goodbye on every link (an empty `Bye`: our reason is ours) and waits
    /// briefly for them to flush.
    async fn leave(&mut self) {
        for race in self.races.values() {
            race.abort();
        }
        let mut tasks = Vec::new();
        for (_, mut m) in self.members.drain() {
            m.link.close(Some(String::new()));
            tasks.push(m.task);
        }
        let _ =
            tokio::time::timeout(Duration::from_secs(3), futures::future::join_all(tasks)).await;
    }
}

/// A roster's own checks: a bounded number of entries with valid names.
fn check_roster(roster: &Roster) -> Result<(), String> {
    if roster.members.len() > MAX_AUTHORS {
        return Err(format!("a roster of {} members", roster.members.len()));
    }
    for e in &roster.members {
        wire::validate_name(&e.name).map_err(|e| format!("a roster with a bad name ({e})"))?;
    }
    Ok(())
}
