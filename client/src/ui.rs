//! What the person sees: one [`Event`] type, rendered as text lines or as one JSON
//! object per line. Both text renderers (plain lines: [`render_line`]; the full
//! screen: `tui::screen::Screen::apply`) start from [`Event::for_terminal`], which
//! passes every string field through [`wire::sanitize_for_terminal`], so no
//! caller can forget it: errors, warnings and the exit message included. `--json`
//! prints the event exactly (JSON escaping is its only filter).

use std::io::Write;
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::Serialize;
use wire::sanitize_for_terminal as safe;

use crate::cli::OutputMode;
use crate::tui::Tui;
pub use engine::events::{
    human_bytes, ConvItem, ConvRef, Event, Frontend, HistoryLine, GROUP_HELP, HELP,
};

/// Writes events to stdout (and errors to stderr in line mode), or hands them
/// to the full-screen interface in [`OutputMode::Tui`].
#[derive(Debug)]
pub struct Output {
    mode: OutputMode,
    /// The running interface; `None` in the other modes and after
    /// [`Output::shutdown`], when events fall back to plain lines.
    tui: Mutex<Option<Tui>>,
    /// Line mode's progress bars (on stderr), one per running transfer.
    bars: Mutex<std::collections::HashMap<(u32, String, u64), indicatif::ProgressBar>>,
    /// The conversation of the last line shown, and whether more than one has
    /// spoken: from then on line mode starts every line of a conversation with
    /// its `[number label]`, so a run of one conversation reads as before.
    lines: Mutex<(Option<u32>, bool)>,
}

impl Output {
    /// An output in the given mode. For [`OutputMode::Tui`] this takes over the
    /// terminal; if that fails, it warns on stderr and uses plain lines.
    pub fn new(mode: OutputMode) -> Output {
        Output::with_notify(mode, false)
    }

    /// [`Output::new`]; `notify`: the full-screen interface also asks the
    /// terminal for a desktop notification for a message behind (`--notify`).
    pub fn with_notify(mode: OutputMode, notify: bool) -> Output {
        let tui = match mode {
            OutputMode::Tui => {
                match Tui::start(wire::peer::MAX_CHAT_TEXT, notify) {
                    Ok(tui) => Some(tui),
                    Err(e) => {
                        eprintln!("warning: cannot start the full-screen interface ({e}); using plain lines");
                        None
                    }
                }
            }
            OutputMode::Line | OutputMode::Json => None,
        };
        Output {
            mode: if tui.is_none() && mode == OutputMode::Tui {
                OutputMode::Line
            } else {
                mode
            },
            tui: Mutex::new(tui),
            bars: Mutex::new(std::collections::HashMap::new()),
            lines: Mutex::new((None, false)),
        }
    }

    fn tui(&self) -> MutexGuard<'_, Option<Tui>> {
        // A panic while holding the lock leaves nothing half-done worth refusing over.
        self.tui.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where typed lines come from: the interface's input line, or standard
    /// input read line by line with a bound.
    pub fn input(
        &self,
        max_bytes: usize,
    ) -> tokio::sync::mpsc::Receiver<engine::events::InputEvent> {
        if let Some(receiver) = self.tui().as_ref().and_then(|tui| tui.input(max_bytes)) {
            return receiver;
        }
        crate::input::spawn_stdin(max_bytes)
    }

