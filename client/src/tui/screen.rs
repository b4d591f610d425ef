//! The messenger screen as plain state: [`Event`]s (tagged with their
//! conversation), the engine's conversation list and keys go in; a frame and the
//! bytes for the terminal's bell and notifications come out. Each conversation
//! has a [`Pane`] of its own (scrollback, status, scroll position); the one the
//! engine has in front is drawn. No terminal I/O here, so it renders the same
//! into ratatui's `TestBackend`.

use std::collections::{BTreeMap, VecDeque};

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Wrap};
use ratatui::Frame;
use wire::sanitize_for_terminal as safe;

use super::Action;
use super::InputLine;
use crate::ui::{human_bytes, render_line, ConvItem, ConvRef, Event};
use engine::events::MESSENGER_HELP;

/// Lines of scrollback kept per conversation; older ones are dropped.
pub const SCROLLBACK: usize = 10_000;
/// Bytes of text kept per conversation's scrollback: with 64 conversations
/// open and messages of up to 16 KiB, the line bound alone would allow gigabytes.
pub const SCROLLBACK_BYTES: usize = 1024 * 1024;
/// The conversation list is drawn beside the messages from this many columns
/// on; a narrower window gives every column to the messages.
pub const LIST_MIN_WIDTH: u16 = 72;
/// Characters of a sender's name a desktop notification carries.
const NOTIFY_FIELD: usize = 48;
/// Continuation rows line up after the `HH:MM ` time stamp.
const INDENT: usize = 6;

/// Where the session stands, as the status bar names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum State {
    /// Reaching the mediator.
    #[default]
    Connecting,
    /// Registered, waiting for the other person.
    Waiting,
    /// The encrypted session is up.
    Secure,
    /// The link dropped; trying again.
    Reconnecting,
    /// The session is over.
    Ended,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Waiting => "waiting",
            State::Secure => "secure",
            State::Reconnecting => "reconnecting",
            State::Ended => "ended",
        }
    }
}

/// What the status bar shows, derived from events only. Strings are already
/// sanitized.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub peer: Option<String>,
    pub path: Option<String>,
    pub sas: Option<String>,
    pub verified: bool,
    pub rtt_ms: Option<u64>,
    pub state: State,
    /// A transfer in progress: `↑ name 45%`.
    pub transfer: Option<String>,
}

/// Delivery of one of our messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Typed while disconnected; goes out when the session is back.
    Queued,
    /// Sent, not yet confirmed by the peer.
    InFlight,
    /// Left at the mediator's mailbox for a peer who is offline.
    Stored,
    /// Outlived the mailbox undelivered.
    Expired,
    /// The peer acknowledged it.
    Delivered,
    /// The peer has seen it (read receipts, where both sides allow them).
    Read,
}

impl Delivery {
    /// The mark after the message text.
    pub fn mark(self) -> &'static str {
        match self {
            Delivery::Queued => "… queued",
            Delivery::InFlight => "…",
            Delivery::Stored => "✉ stored",
            Delivery::Expired => "✗ expired, not delivered",
            Delivery::Delivered => "✓",
            Delivery::Read => "✓✓ read",
        }
    }
}

/// Who a line in the message pane is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Speaker {
    /// Notices: joins, leaves, verification, reconnects, files.
    System,
    /// Something failed (shown in red).
    Error,
    /// The peer said it; the name is sanitized.
    Peer(String),
    /// We said it.
    Own { id: u64, delivery: Delivery },
}

/// One line in the message pane (before wrapping). `text` is sanitized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatLine {
    pub at: String,
    pub speaker: Speaker,
    pub text: String,
}

/// One conversation's part of the screen.
#[derive(Debug, Default)]
struct Pane {
    lines: VecDeque<ChatLine>,
    /// Text bytes in `lines`, bounded by [`SCROLLBACK_BYTES`].
    bytes: usize,
    status: Status,
    /// Rows scrolled up from the newest one; 0 follows the conversation live.
    scroll: usize,
    /// Lines that arrived while scrolled up.
    unseen: usize,
    /// Group rooms: the linked members by member number, shown in the status.
    members: BTreeMap<u32, String>,
}

impl Pane {
    /// The status line's member list: how many, then their names.
    fn member_list(&self) -> String {
        let names: Vec<&str> = self.members.values().map(String::as_str).collect();
        format!("{} members: {}", names.len() + 1, names.join(", "))
    }

    /// The delivery state of our message `id`, searched from the newest line
    /// since acks come for recent messages.
    fn own_line(&mut self, wanted: u64) -> Option<&mut Delivery> {
        self.lines
            .iter_mut()
            .rev()
            .find_map(|line| match &mut line.speaker {
                Speaker::Own { id, delivery } if *id == wanted => Some(delivery),
                _ => None,
            })
    }

