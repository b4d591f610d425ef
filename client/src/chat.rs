//! The conversation: everything that outlives one connection (the outbox of
//! unacknowledged messages, the duplicate filter, the verified mark, the resume
//! secret) and the loop that runs one connected session on top of it.
//!
//! Delivery is exactly-once across reconnects: every message keeps its id until
//! the peer acks it and is sent again, in order, on the next session; the
//! receiver drops ids it has already shown. The outbox belongs to one peer
//! identity: when a session comes up with another (a token holder's next
//! dialer), what waits for the first is set aside until it comes back.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dhke::{IdentityKey, ResumeSecret};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use wire::peer::MAX_CHAT_TEXT;
use wire::PeerMsg;

use crate::exit::ClientError;
use crate::history::{ChatId, History};
use crate::input::InputEvent;
use crate::peerlink::{LinkError, PeerLink};
use crate::transfer::{Transfers, Update};
use crate::events::{Event, Events, HELP};

/// How often we ping the peer.
const PING_EVERY: Duration = Duration::from_secs(15);
/// Silence after which the peer counts as unreachable.
const PEER_SILENT: Duration = Duration::from_secs(45);
/// Most of our messages awaiting an ack, for all peers together (the ones set
/// aside for an absent peer too); beyond that, typing waits.
pub const MAX_UNACKED: usize = 10_000;
/// After end of input, how long we wait for the last messages to be acked.
const DRAIN_ON_EOF: Duration = Duration::from_secs(5);

/// Who we are talking to on the current session.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub name: String,
    pub addr: SocketAddr,
    pub path: String,
    pub sas: String,
    /// The identity key the peer proved in the handshake (§15).
    pub identity: dhke::IdentityKey,
}

/// How a session ended.
#[derive(Debug)]
pub enum Ending {
    /// We left (/quit, end of input, Ctrl-C).
    Quit,
    /// The peer said goodbye.
    PeerLeft(String),
    /// The link failed in a way a reconnect may heal.
    Lost(ClientError),
}

/// A message of ours the peer has not acknowledged yet.
#[derive(Debug, Clone)]
struct Unacked {
    text: String,
    sent_ms: u64,
}

/// What waits for a peer identity while another one has the conversation.
#[derive(Debug)]
struct SetAside {
    outbox: BTreeMap<u64, Unacked>,
    next_id: u64,
}

/// The history database and the chat row of the current key lineage.
#[derive(Debug)]
struct Store {
    db: History,
    chat: Option<ChatId>,
}

/// State that lives as long as the client runs, across sessions.
#[derive(Debug)]
pub struct Conversation {
    room: String,
    me: String,
    store: Option<Store>,
    transfers: Transfers,
    next_id: u64,
    outbox: BTreeMap<u64, Unacked>,
    /// The identity `outbox` and `next_id` belong to: the first peer of the
    /// run (what was typed before any session is for it), then whoever a
    /// session was last up with.
    owner: Option<IdentityKey>,
    /// Other identities' unacknowledged messages, waiting for their own peer;
    /// only non-empty outboxes are kept, so at most [`MAX_UNACKED`] entries.
    set_aside: HashMap<IdentityKey, SetAside>,
    /// Messages in `set_aside`, counted against [`MAX_UNACKED`].
    set_aside_len: usize,
    /// Highest message id shown from the peer on the current key lineage.
    peer_seen: u64,
    verified: bool,
    previous: Option<ResumeSecret>,
    peer: Option<PeerInfo>,
    rtt: Option<Duration>,
    input_closed: bool,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn link_failure(e: LinkError, peer: &str) -> ClientError {
    let name = wire::sanitize_for_terminal(peer);
    match e {
        LinkError::Integrity => ClientError::Integrity,
        LinkError::Closed => ClientError::ConnectionLost(format!(
            "the connection to {name} closed without a goodbye"
        )),
        LinkError::Protocol(why) => ClientError::ConnectionLost(format!(
            "{name} broke the protocol ({why}); session closed"
        )),
        LinkError::Io(why) => {
            ClientError::ConnectionLost(format!("lost the connection to {name}: {why}"))
        }
        LinkError::RelayEnded(why) => ClientError::RelayEnded(format!(
            "the mediator's relay ended the session with {name}: {why}. There is no direct path \
             between you; ask the mediator's operator about its relay caps, or forward a port \
             (--listen PORT --advertise IP:PORT)."
        )),
    }
}

impl Conversation {
    /// A conversation with no session yet, in `room`, as `me`, recorded in
    /// `history` when it is on.
    pub fn new(
        room: &str,
        me: &str,
        history: Option<History>,
        transfers: Transfers,
    ) -> Conversation {
        Conversation {
            room: room.to_string(),
            me: me.to_string(),
            store: history.map(|db| Store { db, chat: None }),
            transfers,
            next_id: 1,
            outbox: BTreeMap::new(),
            owner: None,
            set_aside: HashMap::new(),
            set_aside_len: 0,
            peer_seen: 0,
            verified: false,
            previous: None,
            peer: None,
            rtt: None,
            input_closed: false,
        }
    }