    /// Puts the terminal back if the interface runs, and repeats why the session
    /// ended on the normal screen. Later events are shown as plain lines, so
    /// call this before printing a final error.
    pub fn shutdown(&self) {
        let tui = self.tui().take();
        if let Some(farewell) = tui.and_then(Tui::shutdown) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{farewell}");
            let _ = out.flush();
        }
    }

    /// Shows one event of no conversation (the messenger's own, or a
    /// subcommand's).
    pub fn show(&self, event: &Event) {
        self.show_in(None, event);
    }

    /// Shows one event of conversation `conv` (or of none).
    pub fn show_in(&self, conv: Option<&ConvRef>, event: &Event) {
        if self.tui().as_ref().is_some_and(|tui| tui.show(conv, event)) {
            return;
        }
        match self.mode {
            OutputMode::Json => {
                let mut out = std::io::stdout().lock();
                // A closed stdout (the reader went away) is not worth dying over.
                if let Some(line) = event_json(conv, event) {
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                }
            }
            OutputMode::Line | OutputMode::Tui => {
                self.update_bars(conv.map_or(0, |c| c.number), event);
                if let Some(text) = render_line(event) {
                    let text = match self.prefix(conv) {
                        Some(prefix) => text
                            .lines()
                            .map(|line| format!("{prefix} {line}"))
                            .collect::<Vec<_>>()
                            .join("\n"),
                        None => text,
                    };
                    if matches!(event, Event::Error { .. } | Event::Warning { .. }) {
                        let mut err = std::io::stderr().lock();
                        let _ = writeln!(err, "{text}");
                    } else {
                        let mut out = std::io::stdout().lock();
                        let _ = writeln!(out, "{text}");
                        let _ = out.flush();
                    }
                }
            }
        }
    }

    /// `[2 7-velvet-harbor]` once a second conversation has spoken in line mode.
    fn prefix(&self, conv: Option<&ConvRef>) -> Option<String> {
        let conv = conv?;
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.0.is_some_and(|last| last != conv.number) {
            lines.1 = true;
        }
        lines.0 = Some(conv.number);
        lines
            .1
            .then(|| format!("[{} {}]", conv.number, safe(&conv.label)))
    }
}

impl Frontend for Output {
    fn show(&self, conv: Option<&ConvRef>, event: &Event) {
        self.show_in(conv, event);
    }

    fn conversations(&self, front: Option<u32>, items: &[ConvItem]) {
        if let Some(tui) = self.tui().as_ref() {
            tui.conversations(front, items);
        }
    }
}

impl Output {
    /// Draws transfer progress in line mode as indicatif bars on stderr (hidden
    /// when stderr is not a terminal), and clears a bar when its transfer ends.
    fn update_bars(&self, conv: u32, event: &Event) {
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            Event::Progress {
                id,
                direction,
                name,
                bytes,
                total,
                ..
            } => {
                let bar = bars
                    .entry((conv, direction.clone(), *id))
                    .or_insert_with(|| {
                        let bar = indicatif::ProgressBar::new(*total);
                        if let Ok(style) = indicatif::ProgressStyle::with_template(
                        "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                    ) {
                        bar.set_style(style.progress_chars("=> "));
                    }
                        let verb = if direction == "send" {
                            "sending"
                        } else {
                            "receiving"
                        };
                        bar.set_message(format!("{verb} {}", safe(name)));
                        bar
                    });
                bar.set_position(*bytes);
            }
            Event::FileDone { id, direction, .. } | Event::FileStopped { id, direction, .. } => {
                if let Some(bar) = bars.remove(&(conv, direction.clone(), *id)) {
                    bar.finish_and_clear();
                }
            }
            _ => {}
        }
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// An event as `--json` prints it and the local API sends it: the event's
/// fields with `"event"` naming it, and `"conversation"` when it belongs to one.
pub fn event_json(conv: Option<&ConvRef>, event: &Event) -> Option<String> {
    #[derive(Serialize)]
    struct Tagged<'a> {
        #[serde(flatten)]
        event: &'a Event,
        #[serde(skip_serializing_if = "Option::is_none")]
        conversation: Option<&'a ConvRef>,
    }
    serde_json::to_string(&Tagged {
        event,
        conversation: conv,
    })
    .ok()
}