    /// Adds `text` (one line per `\n`, each sanitized); `width` is the
    /// message pane's, to keep a scrolled-up view where it is.
    fn push_text(&mut self, now: &str, speaker: Speaker, text: &str, width: u16) {
        let parts: Vec<&str> = match speaker {
            // A message is one line; sanitizing turns its newlines into spaces.
            Speaker::Peer(_) | Speaker::Own { .. } => vec![text],
            Speaker::System | Speaker::Error => text.lines().collect(),
        };
        for part in parts {
            let line = ChatLine {
                at: now.to_string(),
                speaker: speaker.clone(),
                text: safe(part).into_owned(),
            };
            if self.scroll > 0 {
                // Keep the rows in view where they are.
                self.scroll += wrap(&styled(&line), usize::from(width), INDENT).len();
                self.unseen += 1;
            }
            self.bytes += line_bytes(&line);
            self.lines.push_back(line);
            while self.lines.len() > SCROLLBACK
                || (self.bytes > SCROLLBACK_BYTES && self.lines.len() > 1)
            {
                if let Some(old) = self.lines.pop_front() {
                    self.bytes = self.bytes.saturating_sub(line_bytes(&old));
                }
            }
        }
    }

    /// Back to following the conversation.
    fn live(&mut self) {
        self.scroll = 0;
        self.unseen = 0;
    }
}

/// What one scrollback line costs against [`SCROLLBACK_BYTES`].
fn line_bytes(line: &ChatLine) -> usize {
    let speaker = match &line.speaker {
        Speaker::Peer(name) => name.len(),
        _ => 0,
    };
    line.at.len() + line.text.len() + speaker
}

/// The whole screen's state.
#[derive(Debug)]
pub struct Screen {
    /// Each conversation's pane by its number; 0 holds what arrives before the
    /// engine names a conversation in front.
    panes: BTreeMap<u32, Pane>,
    /// The pane drawn: the conversation the engine's list has in front.
    front: u32,
    /// The engine's conversation list, as it last sent it.
    list: Vec<ConvItem>,
    /// The `/help` text while its overlay is open.
    overlay: Option<Vec<String>>,
    /// Message pane size at the last render (width, height), for paging.
    pane: (u16, u16),
    /// Whether the last render had room for the conversation list.
    list_shown: bool,
    /// A short hint shown until the next key (e.g. the line is full).
    hint: Option<String>,
    /// Why the session ended, to repeat on the normal screen after exit.
    farewell: Option<String>,
    /// Switches asked for by a key whose list printout (the engine answers
    /// `/switch` with one) is not added to the pane: the list is on screen.
    switches: u32,
    /// Lines for whichever conversation is in front after the next list
    /// update (a conversation closed: its own pane goes with it).
    notices: Vec<(String, Speaker, String)>,
    /// Also ask for desktop notifications (`--notify`).
    notify: bool,
    /// Bytes for the terminal (bell, notifications) not yet written.
    alerts: Vec<u8>,
}

impl Default for Screen {
    fn default() -> Screen {
        Screen::new()
    }
}

impl Screen {
    /// An empty screen.
    pub fn new() -> Screen {
        let mut panes = BTreeMap::new();
        panes.insert(0, Pane::default());
        Screen {
            panes,
            front: 0,
            list: Vec::new(),
            overlay: None,
            pane: (80, 20),
            list_shown: false,
            hint: None,
            farewell: None,
            switches: 0,
            notices: Vec::new(),
            notify: false,
            alerts: Vec::new(),
        }
    }

    /// The pane in front.
    fn front_pane(&self) -> &Pane {
        // `front` always has a pane (set_list and new make sure).
        self.panes.get(&self.front).unwrap_or(&EMPTY_PANE)
    }

    fn front_pane_mut(&mut self) -> &mut Pane {
        self.panes.entry(self.front).or_default()
    }

    /// The status of the conversation in front.
    pub fn status(&self) -> &Status {
        &self.front_pane().status
    }

    /// The scrollback of the conversation in front.
    pub fn lines(&self) -> &VecDeque<ChatLine> {
        &self.front_pane().lines
    }

    /// The scrollback of conversation `number`, if the screen has one.
    pub fn lines_of(&self, number: u32) -> Option<&VecDeque<ChatLine>> {
        self.panes.get(&number).map(|p| &p.lines)
    }

    /// The status of conversation `number`, if the screen has one.
    pub fn status_of(&self, number: u32) -> Option<&Status> {
        self.panes.get(&number).map(|p| &p.status)
    }

    /// The number of the conversation drawn (0 before the engine named one).
    pub fn front(&self) -> u32 {
        self.front
    }

    pub fn scroll(&self) -> usize {
        self.front_pane().scroll
    }

    pub fn overlay_open(&self) -> bool {
        self.overlay.is_some()
    }

    /// The line that said why the session ended, if it did.
    pub fn farewell(&self) -> Option<&str> {
        self.farewell.as_deref()
    }

    /// Desktop notifications (OSC 9 and 777) besides the bell (`--notify`).
    pub fn set_notify(&mut self, notify: bool) {
        self.notify = notify;
    }

