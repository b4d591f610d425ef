//! The engine's vocabulary: every [`Event`] a conversation or the messenger
//! reports, and the handle ([`Events`]) it reports them through. Front-ends (the
//! full-screen interface, plain lines, `--json`, later the local API) implement
//! [`Frontend`]; the engine never knows which one listens. [`Event::for_terminal`]
//! is the one sanitiser every text renderer starts from.

use std::sync::Arc;

use serde::Serialize;
use wire::sanitize_for_terminal as safe;

/// One contact as `/peers` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContactState {
    pub name: String,
    pub fingerprint: String,
    pub verified: bool,
    /// Linked with us now.
    pub online: bool,
    /// The number of the conversation it is linked in.
    pub conversation: Option<u32>,
}

/// One thing the person typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputEvent {
    /// A complete line, without its line ending.
    Line(String),
    /// A line longer than the limit; it was discarded.
    TooLong { limit: usize },
    /// End of input (Ctrl-D, or the pipe closed).
    Eof,
    /// The person has the conversation's messages up to the peer's `seq`
    /// before its eyes (it is in front); `u64::MAX`: all it holds. Sent by
    /// the messenger, for read receipts (docs/protocol.md §7.1).
    Seen { seq: u64 },
}

/// Everything the client reports. In `--json` mode each is one line with an
/// `event` field naming the variant.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A generated room code and the command the other side should run.
    Room { room: String, command: String },
    /// `client token`: the token to give out, and the command that dials it.
    Token {
        token: String,
        command: String,
        expires_in_secs: u64,
    },
    /// Someone we do not know dialed our token: `/accept` or `/deny`.
    Admission {
        peer: String,
        fingerprint: String,
        sas: String,
    },
    /// Registered with the mediator; waiting for the other person.
    Waiting {
        listen: String,
        expires_in_secs: u32,
    },
    /// The mediator matched us; connecting to the peer.
    Matched { peer: String, role: String },
    /// A stranger reached our port and was turned away.
    Rejected { addr: String, reason: String },
    /// The encrypted session is up. `resumed`: keys continue the previous session
    /// (verification carries over); `verified`: the person confirmed the code.
    Connected {
        peer: String,
        addr: String,
        path: String,
        sas: String,
        role: String,
        resumed: bool,
        verified: bool,
        /// The peer's identity fingerprint (§15), proven by its signature.
        fingerprint: String,
    },
    /// Something the person must not miss: `code` `impersonation` is a peer using
    /// the name of a verified contact under another identity key.
    Warning { code: String, text: String },
    /// A message from the peer.
    Message {
        from: String,
        text: String,
        id: u64,
        sent_at_ms: u64,
    },
    /// One of our messages: `pending` while it waits for a connection.
    Sent {
        id: u64,
        text: String,
        pending: bool,
    },
    /// The peer confirmed one of our messages.
    Ack { id: u64 },
    /// One of our messages waits at the mediator's mailbox for a member who
    /// is offline, until `expires_unix` (docs/protocol.md §22).
    Stored { id: u64, expires_unix: u64 },
    /// One of our messages outlived the mailbox with no receipt: it was not
    /// delivered.
    Expired { id: u64 },
    /// The peer has seen our messages up to `id` (both sides allow read
    /// receipts, `--read-receipts`).
    Read { id: u64 },
    /// `/peers` in the messenger: every contact, and whether it is online
    /// (linked with us now, in the conversation named).
    Contacts { contacts: Vec<ContactState> },
    /// `/peers`.
    Peer {
        name: String,
        addr: String,
        path: String,
        sas: String,
        rtt_ms: Option<u64>,
    },
    /// `/verify` (show the code) or `/verify yes` (mark it as compared).
    Verify {
        sas: String,
        peer: String,
        verified: bool,
    },
    /// A fresh round-trip measurement.
    Rtt { rtt_ms: u64 },
    /// The link dropped; trying again in `retry_in_ms`.
    Reconnecting {
        reason: String,
        attempt: u32,
        retry_in_ms: u64,
    },
    /// Past messages, for `/history`.
    History { lines: Vec<HistoryLine> },
    /// The peer offers a file; accept with `/accept ID`.
    FileOffer {
        id: u64,
        from: String,
        name: String,
        size: u64,
    },
    /// A transfer moved on. `direction` is `send` or `receive`.
    Progress {
        id: u64,
        direction: String,
        name: String,
        bytes: u64,
        total: u64,
        rate_bps: u64,
        eta_secs: Option<u64>,
    },
    /// A transfer finished and was verified; `path` is where it is (receiver).
    FileDone {
        id: u64,
        direction: String,
        name: String,
        path: Option<String>,
        /// Hex of the BLAKE3 hash of the whole file.
        blake3: String,
    },
    /// A transfer stopped: rejected, cancelled or failed.
    FileStopped {
        id: u64,
        direction: String,
        name: String,
        reason: String,
    },
    /// A line for the person (help text, notices).
    Info { text: String },
    /// Group rooms (§19): we are member `member` of the room; `present` others
    /// are there, linking with us.
    GroupJoined {
        room: String,
        member: u32,
        present: u32,
        max_members: u32,
    },
    /// Group rooms: a confirmed link with another member.
    MemberJoined {
        member: u32,
        peer: String,
        fingerprint: String,
        addr: String,
        path: String,
        sas: String,
        verified: bool,
    },
    /// Group rooms: a member's link ended.
    MemberLeft {
        member: u32,
        peer: String,
        reason: String,
    },
    /// Group rooms: a message of the room's log, in the causal order every
    /// member shares; `author` is the author's fingerprint, `own` ours.
    GroupMessage {
        /// The name a link proved for the author's key, or a contact's; else
        /// its fingerprint with "(not linked)", and `linked` is false.
        from: String,
        author: String,
        /// Whether `from` is a proven name (a link or a contact), not a
        /// fingerprint standing in for one.
        linked: bool,
        own: bool,
        seq: u64,
        depth: u64,
        sent_at_ms: u64,
        text: String,
    },
    /// Group rooms, `/peers`: one linked member.
    Member {
        member: u32,
        name: String,
        fingerprint: String,
        addr: String,
        path: String,
        sas: String,
        rtt_ms: Option<u64>,
        verified: bool,
    },
    /// The session ended.
    Disconnected { reason: String },
    /// Something failed; `code` is stable for scripts.
    Error { code: String, text: String },
    /// The messenger's conversation list (`/list`); `front` is the number of
    /// the conversation typed lines go to.
    Conversations {
        front: Option<u32>,
        items: Vec<ConvItem>,
    },
    /// A conversation ended and left the list: `reason` says why.
    Closed { reason: String },
}