/// The text form of an event, or `None` for events line mode keeps quiet about.
/// Every field is made safe first ([`Event::for_terminal`]).
pub fn render_line(event: &Event) -> Option<String> {
    let event = &event.for_terminal();
    Some(match event {
        Event::Room { room, command } => {
            format!("Room code: {room}\nOn the other side, run:\n    {command}")
        }
        Event::Token {
            command,
            expires_in_secs,
            ..
        } => format!(
            "Your connection token, valid for {}. Give it to the other person; they run:\n    {command}",
            humantime::format_duration(std::time::Duration::from_secs(*expires_in_secs))
        ),
        Event::Admission {
            peer,
            fingerprint,
            sas,
        } => format!(
            "{} (identity {fingerprint}, not a contact yet) dialed your token. Security code: \
             {sas}. Type /accept to chat, or /deny to turn them away.",
            safe(peer)
        ),
        Event::Waiting {
            listen,
            expires_in_secs,
        } => format!(
            "Waiting for the other person (listening on {listen}; the room stays open {}).",
            humantime::format_duration(std::time::Duration::from_secs(u64::from(*expires_in_secs)))
        ),
        Event::Matched { peer, role } => {
            format!("Found {} (we are the {role}); connecting…", safe(peer))
        }
        Event::Rejected { addr, reason } => {
            format!("Turned away a connection from {addr} that is not your peer ({reason}).")
        }
        Event::Connected {
            peer,
            addr,
            path,
            sas,
            verified: true,
            fingerprint,
            ..
        } => format!(
            "Connected to {} at {addr} ({path}), end-to-end encrypted.\n\
             Verified contact (identity {fingerprint}): you compared the security code with \
             this identity before. Code this time: {sas}. /help lists commands.",
            safe(peer)
        ),
        Event::Connected {
            peer,
            addr,
            path,
            sas,
            ..
        } => format!(
            "Connected to {} at {addr} ({path}), end-to-end encrypted.\n\
             Security code: {sas}. Compare it with {}: if it differs, someone is in the middle. \
             /verify shows it again, /help lists commands.",
            safe(peer),
            safe(peer)
        ),
        Event::Message { from, text, .. } => format!(
            "[{}] {}: {}",
            chrono::Local::now().format("%H:%M:%S"),
            safe(from),
            safe(text)
        ),
        // Marks on our own lines: the full-screen interface and --json show
        // them; plain lines stay quiet, as for `sent` and `ack`.
        Event::Sent { .. } | Event::Ack { .. } | Event::Stored { .. } | Event::Read { .. } => {
            return None
        }
        Event::Expired { id } => {
            format!("Your message #{id} expired at the mailbox: it was not delivered.")
        }
        Event::Peer {
            name,
            addr,
            path,
            sas,
            rtt_ms,
        } => format!(
            "{} at {addr}, path {path}, security code {sas}, round trip {}",
            safe(name),
            rtt_ms.map_or_else(|| "not measured yet".to_string(), |ms| format!("{ms} ms"))
        ),
        Event::Verify {
            sas,
            peer,
            verified: true,
        } => {
            format!(
                "Security code {sas} marked as compared with {}.",
                safe(peer)
            )
        }
        Event::Verify { sas, peer, .. } => format!(
            "Security code: {sas}. Read it to {} over another channel; it must match theirs. \
             Then type /verify yes.",
            safe(peer)
        ),
        Event::Rtt { .. } => return None,
        Event::Reconnecting {
            reason,
            attempt,
            retry_in_ms,
        } => format!(
            "Connection lost ({}); reconnecting, attempt {attempt} in {:.1} s…",
            safe(reason),
            *retry_in_ms as f64 / 1000.0
        ),
        Event::History { lines } => {
            if lines.is_empty() {
                "No messages yet.".to_string()
            } else {
                lines
                    .iter()
                    .map(|l| {
                        let at = chrono::DateTime::from_timestamp_millis(l.at_ms as i64)
                            .map(|t| {
                                t.with_timezone(&chrono::Local)
                                    .format("%Y-%m-%d %H:%M:%S")
                                    .to_string()
                            })
                            .unwrap_or_default();
                        let mark = if l.outgoing && !l.acked {
                            " (not delivered)"
                        } else {
                            ""
                        };
                        format!("[{at}] {}: {}{mark}", safe(&l.from), safe(&l.text))
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        }
        Event::FileOffer {
            id,
            from,
            name,
            size,
        } => format!(
            "{} offers {} ({}). /accept {id} to receive it, /reject {id} to decline.",
            safe(from),
            safe(name),
            human_bytes(*size)
        ),
        Event::Progress { .. } => return None,
        Event::FileDone {
            direction,
            name,
            path,
            ..
        } => match (direction.as_str(), path) {
            ("receive", Some(path)) => {
                format!("Received {} and verified it: {}", safe(name), safe(path))
            }
            _ => format!(
                "Sent all of {}; the peer checks it against its BLAKE3 hash.",
                safe(name)
            ),
        },
        Event::FileStopped {
            direction,
            name,
            reason,
            ..
        } => format!(
            "{} {} stopped: {}",
            if direction == "send" {
                "Sending"
            } else {
                "Receiving"
            },
            safe(name),
            safe(reason)
        ),
        Event::GroupJoined {
            room,
            present,
            max_members,
            ..
        } => format!(
            "In group room {} ({present} other members here, at most {max_members}); linking with each. /help lists commands.",
            safe(room)
        ),
        Event::MemberJoined {
            peer,
            fingerprint,
            addr,
            path,
            sas,
            verified,
            ..
        } => format!(
            "{} joined the conversation (at {addr}, {path}, identity {fingerprint}{}). Security code with them: {sas}.",
            safe(peer),
            if *verified { ", verified" } else { "" }
        ),
        Event::MemberLeft { peer, reason, .. } => {
            format!("{} is no longer linked: {}", safe(peer), safe(reason))
        }
        Event::GroupMessage { from, text, .. } => format!(
            "[{}] {}: {}",
            chrono::Local::now().format("%H:%M:%S"),
            safe(from),
            safe(text)
        ),
        Event::Member {
            name,
            fingerprint,
            addr,
            path,
            sas,
            rtt_ms,
            verified,
            ..
        } => format!(
            "{} ({fingerprint}) at {addr}, path {path}, security code {sas}, round trip {}, {}",
            safe(name),
            rtt_ms.map_or_else(|| "not measured yet".to_string(), |ms| format!("{ms} ms")),
            if *verified { "verified" } else { "not verified" }
        ),
        Event::Contacts { contacts } if contacts.is_empty() => {
            "No contacts yet: meet someone once with a room code or a token.".into()
        }
        Event::Contacts { contacts } => {
            let lines: Vec<String> = contacts
                .iter()
                .map(|c| {
                    format!(
                        "{} ({}){}: {}",
                        safe(&c.name),
                        c.fingerprint,
                        if c.verified { ", verified" } else { "" },
                        match c.conversation {
                            Some(n) => format!("online, linked in conversation {n}"),
                            None => "not linked now (messages to it wait at the mailbox)".into(),
                        }
                    )
                })
                .collect();
            format!("Contacts:\n  {}", lines.join("\n  "))
        }
        Event::Info { text } => text.clone(),
        Event::Disconnected { reason } => format!("Session ended: {}", safe(reason)),
        Event::Conversations { front, items } => {
            if items.is_empty() {
                "No conversation is open: /room CODE, /group CODE, /new, /to CONTACT, /connect TOKEN".into()
            } else {
                items
                    .iter()
                    .map(|c| {
                        let mark = if Some(c.number) == *front { '>' } else { ' ' };
                        let detail = match c.kind.as_str() {
                            "group" => format!("{} members", c.members),
                            _ => c.path.clone(),
                        };
                        let unread = if c.unread > 0 {
                            format!(" ({} unread)", c.unread)
                        } else {
                            String::new()
                        };
                        let verified = if c.verified { " verified" } else { "" };
                        format!(
                            "{mark}{} {} [{}] {} {}{verified}{unread}",
                            c.number, c.label, c.kind, c.state, detail
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        }
        Event::Closed { reason } => format!("Conversation closed: {reason}"),
        Event::Error { text, .. } => format!("error: {text}"),
        Event::Warning { text, .. } => format!("WARNING: {text}"),
    })
}

#[cfg(test)]
mod tests;