    /// The previous session's resume secret, to offer on the next handshake.
    pub fn previous(&self) -> Option<ResumeSecret> {
        self.previous.clone()
    }

    /// Whether the person marked the current keys as verified.
    pub fn verified(&self) -> bool {
        self.verified
    }

    /// Whether input has ended (the conversation should end once drained).
    pub fn input_closed(&self) -> bool {
        self.input_closed
    }

    /// Whether typing may continue (the outboxes have room).
    pub fn accepts_input(&self) -> bool {
        self.outbox.len() + self.set_aside_len < MAX_UNACKED && !self.input_closed
    }

    /// Makes `peer` the owner of the outbox: what waits for another identity
    /// is set aside for it, and what was set aside for `peer` comes back. A
    /// new identity starts at id 1: its session cannot resume another's keys,
    /// so the peer counts ids afresh.
    fn hand_outbox_to(&mut self, peer: IdentityKey) {
        let Some(owner) = self.owner.replace(peer) else {
            return;
        };
        if owner == peer {
            return;
        }
        let theirs = self.set_aside.remove(&peer).unwrap_or(SetAside {
            outbox: BTreeMap::new(),
            next_id: 1,
        });
        self.set_aside_len -= theirs.outbox.len();
        let previous = SetAside {
            outbox: std::mem::replace(&mut self.outbox, theirs.outbox),
            next_id: std::mem::replace(&mut self.next_id, theirs.next_id),
        };
        if !previous.outbox.is_empty() {
            self.set_aside_len += previous.outbox.len();
            self.set_aside.insert(owner, previous);
        }
    }

    /// Runs one history write; a failing database is reported once and history
    /// is switched off for the rest of the run, so the chat itself goes on.
    fn persist<T>(
        &mut self,
        out: &Events,
        write: impl FnOnce(&History, ChatId) -> Result<T, ClientError>,
    ) -> Option<T> {
        let store = self.store.as_ref()?;
        let chat = store.chat?;
        match write(&store.db, chat) {
            Ok(value) => Some(value),
            Err(e) => {
                out.show(&Event::Error {
                    code: "history".into(),
                    text: format!("{e}; history is off for the rest of this chat"),
                });
                self.store = None;
                None
            }
        }
    }

    /// Starts a session: records its keys' lineage and the peer as a contact,
    /// and returns whether it counts as verified: the keys resumed a verified
    /// session, or the peer's identity is a verified contact. A session that did
    /// not resume starts a new lineage: the mark is cleared, the peer's ids are
    /// counted afresh, and the history gets a new chat (holding our still-unacked
    /// messages). A peer using the name of a verified contact under another
    /// identity key is a loud warning, and not verified.
    pub fn begin_session(
        &mut self,
        peer: PeerInfo,
        resumed: bool,
        resume: ResumeSecret,
        out: &Events,
    ) -> bool {
        if !resumed {
            self.verified = false;
            self.peer_seen = 0;
        }
        self.hand_outbox_to(peer.identity);
        self.previous = Some(resume);
        self.rtt = None;
        if self.known_contact(&peer, out) {
            self.verified = true;
        }
        let verified = self.verified;
        let continues = resumed && self.store.as_ref().is_some_and(|s| s.chat.is_some());
        if continues {
            self.persist(out, |db, chat| {
                db.update_chat(
                    chat,
                    &peer.addr.to_string(),
                    &peer.path,
                    &peer.sas,
                    verified,
                    true,
                )
            });
        } else if let Some(store) = &mut self.store {
            let opened = (|| {
                if let Some(old) = store.chat.take() {
                    store
                        .db
                        .end_chat(old, now_ms(), "the keys changed; a new chat follows")?;
                }
                let chat = store.db.start_chat(
                    &self.room,
                    &peer.name,
                    &peer.identity.to_hex(),
                    &peer.addr.to_string(),
                    &peer.path,
                    &peer.sas,
                    now_ms(),
                )?;
                for (&id, msg) in &self.outbox {
                    store
                        .db
                        .record_outgoing(chat, id, &self.me, &msg.text, msg.sent_ms)?;
                }
                store.chat = Some(chat);
                Ok::<(), ClientError>(())
            })();
            if let Err(e) = opened {
                out.show(&Event::Error {
                    code: "history".into(),
                    text: format!("{e}; history is off for the rest of this chat"),
                });
                self.store = None;
            }
        }
        self.peer = Some(peer);
        verified
    }

