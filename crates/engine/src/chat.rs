//! The two-party conversation: everything that outlives one connection (the
//! conversation core, the verified mark, the resume secret, transfers) and the
//! loop that runs one connected session on top of it.
//!
//! Delivery, catch-up, history and receipts are the one conversation model of
//! [`crate::conversation`] (a two-party chat is a conversation of two): every
//! message is a signed log message bound to the conversation id, and each new
//! session (after a cut, a resume, or a restart of either side) starts with a
//! summary swap, so whatever was missed comes once, in order. The id comes from
//! the room code, the contact pair secret (`--to`), or for a token the token
//! secret and the two identities, so a token holder's dialers each have their
//! own conversation: what was written to one never reaches another.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use dhke::{Identity, IdentityKey, ResumeSecret, RoomCode};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use wire::PeerMsg;

use crate::conversation::{self, Core, Effects, Kind, Shared, To};
use crate::error::ClientError;
use crate::events::InputEvent;
use crate::events::{Event, Events, HELP};
use crate::history::now_ms;
use crate::history::{ChatId, History};
use crate::mailbox::{self, Job, Mailbox, News};
use crate::peerlink::{LinkError, PeerLink};
use crate::transfer::{Transfers, Update};

/// How long the mailbox keeps an item when no mediator said otherwise
/// (docs/protocol.md §22.3: the default `--mailbox-ttl`).
const MAILBOX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// How often we ping the peer.
const PING_EVERY: Duration = Duration::from_secs(15);
/// Silence after which the peer counts as unreachable.
const PEER_SILENT: Duration = Duration::from_secs(45);
/// After end of input, how long we wait for the last messages to be acked.
const DRAIN_ON_EOF: Duration = Duration::from_secs(5);
/// Conversations of other token dialers a holder keeps while another one has
/// the session (the oldest beyond this is dropped; its history stays stored).
const MAX_ASIDE: usize = 16;

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

/// Where the conversation id comes from (docs/protocol.md §7.1).
#[derive(Clone)]
pub enum ConversationId {
    /// Known from the start: a room code's, a contact pair's (`--to`), or a
    /// dialer's token pair (the token names the holder's identity).
    Fixed([u8; 32]),
    /// A token holder's: the token's room secret (the password of every
    /// dialer's handshake; wiped on drop, never printed) and each dialer's
    /// identity.
    TokenPair(zeroize::Zeroizing<[u8; 32]>),
}

impl std::fmt::Debug for ConversationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConversationId::Fixed(id) => f.debug_tuple("Fixed").field(&hex::encode(id)).finish(),
            ConversationId::TokenPair(_) => f.write_str("TokenPair(<redacted>)"),
        }
    }
}

/// Leaves out the room code (the password of the key exchange) and the rest.
impl std::fmt::Debug for Conversation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conversation")
            .field("me", &self.me)
            .field("ids", &self.ids)
            .field("serial", &self.serial)
            .field("verified", &self.verified)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// The conversation id of a token pair: the token's room secret and both
/// identities, through [`dhke::token_pair_secret`] and the code's id.
pub fn token_pair_id(room_secret: &[u8; 32], a: &IdentityKey, b: &IdentityKey) -> [u8; 32] {
    let pair = dhke::token_pair_secret(room_secret, &a.0, &b.0);
    RoomCode::from_secret("token", &pair).conversation()
}

/// The history database and the chat row of the current conversation.
#[derive(Debug)]
struct Store {
    db: History,
    /// The chat row this run writes to, and the conversation it is of.
    chat: Option<([u8; 32], ChatId)>,
}

