//! The chat screen as plain state: [`Event`]s and keys go in, a frame comes out.
//! No terminal I/O here, so it renders the same into ratatui's `TestBackend`.

use std::collections::VecDeque;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};
use ratatui::Frame;
use wire::sanitize_for_terminal as safe;

use super::editor::{InputLine, Recall};
use crate::ui::{human_bytes, render_line, Event};

/// Lines of scrollback kept; older ones are dropped.
pub const SCROLLBACK: usize = 10_000;
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
    /// The peer acknowledged it.
    Delivered,
}

impl Delivery {
    /// The mark after the message text.
    pub fn mark(self) -> &'static str {
        match self {
            Delivery::Queued => "… queued",
            Delivery::InFlight => "…",
            Delivery::Delivered => "✓",
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

/// What a key press asks of the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing beyond a redraw.
    None,
    /// Hand this line to the chat engine.
    Send(String),
    /// Ctrl-C, or Ctrl-D on an empty line: leave.
    Quit,
}

/// The whole screen's state.
#[derive(Debug)]
pub struct Screen {
    lines: VecDeque<ChatLine>,
    status: Status,
    input: InputLine,
    recall: Recall,
    /// Rows scrolled up from the newest one; 0 follows the conversation live.
    scroll: usize,
    /// Lines that arrived while scrolled up.
    unseen: usize,
    /// The `/help` text while its overlay is open.
    overlay: Option<Vec<String>>,
    /// Message pane size at the last render (width, height), for paging.
    pane: (u16, u16),
    /// A short hint shown until the next key (e.g. the line is full).
    hint: Option<String>,
    /// Why the session ended, to repeat on the normal screen after exit.
    farewell: Option<String>,
    /// Group rooms: the linked members by member number, shown in the status.
    members: std::collections::BTreeMap<u32, String>,
}

impl Screen {
    /// An empty screen whose input line holds at most `max_bytes`.
    pub fn new(max_bytes: usize) -> Screen {
        Screen {
            lines: VecDeque::new(),
            status: Status::default(),
            input: InputLine::new(max_bytes),
            recall: Recall::default(),
            scroll: 0,
            unseen: 0,
            overlay: None,
            pane: (80, 20),
            hint: None,
            farewell: None,
            members: std::collections::BTreeMap::new(),
        }
    }

    pub fn status(&self) -> &Status {
        &self.status
    }

    pub fn lines(&self) -> &VecDeque<ChatLine> {
        &self.lines
    }

    pub fn input(&self) -> &InputLine {
        &self.input
    }

    pub fn scroll(&self) -> usize {
        self.scroll
    }

    pub fn overlay_open(&self) -> bool {
        self.overlay.is_some()
    }

    /// The line that said why the session ended, if it did.
    pub fn farewell(&self) -> Option<&str> {
        self.farewell.as_deref()
    }

    /// The engine's input bound (known once it asks for input).
    pub fn set_max_bytes(&mut self, max_bytes: usize) {
        self.input.set_max_bytes(max_bytes);
    }

    /// Takes in one event; `now` is the time stamp for lines it adds (`HH:MM`).
    /// Every field is made safe first ([`Event::for_terminal`]), whoever sent it.
    pub fn apply(&mut self, event: &Event, now: &str) {
        let event = &event.for_terminal();
        let status = &mut self.status;
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
                    self.push_text(now, Speaker::System, &text);
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
            Event::Conversations { .. } | Event::Closed { .. } => {}
            Event::Message { from, text, .. } => {
                let from = safe(from).into_owned();
                self.push_text(now, Speaker::Peer(from), text);
                return;
            }
            Event::Sent { id, text, pending } => {
                let delivery = if *pending {
                    Delivery::Queued
                } else {
                    Delivery::InFlight
                };
                // A queued message that goes out later comes again with its id.
                if let Some(own) = self.own_line(*id) {
                    *own = delivery;
                } else {
                    let speaker = Speaker::Own { id: *id, delivery };
                    self.push_text(now, speaker, text);
                }
                return;
            }
            Event::Ack { id } => {
                if let Some(own) = self.own_line(*id) {
                    *own = Delivery::Delivered;
                }
                return;
            }
            Event::Info { text } if is_help(text) => {
                self.overlay = Some(text.lines().map(|l| safe(l).into_owned()).collect());
                return;
            }
            Event::Error { text, .. } => {
                self.push_text(now, Speaker::Error, &format!("error: {text}"));
                return;
            }
            Event::Warning { text, .. } => {
                self.push_text(now, Speaker::Error, &format!("WARNING: {text}"));
                return;
            }
            Event::GroupJoined { .. } => status.state = State::Secure,
            Event::MemberJoined { member, peer, .. } => {
                self.members.insert(*member, safe(peer).into_owned());
                self.status.peer = Some(self.member_list());
            }
            Event::MemberLeft { member, .. } => {
                self.members.remove(member);
                self.status.peer = Some(self.member_list());
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
                self.push_text(now, speaker, text);
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
            self.push_text(now, Speaker::System, &text);
        }
    }

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