/// One line of the conversation list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConvItem {
    pub number: u32,
    pub id: String,
    pub label: String,
    /// `room`, `group`, `contact`, `token`.
    pub kind: String,
    /// `opening`, `waiting`, `connecting`, `connected`, `joined`, `reconnecting`, `ended`.
    pub state: String,
    /// Two-party: the path in use (`direct`, `lan`, `punched`, `relay`).
    pub path: String,
    /// Groups: members linked now, us included.
    pub members: u32,
    /// Two-party: the security code was compared.
    pub verified: bool,
    /// Messages arrived while it was not in front.
    pub unread: u32,
}

impl Event {
    /// The event as a terminal may show it: every string field through
    /// [`wire::sanitize_for_terminal`], so no escape sequence, control or bidi
    /// character and no line break of a peer's reaches the screen. The plain and
    /// the full-screen renderers start here, whatever their callers sanitized
    /// (the filter is idempotent); `--json` prints the event as it is. Every
    /// field is named, so a new one does not compile until it is handled.
    pub fn for_terminal(&self) -> Event {
        let s = |text: &String| safe(text).into_owned();
        match self {
            Event::Room { room, command } => Event::Room {
                room: s(room),
                command: s(command),
            },
            Event::Token {
                token,
                command,
                expires_in_secs,
            } => Event::Token {
                token: s(token),
                command: s(command),
                expires_in_secs: *expires_in_secs,
            },
            Event::Admission {
                peer,
                fingerprint,
                sas,
            } => Event::Admission {
                peer: s(peer),
                fingerprint: s(fingerprint),
                sas: s(sas),
            },
            Event::Waiting {
                listen,
                expires_in_secs,
            } => Event::Waiting {
                listen: s(listen),
                expires_in_secs: *expires_in_secs,
            },
            Event::Matched { peer, role } => Event::Matched {
                peer: s(peer),
                role: s(role),
            },
            Event::Rejected { addr, reason } => Event::Rejected {
                addr: s(addr),
                reason: s(reason),
            },
            Event::Connected {
                peer,
                addr,
                path,
                sas,
                role,
                resumed,
                verified,
                fingerprint,
            } => Event::Connected {
                peer: s(peer),
                addr: s(addr),
                path: s(path),
                sas: s(sas),
                role: s(role),
                resumed: *resumed,
                verified: *verified,
                fingerprint: s(fingerprint),
            },
            Event::Warning { code, text } => Event::Warning {
                code: s(code),
                text: s(text),
            },
            Event::Message {
                from,
                text,
                id,
                sent_at_ms,
            } => Event::Message {
                from: s(from),
                text: s(text),
                id: *id,
                sent_at_ms: *sent_at_ms,
            },
            Event::Sent { id, text, pending } => Event::Sent {
                id: *id,
                text: s(text),
                pending: *pending,
            },
            Event::Ack { id } => Event::Ack { id: *id },
            Event::Stored { id, expires_unix } => Event::Stored {
                id: *id,
                expires_unix: *expires_unix,
            },
            Event::Expired { id } => Event::Expired { id: *id },
            Event::Read { id } => Event::Read { id: *id },
            Event::Contacts { contacts } => Event::Contacts {
                contacts: contacts
                    .iter()
                    .map(|c| ContactState {
                        name: s(&c.name),
                        fingerprint: s(&c.fingerprint),
                        ..c.clone()
                    })
                    .collect(),
            },
            Event::Peer {
                name,
                addr,
                path,
                sas,
                rtt_ms,
            } => Event::Peer {
                name: s(name),
                addr: s(addr),
                path: s(path),
                sas: s(sas),
                rtt_ms: *rtt_ms,
            },
            Event::Verify {
                sas,
                peer,
                verified,
            } => Event::Verify {
                sas: s(sas),
                peer: s(peer),
                verified: *verified,
            },
            Event::Rtt { rtt_ms } => Event::Rtt { rtt_ms: *rtt_ms },
            Event::Reconnecting {
                reason,
                attempt,
                retry_in_ms,
            } => Event::Reconnecting {
                reason: s(reason),
                attempt: *attempt,
                retry_in_ms: *retry_in_ms,
            },
            Event::History { lines } => Event::History {
                lines: lines
                    .iter()
                    .map(
                        |HistoryLine {
                             at_ms,
                             from,
                             text,
                             outgoing,
                             acked,
                         }| HistoryLine {
                            at_ms: *at_ms,
                            from: s(from),
                            text: s(text),
                            outgoing: *outgoing,
                            acked: *acked,
                        },
                    )
                    .collect(),
            },
            Event::FileOffer {
                id,
                from,
                name,
                size,
            } => Event::FileOffer {
                id: *id,
                from: s(from),
                name: s(name),
                size: *size,
            },
            Event::Progress {
                id,
                direction,
                name,
                bytes,
                total,
                rate_bps,
                eta_secs,
            } => Event::Progress {
                id: *id,
                direction: s(direction),
                name: s(name),
                bytes: *bytes,
                total: *total,
                rate_bps: *rate_bps,
                eta_secs: *eta_secs,
            },
            Event::FileDone {
                id,
                direction,
                name,
                path,
                blake3,
            } => Event::FileDone {
                id: *id,
                direction: s(direction),
                name: s(name),
                path: path.as_ref().map(s),
                blake3: s(blake3),
            },
            Event::FileStopped {
                id,
                direction,
                name,
                reason,
            } => Event::FileStopped {
                id: *id,
                direction: s(direction),
                name: s(name),
                reason: s(reason),
            },
            // The `/help` lists are ours and have lines; any other info is one line.
            Event::Info { text } if is_help_text(text) => Event::Info { text: text.clone() },
            Event::Info { text } => Event::Info { text: s(text) },
            Event::GroupJoined {
                room,
                member,
                present,
                max_members,
            } => Event::GroupJoined {
                room: s(room),
                member: *member,
                present: *present,
                max_members: *max_members,
            },
            Event::MemberJoined {
                member,
                peer,
                fingerprint,
                addr,
                path,
                sas,
                verified,
            } => Event::MemberJoined {
                member: *member,
                peer: s(peer),
                fingerprint: s(fingerprint),
                addr: s(addr),
                path: s(path),
                sas: s(sas),
                verified: *verified,
            },
            Event::MemberLeft {
                member,
                peer,
                reason,
            } => Event::MemberLeft {
                member: *member,
                peer: s(peer),
                reason: s(reason),
            },
            Event::GroupMessage {
                from,
                author,
                linked,
                own,
                seq,
                depth,
                sent_at_ms,
                text,
            } => Event::GroupMessage {
                from: s(from),
                author: s(author),
                linked: *linked,
                own: *own,
                seq: *seq,
                depth: *depth,
                sent_at_ms: *sent_at_ms,
                text: s(text),
            },
            Event::Member {
                member,
                name,
                fingerprint,
                addr,
                path,
                sas,
                rtt_ms,
                verified,
            } => Event::Member {
                member: *member,
                name: s(name),
                fingerprint: s(fingerprint),
                addr: s(addr),
                path: s(path),
                sas: s(sas),
                rtt_ms: *rtt_ms,
                verified: *verified,
            },
            Event::Disconnected { reason } => Event::Disconnected { reason: s(reason) },
            Event::Conversations { front, items } => Event::Conversations {
                front: *front,
                items: items
                    .iter()
                    .map(|item| ConvItem {
                        label: s(&item.label),
                        kind: s(&item.kind),
                        state: s(&item.state),
                        path: s(&item.path),
                        id: s(&item.id),
                        ..item.clone()
                    })
                    .collect(),
            },
            Event::Closed { reason } => Event::Closed { reason: s(reason) },
            Event::Error { code, text } => Event::Error {
                code: s(code),
                text: s(text),
            },
        }
    }
}