    /// The bytes to write to the terminal after the frame: a bell, and with
    /// `--notify` the notification sequences. Empty most of the time.
    pub fn take_alerts(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.alerts)
    }

    /// A key asked for a switch and the line went to the engine: its list
    /// printout will not be added to the pane.
    pub fn switch_sent(&mut self) {
        self.switches = self.switches.saturating_add(1);
    }

    /// The engine's conversation list changed. The screen follows its front:
    /// the conversation in front is the one drawn, and panes of conversations
    /// that left the list are dropped.
    pub fn set_list(&mut self, front: Option<u32>, items: Vec<ConvItem>) {
        let items: Vec<ConvItem> = items
            .iter()
            .map(|item| ConvItem {
                label: safe(&item.label).into_owned(),
                kind: safe(&item.kind).into_owned(),
                state: safe(&item.state).into_owned(),
                path: safe(&item.path).into_owned(),
                id: safe(&item.id).into_owned(),
                ..item.clone()
            })
            .collect();
        if let Some(front) = front {
            if self.front == 0 && front != 0 {
                // What came before the first conversation was named belongs to it.
                let early = self.panes.remove(&0).unwrap_or_default();
                let pane = self.panes.entry(front).or_default();
                let later = std::mem::take(&mut pane.lines);
                pane.lines = early.lines;
                pane.bytes += early.bytes;
                pane.lines.extend(later);
            }
            self.front = front;
        }
        let known: Vec<u32> = items.iter().map(|i| i.number).collect();
        let current = self.front;
        self.panes.retain(|n, _| *n == current || known.contains(n));
        self.panes.entry(current).or_default();
        self.list = items;
        let width = self.pane.0;
        let pane = self.panes.entry(current).or_default();
        for (at, speaker, text) in std::mem::take(&mut self.notices) {
            pane.push_text(&at, speaker, &text, width);
        }
    }

    /// The list as the engine last sent it (sanitized).
    pub fn list(&self) -> &[ConvItem] {
        &self.list
    }

    /// Takes in one event of the conversation in front (or of none).
    pub fn apply(&mut self, event: &Event, now: &str) {
        self.apply_in(None, event, now);
    }

    /// Takes in one event of conversation `conv` (`None`: the messenger's own,
    /// shown in front); `now` is the time stamp for lines it adds (`HH:MM`).
    /// Every field is made safe first ([`Event::for_terminal`]), whoever sent it.
    pub fn apply_in(&mut self, conv: Option<&ConvRef>, event: &Event, now: &str) {
        // The messenger's command list has lines of its own: checked before
        // the filter, which would join them (it is our text, not a peer's).
        if let Event::Info { text } = event {
            if conv.is_none() && text == MESSENGER_HELP {
                self.open_overlay(text);
                return;
            }
        }
        let event = &event.for_terminal();
        let key = conv.map_or(self.front, |c| c.number);
        let behind = conv.is_some() && key != self.front && !self.list.is_empty();
        if let Some(conv) = conv {
            if behind {
                self.alert(conv, event);
            }
            let prefix = format!("[{} {}]", conv.number, safe(&conv.label));
            match event {
                // The conversation is gone from the list by the time the
                // list says so; the line goes to the one in front then.
                Event::Closed { reason } => self.notices.push((
                    now.to_string(),
                    Speaker::System,
                    format!("{prefix} conversation closed: {reason}"),
                )),
                // Something the person must not miss, wherever it happens.
                Event::Warning { text, .. } if behind => {
                    let width = self.pane.0;
                    self.front_pane_mut().push_text(
                        now,
                        Speaker::Error,
                        &format!("{prefix} WARNING: {text}"),
                        width,
                    );
                }
                _ => {}
            }
        } else {
            match event {
                Event::Conversations { .. } if self.switches > 0 => {
                    self.switches -= 1;
                    return;
                }
                // A key's switch that failed (the conversation closed meanwhile).
                Event::Error { code, .. } if code == "usage" && self.switches > 0 => {
                    self.switches -= 1;
                }
                _ => {}
            }
        }
        let width = self.pane.0;
        let pane = self.panes.entry(key).or_default();
        let status = &mut pane.status;
        match event {
            Event::Waiting { .. } => status.state = State::Waiting,
            Event::Matched { peer, .. } => {
                status.peer = Some(safe(peer).into_owned());
                status.state = State::Connecting;
            }
            Event::Connected {
                peer,
                path,
                sas,
                verified,
                resumed,
                addr,
                ..
            } => {
                *status = Status {
                    peer: Some(safe(peer).into_owned()),
                    path: Some(safe(path).into_owned()),
                    sas: Some(safe(sas).into_owned()),
                    verified: *verified,
                    rtt_ms: None,
                    state: State::Secure,
                    transfer: status.transfer.take(),
                };
                if *resumed {
                    let text = format!(
                        "Reconnected to {} at {} ({}); the keys continue the previous session{}.",
                        safe(peer),
                        safe(addr),
                        safe(path),
                        if *verified {
                            ", security code still verified"
                        } else {
                            ""
                        }
                    );
                    pane.push_text(now, Speaker::System, &text, width);
                    return;
                }
            }
            Event::Verify { sas, verified, .. } => {
                status.sas = Some(safe(sas).into_owned());
                // `verified: false` only shows the code; it never un-verifies.
                status.verified |= *verified;
            }
            Event::Peer {
                path, sas, rtt_ms, ..
            } => {
                status.path = Some(safe(path).into_owned());
                status.sas = Some(safe(sas).into_owned());
                if rtt_ms.is_some() {
                    status.rtt_ms = *rtt_ms;
                }
            }
            Event::Rtt { rtt_ms } => {
                status.rtt_ms = Some(*rtt_ms);
                return;
            }
            Event::Reconnecting { .. } => {
                status.state = State::Reconnecting;
                status.rtt_ms = None;
            }
            Event::Disconnected { .. } => {
                status.state = State::Ended;
                self.farewell = render_line(event);
            }
            Event::Progress {
                direction,
                name,
                bytes,
                total,
                ..
            } => {
                let arrow = if direction == "send" { "↑" } else { "↓" };
                let done = if *total == 0 {
                    100
                } else {
                    bytes.saturating_mul(100) / total
                };
                status.transfer = Some(format!(
                    "{arrow} {} {done}% of {}",
                    safe(name),
                    human_bytes(*total)
                ));
                return;
            }
            Event::FileDone { .. } | Event::FileStopped { .. } => status.transfer = None,
            // Shown as lines, below.
            Event::Conversations { .. } | Event::Closed { .. } | Event::Contacts { .. } => {}
            Event::Message { from, text, .. } => {
                let from = safe(from).into_owned();
                pane.push_text(now, Speaker::Peer(from), text, width);
                return;
            }
            Event::Sent { id, text, pending } => {
                let delivery = if *pending {
                    Delivery::Queued
                } else {
                    Delivery::InFlight
                };
                // A queued message that goes out later comes again with its id.
                if let Some(own) = pane.own_line(*id) {
                    *own = delivery;
                } else {
                    let speaker = Speaker::Own { id: *id, delivery };
                    pane.push_text(now, speaker, text, width);
                }
                return;
            }
            Event::Ack { id } => {
                if let Some(own) = pane.own_line(*id) {
                    if *own != Delivery::Read {
                        *own = Delivery::Delivered;
                    }
                }
                return;
            }
            Event::Read { id } => {
                for line in pane.lines.iter_mut() {
                    if let Speaker::Own { id: own, delivery } = &mut line.speaker {
                        if *own <= *id {
                            *delivery = Delivery::Read;
                        }
                    }
                }
                return;
            }
            Event::Stored { id, .. } => {
                if let Some(own) = pane
                    .own_line(*id)
                    .filter(|d| !matches!(**d, Delivery::Delivered | Delivery::Read))
                {
                    *own = Delivery::Stored;
                }
                return;
            }
            Event::Expired { id } => {
                if let Some(own) = pane
                    .own_line(*id)
                    .filter(|d| !matches!(**d, Delivery::Delivered | Delivery::Read))
                {
                    *own = Delivery::Expired;
                }
                return;
            }
            Event::Info { text } if is_help(text) => {
                self.open_overlay(text);
                return;
            }
            Event::Error { text, .. } => {
                pane.push_text(now, Speaker::Error, &format!("error: {text}"), width);
                return;
            }
            Event::Warning { text, .. } => {
                pane.push_text(now, Speaker::Error, &format!("WARNING: {text}"), width);
                return;
            }
            Event::GroupJoined { .. } => status.state = State::Secure,
            Event::MemberJoined { member, peer, .. } => {
                // A member linked: the room is secure again after `Matched`
                // said "connecting" for that member.
                pane.status.state = State::Secure;
                pane.members.insert(*member, safe(peer).into_owned());
                pane.status.peer = Some(pane.member_list());
            }
            Event::MemberLeft { member, .. } => {
                pane.members.remove(member);
                pane.status.peer = Some(pane.member_list());
            }
            Event::GroupMessage {
                from,
                text,
                own,
                seq,
                ..
            } => {
                let speaker = if *own {
                    Speaker::Own {
                        id: *seq,
                        delivery: Delivery::Delivered,
                    }
                } else {
                    Speaker::Peer(safe(from).into_owned())
                };
                pane.push_text(now, speaker, text, width);
                return;
            }
            Event::Room { .. }
            | Event::Member { .. }
            | Event::Token { .. }
            | Event::Admission { .. }
            | Event::Rejected { .. }
            | Event::History { .. }
            | Event::FileOffer { .. }
            | Event::Info { .. } => {}
        }
        if let Some(text) = render_line(event) {
            pane.push_text(now, Speaker::System, &text, width);
        }
    }

    /// A key was pressed: the hint goes, and an open help overlay closes.
    /// True when the overlay was open: closing it is all the key does.
    pub fn key_pressed(&mut self) -> bool {
        self.hint = None;
        self.overlay.take().is_some()
    }

    /// Handles a key the line editor left: Ctrl-C and Ctrl-D (on an empty
    /// line) leave, Alt-1…9, Ctrl-N and Ctrl-P switch, PageUp and PageDown
    /// page, End goes back to the newest messages.
    pub fn key(&mut self, key: KeyEvent) -> Action {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let page = usize::from(self.pane.1).saturating_sub(1).max(1);
        match key.code {
            KeyCode::Char('c' | 'd') if ctrl => return Action::Quit,
            KeyCode::Char('n') if ctrl => return self.switch_by(1),
            KeyCode::Char('p') if ctrl => return self.switch_by(-1),
            KeyCode::Char(c @ '1'..='9') if key.modifiers.contains(KeyModifiers::ALT) => {
                return self.switch_to(c.to_digit(10).unwrap_or(0));
            }
            // Clamped to the top of the scrollback at the next render.
            KeyCode::PageUp => {
                let pane = self.front_pane_mut();
                pane.scroll = pane.scroll.saturating_add(page);
            }
            KeyCode::PageDown => {
                let pane = self.front_pane_mut();
                pane.scroll = pane.scroll.saturating_sub(page);
                if pane.scroll == 0 {
                    pane.live();
                }
            }
            KeyCode::End => self.live(),
            _ => {}
        }
        Action::None
    }

    /// The line editor refused a key: the line is full.
    pub fn line_full(&mut self) {
        self.hint = Some("the line is full".to_string());
    }

    /// Back to following the conversation in front.
    pub fn live(&mut self) {
        self.front_pane_mut().live();
    }

    /// Alt-N: conversation number N, if the list has it.
    fn switch_to(&mut self, number: u32) -> Action {
        if number == self.front {
            return Action::None;
        }
        if self.list.iter().any(|item| item.number == number) {
            Action::Switch(number)
        } else {
            self.hint = Some(format!("no conversation {number}"));
            Action::None
        }
    }

    /// Ctrl-N / Ctrl-P: the next or previous conversation in the list, round.
    fn switch_by(&mut self, step: isize) -> Action {
        let count = self.list.len();
        if count < 2 {
            self.hint = Some("no other conversation: /room, /group, /new, /to".into());
            return Action::None;
        }
        let at = self
            .list
            .iter()
            .position(|item| item.number == self.front)
            .unwrap_or(0);
        let count = isize::try_from(count).unwrap_or(isize::MAX);
        let at = isize::try_from(at).unwrap_or(0);
        let next = usize::try_from((at + step).rem_euclid(count)).unwrap_or(0);
        self.list
            .get(next)
            .map_or(Action::None, |item| Action::Switch(item.number))
    }

    /// Opens (or extends: the messenger's list, then the conversation's) the
    /// help overlay.
    fn open_overlay(&mut self, text: &str) {
        let lines = text.lines().map(|l| safe(l).into_owned());
        match &mut self.overlay {
            Some(shown) => {
                shown.push(String::new());
                shown.extend(lines);
            }
            None => self.overlay = Some(lines.collect()),
        }
    }

    /// A message (or file offer) arrived in a conversation not in front: the
    /// bell, and with `--notify` a desktop notification. Only for the first
    /// one the person has not seen (the list's unread count was 0): the list
    /// keeps the count from then on, and a chatty or hostile peer cannot make
    /// the terminal ring without end.
    fn alert(&mut self, conv: &ConvRef, event: &Event) {
        let (sender, what) = match event {
            Event::Message { from, .. } => (from, "message"),
            Event::GroupMessage {
                from, own: false, ..
            } => (from, "message"),
            Event::FileOffer { from, .. } => (from, "file offer"),
            _ => return,
        };
        let unread = self
            .list
            .iter()
            .find(|item| item.number == conv.number)
            .map_or(0, |item| item.unread);
        // One alert per batch of events is enough for the terminal.
        if unread > 0 || !self.alerts.is_empty() {
            return;
        }
        self.alerts.push(BEL);
        if self.notify {
            self.alerts.extend(notification(conv.number, sender, what));
        }
    }

    /// Draws the whole screen.
    pub fn render(&mut self, frame: &mut Frame<'_>, input: &InputLine) {
        let [pane, status, input_area] = Layout::vertical([
            Constraint::Min(1),
            Constraint::Length(1),
            Constraint::Length(1),
        ])
        .areas(frame.area());
        // The list beside the messages when the window is wide enough; a
        // narrow one keeps every column for the messages.
        self.list_shown = !self.list.is_empty() && pane.width >= LIST_MIN_WIDTH;
        let pane = if self.list_shown {
            let list_width = (pane.width * 3 / 10).clamp(24, 32);
            let [list, _gap, messages] = Layout::horizontal([
                Constraint::Length(list_width),
                Constraint::Length(1),
                Constraint::Min(1),
            ])
            .areas(pane);
            self.render_list(frame, list);
            messages
        } else {
            pane
        };
        self.pane = (pane.width, pane.height);
        self.render_messages(frame, pane);
        frame.render_widget(Paragraph::new(self.status_line(status.width)), status);
        self.render_input(frame, input_area, input);
        if let Some(help) = &self.overlay {
            render_overlay(frame, help);
        }
    }

    /// The conversation list: two rows per conversation, the one in front
    /// reversed, those with unread messages bold yellow with their count.
    fn render_list(&self, frame: &mut Frame<'_>, area: Rect) {
        let block = Block::new().borders(Borders::RIGHT);
        let inner = block.inner(area);
        frame.render_widget(block, area);
        let width = usize::from(inner.width);
        let height = usize::from(inner.height);
        let mut rows: Vec<Line<'static>> = Vec::new();
        let mut front_row = 0;
        for item in &self.list {
            let in_front = item.number == self.front;
            if in_front {
                front_row = rows.len();
            }
            let base = if in_front {
                Style::default().add_modifier(Modifier::REVERSED)
            } else if item.unread > 0 {
                Style::default()
                    .fg(Color::Yellow)
                    .add_modifier(Modifier::BOLD)
            } else {
                Style::default()
            };
            let mark = if in_front { "▸" } else { " " };
            let unread = if item.unread > 0 {
                format!(" [{}]", item.unread)
            } else {
                String::new()
            };
            let head = format!("{mark}{} {}", item.number, item.label);
            let head = fit(&head, width.saturating_sub(str_width(&unread)));
            let pad = width.saturating_sub(str_width(&head) + str_width(&unread));
            rows.push(Line::from(vec![
                Span::styled(head, base),
                Span::styled(" ".repeat(pad), base),
                Span::styled(unread, base),
            ]));
            let detail = match item.kind.as_str() {
                "group" => format!("{} members", item.members),
                _ => item.path.clone(),
            };
            let mut parts = vec![item.kind.clone()];
            if !detail.is_empty() {
                parts.push(detail);
            }
            let verified = if item.verified { " ✓" } else { "" };
            let second = format!("  {}{verified} {}", parts.join("·"), item.state);
            let second = fit(&second, width);
            let pad = width.saturating_sub(str_width(&second));
            let dim = if in_front {
                base
            } else {
                base.add_modifier(Modifier::DIM)
            };
            rows.push(Line::from(vec![
                Span::styled(second, dim),
                Span::styled(" ".repeat(pad), dim),
            ]));
        }
        // Keep the conversation in front in view when the list is long.
        let skip = (front_row + 2).saturating_sub(height);
        let visible: Vec<Line<'static>> = rows.into_iter().skip(skip).take(height).collect();
        frame.render_widget(Paragraph::new(visible), inner);
    }

    fn render_messages(&mut self, frame: &mut Frame<'_>, area: Rect) {
        let (width, height) = (usize::from(area.width), usize::from(area.height));
        if width == 0 || height == 0 {
            return;
        }
        let front = self.front;
        let Some(pane) = self.panes.get_mut(&front) else {
            return;
        };
        // Wrap from the newest line up, only as far as the view reaches.
        let wanted = pane.scroll.saturating_add(height);
        let mut rows: Vec<Line<'static>> = Vec::new();
        for line in pane.lines.iter().rev() {
            rows.extend(wrap(&styled(line), width, INDENT).into_iter().rev());
            if rows.len() >= wanted {
                break;
            }
        }
        if rows.len() < wanted {
            // Reached the oldest line: no scrolling past the top.
            pane.scroll = rows.len().saturating_sub(height);
        }
        if pane.scroll == 0 {
            pane.unseen = 0;
        }
        let visible: Vec<Line<'static>> = rows
            .into_iter()
            .skip(pane.scroll)
            .take(height)
            .rev()
            .collect();
        frame.render_widget(Paragraph::new(visible), area);
    }

    /// ` bob │ direct │ SAS 482 093 ✓ │ 12 ms │ secure ` with notes on the right.
    fn status_line(&self, width: u16) -> Line<'static> {
        let bar = Style::default().fg(Color::White).bg(Color::DarkGray);
        let sep = || Span::styled(" │ ", bar);
        let pane = self.front_pane();
        let s = &pane.status;
        let mut spans = Vec::new();
        // Without the list on screen, the bar names the conversation in front
        // once there is more than one.
        if !self.list_shown && self.list.len() > 1 {
            if let Some(item) = self.list.iter().find(|i| i.number == self.front) {
                spans.push(Span::styled(
                    format!(" {} {}", item.number, item.label),
                    bar,
                ));
                spans.push(sep());
            }
        }
        let lead = if spans.is_empty() { " " } else { "" };
        spans.push(Span::styled(
            format!("{lead}{}", s.peer.as_deref().unwrap_or("no peer yet")),
            bar.add_modifier(Modifier::BOLD),
        ));
        if let Some(path) = &s.path {
            spans.push(sep());
            spans.push(Span::styled(path.clone(), bar));
        }
        if let Some(sas) = &s.sas {
            spans.push(sep());
            spans.push(Span::styled(format!("SAS {sas} "), bar));
            spans.push(if s.verified {
                Span::styled("✓", bar.fg(Color::LightGreen).add_modifier(Modifier::BOLD))
            } else {
                Span::styled("unverified", bar.fg(Color::Yellow))
            });
        }
        if let Some(rtt) = s.rtt_ms {
            spans.push(sep());
            spans.push(Span::styled(format!("{rtt} ms"), bar));
        }
        spans.push(sep());
        let state_color = match s.state {
            State::Secure => Color::LightGreen,
            State::Reconnecting => Color::Yellow,
            State::Ended => Color::LightRed,
            State::Connecting | State::Waiting => Color::White,
        };
        spans.push(Span::styled(
            s.state.as_str(),
            bar.fg(state_color).add_modifier(Modifier::BOLD),
        ));
        let mut right = Vec::new();
        if let Some(transfer) = &s.transfer {
            right.push(transfer.clone());
        }
        if let Some(hint) = &self.hint {
            right.push(hint.clone());
        }
        if !self.list_shown {
            let elsewhere: u32 = self
                .list
                .iter()
                .filter(|i| i.number != self.front)
                .map(|i| i.unread)
                .sum();
            if elsewhere > 0 {
                right.push(format!("{elsewhere} unread elsewhere (Ctrl-N)"));
            }
        }
        if pane.scroll > 0 {
            right.push(if pane.unseen > 0 {
                format!("↑ scrolled, {} new (End: live)", pane.unseen)
            } else {
                "↑ scrolled (End: live)".to_string()
            });
        }
        let right = if right.is_empty() {
            String::new()
        } else {
            format!("{} ", right.join(" · "))
        };
        // The notes on the right win over the tail of the left part.
        let right_width = Span::raw(right.as_str()).width();
        let budget = usize::from(width).saturating_sub(right_width + 1);
        let mut spans = truncate(spans, budget);
        let used: usize = spans.iter().map(Span::width).sum();
        let gap = usize::from(width).saturating_sub(used + right_width).max(1);
        spans.push(Span::styled(" ".repeat(gap), bar));
        spans.push(Span::styled(right, bar.fg(Color::Yellow)));
        Line::from(spans)
    }

    fn render_input(&self, frame: &mut Frame<'_>, area: Rect, input: &InputLine) {
        const PROMPT: &str = "> ";
        let room = usize::from(area.width).saturating_sub(PROMPT.len() + 1);
        let text = input.text();
        let cursor = input.cursor();
        // Scroll the line sideways so the cursor stays in view.
        let mut start = 0;
        while start < cursor && str_width(&text[start..cursor]) > room {
            start += text[start..].chars().next().map_or(1, char::len_utf8);
        }
        let mut shown = String::new();
        let mut shown_width = 0;
        for c in text[start..].chars() {
            let w = char_width(c);
            if shown_width + w > room + 1 {
                break;
            }
            shown.push(c);
            shown_width += w;
        }
        let line = Line::from(vec![
            Span::styled(PROMPT, Style::default().add_modifier(Modifier::BOLD)),
            Span::raw(shown),
        ]);
        frame.render_widget(Paragraph::new(line), area);
        let column = PROMPT.len() + str_width(&text[start..cursor]);
        let x = area
            .x
            .saturating_add(u16::try_from(column).unwrap_or(u16::MAX))
            .min(area.right().saturating_sub(1));
        if self.overlay.is_none() {
            frame.set_cursor_position(Position::new(x, area.y));
        }
    }
}

