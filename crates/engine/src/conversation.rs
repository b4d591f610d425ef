//! One conversation, 2 or N members, on one model: the signed, causally
//! ordered log of [`wire::group`] bound to the conversation id, with what a
//! member does with it whatever carries it. Taking in messages, summaries,
//! catch-ups and proofs from links (with per-link pacing and flood limits),
//! writing ours, naming authors, storing what is delivered (before it is
//! shown), restoring the stored window on a restart, and receipts: all here,
//! for two-party chats (`crate::chat`) and group rooms (`crate::group`) alike.
//!
//! The core does no I/O of its own but the history database it is handed: it
//! turns input into [`Effects`] (records to send on which link, events to
//! show, authors proven to equivocate), so two or more cores can be run
//! against each other in memory (the tests below).
//!
//! [`Shared`] is a conversation as its task and the messenger both hold it:
//! the task keeps its core and its live links there, and typed text goes
//! straight from the messenger through [`Shared::say`] to the links, for 2 and
//! N members alike: one path from the keyboard to the wire.
//!
//! Receipts, one rule for 2 and N (docs/protocol.md §7.1): our message `seq`
//! is shown as `sent {id = seq}` when written, and as `ack {id = seq}` once
//! another member shows it holds it: its summary's or catch-up's `have` covers
//! it. A member that delivers messages a link brought answers that link with a
//! receipt, a `GroupCatchup` that carries only its `have` (it asks for nothing).

use std::cell::{RefCell, RefMut};
use std::collections::{BTreeMap, HashMap};
use std::ops::{Deref, DerefMut};
use std::rc::Rc;
use std::time::Duration;

use dhke::{Identity, IdentityKey};
use tokio::sync::Notify;
use tokio::time::Instant;
use wire::group::{Catchup, EquivocationProof, GroupError, GroupLog, GroupMsg, Outcome, Summary};
use wire::peer::MAX_CHAT_TEXT;
use wire::PeerMsg;

use crate::error::ClientError;
use crate::events::{Event, Events, HistoryLine};
use crate::history::now_ms;
use crate::history::History;
use crate::peerlink::LinkSender;

/// Summaries are swapped this often on every link, on top of each new link and
/// each gap, so a message that missed a member reaches it by another.
const SUMMARY_EVERY: Duration = Duration::from_secs(15);
/// A link's summaries are answered at most this often.
const CATCHUP_GAP: Duration = Duration::from_millis(500);
/// After a gap we ask the link that showed it at most this often.
const ASK_GAP: Duration = Duration::from_millis(500);
/// Log messages a link may bring: a bucket this deep (a whole backlog), refilled
/// at [`MSG_RATE`] a second. A member past it is flooding and is cut off.
const MSG_BURST: f64 = 2.0 * wire::group::BACKLOG as f64 + 200.0;
const MSG_RATE: f64 = 50.0;
/// A catch-up record holds messages up to about this many encoded bytes (a
/// record carries at most 64 KiB; one message is at most about 16.5 KiB).
const CATCHUP_BYTES: usize = 40 * 1024;
/// One answer to a summary carries at most this much ([`GroupMsg::weight`]);
/// the rest follows when the asker asks again (`Catchup.more`).
const ANSWER_BYTES: usize = 256 * 1024;
/// A summary is answered only while the link's queue holds less than this:
/// a member that stops reading gets no more answers, so what it makes us queue
/// stays within one answer (plus the link's own byte bound).
const BUSY_BYTES: usize = 256 * 1024;
/// Messages restored from history that are shown again at the start.
const SHOW_RESTORED: usize = 20;
/// Most of our messages no other member holds yet; beyond that, typing waits.
/// Well inside the log's backlog, so none is pruned before it is caught up.
pub const MAX_UNACKED: u64 = wire::group::BACKLOG as u64 / 2;

/// The link id under which records fetched from the mailbox (docs/protocol.md
/// §22) go through the log: never a real link's (those count up from 1). It
/// stays registered, so a message that waits for an earlier one waits on.
pub const MAILBOX: u64 = u64::MAX;