    /// Records `peer` as a contact; true if it is a verified one. Warns when a
    /// verified contact used this name under another key.
    fn known_contact(&mut self, peer: &PeerInfo, out: &Events) -> bool {
        let Some(store) = &self.store else {
            return false;
        };
        let checked = (|| {
            let others = store.db.verified_others_named(&peer.name, &peer.identity)?;
            let contact = store.db.contact_seen(
                &peer.identity,
                &peer.name,
                &peer.addr.to_string(),
                now_ms(),
            )?;
            Ok::<_, ClientError>((others, contact))
        })();
        match checked {
            Ok((others, contact)) => {
                if let Some(other) = others.first() {
                    out.show(&Event::Warning {
                        code: "impersonation".into(),
                        text: format!(
                            "{} uses the name of your verified contact, but with another identity \
                             ({} instead of {}). It may be someone else. Do not trust it until \
                             you compare the security code {} over another channel.",
                            wire::sanitize_for_terminal(&peer.name),
                            peer.identity.fingerprint(),
                            other.fingerprint,
                            peer.sas
                        ),
                    });
                    return false;
                }
                contact.verified
            }
            Err(e) => {
                out.show(&Event::Error {
                    code: "history".into(),
                    text: format!("{e}; contacts and history are off for the rest of this chat"),
                });
                self.store = None;
                false
            }
        }
    }

    /// Whether a token holder lets `key` in without asking (§16.3): a verified
    /// contact, or one the person let in through a token before. Any other
    /// contact (met once with a room code, linked in a group) is asked.
    pub fn admits_without_asking(&self, key: &dhke::IdentityKey) -> bool {
        self.store.as_ref().is_some_and(
            |s| matches!(s.db.contact_by_key(key), Ok(Some(c)) if c.verified || c.token_admitted),
        )
    }

    /// Records that the person let `key` in through our token (after
    /// [`Conversation::begin_session`] made it a contact).
    pub fn remember_token_admission(&mut self, key: &dhke::IdentityKey, out: &Events) {
        let key = *key;
        if let Some(store) = &self.store {
            if let Err(e) = store.db.set_contact_token_admitted(&key) {
                out.show(&Event::Error {
                    code: "history".into(),
                    text: format!("{e}; contacts and history are off for the rest of this chat"),
                });
                self.store = None;
            }
        }
    }

    /// Records how the conversation ended.
    pub fn finish(&mut self, reason: &str, out: &Events) {
        self.persist(out, |db, chat| db.end_chat(chat, now_ms(), reason));
    }

    /// Forgets the session (the link is gone); the outbox stays.
    pub fn end_session(&mut self) {
        self.peer = None;
    }

    /// Sends everything still unacknowledged, oldest first, on a fresh link.
    pub fn flush_outbox(&self, link: &PeerLink, peer: &str) -> Result<(), ClientError> {
        for (&id, msg) in &self.outbox {
            link.send(PeerMsg::Chat {
                id,
                sent_at_ms: msg.sent_ms,
                text: msg.text.clone(),
            })
            .map_err(|e| link_failure(e, peer))?;
        }
        Ok(())
    }

    /// Handles one input event, connected (`link` is set) or not. Returns
    /// `Some(Ending::Quit)` when the person leaves.
    pub fn on_input(
        &mut self,
        event: Option<InputEvent>,
        link: Option<&PeerLink>,
        out: &Events,
    ) -> Option<Ending> {
        match event {
            Some(InputEvent::Line(line)) => self.on_line(&line, link, out),
            Some(InputEvent::TooLong { limit }) => {
                out.show(&Event::Error {
                    code: "too_long".into(),
                    text: format!("that line is over {limit} bytes and was not sent"),
                });
                None
            }
            Some(InputEvent::Eof) | None => {
                // End of input means: deliver what was typed, then leave.
                self.input_closed = true;
                self.outbox.is_empty().then_some(Ending::Quit)
            }
        }
    }