/// The terminal bell.
const BEL: u8 = 0x07;

/// A desktop notification for a message from `sender` in conversation
/// `number`, as OSC 9 (iTerm2, Windows Terminal, kitty) and OSC 777 (urxvt,
/// foot, VTE terminals) ask for it; a terminal that knows neither ignores both.
///
/// It names the sender and the conversation's number, never the message text
/// and not even the conversation's label: a notification leaves the client (the
/// desktop shows it on a locked screen, keeps it in its history, a terminal
/// over SSH hands it to another machine), the conversation is end-to-end
/// encrypted for a reason, and a room's or a group's label is its room code,
/// which is the password of its key exchange (DESIGN.md, "The room code as a
/// password"). The sender's name passes [`notify_text`]: it cannot end the
/// sequence early and smuggle another, nor split OSC 777's fields.
pub fn notification(number: u32, sender: &str, what: &str) -> Vec<u8> {
    let body = format!(
        "{what} from {} (conversation {number})",
        notify_text(sender)
    );
    let mut out = Vec::new();
    out.extend_from_slice(format!("\u{1b}]9;p2pchat: {body}\u{7}").as_bytes());
    out.extend_from_slice(format!("\u{1b}]777;notify;p2pchat;{body}\u{7}").as_bytes());
    out
}