/// How the conversation's messages are shown: the two-party events (`message`,
/// `sent`) or the group ones (`group_message`, ours included). Delivery,
/// storing and receipts are the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pair,
    Group,
}

/// Where a record goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum To {
    /// One link.
    Link(u64),
    /// Every link, except the one named.
    AllBut(Option<u64>),
}

/// What a step of the core asks its caller to do.
#[derive(Debug, Default)]
pub struct Effects {
    pub sends: Vec<(To, PeerMsg)>,
    pub events: Vec<Event>,
    /// Authors proven to equivocate in this step (the log refuses them now):
    /// close their links.
    pub proven: Vec<[u8; 32]>,
}

impl Effects {
    fn send(&mut self, to: To, msg: PeerMsg) {
        self.sends.push((to, msg));
    }

    fn show(&mut self, event: Event) {
        self.events.push(event);
    }

    /// Appends what `other` asks for after what this one does.
    pub fn extend(&mut self, other: Effects) {
        self.sends.extend(other.sends);
        self.events.extend(other.events);
        self.proven.extend(other.proven);
    }
}

/// Pacing and flood state of one link.
#[derive(Debug)]
struct Pace {
    last_summary: Instant,
    last_catchup: Instant,
    last_ask: Instant,
    tokens: f64,
    refilled: Instant,
}

impl Pace {
    fn new() -> Pace {
        let now = Instant::now();
        let long_ago = now.checked_sub(Duration::from_secs(60)).unwrap_or(now);
        Pace {
            last_summary: now,
            last_catchup: long_ago,
            last_ask: long_ago,
            tokens: MSG_BURST,
            refilled: now,
        }
    }

    /// Takes `n` messages from the link's bucket; false when it is empty.
    fn charge(&mut self, n: usize) -> bool {
        let now = Instant::now();
        let add = now.duration_since(self.refilled).as_secs_f64() * MSG_RATE;
        self.tokens = (self.tokens + add).min(MSG_BURST);
        self.refilled = now;
        self.tokens -= n as f64;
        self.tokens >= 0.0
    }
}

/// One member's side of one conversation.
#[derive(Debug)]
pub struct Core {
    log: GroupLog,
    kind: Kind,
    identity: Identity,
    /// Our name, for our own messages.
    me: String,
    /// The room code as typed, or a label, stored with each message.
    room: String,
    /// Authors' names proven by a link this run.
    names: HashMap<[u8; 32], String>,
    links: HashMap<u64, Pace>,
    /// Our highest seq written (restored ones included).
    own_last: u64,
    /// Our highest seq another member is known to hold.
    acked: u64,
}

impl Core {
    /// The conversation `conversation` as `identity` (named `me`) keeps it, its
    /// stored window restored from `store`: only this conversation's messages,
    /// our counter past everything of ours ever stored in it. The effects show
    /// the last restored messages.
    pub fn open(
        conversation: [u8; 32],
        kind: Kind,
        identity: Identity,
        me: &str,
        room: &str,
        store: Option<&History>,
    ) -> Result<(Core, Effects), ClientError> {
        let own = identity.public().0;
        let mut log = GroupLog::new(conversation, own);
        let mut restored = Vec::new();
        let (mut acked, mut own_last) = (0, 0);
        if let Some(db) = store {
            let stored = db.group_log(&conversation)?;
            own_last = db.group_own_last(&conversation, &own)?;
            restored = log.restore(stored, own_last).delivered;
            acked = db.log_acked(&conversation)?;
        }
        let core = Core {
            log,
            kind,
            identity,
            me: me.to_owned(),
            room: room.to_owned(),
            names: HashMap::new(),
            links: HashMap::new(),
            own_last,
            acked: acked.min(own_last),
        };
        let mut fx = Effects::default();
        core.show_restored(&restored, store, &mut fx);
        Ok((core, fx))
    }

    /// The conversation's id.
    pub fn conversation(&self) -> [u8; 32] {
        *self.log.conversation()
    }

    fn own(&self) -> [u8; 32] {
        self.identity.public().0
    }

    /// Our messages no other member is known to hold yet.
    pub fn unacked(&self) -> u64 {
        self.own_last.saturating_sub(self.acked)
    }