    fn on_line(&mut self, line: &str, link: Option<&PeerLink>, out: &Events) -> Option<Ending> {
        let text = if let Some(escaped) = line.strip_prefix("//") {
            format!("/{escaped}")
        } else if let Some(command) = line.strip_prefix('/') {
            return self.on_command(command.trim(), link, out);
        } else {
            line.to_string()
        };
        if text.is_empty() {
            return None;
        }
        if text.len() > MAX_CHAT_TEXT {
            out.show(&Event::Error {
                code: "too_long".into(),
                text: format!("messages are limited to {MAX_CHAT_TEXT} bytes; not sent"),
            });
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        let sent_ms = now_ms();
        // On disk before it is shown as sent.
        let me = self.me.clone();
        self.persist(out, |db, chat| {
            db.record_outgoing(chat, id, &me, &text, sent_ms)
        });
        self.outbox.insert(
            id,
            Unacked {
                text: text.clone(),
                sent_ms,
            },
        );
        // A failed send leaves the message in the outbox; the link's reader
        // reports the failure and the next session sends it again.
        let on_wire = link
            .map(|l| {
                l.send(PeerMsg::Chat {
                    id,
                    sent_at_ms: sent_ms,
                    text: text.clone(),
                })
                .is_ok()
            })
            .unwrap_or(false);
        out.show(&Event::Sent {
            id,
            text,
            pending: !on_wire,
        });
        None
    }

    fn on_command(
        &mut self,
        command: &str,
        link: Option<&PeerLink>,
        out: &Events,
    ) -> Option<Ending> {
        let (name, rest) = command
            .split_once(char::is_whitespace)
            .unwrap_or((command, ""));
        let arg = rest.split_whitespace().next();
        let transfer_id = || {
            let parsed = arg.and_then(|a| a.parse::<u64>().ok());
            if parsed.is_none() {
                out.show(&Event::Error {
                    code: "usage".into(),
                    text: format!("usage: /{name} ID, with the transfer's number"),
                });
            }
            parsed
        };
        match name {
            "send" => self.transfers.send(rest, link, out),
            "accept" => {
                if let Some(id) = transfer_id() {
                    self.transfers.accept(id, link, out);
                }
            }
            "reject" => {
                if let Some(id) = transfer_id() {
                    self.transfers.reject(id, link, out);
                }
            }
            "cancel" => {
                if let Some(id) = transfer_id() {
                    self.transfers.cancel(id, link, out);
                }
            }
            "quit" | "exit" => return Some(Ending::Quit),
            "help" => out.show(&Event::Info { text: HELP.into() }),
            "peers" => match &self.peer {
                Some(peer) => out.show(&Event::Peer {
                    name: peer.name.clone(),
                    addr: peer.addr.to_string(),
                    path: peer.path.clone(),
                    sas: peer.sas.clone(),
                    rtt_ms: self.rtt.map(millis),
                }),
                None => out.show(&Event::Info {
                    text: "Not connected right now; messages you type are kept and sent on reconnect.".into(),
                }),
            },
            "verify" => match self.peer.clone() {
                Some(peer) => {
                    if matches!(arg, Some("yes" | "ok" | "y")) {
                        self.verified = true;
                        self.persist(out, |db, chat| db.set_verified(chat, true));
                        let key = peer.identity;
                        self.persist(out, |db, _| db.set_contact_verified(&key, true));
                    }
                    out.show(&Event::Verify {
                        sas: peer.sas,
                        peer: peer.name,
                        verified: self.verified,
                    });
                }
                None => out.show(&Event::Info {
                    text: "Not connected; the security code is shown once the session is up.".into(),
                }),
            },
            "history" => {
                let n = match arg.map(str::parse::<u32>) {
                    None => 20,
                    Some(Ok(n)) => n.min(10_000),
                    Some(Err(_)) => {
                        out.show(&Event::Error {
                            code: "usage".into(),
                            text: "usage: /history [N], N a number of messages".into(),
                        });
                        return None;
                    }
                };
                if self.store.is_none() {
                    out.show(&Event::Info {
                        text: "History is off (--no-history, or the database failed).".into(),
                    });
                } else if let Some(lines) = self.persist(out, |db, chat| db.recent(chat, n)) {
                    out.show(&Event::History { lines });
                } else {
                    out.show(&Event::History { lines: Vec::new() });
                }
            }
            other => out.show(&Event::Error {
                code: "unknown_command".into(),
                text: format!(
                    "unknown command /{}; /help lists the commands (start a message with // to send a /)",
                    wire::sanitize_for_terminal(other)
                ),
            }),
        }
        None
    }

    async fn on_peer(
        &mut self,
        msg: PeerMsg,
        link: &PeerLink,
        peer: &str,
        out: &Events,
    ) -> Result<Option<Ending>, ClientError> {
        match msg {
            PeerMsg::Chat {
                id,
                sent_at_ms,
                text,
            } => {
                link.send(PeerMsg::Ack { id })
                    .map_err(|e| link_failure(e, peer))?;
                if id > self.peer_seen {
                    self.peer_seen = id;
                    // On disk before it is shown.
                    self.persist(out, |db, chat| {
                        db.record_incoming(chat, id, peer, &text, sent_at_ms, now_ms())
                    });
                    out.show(&Event::Message {
                        from: peer.to_string(),
                        text,
                        id,
                        sent_at_ms,
                    });
                }
            }
            PeerMsg::Ack { id } => {
                if self.outbox.remove(&id).is_some() {
                    self.persist(out, |db, chat| db.mark_acked(chat, id));
                    out.show(&Event::Ack { id });
                }
            }
            PeerMsg::Ping { nonce } => {
                link.send(PeerMsg::Pong { nonce })
                    .map_err(|e| link_failure(e, peer))?;
            }
            // Admission is settled before the chat starts (token runs); a late
            // one changes nothing.
            PeerMsg::Pong { .. } | PeerMsg::Admitted | PeerMsg::Denied { .. } => {}
            // Group traffic on a two-party link: the peer broke the protocol.
            PeerMsg::Group(_)
            | PeerMsg::GroupSummary(_)
            | PeerMsg::GroupCatchup(_)
            | PeerMsg::Roster(_)
            | PeerMsg::Expelled { .. }
            | PeerMsg::Equivocation(_) => {
                return Err(link_failure(
                    LinkError::Protocol("a group message in a two-party room".into()),
                    peer,
                ));
            }
            PeerMsg::Bye { reason } => {
                let reason = format!(
                    "{peer} left ({})",
                    if reason.is_empty() {
                        "no reason given"
                    } else {
                        &reason
                    }
                );
                out.show(&Event::Disconnected {
                    reason: reason.clone(),
                });
                return Ok(Some(Ending::PeerLeft(reason)));
            }
            file @ (PeerMsg::FileOffer { .. }
            | PeerMsg::FileAccept { .. }
            | PeerMsg::FileReject { .. }
            | PeerMsg::FileChunk { .. }
            | PeerMsg::FileDone { .. }
            | PeerMsg::FileCancel { .. }) => {
                self.transfers
                    .on_peer(file, link, peer, out)
                    .await
                    .map_err(|e| link_failure(e, peer))?;
            }
        }
        Ok(None)
    }
}

/// Runs one connected session until someone leaves or the link fails. Input
/// typed meanwhile goes through `convo`, so nothing is lost when the link drops.
pub async fn run(
    mut link: PeerLink,
    convo: &mut Conversation,
    out: &Events,
    input: &mut mpsc::Receiver<InputEvent>,
    updates: &mut mpsc::UnboundedReceiver<Update>,
) -> Ending {
    let peer = match &convo.peer {
        Some(p) => p.name.clone(),
        None => String::from("peer"),
    };
    if let Err(e) = convo.flush_outbox(&link, &peer) {
        link.close(None).await;
        return Ending::Lost(e);
    }
    convo.transfers.on_connected(&link, &peer);
    let mut ping: Option<(u64, Instant)> = None;
    let mut ping_nonce = 0u64;
    let mut last_heard = Instant::now();
    let mut drain_deadline: Option<Instant> = None;
    let mut ticker = tokio::time::interval(PING_EVERY);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut progress = tokio::time::interval(crate::files::PROGRESS_EVERY);
    progress.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);

