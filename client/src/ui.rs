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
    text == HELP || text == GROUP_HELP
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

/// Writes events to stdout (and errors to stderr in line mode), or hands them
/// to the full-screen interface in [`OutputMode::Tui`].
#[derive(Debug)]
pub struct Output {
    mode: OutputMode,
    /// The running interface; `None` in the other modes and after
    /// [`Output::shutdown`], when events fall back to plain lines.
    tui: Mutex<Option<Tui>>,
    /// Line mode's progress bars (on stderr), one per running transfer.
    bars: Mutex<std::collections::HashMap<(String, u64), indicatif::ProgressBar>>,
}

impl Output {
    /// An output in the given mode. For [`OutputMode::Tui`] this takes over the
    /// terminal; if that fails, it warns on stderr and uses plain lines.
    pub fn new(mode: OutputMode) -> Output {
        let tui = match mode {
            OutputMode::Tui => {
                match Tui::start(wire::peer::MAX_CHAT_TEXT) {
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
        }
    }

    fn tui(&self) -> MutexGuard<'_, Option<Tui>> {
        // A panic while holding the lock leaves nothing half-done worth refusing over.
        self.tui.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where typed lines come from: the interface's input line, or standard
    /// input read line by line with a bound.
    pub fn input(&self, max_bytes: usize) -> tokio::sync::mpsc::Receiver<crate::input::InputEvent> {
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

    /// Shows one event.
    pub fn show(&self, event: &Event) {
        if self.tui().as_ref().is_some_and(|tui| tui.show(event)) {
            return;
        }
        match self.mode {
            OutputMode::Json => {
                let mut out = std::io::stdout().lock();
                // A closed stdout (the reader went away) is not worth dying over.
                if let Ok(line) = serde_json::to_string(event) {
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                }
            }
            OutputMode::Line | OutputMode::Tui => {
                self.update_bars(event);
                if let Some(text) = render_line(event) {
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
}

impl Output {
    /// Draws transfer progress in line mode as indicatif bars on stderr (hidden
    /// when stderr is not a terminal), and clears a bar when its transfer ends.
    fn update_bars(&self, event: &Event) {
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
                let bar = bars.entry((direction.clone(), *id)).or_insert_with(|| {
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
                if let Some(bar) = bars.remove(&(direction.clone(), *id)) {
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
        Event::Sent { .. } | Event::Ack { .. } => return None,
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
        Event::Info { text } => text.clone(),
        Event::Disconnected { reason } => format!("Session ended: {}", safe(reason)),
        Event::Error { text, .. } => format!("error: {text}"),
        Event::Warning { text, .. } => format!("WARNING: {text}"),
    })
}

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

#[cfg(test)]
mod tests;