    /// Adds `text` (one line per `\n`, each sanitized) to the pane.
    fn push_text(&mut self, now: &str, speaker: Speaker, text: &str) {
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
                self.scroll += wrap(&styled(&line), usize::from(self.pane.0), INDENT).len();
                self.unseen += 1;
            }
            if self.lines.len() == SCROLLBACK {
                self.lines.pop_front();
            }
            self.lines.push_back(line);
        }
    }

    /// Handles one key press.
    pub fn key(&mut self, key: KeyEvent) -> Action {
        self.hint = None;
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(key.code, KeyCode::Char('c')) {
            return Action::Quit;
        }
        if self.overlay.take().is_some() {
            // Any key closes the help; it does nothing else.
            return Action::None;
        }
        let page = usize::from(self.pane.1).saturating_sub(1).max(1);
        match key.code {
            KeyCode::Char('d') if ctrl && self.input.text().is_empty() => return Action::Quit,
            KeyCode::Char('d') if ctrl => self.input.delete(),
            KeyCode::Char('u') if ctrl => self.input.clear(),
            KeyCode::Char('w') if ctrl => self.input.delete_word(),
            KeyCode::Char('a') if ctrl => self.input.home(),
            KeyCode::Char('e') if ctrl => self.input.end(),
            KeyCode::Char('h') if ctrl => self.input.backspace(),
            KeyCode::Char(_) if ctrl || key.modifiers.contains(KeyModifiers::ALT) => {}
            KeyCode::Char(c) => self.type_char(c),
            KeyCode::Enter => {
                let line = self.input.take();
                if line.is_empty() {
                    return Action::None;
                }
                self.recall.push(&line);
                self.live();
                return Action::Send(line);
            }
            KeyCode::Backspace => self.input.backspace(),
            KeyCode::Delete => self.input.delete(),
            KeyCode::Left => self.input.left(),
            KeyCode::Right => self.input.right(),
            KeyCode::Home => self.input.home(),
            KeyCode::End => {
                self.input.end();
                self.live();
            }
            KeyCode::Up => {
                if let Some(line) = self.recall.older(self.input.text()) {
                    let line = line.to_string();
                    self.input.set(&line);
                }
            }
            KeyCode::Down => {
                if let Some(line) = self.recall.newer() {
                    let line = line.to_string();
                    self.input.set(&line);
                }
            }
            // Clamped to the top of the scrollback at the next render.
            KeyCode::PageUp => self.scroll = self.scroll.saturating_add(page),
            KeyCode::PageDown => {
                self.scroll = self.scroll.saturating_sub(page);
                if self.scroll == 0 {
                    self.live();
                }
            }
            _ => {}
        }
        Action::None
    }

    /// Pasted text goes into the input line (as one line).
    pub fn paste(&mut self, text: &str) {
        self.hint = None;
        self.overlay = None;
        if !self.input.insert_str(text) {
            self.hint = Some(self.full_hint());
        }
    }

    fn type_char(&mut self, c: char) {
        if !self.input.insert(c) {
            self.hint = Some(self.full_hint());
        }
    }

    fn full_hint(&self) -> String {
        "the line is full".to_string()
    }

    /// Back to following the conversation.
    fn live(&mut self) {
        self.scroll = 0;
        self.unseen = 0;
    }

    /// Draws the whole screen.
    pub fn render(&mut self, frame: &mut Frame<'_>) {
        let [pane, status, input] = Layout::vertical([
            Constraint::Min(1),
            Constraint::Length(1),
            Constraint::Length(1),
        ])
        .areas(frame.area());
        self.pane = (pane.width, pane.height);
        self.render_messages(frame, pane);
        frame.render_widget(Paragraph::new(self.status_line(status.width)), status);
        self.render_input(frame, input);
        if let Some(help) = &self.overlay {
            render_overlay(frame, help);
        }
    }

    fn render_messages(&mut self, frame: &mut Frame<'_>, area: Rect) {
        let (width, height) = (usize::from(area.width), usize::from(area.height));
        if width == 0 || height == 0 {
            return;
        }
        // Wrap from the newest line up, only as far as the view reaches.
        let wanted = self.scroll.saturating_add(height);
        let mut rows: Vec<Line<'static>> = Vec::new();
        for line in self.lines.iter().rev() {
            rows.extend(wrap(&styled(line), width, INDENT).into_iter().rev());
            if rows.len() >= wanted {
                break;
            }
        }
        if rows.len() < wanted {
            // Reached the oldest line: no scrolling past the top.
            self.scroll = rows.len().saturating_sub(height);
        }
        if self.scroll == 0 {
            self.unseen = 0;
        }
        let visible: Vec<Line<'static>> = rows
            .into_iter()
            .skip(self.scroll)
            .take(height)
            .rev()
            .collect();
        frame.render_widget(Paragraph::new(visible), area);
    }

    /// ` bob │ direct │ SAS 482 093 ✓ │ 12 ms │ secure ` with notes on the right.
    fn status_line(&self, width: u16) -> Line<'static> {
        let bar = Style::default().fg(Color::White).bg(Color::DarkGray);
        let sep = || Span::styled(" │ ", bar);
        let s = &self.status;
        let mut spans = vec![Span::styled(
            format!(" {}", s.peer.as_deref().unwrap_or("no peer yet")),
            bar.add_modifier(Modifier::BOLD),
        )];
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
        if self.scroll > 0 {
            right.push(if self.unseen > 0 {
                format!("↑ scrolled, {} new (End: live)", self.unseen)
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

    fn render_input(&self, frame: &mut Frame<'_>, area: Rect) {
        const PROMPT: &str = "> ";
        let room = usize::from(area.width).saturating_sub(PROMPT.len() + 1);
        let text = self.input.text();
        let cursor = self.input.cursor();
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

/// Whether an `Info` text is the `/help` list (shown as an overlay).
fn is_help(text: &str) -> bool {
    crate::events::is_help_text(text)
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
                Delivery::Delivered => Style::default().fg(Color::Green),
                Delivery::Queued => Style::default().fg(Color::Yellow),
                Delivery::InFlight => dim,
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