    /// Whether we may write another message now ([`MAX_UNACKED`]).
    pub fn accepts(&self) -> bool {
        self.unacked() < MAX_UNACKED
    }

    /// Whether `author` is refused for equivocating.
    pub fn is_banned(&self, author: &[u8; 32]) -> bool {
        self.log.is_banned(author)
    }

    fn show_restored(&self, restored: &[GroupMsg], store: Option<&History>, fx: &mut Effects) {
        if restored.is_empty() {
            return;
        }
        fx.show(Event::Info {
            text: format!(
                "{} earlier messages of this conversation are in your history (/history).",
                restored.len()
            ),
        });
        let start = restored.len().saturating_sub(SHOW_RESTORED);
        let lines = restored[start..]
            .iter()
            .map(|m| {
                let outgoing = m.body.author == self.own();
                HistoryLine {
                    at_ms: m.body.sent_at_ms,
                    from: self.author_name(&m.body.author, store).0,
                    text: m.body.text.clone(),
                    outgoing,
                    acked: !outgoing || m.body.seq <= self.acked,
                }
            })
            .collect();
        fx.show(Event::History { lines });
    }

    /// How an author is shown, and whether the name is proven: the name a
    /// link proved for its key this run, else a contact's name, else its
    /// fingerprint marked "(not linked)". A roster's word never names anyone.
    pub fn author_name(&self, author: &[u8; 32], store: Option<&History>) -> (String, bool) {
        if *author == self.own() {
            return (self.me.clone(), true);
        }
        if let Some(name) = self.names.get(author) {
            return (name.clone(), true);
        }
        let contact = store.and_then(|db| db.contact_by_key(&IdentityKey(*author)).ok().flatten());
        match contact {
            Some(c) => (c.name, true),
            None => (unlinked(author), false),
        }
    }

    /// A link came up, with the identity it proved and its name: it gets our
    /// summary (what it lacks comes back, and it learns what we lack).
    pub fn link_up(&mut self, link: u64, peer: IdentityKey, name: &str) -> Effects {
        self.names.insert(peer.0, name.to_owned());
        self.links.insert(link, Pace::new());
        let mut fx = Effects::default();
        fx.send(To::Link(link), PeerMsg::GroupSummary(self.log.summary()));
        fx
    }

    /// Records fetched from our mailbox queue, oldest first, through the log
    /// like a link's ([`Core::on_peer`] under [`MAILBOX`]): sends addressed to
    /// `To::Link(MAILBOX)` are receipts for the caller to leave in the
    /// author's queue. A record the log refuses ends the batch (shown as an
    /// error: what came before it stays delivered).
    pub fn from_mailbox(&mut self, records: Vec<PeerMsg>, store: Option<&History>) -> Effects {
        self.links.entry(MAILBOX).or_insert_with(Pace::new);
        let mut fx = Effects::default();
        for record in records {
            match self.on_peer(MAILBOX, record, 0, store) {
                Ok(step) => fx.extend(step),
                Err(why) => {
                    fx.show(Event::Error {
                        code: "mailbox".into(),
                        text: format!("the mailbox held a record the log refused ({why})"),
                    });
                    break;
                }
            }
        }
        fx
    }

    /// Our highest message seq written.
    pub fn own_last(&self) -> u64 {
        self.own_last
    }

    /// Our messages no other member is known to hold yet, oldest first: what
    /// the mailbox should carry to a member who is away.
    pub fn unacked_own(&self) -> Vec<GroupMsg> {
        let own = self.own();
        self.unacked_seqs()
            .filter_map(|seq| self.log.delivered(&own, seq).cloned())
            .collect()
    }

    /// The numbers of our messages no other member is known to hold yet.
    pub fn unacked_seqs(&self) -> std::ops::RangeInclusive<u64> {
        self.acked + 1..=self.own_last
    }

    /// Every author of the log but us (in a two-party conversation, the peer).
    pub fn other_authors(&self) -> Vec<[u8; 32]> {
        let own = self.own();
        let mut authors: Vec<[u8; 32]> = self
            .log
            .authors()
            .into_iter()
            .filter(|a| *a != own)
            .collect();
        authors.sort_unstable();
        authors
    }