/// A name as a notification may carry it: through the one sanitiser (no
/// control character, so no BEL or ESC that would end the sequence), without
/// `;` (OSC 777's field separator), at most [`NOTIFY_FIELD`] characters.
pub fn notify_text(text: &str) -> String {
    safe(text)
        .chars()
        .filter(|&c| c != ';')
        .take(NOTIFY_FIELD)
        .collect()
}

/// `text` cut to at most `width` cells, with `…` when cut.
fn fit(text: &str, width: usize) -> String {
    if str_width(text) <= width {
        return text.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = char_width(c);
        if used + w + 1 > width {
            break;
        }
        out.push(c);
        used += w;
    }
    if width > 0 {
        out.push('…');
    }
    out
}

/// A pane for a conversation the screen has nothing of yet.
static EMPTY_PANE: std::sync::LazyLock<Pane> = std::sync::LazyLock::new(Pane::default);

/// Whether an `Info` text is the `/help` list (shown as an overlay).
fn is_help(text: &str) -> bool {
    engine::events::is_help_text(text)
}

fn render_overlay(frame: &mut Frame<'_>, help: &[String]) {
    let area = frame.area();
    let longest = help.iter().map(|l| str_width(l)).max().unwrap_or(0);
    let width = u16::try_from(longest + 4)
        .unwrap_or(u16::MAX)
        .min(area.width.saturating_sub(2));
    let height = u16::try_from(help.len() + 2)
        .unwrap_or(u16::MAX)
        .min(area.height.saturating_sub(1));
    let popup = Rect {
        x: area.x + (area.width.saturating_sub(width)) / 2,
        y: area.y + (area.height.saturating_sub(height)) / 2,
        width,
        height,
    };
    let text: Vec<Line<'_>> = help.iter().map(|l| Line::raw(l.as_str())).collect();
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(text)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(" help · any key closes ")),
        popup,
    );
}