    let ending = loop {
        if convo.input_closed && drain_deadline.is_none() {
            if convo.outbox.is_empty() {
                break Ending::Quit;
            }
            drain_deadline = Some(Instant::now() + DRAIN_ON_EOF);
        }
        let drain_at = drain_deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            event = input.recv(), if convo.accepts_input() => {
                if let Some(ending) = convo.on_input(event, Some(&link), out) {
                    break ending;
                }
            }
            incoming = link.recv() => match incoming {
                Some(Ok(PeerMsg::Pong { nonce })) => {
                    last_heard = Instant::now();
                    if let Some((sent, at)) = ping {
                        if sent == nonce {
                            let rtt = at.elapsed();
                            convo.rtt = Some(rtt);
                            ping = None;
                            out.show(&Event::Rtt { rtt_ms: millis(rtt) });
                        }
                    }
                }
                Some(Ok(msg)) => {
                    last_heard = Instant::now();
                    match convo.on_peer(msg, &link, &peer, out).await {
                        Ok(Some(ending)) => break ending,
                        Ok(None) => {
                            if convo.input_closed && convo.outbox.is_empty() {
                                break Ending::Quit;
                            }
                        }
                        Err(e) => break Ending::Lost(e),
                    }
                }
                Some(Err(e)) => break Ending::Lost(link_failure(e, &peer)),
                None => break Ending::Lost(link_failure(LinkError::Closed, &peer)),
            },
            Some(update) = updates.recv() => convo.transfers.on_update(update, Some(&link), out),
            _ = progress.tick(), if convo.transfers.sending() => convo.transfers.poll_progress(out),
            _ = ticker.tick() => {
                if last_heard.elapsed() > PEER_SILENT {
                    break Ending::Lost(ClientError::ConnectionLost(format!(
                        "{} has been silent for {} s and counts as unreachable",
                        wire::sanitize_for_terminal(&peer),
                        PEER_SILENT.as_secs()
                    )));
                }
                ping_nonce += 1;
                ping = Some((ping_nonce, Instant::now()));
                if let Err(e) = link.send(PeerMsg::Ping { nonce: ping_nonce }) {
                    break Ending::Lost(link_failure(e, &peer));
                }
            }
            () = tokio::time::sleep_until(drain_at), if drain_deadline.is_some() => break Ending::Quit,
            _ = &mut ctrl_c => break Ending::Quit,
        }
    };
    match &ending {
        Ending::Quit => link.close(Some("quit".into())).await,
        Ending::PeerLeft(_) | Ending::Lost(_) => link.close(None).await,
    }
    convo.end_session();
    ending
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conversation() -> Conversation {
        let (transfers, _updates) = Transfers::new(std::env::temp_dir(), false);
        Conversation::new("token", "alice", None, transfers)
    }

