//! The messenger engine: one profile, any number of conversations at once.
//!
//! Each conversation is a task of its own ([`app::run`]: its own port, mediator
//! link, peer links and typed-line channel), so one that fails never takes the
//! others down. The engine turns the person's lines into [`Command`]s (open,
//! switch, close, send to one), routes every other line to the conversation in
//! front, keeps the conversation list (state, path, members, verified mark,
//! unread count) from the events passing through it to the front-end, and keeps
//! what is open in the store so a client started again reopens it. It has no
//! terminal code: front-ends implement [`Frontend`] and hand it typed lines.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::rngs::OsRng;
use rand::RngCore;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::config::{parse_listen, Config};
use crate::conversation::{self, Shared};
use crate::error::ClientError;
use crate::events::InputEvent;
use crate::events::{ContactState, ConvItem, ConvRef, Event, Events, Frontend, MESSENGER_HELP};
use crate::history::now_ms;
use crate::history::{History, OpenEntry, OpenKind};
use crate::presence::Ringing;

/// Commands and the end of input waiting for one conversation's task.
const CONVERSATION_INPUT: usize = 64;
/// Lines typed for one conversation that its typist has not handed on yet
/// (each at most the input's line limit); beyond this, typing waits.
const TYPED_AHEAD: usize = 64;
/// How long a token made by `/token` stays valid (as `client token`'s default).
const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// What a conversation is opened as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Open {
    Room(String),
    Group(String),
    /// A fresh code (from the mediator's nameplates, or generated on a LAN).
    New {
        group: bool,
    },
    To(String),
    Connect(String),
    /// Host a connection token.
    Token,
}

impl Open {
    fn kind(&self) -> &'static str {
        match self {
            Open::Room(_) | Open::New { group: false } => "room",
            Open::Group(_) | Open::New { group: true } => "group",
            Open::To(_) => "contact",
            Open::Connect(_) | Open::Token => "token",
        }
    }

    fn label(&self) -> String {
        match self {
            Open::Room(code) => code.clone(),
            Open::Group(code) => format!("group {code}"),
            Open::New { group: false } => "new room".into(),
            Open::New { group: true } => "new group".into(),
            Open::To(contact) => format!("contact {contact}"),
            Open::Connect(_) | Open::Token => "token".into(),
        }
    }

    /// What the store keeps to reopen it; a fresh code is kept once it is known.
    fn stored(&self) -> Option<OpenEntry> {
        let (kind, target) = match self {
            Open::Room(code) => (OpenKind::Room, code),
            Open::Group(code) => (OpenKind::Group, code),
            Open::To(contact) => (OpenKind::Contact, contact),
            Open::New { .. } | Open::Connect(_) | Open::Token => return None,
        };
        Some(OpenEntry {
            kind,
            target: target.clone(),
        })
    }

    fn from_stored(entry: &OpenEntry) -> Open {
        match entry.kind {
            OpenKind::Room => Open::Room(entry.target.clone()),
            OpenKind::Group => Open::Group(entry.target.clone()),
            OpenKind::Contact => Open::To(entry.target.clone()),
        }
    }

    /// The conversation the command line names, if any.
    fn from_config(config: &Config) -> Option<Open> {
        if let Some(token) = &config.connect {
            return Some(Open::Connect(token.clone()));
        }
        if config.token_ttl.is_some() {
            return Some(Open::Token);
        }
        if let Some(to) = &config.to {
            return Some(Open::To(to.clone()));
        }
        match &config.room {
            Some(room) if config.group_room => Some(Open::Group(room.clone())),
            Some(room) => Some(Open::Room(room.clone())),
            None => None,
        }
    }
}

/// One thing the person asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Open(Open),
    Switch(String),
    Close,
    /// Close the conversation in front and delete its history (`yes`: confirmed).
    Forget {
        confirmed: bool,
    },
    List,
    /// `/peers`: the front conversation's peers, then every contact online
    /// or not.
    Peers,
    Msg {
        to: String,
        text: String,
    },
    Help,
    Quit,
    /// Anything else: a message or a conversation's own command, for the
    /// conversation in front.
    Line(String),
    /// A messenger command typed wrong: what to type instead.
    Usage(String),
}