/// The styled pieces of one pane line.
fn styled(line: &ChatLine) -> Vec<(String, Style)> {
    let dim = Style::default().add_modifier(Modifier::DIM);
    let mut parts = vec![(format!("{} ", line.at), dim)];
    match &line.speaker {
        Speaker::System => parts.push((line.text.clone(), dim)),
        Speaker::Error => parts.push((line.text.clone(), Style::default().fg(Color::Red))),
        Speaker::Peer(from) => {
            parts.push((
                from.clone(),
                Style::default()
                    .fg(Color::Cyan)
                    .add_modifier(Modifier::BOLD),
            ));
            parts.push((format!(": {}", line.text), Style::default()));
        }
        Speaker::Own { delivery, .. } => {
            parts.push((
                "you".to_string(),
                Style::default()
                    .fg(Color::Green)
                    .add_modifier(Modifier::BOLD),
            ));
            parts.push((format!(": {} ", line.text), Style::default()));
            let mark = match delivery {
                Delivery::Delivered | Delivery::Read => Style::default().fg(Color::Green),
                Delivery::Queued => Style::default().fg(Color::Yellow),
                Delivery::InFlight | Delivery::Stored => dim,
                Delivery::Expired => Style::default().fg(Color::Red),
            };
            parts.push((delivery.mark().to_string(), mark));
        }
    }
    parts
}