    fn key(seed: u8) -> IdentityKey {
        dhke::Identity::from_seed(&[seed; 32]).public()
    }

    /// What `on_line` does to the outbox, without a screen.
    fn typed(c: &mut Conversation, text: &str) {
        let id = c.next_id;
        c.next_id += 1;
        c.outbox.insert(
            id,
            Unacked {
                text: text.into(),
                sent_ms: 0,
            },
        );
    }

    fn waiting(c: &Conversation) -> Vec<(u64, &str)> {
        c.outbox
            .iter()
            .map(|(&id, m)| (id, m.text.as_str()))
            .collect()
    }

    #[test]
    fn what_waits_for_one_identity_goes_to_it_and_never_to_the_next() {
        let (bob, carol) = (key(2), key(3));
        let mut c = conversation();
        typed(&mut c, "before anyone came");
        c.hand_outbox_to(bob);
        assert_eq!(waiting(&c), [(1, "before anyone came")]);
        typed(&mut c, "for bob");
        // Bob is gone; carol's session starts with nothing of bob's.
        c.hand_outbox_to(carol);
        assert!(waiting(&c).is_empty(), "{:?}", waiting(&c));
        assert_eq!(c.set_aside_len, 2);
        typed(&mut c, "for carol");
        assert_eq!(waiting(&c), [(1, "for carol")]);
        // Bob is back: his messages, with their ids, and the count goes on.
        c.hand_outbox_to(bob);
        assert_eq!(waiting(&c), [(1, "before anyone came"), (2, "for bob")]);
        typed(&mut c, "welcome back");
        assert_eq!(c.outbox.keys().last(), Some(&3));
        assert_eq!(c.set_aside_len, 1, "carol's one message waits for her");
        // Acked away, bob's outbox is not kept when carol comes back.
        c.outbox.clear();
        c.hand_outbox_to(carol);
        assert_eq!(waiting(&c), [(1, "for carol")]);
        assert!(c.set_aside.is_empty());
        assert_eq!(c.set_aside_len, 0);
    }

    #[test]
    fn messages_set_aside_count_against_the_unacked_cap() {
        let mut c = conversation();
        c.hand_outbox_to(key(2));
        for _ in 0..MAX_UNACKED - 1 {
            typed(&mut c, "x");
        }
        c.hand_outbox_to(key(3));
        assert!(c.accepts_input());
        typed(&mut c, "y");
        assert!(!c.accepts_input(), "the cap is for all peers together");
    }
}