/// Whether `text` is one of the `/help` lists (exactly: a peer's words inside
/// an info never pass for one, so they never keep a line break).
pub fn is_help_text(text: &str) -> bool {
    text == HELP || text == GROUP_HELP || text == MESSENGER_HELP
}

/// One past message, as `/history` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryLine {
    pub at_ms: u64,
    pub from: String,
    pub text: String,
    pub outgoing: bool,
    pub acked: bool,
}

/// The messenger's own commands, on top of each conversation's.
pub const MESSENGER_HELP: &str = "\
Conversations (several at once):
  /room CODE    open a two-party room;  /group CODE   join a group room
  /new          a fresh room code to pass on;  /new group   the same for a group
  /to CONTACT   talk to a contact;  /connect TOKEN   dial a token;  /token   make one
  /list         the open conversations;  /switch N|NAME   bring one to the front
  /peers        who is linked in the conversation in front, and which contacts are online
  /msg N|NAME TEXT   send to a conversation that is not in front
  /close        leave the conversation in front (it is not reopened)
  /forget       close it and delete its messages from your history (asks first)
  /quit         leave them all (they are reopened when you start the client again)
In the full-screen view: Alt-1…9 picks a conversation, Ctrl-N / Ctrl-P the next / previous.";

/// The text `/help` shows.
pub const HELP: &str = "\
Type a line and press Enter to send it. Commands:
  /help      this list
  /peers     who you are talking to: address, path, security code, round trip
  /verify    show the security code again (compare it with your peer)
  /verify yes   mark the code as compared (kept across reconnects with the same keys)
  /history [N]  the last N messages of this chat (default 20)
  /send PATH    offer a file;  /accept ID, /reject ID, /cancel ID
  /quit      leave (so do Ctrl-C and Ctrl-D)