    /// A link went away: what it brought that still waits is dropped with it.
    pub fn link_down(&mut self, link: u64) {
        self.log.drop_source(link);
        self.links.remove(&link);
    }

    /// Writes our message `text`: signed, stored, shown (`sent`, or our
    /// `group_message`), sent on every link. `linked` says whether any link is
    /// up (a two-party `sent` is `pending` without one).
    pub fn write(&mut self, text: String, linked: bool, store: Option<&History>) -> Effects {
        let mut fx = Effects::default();
        match self.log.write(&self.identity, text, now_ms()) {
            Ok(msg) => {
                self.own_last = msg.body.seq;
                fx.send(To::AllBut(None), PeerMsg::Group(msg.clone()));
                if self.kind == Kind::Pair {
                    // On disk before it is shown as sent.
                    self.store(&msg, store, &mut fx);
                    fx.show(Event::Sent {
                        id: msg.body.seq,
                        text: msg.body.text,
                        pending: !linked,
                    });
                } else {
                    self.deliver(vec![msg], store, &mut fx);
                }
            }
            Err(e) => fx.show(Event::Error {
                code: "not_sent".into(),
                text: format!("the message was not sent: {e}"),
            }),
        }
        fx
    }

    /// Stores a delivered message; false when it was stored already (shown
    /// before: a restart's catch-up), which is not shown again.
    fn store(&self, msg: &GroupMsg, store: Option<&History>, fx: &mut Effects) -> bool {
        let Some(db) = store else { return true };
        let (from, _) = self.author_name(&msg.body.author, store);
        match db.record_group(&self.room, msg, &from, now_ms()) {
            Ok(stored) => stored,
            Err(e) => {
                fx.show(Event::Error {
                    code: "history".into(),
                    text: e.to_string(),
                });
                true
            }
        }
    }

    /// Stores and shows messages the log delivered.
    fn deliver(&mut self, msgs: Vec<GroupMsg>, store: Option<&History>, fx: &mut Effects) {
        for msg in msgs {
            if !self.store(&msg, store, fx) {
                continue;
            }
            let (from, linked) = self.author_name(&msg.body.author, store);
            let depth = msg.order_key().0;
            let b = msg.body;
            let own = b.author == self.own();
            match self.kind {
                Kind::Pair if own => {}
                Kind::Pair => fx.show(Event::Message {
                    from,
                    text: b.text,
                    id: b.seq,
                    sent_at_ms: b.sent_at_ms,
                }),
                Kind::Group => fx.show(Event::GroupMessage {
                    from,
                    author: IdentityKey(b.author).fingerprint().to_string(),
                    linked,
                    own,
                    seq: b.seq,
                    depth,
                    sent_at_ms: b.sent_at_ms,
                    text: b.text,
                }),
            }
        }
    }

    /// Another member shows it holds our messages up to `have`'s entry for us:
    /// `ack` for each newly covered one (never past what we wrote), recorded.
    fn receipts(&mut self, have: &[([u8; 32], u64)], store: Option<&History>, fx: &mut Effects) {
        let own = self.own();
        let Some(n) = have.iter().find(|(a, _)| *a == own).map(|e| e.1) else {
            return;
        };
        let n = n.min(self.own_last);
        if n <= self.acked {
            return;
        }
        for id in self.acked + 1..=n {
            fx.show(Event::Ack { id });
        }
        self.acked = n;
        if let Some(db) = store {
            if let Err(e) = db.set_log_acked(&self.conversation(), n) {
                fx.show(Event::Error {
                    code: "history".into(),
                    text: e.to_string(),
                });
            }
        }
    }

    /// Our receipt for link `link`: our `have`, asking for nothing.
    fn receipt(&self, link: u64, fx: &mut Effects) {
        fx.send(
            To::Link(link),
            PeerMsg::GroupCatchup(Catchup {
                have: self.log.summary().have,
                ..Catchup::default()
            }),
        );
    }