/// State that lives as long as the client runs, across sessions.
pub struct Conversation {
    room: String,
    me: String,
    identity: Identity,
    ids: ConversationId,
    store: Option<Store>,
    transfers: Transfers,
    /// The conversation of the current (or last) peer, shared with the
    /// messenger that writes typed text through it; no core for a token
    /// holder before its first dialer (what is typed then waits in its drafts
    /// for the first dialer's conversation).
    shared: Shared,
    /// A token holder's conversations with other dialers, by id.
    aside: HashMap<[u8; 32], Core>,
    /// The link serial of the current session.
    serial: u64,
    verified: bool,
    previous: Option<ResumeSecret>,
    peer: Option<PeerInfo>,
    rtt: Option<Duration>,
    input_closed: bool,
    /// The mediator's mailbox for this conversation (docs/protocol.md §22),
    /// with what it reports; none without a mediator or before the
    /// conversation id is known.
    mailbox: Option<Mailbox>,
    /// Who our deposits are for: the peer.
    recipient: Option<IdentityKey>,
    /// Our messages the mailbox holds for the peer.
    stored: std::collections::BTreeSet<u64>,
    /// Our messages on their way to the mailbox (asked, not answered yet).
    depositing: std::collections::BTreeSet<u64>,
    /// Our receipts on their way to the peer's queue.
    receipts_out: usize,
    /// Read receipts (`--read-receipts`): sent and shown only when allowed.
    read_receipts: bool,
    /// The peer's highest message seq shown here, the highest we told it we
    /// read, and the highest of ours it said it read.
    peer_shown: u64,
    read_sent: u64,
    read_shown: u64,
    /// How long the mediator keeps an item (learned from its answers).
    mailbox_ttl: Duration,
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

/// Shows a step's events and sends its records on `link` (the one link of a
/// two-party session; none while offline: the next session's catch-up brings
/// them). Returns an error when a send failed or the peer was proven to
/// equivocate.
fn apply(
    fx: Effects,
    link: Option<&PeerLink>,
    peer: Option<&PeerInfo>,
    out: &Events,
) -> Result<(), ClientError> {
    for event in &fx.events {
        out.show(event);
    }
    let name = peer.map_or("peer", |p| p.name.as_str());
    if let Some(link) = link {
        for (to, msg) in fx.sends {
            // One link: `To::Link` names it, `To::AllBut(None)` is it, and a
            // proof is never sent back to the link that brought it.
            if matches!(to, To::AllBut(Some(_))) {
                continue;
            }
            link.send(msg).map_err(|e| link_failure(e, name))?;
        }
    }
    if let Some(p) = peer {
        if fx.proven.contains(&p.identity.0) {
            return Err(ClientError::ConnectionLost(format!(
                "{} signed two different messages with one number; it is refused from now on",
                wire::sanitize_for_terminal(&p.name)
            )));
        }
    }
    Ok(())
}

impl Conversation {
    /// A conversation with no session yet, in `room`, as `me` (`identity`),
    /// recorded in `history` when it is on. A conversation whose id is known
    /// now is restored from the history at once (shown on `out`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        room: &str,
        me: &str,
        identity: Identity,
        ids: ConversationId,
        history: Option<History>,
        transfers: Transfers,
        shared: Shared,
        out: &Events,
    ) -> Result<Conversation, ClientError> {
        shared.set_store(history.clone());
        let convo = Conversation {
            room: room.to_string(),
            me: me.to_string(),
            identity,
            ids: ids.clone(),
            store: history.map(|db| Store { db, chat: None }),
            transfers,
            shared,
            aside: HashMap::new(),
            serial: 0,
            verified: false,
            previous: None,
            peer: None,
            rtt: None,
            input_closed: false,
            mailbox: None,
            recipient: None,
            stored: Default::default(),
            depositing: Default::default(),
            receipts_out: 0,
            read_receipts: false,
            peer_shown: 0,
            read_sent: 0,
            read_shown: 0,
            mailbox_ttl: MAILBOX_TTL,
        };
        if let ConversationId::Fixed(id) = ids {
            let (core, fx) = convo.open_core(id)?;
            apply(fx, None, None, out)?;
            convo.shared.state().core = Some(core);
        }
        convo.shared.set_ready();
        Ok(convo)
    }

    fn db(&self) -> Option<&History> {
        self.store.as_ref().map(|s| &s.db)
    }

    /// Opens conversation `id`, restored from the history.
    fn open_core(&self, id: [u8; 32]) -> Result<(Core, Effects), ClientError> {
        Core::open(
            id,
            Kind::Pair,
            self.identity.clone(),
            &self.me,
            &self.room,
            self.db(),
        )
    }