/// Reads one typed line as a command.
pub fn parse(line: &str) -> Command {
    let trimmed = line.trim();
    if !trimmed.starts_with('/') || trimmed.starts_with("//") {
        return Command::Line(line.to_owned());
    }
    let (word, rest) = trimmed
        .split_once(char::is_whitespace)
        .map_or((trimmed, ""), |(w, r)| (w, r.trim()));
    let arg = |usage: &str, make: fn(String) -> Command| {
        if rest.is_empty() || rest.contains(char::is_whitespace) {
            Command::Usage(usage.to_owned())
        } else {
            make(rest.to_owned())
        }
    };
    match word {
        "/room" => arg("usage: /room CODE", |c| Command::Open(Open::Room(c))),
        "/group" => arg("usage: /group CODE", |c| Command::Open(Open::Group(c))),
        "/to" => arg(
            "usage: /to CONTACT (a name or fingerprint from `client contacts`)",
            |c| Command::Open(Open::To(c)),
        ),
        "/connect" => arg("usage: /connect TOKEN", |c| Command::Open(Open::Connect(c))),
        "/switch" => arg("usage: /switch N|NAME", Command::Switch),
        "/new" => match rest {
            "" => Command::Open(Open::New { group: false }),
            "group" => Command::Open(Open::New { group: true }),
            _ => Command::Usage("usage: /new, or /new group".into()),
        },
        "/token" if rest.is_empty() => Command::Open(Open::Token),
        "/list" if rest.is_empty() => Command::List,
        "/peers" if rest.is_empty() => Command::Peers,
        "/close" if rest.is_empty() => Command::Close,
        "/forget" => match rest {
            "" => Command::Forget { confirmed: false },
            "yes" => Command::Forget { confirmed: true },
            _ => Command::Usage("usage: /forget, then /forget yes to confirm".into()),
        },
        "/quit" if rest.is_empty() => Command::Quit,
        "/help" if rest.is_empty() => Command::Help,
        "/msg" => match rest.split_once(char::is_whitespace) {
            Some((to, text)) if !text.trim().is_empty() => Command::Msg {
                to: to.to_owned(),
                text: text.trim_start().to_owned(),
            },
            _ => Command::Usage("usage: /msg N|NAME TEXT".into()),
        },
        _ => Command::Line(line.to_owned()),
    }
}

/// One open conversation, as the list shows it.
#[derive(Debug)]
struct Entry {
    conv: ConvRef,
    kind: &'static str,
    state: String,
    path: String,
    members: u32,
    verified: bool,
    unread: u32,
    /// Its row in the store's open list, once it has one.
    stored: Option<OpenEntry>,
    /// A fresh code's conversation is stored when its code is shown.
    fresh: Option<bool>,
    /// `/forget yes`: its history is deleted once it has ended.
    forget: bool,
    /// The fingerprints of the peers linked with us in it now (with their
    /// member numbers in a group).
    linked: Vec<(u32, String)>,
    /// Everything typed for it, in order, to its typist ([`typist`]).
    input: mpsc::Sender<InputEvent>,
    /// Straight to its task, past the typist: what the person has seen (for
    /// read receipts), which no typed line waits for.
    seen: mpsc::Sender<InputEvent>,
}

impl Entry {
    fn item(&self) -> ConvItem {
        ConvItem {
            number: self.conv.number,
            id: self.conv.id.clone(),
            label: self.conv.label.clone(),
            kind: self.kind.to_owned(),
            state: self.state.clone(),
            path: self.path.clone(),
            members: self.members,
            verified: self.verified,
            unread: self.unread,
        }
    }

    /// Follows `event` in the list; true when the list changed.
    fn follow(&mut self, event: &Event, in_front: bool) -> bool {
        let state = |s: &mut String, to: &str| {
            let changed = s != to;
            *s = to.to_owned();
            changed
        };
        match event {
            Event::Waiting { .. } => state(&mut self.state, "waiting"),
            // A group's members are matched one by one after it joined.
            Event::Matched { .. } if self.kind != "group" => state(&mut self.state, "connecting"),
            Event::Connected {
                path,
                verified,
                fingerprint,
                ..
            } => {
                self.linked = vec![(0, fingerprint.clone())];
                self.path.clone_from(path);
                self.verified = *verified;
                state(&mut self.state, "connected");
                true
            }
            Event::Verify { verified, .. } => {
                let changed = self.verified != *verified;
                self.verified = *verified;
                changed
            }
            Event::Reconnecting { .. } => {
                self.linked.clear();
                state(&mut self.state, "reconnecting")
            }
            Event::Disconnected { .. } => {
                self.linked.clear();
                state(&mut self.state, "ended")
            }
            Event::GroupJoined { .. } => {
                self.members = 1;
                state(&mut self.state, "joined");
                true
            }
            Event::MemberJoined {
                member,
                fingerprint,
                ..
            } => {
                self.linked.push((*member, fingerprint.clone()));
                self.members = self.members.saturating_add(1);
                self.state = "joined".into();
                true
            }
            Event::MemberLeft { member, .. } => {
                self.linked.retain(|(m, _)| m != member);
                self.members = self.members.saturating_sub(1).max(1);
                true
            }
            Event::Message { .. } | Event::FileOffer { .. } if !in_front => {
                self.unread = self.unread.saturating_add(1);
                true
            }
            Event::GroupMessage { own: false, .. } if !in_front => {
                self.unread = self.unread.saturating_add(1);
                true
            }
            _ => false,
        }
    }
}

/// The table behind the list.
#[derive(Debug, Default)]
struct Table {
    entries: BTreeMap<u32, Entry>,
    front: Option<u32>,
    next: u32,
}

impl Table {
    fn items(&self) -> Vec<ConvItem> {
        self.entries.values().map(Entry::item).collect()
    }