    /// One record of the log from link `link` (`Group`, `GroupSummary`,
    /// `GroupCatchup`, `Equivocation`; others change nothing). `queued` is how
    /// many bytes wait in the link's queue. `Err` names what the link did
    /// wrong: cut it off.
    pub fn on_peer(
        &mut self,
        link: u64,
        msg: PeerMsg,
        queued: usize,
        store: Option<&History>,
    ) -> Result<Effects, String> {
        let mut fx = Effects::default();
        if !self.links.contains_key(&link) {
            return Ok(fx);
        }
        match msg {
            PeerMsg::Group(msg) => {
                self.charge(link, 1)?;
                let result = self.log.receive(msg, link);
                let delivered = self.took(link, result, store, &mut fx)?;
                if delivered {
                    self.receipt(link, &mut fx);
                }
                self.ask_if_waiting(link, &mut fx);
            }
            PeerMsg::GroupSummary(summary) => {
                self.receipts(&summary.have, store, &mut fx);
                self.answer(link, &summary, queued, &mut fx);
            }
            PeerMsg::GroupCatchup(catchup) => {
                let n = catchup.msgs.len();
                let more = catchup.more;
                self.charge(link, n)?;
                self.receipts(&catchup.have, store, &mut fx);
                let result = self.log.receive_catchup(catchup, link);
                let delivered = self.took(link, result, store, &mut fx)?;
                if more {
                    fx.send(To::Link(link), PeerMsg::GroupSummary(self.log.summary()));
                } else {
                    if delivered {
                        self.receipt(link, &mut fx);
                    }
                    self.ask_if_waiting(link, &mut fx);
                }
            }
            PeerMsg::Equivocation(proof) => match self.log.receive_proof(&proof) {
                Ok(Some(_)) => self.on_proof(*proof, Some(link), store, &mut fx),
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            },
            _ => {}
        }
        Ok(fx)
    }

    fn charge(&mut self, link: u64, n: usize) -> Result<(), String> {
        if self.links.get_mut(&link).map_or(true, |p| p.charge(n)) {
            Ok(())
        } else {
            Err("too many messages (flooding)".into())
        }
    }

    /// Answers a summary with what it lacks. Answers are paced: one per
    /// [`CATCHUP_GAP`] per link, never while an earlier one still waits in its
    /// queue, and at most [`ANSWER_BYTES`] each (the asker asks again for the rest).
    fn answer(&mut self, link: u64, summary: &Summary, queued: usize, fx: &mut Effects) {
        let due = self.links.get_mut(&link).is_some_and(|p| {
            let due = p.last_catchup.elapsed() >= CATCHUP_GAP && queued < BUSY_BYTES;
            if due {
                p.last_catchup = Instant::now();
            }
            due
        });
        if due {
            for part in split_catchup(self.log.missing_for(summary, ANSWER_BYTES)) {
                fx.send(To::Link(link), PeerMsg::GroupCatchup(part));
            }
        }
    }

    /// When messages wait for ones we lack, ask the link that brought them.
    fn ask_if_waiting(&mut self, link: u64, fx: &mut Effects) {
        if self.log.pending() == 0 {
            return;
        }
        let summary = self.log.summary();
        if let Some(p) = self.links.get_mut(&link) {
            if p.last_ask.elapsed() >= ASK_GAP {
                p.last_ask = Instant::now();
                fx.send(To::Link(link), PeerMsg::GroupSummary(summary));
            }
        }
    }