/// The spans cut to at most `budget` cells.
fn truncate(spans: Vec<Span<'static>>, budget: usize) -> Vec<Span<'static>> {
    let mut used = 0;
    let mut kept = Vec::with_capacity(spans.len());
    for span in spans {
        let width = span.width();
        if used + width <= budget {
            used += width;
            kept.push(span);
            continue;
        }
        let mut cut = String::new();
        for c in span.content.chars() {
            let w = char_width(c);
            if used + w > budget {
                break;
            }
            used += w;
            cut.push(c);
        }
        kept.push(Span::styled(cut, span.style));
        break;
    }
    kept
}

/// Display width of one character in terminal cells.
fn char_width(c: char) -> usize {
    let mut buf = [0u8; 4];
    Span::raw(&*c.encode_utf8(&mut buf)).width()
}

fn str_width(s: &str) -> usize {
    Span::raw(s).width()
}

/// Wraps styled text into rows of at most `width` cells, breaking after a space
/// when the row has one, else mid-word. Rows after the first start with
/// `indent` spaces (dropped on panes too narrow for it). Always at least one row.
pub fn wrap(parts: &[(String, Style)], width: usize, indent: usize) -> Vec<Line<'static>> {
    let width = width.max(1);
    let indent = if indent * 3 <= width { indent } else { 0 };
    let mut rows: Vec<Line<'static>> = Vec::new();
    let mut row: Vec<(char, Style, usize)> = Vec::new();
    let mut row_width = 0;
    let finish = |rows: &mut Vec<Line<'static>>, row: &[(char, Style, usize)]| {
        let mut line = to_line(row);
        if !rows.is_empty() && indent > 0 {
            line.spans.insert(0, Span::raw(" ".repeat(indent)));
        }
        rows.push(line);
    };
    for (text, style) in parts {
        for c in text.chars() {
            let w = char_width(c);
            let room = if rows.is_empty() {
                width
            } else {
                width - indent
            };
            if row_width + w > room && !row.is_empty() {
                let next_room = width - indent;
                // Overflowing on a space: the row ends with a whole word.
                let space = if c == ' ' {
                    None
                } else {
                    row.iter().rposition(|(ch, _, _)| *ch == ' ')
                };
                let carried = space
                    .filter(|&at| at > 0)
                    .map(|at| row[at + 1..].iter().map(|(_, _, w)| w).sum::<usize>())
                    .filter(|rest| rest + w <= next_room);
                match (space, carried) {
                    (Some(at), Some(rest)) => {
                        let tail = row.split_off(at + 1);
                        finish(&mut rows, &row);
                        row = tail;
                        row_width = rest;
                    }
                    _ => {
                        finish(&mut rows, &row);
                        row.clear();
                        row_width = 0;
                    }
                }
                if c == ' ' && row.is_empty() {
                    continue;
                }
            }
            row.push((c, *style, w));
            row_width += w;
        }
    }
    finish(&mut rows, &row);
    rows
}

/// Joins runs of equally styled characters into spans.
fn to_line(row: &[(char, Style, usize)]) -> Line<'static> {
    let mut spans: Vec<Span<'static>> = Vec::new();
    let mut text = String::new();
    let mut current: Option<Style> = None;
    for (c, style, _) in row {
        if current.is_some_and(|s| s != *style) {
            spans.push(Span::styled(
                std::mem::take(&mut text),
                current.unwrap_or_default(),
            ));
        }
        current = Some(*style);
        text.push(*c);
    }
    if !text.is_empty() {
        spans.push(Span::styled(text, current.unwrap_or_default()));
    }
    Line::from(spans)
}

#[cfg(test)]
mod tests;