    /// A conversation by number, or by a label or id that names exactly one.
    fn find(&self, which: &str) -> Result<u32, String> {
        if let Ok(n) = which.parse::<u32>() {
            return if self.entries.contains_key(&n) {
                Ok(n)
            } else {
                Err(format!("no conversation number {n}: /list shows them"))
            };
        }
        let lower = which.to_lowercase();
        let hits: Vec<u32> = self
            .entries
            .values()
            .filter(|e| {
                let label = e.conv.label.to_lowercase();
                label == lower
                    || label.strip_prefix("contact ").is_some_and(|n| n == lower)
                    || label.strip_prefix("group ").is_some_and(|n| n == lower)
                    || (!e.conv.id.is_empty() && e.conv.id.starts_with(&lower))
            })
            .map(|e| e.conv.number)
            .collect();
        match hits.as_slice() {
            [n] => Ok(*n),
            [] => Err(format!(
                "no open conversation is called {}: /list shows them",
                wire::sanitize_for_terminal(which)
            )),
            _ => Err(format!(
                "{} names several conversations: use its number from /list",
                wire::sanitize_for_terminal(which)
            )),
        }
    }
}

/// Sits between the conversations and the front-end: follows the list, stores
/// fresh codes, tags events with the conversation's current name.
struct Hub {
    front: Arc<dyn Frontend>,
    table: Mutex<Table>,
    /// The store's one connection, shared by every conversation.
    store: Option<History>,
}

impl Hub {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores or unstores an entry of the open list; a store that fails is
    /// reported and the conversation goes on.
    fn store(&self, entry: &OpenEntry, open: bool) {
        let Some(store) = &self.store else { return };
        let result = if open {
            store.remember_open(entry, now_ms())
        } else {
            store.forget_open(entry)
        };
        if let Err(e) = result {
            self.front.show(
                None,
                &Event::Warning {
                    code: "store".into(),
                    text: format!("{e} (the conversation list will not come back by itself)"),
                },
            );
        }
    }

    /// Tells the front-end the list changed.
    fn list_changed(&self) {
        let (front, items) = {
            let table = self.table();
            (table.front, table.items())
        };
        self.front.conversations(front, &items);
    }
}

impl Frontend for Hub {
    fn show(&self, conv: Option<&ConvRef>, event: &Event) {
        let Some(conv) = conv else {
            self.front.show(None, event);
            return;
        };
        let (tagged, changed, fresh) = {
            let mut table = self.table();
            let front = table.front;
            let Some(entry) = table.entries.get_mut(&conv.number) else {
                drop(table);
                self.front.show(Some(conv), event);
                return;
            };
            let in_front = front == Some(conv.number);
            if let (Event::Message { id, .. }, true) = (event, in_front) {
                // Shown in front: seen (a read receipt, where both allow it).
                let _ = entry.seen.try_send(InputEvent::Seen { seq: *id });
            }
            let mut changed = entry.follow(event, in_front);
            // A fresh code becomes the conversation's name once it is shown.
            let mut fresh = None;
            if let (Event::Room { room, .. }, Some(group)) = (event, entry.fresh) {
                entry.fresh = None;
                entry.conv.label = if group {
                    format!("group {room}")
                } else {
                    room.clone()
                };
                let stored = OpenEntry {
                    kind: if group {
                        OpenKind::Group
                    } else {
                        OpenKind::Room
                    },
                    target: room.clone(),
                };
                entry.stored = Some(stored.clone());
                fresh = Some(stored);
                changed = true;
            }
            (entry.conv.clone(), changed, fresh)
        };
        if let Some(stored) = fresh {
            self.store(&stored, true);
        }
        self.front.show(Some(&tagged), event);
        if changed {
            self.list_changed();
        }
    }

    fn named(&self, number: u32, id: &[u8; 32], label: &str) {
        {
            let mut table = self.table();
            let Some(entry) = table.entries.get_mut(&number) else {
                return;
            };
            entry.conv.id = ConvRef::short_id(id);
            if entry.fresh.is_none() {
                entry.conv.label = label.to_owned();
            }
        }
        self.list_changed();
    }
}

/// Runs the messenger until every conversation has ended or the person quits;
/// returns how the last conversation ended (a run of one conversation exits
/// as it always did).
pub async fn run(
    config: Config,
    front: Arc<dyn Frontend>,
    input: mpsc::Receiver<InputEvent>,
) -> Result<(), ClientError> {
    let base = crate::identity::profile_dir(config.profile.as_deref())?;
    let claim = crate::identity::claim_profile(&base)?;
    run_claimed(config, claim, front, input).await
}