    /// What the log made of something link `link` brought: delivers what
    /// became deliverable, acts on each equivocation it proved; an error that
    /// blames the link is returned. True when something was delivered.
    fn took(
        &mut self,
        link: u64,
        result: Result<Outcome, GroupError>,
        store: Option<&History>,
        fx: &mut Effects,
    ) -> Result<bool, String> {
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(GroupError::Equivocation(proof)) => Outcome {
                delivered: Vec::new(),
                proofs: vec![*proof],
            },
            Err(e) if e.blames_sender() => return Err(e.to_string()),
            Err(e) => {
                fx.show(Event::Warning {
                    code: "group_log".into(),
                    text: e.to_string(),
                });
                Outcome::default()
            }
        };
        let delivered = !outcome.delivered.is_empty();
        self.deliver(outcome.delivered, store, fx);
        for proof in outcome.proofs {
            self.on_proof(proof, Some(link), store, fx);
        }
        Ok(delivered)
    }

    /// An author proven to have signed two messages with one number: say so
    /// (both texts, and which one this screen showed), pass the proof to every
    /// other link once, and have the caller close the author's links. `from`
    /// brought it and is not to blame.
    fn on_proof(
        &mut self,
        proof: EquivocationProof,
        from: Option<u64>,
        store: Option<&History>,
        fx: &mut Effects,
    ) {
        let author = proof.first.body.author;
        let seq = proof.first.body.seq;
        let (name, _) = self.author_name(&author, store);
        let shown = self
            .log
            .delivered(&author, seq)
            .map(|m| m.body.text.clone());
        let (one, two) = (&proof.first.body.text, &proof.second.body.text);
        let which = match &shown {
            Some(text) => format!("This screen shows \"{text}\"."),
            None => "Neither was shown here.".to_owned(),
        };
        fx.show(Event::Warning {
            code: "equivocation".into(),
            text: format!(
                "{name} ({}) signed two different messages as its message {seq}: \"{one}\" and \
                 \"{two}\". Each member may have been shown another one. {which} It is refused \
                 from now on, and the proof goes to the other members.",
                IdentityKey(author).fingerprint(),
            ),
        });
        fx.send(To::AllBut(from), PeerMsg::Equivocation(Box::new(proof)));
        fx.proven.push(author);
    }

    /// The periodic part: every link gets our summary every [`SUMMARY_EVERY`].
    pub fn tick(&mut self) -> Effects {
        let mut fx = Effects::default();
        let now = Instant::now();
        let summary = self.log.summary();
        let mut due: Vec<u64> = Vec::new();
        for (id, p) in self.links.iter_mut() {
            if now.duration_since(p.last_summary) >= SUMMARY_EVERY {
                p.last_summary = now;
                due.push(*id);
            }
        }
        due.sort_unstable();
        for id in due {
            fx.send(To::Link(id), PeerMsg::GroupSummary(summary.clone()));
        }
        fx
    }

    /// The last `n` stored messages, oldest first, for `/history`.
    pub fn history(
        &self,
        n: u32,
        store: Option<&History>,
    ) -> Result<Vec<HistoryLine>, ClientError> {
        let Some(db) = store else {
            return Ok(Vec::new());
        };
        let own = hex::encode(self.own());
        Ok(db
            .conversation_lines(&self.conversation(), n.clamp(1, 10_000))?
            .into_iter()
            .map(|l| {
                let outgoing = l.author == own;
                HistoryLine {
                    at_ms: l.sent_at_ms,
                    outgoing,
                    from: l.author_name,
                    text: l.text,
                    acked: !outgoing || l.seq <= self.acked,
                }
            })
            .collect())
    }
}

/// The command in a typed line: `Some("send a.txt")` for `/send a.txt`, none
/// for text (a line that starts with `//` is text that starts with `/`).
pub fn command(line: &str) -> Option<&str> {
    line.strip_prefix('/').filter(|rest| !rest.starts_with('/'))
}

/// One open conversation as its task and the messenger share it (both run on
/// the messenger's one thread). The task does everything that waits (links,
/// the mediator, the mailbox) and keeps its core and live links here; the
/// messenger writes typed text through [`Shared::say`] without a hop through
/// the task. Whatever the task must do after a write (leave it at the mailbox
/// for a member who is away, close a link whose queue is full) it learns from
/// [`Shared::woken`].
#[derive(Clone)]
pub struct Shared(Rc<SharedInner>);

struct SharedInner {
    state: RefCell<State>,
    out: Events,
    /// Set by a write: the task has written messages or stalled links to see to.
    wake: Notify,
    /// Wakes writers waiting for room: the task changed the state (acks may
    /// have come in) or the conversation ended.
    room: Notify,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.0.state.try_borrow();
        f.debug_struct("Shared")
            .field("links", &state.as_ref().map(|s| s.links.len()).ok())
            .finish_non_exhaustive()
    }
}