A line starting with // sends a message that starts with /.";

/// `/help` in a group room.
pub const GROUP_HELP: &str = "\
Group room: type a line and press Enter to send it to every member. Commands:
  /help      this list
  /peers     the members linked with you: path, security code, round trip, verified
  /verify [NAME]  show the security code with each member (or NAME); compare it with one
  /verify NAME yes   mark the code with NAME as compared
  /history [N]  the last N messages of this room, in the order every member shares
  /quit      leave (so do Ctrl-C and Ctrl-D)
File transfer is not available in group rooms: use a two-party room (no --group) for files.
A line starting with // sends a message that starts with /.";

/// Which conversation an event belongs to, as every front-end names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConvRef {
    /// The conversation's number in this run (1, 2, …): `/switch 2`, Alt-2.
    pub number: u32,
    /// The first 8 bytes of the conversation id (docs/protocol.md §19.2) in
    /// hex, once the conversation knows it (a fresh code is allocated first).
    pub id: String,
    /// A short label: the room code, `group CODE`, `contact NAME`, `token`.
    pub label: String,
}

impl ConvRef {
    /// The short hex form of a conversation id.
    pub fn short_id(id: &[u8; 32]) -> String {
        id[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Something that shows events: the terminal interface, plain lines, `--json`,
/// the local API. The engine holds one and never learns which.
pub trait Frontend: Send + Sync {
    /// Shows `event`; `conv` is `None` for the messenger's own events.
    fn show(&self, conv: Option<&ConvRef>, event: &Event);

    /// A conversation learned its id and label (see [`Events::named`]).
    fn named(&self, _number: u32, _id: &[u8; 32], _label: &str) {}

    /// The conversation list changed (opened, closed, state, unread, front):
    /// for front-ends that keep it on screen.
    fn conversations(&self, _front: Option<u32>, _items: &[ConvItem]) {}
}

/// The handle a conversation (or the messenger) reports through: events go to
/// the front-end tagged with the conversation they belong to.
#[derive(Clone)]
pub struct Events {
    sink: Arc<dyn Frontend>,
    conv: Option<ConvRef>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").field("conv", &self.conv).finish()
    }
}

impl Events {
    /// Events of the messenger itself (no conversation).
    pub fn new(sink: Arc<dyn Frontend>) -> Events {
        Events { sink, conv: None }
    }

    /// The same front-end, for events of conversation `conv`.
    pub fn for_conversation(&self, conv: ConvRef) -> Events {
        Events {
            sink: Arc::clone(&self.sink),
            conv: Some(conv),
        }
    }

    /// Shows one event.
    pub fn show(&self, event: &Event) {
        self.sink.show(self.conv.as_ref(), event);
    }

    /// Tells the front-end this conversation's id and label, once known.
    pub fn named(&self, id: &[u8; 32], label: &str) {
        if let Some(conv) = &self.conv {
            self.sink.named(conv.number, id, label);
        }
    }
}

/// `1.5 MiB` style sizes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