/// [`run`] on a profile the caller claimed already: a front-end that keeps
/// files in the profile (the local API's socket) needs the directory this
/// process holds before the messenger starts.
pub async fn run_claimed(
    mut config: Config,
    claim: crate::identity::ProfileClaim,
    front: Arc<dyn Frontend>,
    mut input: mpsc::Receiver<InputEvent>,
) -> Result<(), ClientError> {
    if let Some(from) = &claim.moved_from {
        front.show(
            None,
            &Event::Info {
                text: format!(
                    "Another client runs on the profile {}: this one uses {} (an identity of its \
                     own, with its own contacts and history).",
                    from.display(),
                    claim.dir.display()
                ),
            },
        );
    }
    config.profile = Some(claim.dir.clone());
    let store = if config.no_history {
        None
    } else {
        let profile = claim.dir.clone();
        let path = config
            .history
            .clone()
            .unwrap_or_else(|| profile.join("history.sqlite3"));
        Some(History::open(&path)?)
    };
    let stored = match &store {
        Some(store) => store.open_conversations()?,
        None => Vec::new(),
    };
    let presence = presence(&config, &claim.dir, store.as_ref());
    let hub = Arc::new(Hub {
        front,
        table: Mutex::new(Table {
            next: 1,
            ..Table::default()
        }),
        store,
    });
    let mut engine = Engine {
        _profile: claim,
        events: Events::new(Arc::clone(&hub) as Arc<dyn Frontend>),
        hub,
        tasks: JoinSet::new(),
        task_numbers: std::collections::HashMap::new(),
        max: usize::from(config.max_conversations),
        idle_ok: Open::from_config(&config).is_none(),
        config,
        quitting: false,
        rings: None,
        lan_calls: None,
    };
    engine.start_presence(presence);
    match Open::from_config(&engine.config) {
        Some(open) => {
            let others = stored
                .iter()
                .filter(|e| open.stored().as_ref() != Some(*e))
                .count();
            engine.open(open, true)?;
            if others > 0 {
                engine.events.show(&Event::Info {
                    text: format!(
                        "{others} other conversation(s) from your last run stay closed: start \
                         the client without --room/--to/--connect to reopen them all."
                    ),
                });
            }
        }
        None if !stored.is_empty() => {
            let count = stored.len().min(engine.max);
            for entry in stored.iter().take(count) {
                engine.open(Open::from_stored(entry), true)?;
            }
            engine.events.show(&Event::Info {
                text: format!("Reopened {count} conversation(s) from your last run."),
            });
        }
        // A fresh room on the LAN would announce our name to everyone there;
        // with LAN presence running, contacts find us without one.
        None if engine.config.server.is_none() && engine.rings.is_some() => {
            engine.events.show(&Event::Info {
                text: "No conversation open: your contacts on this network find you by \
                       themselves. /new makes a fresh room code, /to CONTACT reaches a contact."
                    .into(),
            });
        }
        None => engine.open(
            Open::New {
                group: engine.config.group_room,
            },
            true,
        )?,
    }
    engine.run(&mut input).await
}

/// Rings waiting for the messenger; more wait at the presence task.
const RING_QUEUE: usize = 16;
/// Conversation instance ids on their way to LAN presence; more opened at once
/// than this only risk one echo ringing.
const OWN_CALLS: usize = 16;