/// What [`Shared`] holds.
#[derive(Debug, Default)]
pub struct State {
    /// The conversation; none for a token holder before its first dialer.
    pub core: Option<Core>,
    /// Text typed while there is no core: the first dialer's conversation gets
    /// it, under these numbers.
    pub drafts: Vec<String>,
    /// Live links by the task's serial, for our writes.
    links: BTreeMap<u64, LinkSender>,
    /// The store our messages go to before they are shown as sent.
    store: Option<History>,
    /// Our messages written since the task last looked.
    written: Vec<PeerMsg>,
    /// Links a write could not queue on (their peer stopped reading).
    stalled: Vec<u64>,
    /// The task has set the conversation up (its core, or none by design):
    /// text typed before waits for it.
    ready: bool,
    /// The task has ended: nothing more is written.
    closed: bool,
}

/// The state, borrowed by the task: writers waiting for room look again when
/// it is given back.
#[derive(Debug)]
pub struct StateRef<'a> {
    state: RefMut<'a, State>,
    room: &'a Notify,
}

impl Deref for StateRef<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.state
    }
}

impl DerefMut for StateRef<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.state
    }
}

impl Drop for StateRef<'_> {
    fn drop(&mut self) {
        self.room.notify_waiters();
    }
}

impl Shared {
    /// A conversation with no core yet, showing what it writes on `out`.
    pub fn new(out: Events) -> Shared {
        Shared(Rc::new(SharedInner {
            state: RefCell::new(State::default()),
            out,
            wake: Notify::new(),
            room: Notify::new(),
        }))
    }

    /// The state, for the task; never held across an await (the messenger
    /// writes through it meanwhile).
    pub fn state(&self) -> StateRef<'_> {
        StateRef {
            state: self.0.state.borrow_mut(),
            room: &self.0.room,
        }
    }

    /// Where our messages are stored.
    pub fn set_store(&self, store: Option<History>) {
        self.state().store = store;
    }

    /// The store, as the messenger handed it over (its one connection).
    pub fn store(&self) -> Option<History> {
        self.0.state.borrow().store.clone()
    }

    /// The task has set the conversation up: its core is in place (or there
    /// is none yet by design, for a token holder, whose typing waits in its
    /// drafts). Text typed before this waits.
    pub fn set_ready(&self) {
        self.state().ready = true;
    }

    /// Link `serial` is up: our writes go on it too.
    pub fn link_up(&self, serial: u64, link: LinkSender) {
        self.state().links.insert(serial, link);
    }

    /// Link `serial` is gone.
    pub fn link_down(&self, serial: u64) {
        self.state().links.remove(&serial);
    }

    /// Our messages written since the last call.
    pub fn take_written(&self) -> Vec<PeerMsg> {
        std::mem::take(&mut self.state().written)
    }

    /// Links a write could not queue on since the last call.
    pub fn take_stalled(&self) -> Vec<u64> {
        std::mem::take(&mut self.state().stalled)
    }

    /// Returns once a write left something for the task
    /// ([`Shared::take_written`], [`Shared::take_stalled`]).
    pub async fn woken(&self) {
        self.0.wake.notified().await;
    }

    /// The task has ended: waiting writers give up, later ones are refused.
    pub fn close(&self) {
        if let Ok(mut state) = self.0.state.try_borrow_mut() {
            state.closed = true;
        }
        self.0.room.notify_waiters();
    }

    /// A guard that closes the conversation however its task ends.
    pub fn closing(&self) -> Closing {
        Closing(self.clone())
    }

    /// Writes the typed `line` (text; `//` starts one with `/`) as our next
    /// message: stored, shown as sent, queued on every live link. While too
    /// many of our messages are unconfirmed, waits for room: typing waits, as
    /// it always did, and nothing typed is dropped.
    pub async fn say(&self, line: &str) {
        let Some(text) = self.text_of(line) else {
            return;
        };
        loop {
            let room = self.0.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let mut state = self.0.state.borrow_mut();
                if state.closed {
                    self.0.out.show(&Event::Error {
                        code: "not_sent".into(),
                        text: "the conversation has ended; that message was not sent".into(),
                    });
                    return;
                }
                if state.accepts() {
                    state.write(text, &self.0.out);
                    self.0.wake.notify_one();
                    return;
                }
            }
            room.await;
        }
    }

    /// Writes the typed `line` now, room or not (text that reached the task
    /// itself, which reads its input only while there is room).
    pub fn write_now(&self, line: &str) {
        if let Some(text) = self.text_of(line) {
            self.0.state.borrow_mut().write(text, &self.0.out);
            self.0.wake.notify_one();
        }
    }

    /// The message a typed line of text makes: a leading `//` stands for `/`;
    /// none for an empty line or one over the limit (said on the screen).
    fn text_of(&self, line: &str) -> Option<String> {
        let text = if line.starts_with("//") {
            &line[1..]
        } else {
            line
        };
        if text.is_empty() {
            return None;
        }
        if text.len() > MAX_CHAT_TEXT {
            self.0.out.show(&Event::Error {
                code: "too_long".into(),
                text: format!("messages are limited to {MAX_CHAT_TEXT} bytes; not sent"),
            });
            return None;
        }
        Some(text.to_owned())
    }
}