    /// The conversation a session with `peer` belongs to: the current one, one
    /// set aside, or a new one (restored from the history); what was typed
    /// before any conversation was known goes to it.
    fn switch_to(&mut self, peer: &PeerInfo, out: &Events) -> Result<(), ClientError> {
        let id = match &self.ids {
            ConversationId::Fixed(id) => *id,
            ConversationId::TokenPair(secret) => {
                token_pair_id(secret, &self.identity.public(), &peer.identity)
            }
        };
        let current = self.shared.state().core.take();
        if current.as_ref().is_some_and(|c| c.conversation() == id) {
            self.shared.state().core = current;
            return Ok(());
        }
        if let Some(old) = current {
            if self.aside.len() >= MAX_ASIDE {
                if let Some(k) = self.aside.keys().next().copied() {
                    self.aside.remove(&k);
                }
            }
            self.aside.insert(old.conversation(), old);
        }
        let mut core = match self.aside.remove(&id) {
            Some(core) => core,
            None => {
                let (core, fx) = self.open_core(id)?;
                apply(fx, None, None, out)?;
                core
            }
        };
        let drafts = std::mem::take(&mut self.shared.state().drafts);
        for text in drafts {
            let fx = core.write(text, false, self.db());
            apply(fx, None, None, out)?;
        }
        self.shared.state().core = Some(core);
        Ok(())
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

    /// Whether all our messages are held by the peer or left at its mailbox
    /// (nothing left to deliver from here).
    pub fn drained(&self) -> bool {
        let state = self.shared.state();
        self.receipts_out == 0
            && state.drafts.is_empty()
            && state.core.as_ref().map_or(true, |c| {
                c.unacked_seqs().all(|seq| self.stored.contains(&seq))
            })
    }

    /// Starts the mailbox of this conversation at `server` (docs/protocol.md
    /// §22): our queue is opened and emptied, and our messages the peer does
    /// not hold yet are left in its queue. `peer` is the identity the peer
    /// must prove, when known before meeting (`--to`, a token). Token holders
    /// have no mailbox (their dialers' conversations come and go).
    pub fn start_mailbox(&mut self, server: &str, peer: Option<IdentityKey>, out: &Events) {
        let known = self
            .shared
            .state()
            .core
            .as_ref()
            .map(|core| (core.conversation(), core.other_authors()));
        let (Some((id, authors)), ConversationId::Fixed(_), None) =
            (known, &self.ids, &self.mailbox)
        else {
            return;
        };
        self.recipient = peer.or(match authors.as_slice() {
            [one] => Some(IdentityKey(*one)),
            _ => None,
        });
        self.mailbox = Some(Mailbox::start(server.to_owned(), id, self.identity.clone()));
        self.deposit_unacked(out);
    }

    /// Allows read receipts both ways (docs/protocol.md §7.1).
    pub fn allow_read_receipts(&mut self, allow: bool) {
        self.read_receipts = allow;
    }

    /// Remembers the peer's highest message a step shows.
    fn note_shown(&mut self, fx: &Effects) {
        for event in &fx.events {
            if let Event::Message { id, .. } = event {
                self.peer_shown = self.peer_shown.max(*id);
            }
        }
    }

    /// The next thing the mailbox reports; never without a mailbox.
    pub async fn mailbox_news(&mut self) -> Option<News> {
        mailbox::news(&mut self.mailbox).await
    }

    /// Leaves our messages the peer does not hold in its queue, but those
    /// older than the mailbox keeps anything: shown as expired, undelivered.
    pub fn deposit_unacked(&mut self, out: &Events) {
        let state = self.shared.state();
        let (Some(core), Some(mailbox), Some(recipient)) =
            (&state.core, &self.mailbox, self.recipient)
        else {
            return;
        };
        let oldest = now_ms()
            .saturating_sub(u64::try_from(self.mailbox_ttl.as_millis()).unwrap_or(u64::MAX));
        for msg in core.unacked_own() {
            let seq = msg.body.seq;
            if self.stored.contains(&seq) || self.depositing.contains(&seq) {
                continue;
            }
            if msg.body.sent_at_ms < oldest {
                out.show(&Event::Expired { id: seq });
                self.stored.insert(seq);
                continue;
            }
            if mailbox.ask(Job::Deposit {
                recipient,
                seq: Some(seq),
                msg: Box::new(PeerMsg::Group(msg)),
            }) {
                self.depositing.insert(seq);
            }
        }
    }

    /// What the mailbox reported: fetched records go through the log (then
    /// are removed; the log's receipt goes back to the peer's queue), our
    /// messages are marked stored, failures shown.
    pub fn on_mailbox(&mut self, news: News, link: Option<&PeerLink>, out: &Events) {
        match news {
            News::Fetched {
                records,
                ids,
                dropped,
                more,
            } => {
                let fetched = self
                    .shared
                    .state()
                    .core
                    .as_mut()
                    .map(|core| core.from_mailbox(records, self.store.as_ref().map(|s| &s.db)));
                if let Some(mut fx) = fetched {
                    self.note_shown(&fx);
                    let receipts: Vec<PeerMsg> = fx
                        .sends
                        .iter()
                        .filter(|(to, msg)| {
                            *to == To::Link(conversation::MAILBOX)
                                && matches!(msg, PeerMsg::GroupCatchup(_))
                        })
                        .map(|(_, msg)| msg.clone())
                        .collect();
                    fx.sends
                        .retain(|(to, _)| *to != To::Link(conversation::MAILBOX));
                    let _ = apply(fx, link, self.peer.as_ref(), out);
                    if let (Some(mailbox), Some(recipient)) = (&self.mailbox, self.recipient) {
                        // One receipt says all: the last.
                        if let Some(msg) = receipts.into_iter().last() {
                            if mailbox.ask(Job::Deposit {
                                recipient,
                                seq: None,
                                msg: Box::new(msg),
                            }) {
                                self.receipts_out += 1;
                            }
                        }
                    }
                }
                if let Some(error) = self
                    .mailbox
                    .as_ref()
                    .and_then(|m| m.fetched(ids, dropped, more))
                {
                    out.show(&error);
                }
            }
            News::Stored { seq, expires_unix } => {
                let now = now_ms() / 1000;
                if expires_unix > now {
                    self.mailbox_ttl = Duration::from_secs(expires_unix - now);
                }
                self.depositing.remove(&seq);
                self.stored.insert(seq);
                let acked = self
                    .shared
                    .state()
                    .core
                    .as_ref()
                    .is_some_and(|c| !c.unacked_seqs().contains(&seq));
                if !acked {
                    out.show(&Event::Stored {
                        id: seq,
                        expires_unix,
                    });
                }
            }
            News::Taken { seq } => {
                self.depositing.remove(&seq);
                self.stored.insert(seq);
            }
            News::ReceiptLeft => self.receipts_out = self.receipts_out.saturating_sub(1),
            News::Failed {
                seq: Some(seq),
                why,
                ..
            } => {
                self.depositing.remove(&seq);
                out.show(&Event::Error {
                    code: "mailbox".into(),
                    text: format!(
                        "message #{seq} could not be left at the mailbox ({why}); it goes when the other side is online"
                    ),
                })
            }
            News::Failed {
                seq: None,
                receipt,
                why,
            } => {
                if receipt {
                    self.receipts_out = self.receipts_out.saturating_sub(1);
                }
                // Nothing of ours is lost: the mailbox is checked again at
                // the next session, and our messages go by the link.
                out.show(&Event::Info {
                    text: format!(
                        "The mediator's mailbox could not be reached ({why}); it is tried again at the next connection."
                    ),
                })
            }
        }
    }

    /// Whether typing may continue ([`conversation::MAX_UNACKED`]).
    pub fn accepts_input(&self) -> bool {
        self.shared.state().accepts() && !self.input_closed
    }

    /// Runs one history write; a failing database is reported once and history
    /// is switched off for the rest of the run, so the chat itself goes on.
    fn persist<T>(
        &mut self,
        out: &Events,
        write: impl FnOnce(&History, ChatId) -> Result<T, ClientError>,
    ) -> Option<T> {
        let store = self.store.as_ref()?;
        let (_, chat) = store.chat?;
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

    /// Starts a session: finds its conversation, records the session in the
    /// conversation's chat row and the peer as a contact, and returns whether
    /// it counts as verified: the keys resumed a verified session, or the
    /// peer's identity is a verified contact. A session that did not resume
    /// clears the mark. A peer using the name of a verified contact under
    /// another identity key is a loud warning, and not verified.
    pub fn begin_session(
        &mut self,
        peer: PeerInfo,
        resumed: bool,
        resume: ResumeSecret,
        out: &Events,
    ) -> Result<bool, ClientError> {
        if !resumed {
            self.verified = false;
        }
        self.switch_to(&peer, out)?;
        self.previous = Some(resume);
        self.rtt = None;
        if self.known_contact(&peer, out) {
            self.verified = true;
        }
        let verified = self.verified;
        let id = self.shared.state().core.as_ref().map(Core::conversation);
        let continues = self
            .store
            .as_ref()
            .is_some_and(|s| s.chat.is_some_and(|(c, _)| Some(c) == id));
        if continues {
            self.persist(out, |db, chat| {
                db.update_chat(
                    chat,
                    &peer.addr.to_string(),
                    &peer.path,
                    &peer.sas,
                    verified,
                    resumed,
                )
            });
        } else if let (Some(store), Some(id)) = (&mut self.store, id) {
            let own = self.identity.public().0;
            let opened = store.db.open_conversation_chat(
                &id,
                &own,
                &self.room,
                &peer.name,
                &peer.identity.to_hex(),
                &peer.addr.to_string(),
                &peer.path,
                &peer.sas,
                now_ms(),
            );
            match opened {
                Ok(chat) => {
                    store.chat = Some((id, chat));
                    self.persist(out, |db, chat| db.set_verified(chat, verified));
                }
                Err(e) => out.show(&Event::Error {
                    code: "history".into(),
                    text: e.to_string(),
                }),
            }
        }
        self.recipient = Some(peer.identity);
        if let Some(mailbox) = &self.mailbox {
            // What the peer left while we were away (a cut, a restart).
            mailbox.ask(Job::Collect);
        }
        self.peer = Some(peer);
        Ok(verified)
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

    /// The conversation as the messenger shares it.
    pub fn shared(&self) -> Shared {
        self.shared.clone()
    }

    /// What a write left for us ([`Shared::woken`]): with no link, our
    /// messages go to the peer's mailbox. A link a write could not queue on
    /// is the reader's and the pings' to report.
    pub fn after_say(&mut self, linked: bool, out: &Events) {
        self.shared.take_stalled();
        let written = self.shared.take_written();
        if !linked && !written.is_empty() {
            self.deposit_unacked(out);
        }
    }

    /// Forgets the session (the link is gone); the outbox stays.
    pub fn end_session(&mut self) {
        self.peer = None;
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
                self.drained().then_some(Ending::Quit)
            }
            Some(InputEvent::Seen { seq }) => {
                self.on_seen(seq, link);
                None
            }
        }
    }

    /// The person has the peer's messages up to `seq` before its eyes: with
    /// read receipts allowed, tell the peer (once per new high point).
    fn on_seen(&mut self, seq: u64, link: Option<&PeerLink>) {
        let seq = seq.min(self.peer_shown);
        if !self.read_receipts || seq <= self.read_sent {
            return;
        }
        if let Some(link) = link {
            if link.send(PeerMsg::Read { seq }).is_ok() {
                self.read_sent = seq;
            }
        }
    }

    fn on_line(&mut self, line: &str, link: Option<&PeerLink>, out: &Events) -> Option<Ending> {
        match conversation::command(line) {
            Some(command) => self.on_command(command.trim(), link, out),
            // The messenger writes text through the shared conversation
            // itself; text that reaches us anyway is written the same way.
            None => {
                self.shared.write_now(line);
                None
            }
        }
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
                } else {
                    let lines = match &self.shared.state().core {
                        Some(core) => core.history(n, self.db()).unwrap_or_else(|e| {
                            out.show(&Event::Error {
                                code: "history".into(),
                                text: e.to_string(),
                            });
                            Vec::new()
                        }),
                        None => Vec::new(),
                    };
                    out.show(&Event::History { lines });
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
            log @ (PeerMsg::Group(_)
            | PeerMsg::GroupSummary(_)
            | PeerMsg::GroupCatchup(_)
            | PeerMsg::Equivocation(_)) => {
                let queued = link.sender().queued_bytes();
                let db = self.store.as_ref().map(|s| &s.db);
                let step = match self.shared.state().core.as_mut() {
                    Some(core) => core.on_peer(self.serial, log, queued, db),
                    None => return Ok(None),
                };
                let fx = step.map_err(|why| link_failure(LinkError::Protocol(why), peer))?;
                self.note_shown(&fx);
                apply(fx, Some(link), self.peer.as_ref(), out)?;
            }
            // Shown only if we allow read receipts too; never past what we wrote.
            PeerMsg::Read { seq } => {
                let own_last = self.shared.state().core.as_ref().map(Core::own_last);
                if let (true, Some(own_last)) = (self.read_receipts, own_last) {
                    let seq = seq.min(own_last);
                    if seq > self.read_shown {
                        self.read_shown = seq;
                        out.show(&Event::Read { id: seq });
                    }
                }
            }
            PeerMsg::Ping { nonce } => {
                link.send(PeerMsg::Pong { nonce })
                    .map_err(|e| link_failure(e, peer))?;
            }
            // Admission is settled before the chat starts (token runs); a late
            // one changes nothing.
            PeerMsg::Pong { .. } | PeerMsg::Admitted | PeerMsg::Denied { .. } => {}
            // Rosters and expulsions are a mesh's: the peer broke the protocol.
            PeerMsg::Roster(_) | PeerMsg::Expelled { .. } => {
                return Err(link_failure(
                    LinkError::Protocol("a group message in a two-party room".into()),
                    peer,
                ));
            }
            // v2's two-party messages, retired in v3 (§7.1).
            PeerMsg::Chat { .. } | PeerMsg::Ack { .. } => {
                return Err(link_failure(
                    LinkError::Protocol("a v2 chat message (retired in v3)".into()),
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

/// Runs one connected session until someone leaves or the link fails. Typed
/// text goes on the link straight from the messenger ([`Shared::say`]);
/// commands come on `input`. Nothing typed is lost when the link drops.
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
    convo.serial += 1;
    let serial = convo.serial;
    let shared = convo.shared.clone();
    if let Some(info) = convo.peer.as_ref() {
        // The summary swap: each side sends what the other lacks, once.
        let fx = shared
            .state()
            .core
            .as_mut()
            .map(|core| core.link_up(serial, info.identity, &info.name));
        if let Err(e) = fx.map_or(Ok(()), |fx| apply(fx, Some(&link), Some(info), out)) {
            link.close(None).await;
            return Ending::Lost(e);
        }
    }
    shared.link_up(serial, link.sender());
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
            if convo.drained() {
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
                            if convo.input_closed && convo.drained() {
                                break Ending::Quit;
                            }
                        }
                        Err(e) => break Ending::Lost(e),
                    }
                }
                Some(Err(e)) => break Ending::Lost(link_failure(e, &peer)),
                None => break Ending::Lost(link_failure(LinkError::Closed, &peer)),
            },
            Some(news) = convo.mailbox_news() => {
                convo.on_mailbox(news, Some(&link), out);
                if convo.input_closed && convo.drained() {
                    break Ending::Quit;
                }
            }
            () = shared.woken() => convo.after_say(true, out),
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
                let fx = shared.state().core.as_mut().map(Core::tick);
                if let Some(fx) = fx {
                    if let Err(e) = apply(fx, Some(&link), convo.peer.as_ref(), out) {
                        break Ending::Lost(e);
                    }
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
    shared.link_down(serial);
    match &ending {
        Ending::Quit => link.close(Some("quit".into())).await,
        Ending::PeerLeft(_) | Ending::Lost(_) => link.close(None).await,
    }
    if let Some(core) = shared.state().core.as_mut() {
        core.link_down(serial);
    }
    convo.end_session();
    // What the peer did not confirm waits for it at the mailbox.
    convo.deposit_unacked(out);
    ending
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_holders_room_secret_never_shows_in_debug() {
        let secret = ConversationId::TokenPair(zeroize::Zeroizing::new([0xAB; 32]));
        let shown = format!("{secret:?}");
        assert_eq!(shown, "TokenPair(<redacted>)");
        // A conversation id is public (it names the conversation in the store).
        let id = format!("{:?}", ConversationId::Fixed([1; 32]));
        assert_eq!(id, format!("Fixed({:?})", "01".repeat(32)));
    }
}