/// The next ring, or never without presence.
async fn next_ring(rings: &mut Option<mpsc::Receiver<Ringing>>) -> Option<Ringing> {
    match rings {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// What presence waits with: the contacts' tags at the mediator
/// (docs/protocol.md §21), or their keys on the LAN when there is none (§14.4).
enum Presence {
    Mediator(String, HashMap<[u8; 32], Ringing>),
    Lan(Vec<crate::lan::LanContact>),
}

/// The messenger's presence: none with `--no-presence`, without a history
/// (contacts live there), an identity or a contact.
fn presence(
    config: &Config,
    profile: &std::path::Path,
    store: Option<&History>,
) -> Option<Presence> {
    let (false, Some(store)) = (config.no_presence, store) else {
        return None;
    };
    let found = crate::identity::load_or_create(profile).and_then(|(identity, _)| {
        Ok(match &config.server {
            Some(server) => Presence::Mediator(
                server.clone(),
                crate::presence::contact_tags(&identity, store)?,
            ),
            None => Presence::Lan(crate::presence::lan_contacts(&identity, store)?),
        })
    });
    match found {
        Ok(Presence::Mediator(_, tags)) if tags.is_empty() => None,
        Ok(Presence::Lan(contacts)) if contacts.is_empty() => None,
        Ok(presence) => Some(presence),
        Err(e) => {
            tracing::warn!(error = %e, "presence is off: cannot read the contacts");
            None
        }
    }
}

/// The running messenger.
struct Engine {
    /// The profile this process holds, for as long as it runs.
    _profile: crate::identity::ProfileClaim,
    config: Config,
    hub: Arc<Hub>,
    /// The messenger's own events (no conversation).
    events: Events,
    tasks: JoinSet<(u32, Result<(), ClientError>)>,
    /// Which conversation each task runs, for a task that panicked.
    task_numbers: std::collections::HashMap<tokio::task::Id, u32>,
    max: usize,
    /// The person is leaving (quit, end of input, Ctrl-C): conversations that
    /// end now stay in the store's open list.
    quitting: bool,
    /// Contacts whose ring came through presence (none without presence).
    rings: Option<mpsc::Receiver<Ringing>>,
    /// LAN presence (§14.4) learns here the instance id each conversation
    /// announces and calls under, so that its echo does not ring.
    lan_calls: Option<mpsc::Sender<[u8; wire::lan::INSTANCE_LEN]>>,
    /// Started with no conversation on the command line: the messenger stays
    /// up with none open while contacts can reach it.
    idle_ok: bool,
}

impl Engine {
    async fn run(&mut self, input: &mut mpsc::Receiver<InputEvent>) -> Result<(), ClientError> {
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        let mut input_open = true;
        loop {
            tokio::select! {
                Some(ended) = self.tasks.join_next() => {
                    let (number, result) = match ended {
                        Ok(pair) => pair,
                        // A bug in one conversation ends it alone.
                        Err(e) => {
                            let Some(&number) = self.task_numbers.get(&e.id()) else {
                                continue;
                            };
                            let why = anyhow::anyhow!("the conversation failed inside the client: {e}");
                            (number, Err(ClientError::Internal(why)))
                        }
                    };
                    self.task_numbers.retain(|_, n| *n != number);
                    if let Some(last) = self.ended(number, result) {
                        return last;
                    }
                }
                event = input.recv(), if input_open => match event {
                    Some(InputEvent::Line(line)) => {
                        self.on_line(&line).await;
                        if self.quitting && self.hub.table().entries.is_empty() {
                            return Ok(());
                        }
                    }
                    Some(too_long @ InputEvent::TooLong { .. }) => {
                        self.to_front(too_long).await;
                    }
                    // The messenger makes these itself; a front-end has none.
                    Some(InputEvent::Seen { .. }) => {}
                    Some(InputEvent::Eof) | None => {
                        input_open = false;
                        self.quitting = true;
                        self.to_all(InputEvent::Eof).await;
                        if self.hub.table().entries.is_empty() {
                            return Ok(());
                        }
                    }
                },
                Some(contact) = next_ring(&mut self.rings) => self.on_ring(contact),
                // Every conversation sees Ctrl-C too and leaves; the list stays.
                _ = &mut ctrl_c => {
                    self.quitting = true;
                    if self.hub.table().entries.is_empty() {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// A conversation ended: it leaves the list (and the store's, unless the
    /// person is quitting). Returns the run's result when it was the last.
    fn ended(
        &mut self,
        number: u32,
        result: Result<(), ClientError>,
    ) -> Option<Result<(), ClientError>> {
        let entry = {
            let mut table = self.hub.table();
            let entry = table.entries.remove(&number);
            if table.front == Some(number) {
                table.front = table.entries.keys().next().copied();
            }
            entry
        };
        if let Some(stored) = entry.as_ref().and_then(|e| e.stored.as_ref()) {
            if !self.quitting {
                self.hub.store(stored, false);
            }
        }
        if let Some(entry) = entry.as_ref().filter(|e| e.forget) {
            self.forget(&entry.conv);
        }
        if self.hub.table().entries.is_empty() && !self.stays_idle() {
            return Some(result);
        }
        if let Some(entry) = entry {
            let events = self.events.for_conversation(entry.conv);
            if let Err(e) = &result {
                events.show(&Event::Error {
                    code: e.code().to_string(),
                    text: e.to_string(),
                });
            }
            events.show(&Event::Closed {
                reason: match &result {
                    Ok(()) => "it ended".into(),
                    Err(e) => e.to_string(),
                },
            });
        }
        self.hub.list_changed();
        None
    }

    async fn on_line(&mut self, line: &str) {
        match parse(line) {
            Command::Line(line) => {
                let front = self.hub.table().front;
                match front {
                    Some(n) => self.line_to(n, line).await,
                    None => self.to_front(InputEvent::Line(line)).await,
                }
            }
            Command::Open(open) => {
                if let Err(e) = self.open(open, false) {
                    self.error(&e);
                }
            }
            Command::Switch(which) => {
                let found = self.hub.table().find(&which);
                match found {
                    Ok(n) => self.switch(n),
                    Err(text) => self.usage(text),
                }
            }
            Command::Close => self.close_front(false).await,
            Command::Forget { confirmed: false } => {
                let front = self.hub.table().front;
                let label = front.and_then(|n| {
                    self.hub
                        .table()
                        .entries
                        .get(&n)
                        .map(|e| e.conv.label.clone())
                });
                match label {
                    Some(label) => self.events.show(&Event::Info {
                        text: format!(
                            "/forget yes closes {label} and deletes its messages from your \
                             history for good (the other side keeps its own)."
                        ),
                    }),
                    None => self.usage("no conversation is open".into()),
                }
            }
            Command::Forget { confirmed: true } => self.close_front(true).await,
            Command::List => self.show_list(),
            Command::Peers => {
                if self.hub.table().front.is_some() {
                    self.to_front(InputEvent::Line("/peers".into())).await;
                }
                self.show_contacts();
            }
            Command::Msg { to, text } => {
                let found = self.hub.table().find(&to);
                match found {
                    Ok(n) => self.line_to(n, text).await,
                    Err(text) => self.usage(text),
                }
            }
            Command::Help => {
                self.events.show(&Event::Info {
                    text: MESSENGER_HELP.into(),
                });
                self.to_front(InputEvent::Line("/help".into())).await;
            }
            Command::Quit => {
                self.quitting = true;
                self.to_all(InputEvent::Line("/quit".into())).await;
            }
            Command::Usage(text) => self.usage(text),
        }
    }

    /// Ends the conversation in front for good (`/close`; `/forget yes` also
    /// deletes its history once it has ended): off the store's open list, then
    /// left as its own `/quit` leaves it.
    async fn close_front(&self, forget: bool) {
        let front = self.hub.table().front;
        let Some(n) = front else {
            self.usage("no conversation is open".into());
            return;
        };
        let stored = {
            let mut table = self.hub.table();
            table.entries.get_mut(&n).and_then(|e| {
                e.forget = forget;
                e.stored.clone()
            })
        };
        if let Some(stored) = stored {
            self.hub.store(&stored, false);
        }
        self.to(n, InputEvent::Line("/quit".into())).await;
    }

    /// Deletes an ended conversation's history (`/forget yes`).
    fn forget(&self, conv: &ConvRef) {
        let result = {
            let Some(store) = &self.hub.store else { return };
            let found = if conv.id.is_empty() {
                Err(ClientError::Usage(
                    "a token holder keeps one conversation per dialer: \
                     forget them with `client history forget ID`"
                        .into(),
                ))
            } else {
                store.find_conversation(&conv.id)
            };
            found.and_then(|found| store.forget_conversation(&found.key))
        };
        match result {
            Ok(gone) => self.events.show(&Event::Info {
                text: format!(
                    "Forgot {}: {} messages deleted from your history.",
                    conv.label, gone.messages
                ),
            }),
            Err(e) => self.events.show(&Event::Info {
                text: format!("{}: nothing deleted ({e})", conv.label),
            }),
        }
    }

    /// Every contact, and whether it is linked with us now (`/peers`).
    fn show_contacts(&self) {
        let contacts = match self.hub.store.as_ref().map(History::contacts) {
            Some(Ok(contacts)) => contacts,
            Some(Err(e)) => {
                self.error(&e);
                return;
            }
            None => Vec::new(),
        };
        let table = self.hub.table();
        let states = contacts
            .into_iter()
            .map(|c| {
                let conversation = table
                    .entries
                    .values()
                    .find(|e| e.linked.iter().any(|(_, fp)| *fp == c.fingerprint))
                    .map(|e| e.conv.number);
                ContactState {
                    name: c.name,
                    fingerprint: c.fingerprint,
                    verified: c.verified,
                    online: conversation.is_some(),
                    conversation,
                }
            })
            .collect();
        drop(table);
        self.events.show(&Event::Contacts { contacts: states });
    }

    fn show_list(&self) {
        let (front, items) = {
            let table = self.hub.table();
            (table.front, table.items())
        };
        self.events.show(&Event::Conversations { front, items });
    }

    fn switch(&self, number: u32) {
        {
            let mut table = self.hub.table();
            table.front = Some(number);
            if let Some(entry) = table.entries.get_mut(&number) {
                entry.unread = 0;
                // What it holds is before the person's eyes now.
                let _ = entry.seen.try_send(InputEvent::Seen { seq: u64::MAX });
            }
        }
        self.hub.list_changed();
        self.show_list();
    }

    fn usage(&self, text: String) {
        self.events.show(&Event::Error {
            code: "usage".into(),
            text,
        });
    }

    fn error(&self, e: &ClientError) {
        self.events.show(&Event::Error {
            code: e.code().to_string(),
            text: e.to_string(),
        });
    }

    /// Starts presence: one connection at the mediator waiting for every
    /// contact (docs/protocol.md §21), or announcements on the LAN without
    /// a mediator (§14.4). Its rings come to [`Engine::on_ring`].
    fn start_presence(&mut self, presence: Option<Presence>) {
        let Some(presence) = presence else {
            return;
        };
        let (tx, rx) = mpsc::channel(RING_QUEUE);
        self.rings = Some(rx);
        let events = self.events.clone();
        match presence {
            Presence::Mediator(server, contacts) => {
                tokio::task::spawn_local(crate::presence::run(server, contacts, tx, events));
            }
            Presence::Lan(contacts) => {
                let lan = crate::lan::LanConfig::new(
                    self.config.lan_port,
                    self.config.lan_timeout,
                    self.config.lan_interface.clone(),
                );
                let (calls, own_calls) = mpsc::channel(OWN_CALLS);
                self.lan_calls = Some(calls);
                tokio::task::spawn_local(crate::lan::presence(
                    lan, contacts, own_calls, tx, events,
                ));
            }
        }
    }

    /// Whether the messenger keeps running with no conversation open: when it
    /// was started as one (no conversation on the command line) and contacts
    /// can still reach it.
    fn stays_idle(&self) -> bool {
        self.idle_ok && !self.quitting && self.rings.is_some()
    }

    /// A contact opened a conversation with us: meet it, unless a conversation
    /// with it is open already (its own link brings the message).
    fn on_ring(&mut self, contact: Ringing) {
        let open = {
            let table = self.hub.table();
            table.entries.values().any(|e| {
                e.stored.as_ref().is_some_and(|s| {
                    s.kind == OpenKind::Contact
                        && (s.target == contact.fingerprint || s.target == contact.name)
                })
            })
        };
        if open || self.quitting {
            return;
        }
        let name = wire::sanitize_for_terminal(&contact.name).into_owned();
        match self.open(Open::To(contact.target.clone()), false) {
            Ok(()) => self.events.show(&Event::Info {
                text: format!("{name} wants to talk: meeting them."),
            }),
            Err(e) => self.events.show(&Event::Info {
                text: format!("{name} wants to talk, but {e}"),
            }),
        }
    }

    async fn to_front(&self, event: InputEvent) {
        let front = self.hub.table().front;
        match front {
            Some(n) => self.to(n, event).await,
            None => self.usage(
                "no conversation is open: /room CODE, /group CODE, /new, /to CONTACT".into(),
            ),
        }
    }

    /// A typed line for conversation `n`, to its typist.
    async fn line_to(&self, n: u32, line: String) {
        self.to(n, InputEvent::Line(line)).await;
    }

    /// Hands an input event to conversation `n`'s typist; waits only while
    /// [`TYPED_AHEAD`] lines wait there already (a pipe into one conversation
    /// that makes typing wait), so one conversation that holds its typing up
    /// does not hold up the others.
    async fn to(&self, n: u32, event: InputEvent) {
        let sender = self.hub.table().entries.get(&n).map(|e| e.input.clone());
        if let Some(sender) = sender {
            // A conversation that ended meanwhile has no reader: nothing to do.
            let _ = sender.send(event).await;
        }
    }

    async fn to_all(&self, event: InputEvent) {
        let senders: Vec<_> = self
            .hub
            .table()
            .entries
            .values()
            .map(|e| e.input.clone())
            .collect();
        for sender in senders {
            let _ = sender.send(event.clone()).await;
        }
    }

    /// Opens a conversation as a task of its own and brings it to the front.
    fn open(&mut self, open: Open, startup: bool) -> Result<(), ClientError> {
        if self.quitting {
            return Err(ClientError::Usage("the client is quitting".into()));
        }
        let (number, first) = {
            let mut table = self.hub.table();
            if table.entries.len() >= self.max {
                return Err(ClientError::Usage(format!(
                    "{} conversations are open, the most this client holds \
                     (--max-conversations): /close one first",
                    table.entries.len()
                )));
            }
            if let Some(stored) = open.stored() {
                if let Some(entry) = table
                    .entries
                    .values()
                    .find(|e| e.stored.as_ref() == Some(&stored))
                {
                    return Err(ClientError::Usage(format!(
                        "that conversation is open already: /switch {}",
                        entry.conv.number
                    )));
                }
            }
            let number = table.next;
            table.next = table.next.saturating_add(1);
            (number, number == 1)
        };
        let mut config = conversation_config(&self.config, &open, first)?;
        if let Some(calls) = &self.lan_calls {
            let mut instance = [0u8; wire::lan::INSTANCE_LEN];
            OsRng.fill_bytes(&mut instance);
            config.lan_instance = Some(instance);
            // Full: this conversation's echo may ring once; nothing else is lost.
            let _ = calls.try_send(instance);
        }
        let (task_input, receiver) = mpsc::channel(CONVERSATION_INPUT);
        let (sender, typed) = mpsc::channel(TYPED_AHEAD);
        let conv = ConvRef {
            number,
            id: String::new(),
            label: open.label(),
        };
        let events = self.events.for_conversation(conv.clone());
        let shared = Shared::new(events.clone());
        shared.set_store(self.hub.store.clone());
        let stored = open.stored();
        {
            let mut table = self.hub.table();
            table.entries.insert(
                number,
                Entry {
                    conv: conv.clone(),
                    kind: open.kind(),
                    state: "opening".into(),
                    path: String::new(),
                    members: 0,
                    verified: false,
                    unread: 0,
                    stored: stored.clone(),
                    fresh: match open {
                        Open::New { group } => Some(group),
                        _ => None,
                    },
                    forget: false,
                    linked: Vec::new(),
                    input: sender,
                    seen: task_input.clone(),
                },
            );
            if !startup || table.front.is_none() {
                table.front = Some(number);
            }
        }
        if let Some(stored) = &stored {
            self.hub.store(stored, true);
        }
        tokio::task::spawn_local(typist(typed, shared.clone(), task_input));
        let task = self.tasks.spawn_local(async move {
            let result = crate::app::run(config, &events, receiver, shared).await;
            (number, result)
        });
        self.task_numbers.insert(task.id(), number);

        self.hub.list_changed();
        Ok(())
    }
}

/// One conversation's typing, in the order typed: text is written through the
/// shared conversation (waiting while too much of ours is unconfirmed, or
/// until the task has set the conversation up); commands, the end of input
/// and the rest go to the conversation's task (waiting while it is busy).
/// Text typed while a command still waits for the task (`/send`, then a line)
/// follows it through the task, so the two keep their order. Ends with the
/// conversation (its task's input closed) or when nothing more can be typed.
async fn typist(
    mut typed: mpsc::Receiver<InputEvent>,
    shared: Shared,
    task: mpsc::Sender<InputEvent>,
) {
    while let Some(event) = typed.recv().await {
        match event {
            InputEvent::Line(line)
                if conversation::command(&line).is_none()
                    && task.capacity() == task.max_capacity() =>
            {
                shared.say(&line).await;
            }
            other => {
                if task.send(other).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The flags of one conversation: the run's, with the conversation's own room,
/// contact or token. Only the first conversation keeps `--listen`'s port and
/// `--advertise`: the others listen on a free port of the same address.
fn conversation_config(base: &Config, open: &Open, first: bool) -> Result<Config, ClientError> {
    let mut config = base.clone();
    config.room = None;
    config.to = None;
    config.connect = None;
    config.token_ttl = None;
    config.group_room = false;
    match open {
        Open::Room(code) => config.room = Some(code.clone()),
        Open::Group(code) => {
            config.room = Some(code.clone());
            config.group_room = true;
        }
        Open::New { group } => config.group_room = *group,
        Open::To(contact) => config.to = Some(contact.clone()),
        Open::Connect(token) => config.connect = Some(token.clone()),
        Open::Token => config.token_ttl = Some(base.token_ttl.unwrap_or(TOKEN_TTL)),
    }
    if !first {
        let listen = parse_listen(&base.listen).map_err(ClientError::Usage)?;
        config.listen = SocketAddr::new(listen.ip(), 0).to_string();
        config.advertise = None;
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_commands() {
        assert_eq!(parse("hello"), Command::Line("hello".into()));
        assert_eq!(parse("//room x"), Command::Line("//room x".into()));
        assert_eq!(
            parse("/room 7-velvet-harbor"),
            Command::Open(Open::Room("7-velvet-harbor".into()))
        );
        assert_eq!(
            parse("/group  3-amber-fox "),
            Command::Open(Open::Group("3-amber-fox".into()))
        );
        assert_eq!(parse("/new"), Command::Open(Open::New { group: false }));
        assert_eq!(
            parse("/new group"),
            Command::Open(Open::New { group: true })
        );
        assert_eq!(
            parse("/msg 2 hi there"),
            Command::Msg {
                to: "2".into(),
                text: "hi there".into()
            }
        );
        assert!(matches!(parse("/msg 2"), Command::Usage(_)));
        assert!(matches!(parse("/room"), Command::Usage(_)));
        assert!(matches!(parse("/room a b"), Command::Usage(_)));
        // A conversation's own commands pass through.
        assert_eq!(parse("/verify yes"), Command::Line("/verify yes".into()));
        assert_eq!(parse("/send a.txt"), Command::Line("/send a.txt".into()));
    }

    fn entry(number: u32, label: &str, id: &str) -> Entry {
        Entry {
            conv: ConvRef {
                number,
                id: id.into(),
                label: label.into(),
            },
            kind: "room",
            state: "connected".into(),
            path: "direct".into(),
            members: 0,
            verified: false,
            unread: 0,
            stored: None,
            fresh: None,
            forget: false,
            linked: Vec::new(),
            input: mpsc::channel(1).0,
            seen: mpsc::channel(1).0,
        }
    }

    #[test]
    fn conversations_are_found_by_number_label_contact_or_id() {
        let mut table = Table::default();
        table.entries.insert(1, entry(1, "7-velvet-harbor", "aa11"));
        table.entries.insert(2, entry(2, "contact erin", "bb22"));
        table
            .entries
            .insert(3, entry(3, "group 3-amber-fox", "bb33"));
        assert_eq!(table.find("2"), Ok(2));
        assert_eq!(table.find("7-velvet-harbor"), Ok(1));
        assert_eq!(table.find("Erin"), Ok(2));
        assert_eq!(table.find("3-amber-fox"), Ok(3));
        assert_eq!(table.find("aa"), Ok(1));
        assert!(table.find("bb").unwrap_err().contains("several"));
        assert!(table.find("9").is_err());
        assert!(table.find("nobody").is_err());
    }

    #[test]
    fn unread_counts_only_what_arrives_behind() {
        let mut e = entry(1, "x", "");
        let msg = Event::Message {
            from: "bob".into(),
            text: "hi".into(),
            id: 1,
            sent_at_ms: 0,
        };
        assert!(!e.follow(&msg, true));
        assert_eq!(e.unread, 0);
        assert!(e.follow(&msg, false));
        assert_eq!(e.unread, 1);
        let own = Event::GroupMessage {
            from: "me".into(),
            author: String::new(),
            linked: true,
            own: true,
            seq: 1,
            depth: 1,
            sent_at_ms: 0,
            text: "x".into(),
        };
        assert!(!e.follow(&own, false));
        assert_eq!(e.unread, 1);
    }
}