/// Closes its conversation when dropped ([`Shared::closing`]).
#[derive(Debug)]
pub struct Closing(Shared);

impl Drop for Closing {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl State {
    /// Whether another message may be written now: the conversation is set
    /// up, fewer than [`MAX_UNACKED`] of ours are unconfirmed (or typed before
    /// the core), and the task keeps up with what was written.
    pub fn accepts(&self) -> bool {
        let unconfirmed = match &self.core {
            Some(core) => !core.accepts(),
            None => self.drafts.len() as u64 >= MAX_UNACKED,
        };
        self.ready && !self.closed && !unconfirmed && (self.written.len() as u64) < MAX_UNACKED
    }

    /// Whether any link is up.
    pub fn linked(&self) -> bool {
        !self.links.is_empty()
    }

    fn write(&mut self, text: String, out: &Events) {
        let linked = self.linked();
        let Some(core) = self.core.as_mut() else {
            self.drafts.push(text.clone());
            out.show(&Event::Sent {
                id: self.drafts.len() as u64,
                text,
                pending: true,
            });
            return;
        };
        let fx = core.write(text, linked, self.store.as_ref());
        for event in &fx.events {
            out.show(event);
        }
        for (to, msg) in fx.sends {
            for (serial, link) in &self.links {
                let chosen = match to {
                    To::Link(one) => one == *serial,
                    To::AllBut(except) => except != Some(*serial),
                };
                // A failed send is the task's to act on; the next summary
                // swap brings the message again.
                if chosen && link.send(msg.clone()).is_err() {
                    self.stalled.push(*serial);
                }
            }
            if matches!(msg, PeerMsg::Group(_)) {
                self.written.push(msg);
            }
        }
    }
}

/// How an author no link proved and no contact names is shown: its
/// fingerprint, marked as not linked.
fn unlinked(author: &[u8; 32]) -> String {
    format!("{} (not linked)", IdentityKey(*author).fingerprint())
}

/// Splits a catch-up into records of at most about [`CATCHUP_BYTES`] of
/// messages; the summary and floor ride on the first, `more` on the last. An
/// empty catch-up sends nothing.
fn split_catchup(catchup: Catchup) -> Vec<Catchup> {
    if catchup.msgs.is_empty() && catchup.floor.is_empty() {
        return Vec::new();
    }
    let more = catchup.more;
    let mut parts = vec![Catchup {
        have: catchup.have,
        floor: catchup.floor,
        msgs: Vec::new(),
        more: false,
    }];
    let mut bytes = 0usize;
    for msg in catchup.msgs {
        let size = msg.weight() + 64;
        if bytes + size > CATCHUP_BYTES && !parts.last().is_some_and(|p| p.msgs.is_empty()) {
            parts.push(Catchup::default());
            bytes = 0;
        }
        bytes += size;
        if let Some(part) = parts.last_mut() {
            part.msgs.push(msg);
        }
    }
    if let Some(last) = parts.last_mut() {
        last.more = more;
    }
    parts
}

#[cfg(test)]
mod tests;
