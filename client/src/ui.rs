//! What the person sees: one [`Event`] type, rendered as text lines or as one JSON
//! object per line. Every peer-supplied string shown as text passes through
//! [`wire::sanitize_for_terminal`].

use std::io::Write;

use serde::Serialize;
use wire::sanitize_for_terminal as safe;

use crate::cli::OutputMode;

/// Everything the client reports. In `--json` mode each is one line with an
/// `event` field naming the variant.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A generated room code and the command the other side should run.
    Room { room: String, command: String },
    /// Registered with the mediator; waiting for the other person.
    Waiting {
        listen: String,
        expires_in_secs: u32,
    },
    /// The mediator matched us; connecting to the peer.
    Matched { peer: String, role: String },
    /// A stranger reached our port and was turned away.
    Rejected { addr: String, reason: String },
    /// The encrypted session is up.
    Connected {
        peer: String,
        addr: String,
        path: String,
        sas: String,
        role: String,
    },
    /// A message from the peer.
    Message {
        from: String,
        text: String,
        id: u64,
        sent_at_ms: u64,
    },
    /// One of our messages left.
    Sent { id: u64, text: String },
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
    /// `/verify`.
    Verify { sas: String, peer: String },
    /// A line for the person (help text, notices).
    Info { text: String },
    /// The session ended.
    Disconnected { reason: String },
    /// Something failed; `code` is stable for scripts.
    Error { code: String, text: String },
}

/// Writes events to stdout (and errors to stderr in line mode).
#[derive(Debug)]
pub struct Output {
    mode: OutputMode,
}

impl Output {
    /// An output in the given mode.
    pub fn new(mode: OutputMode) -> Output {
        Output { mode }
    }

    /// Shows one event.
    pub fn show(&self, event: &Event) {
        match self.mode {
            OutputMode::Json => {
                let mut out = std::io::stdout().lock();
                // A closed stdout (the reader went away) is not worth dying over.
                if let Ok(line) = serde_json::to_string(event) {
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                }
            }
            OutputMode::Line => {
                if let Some(text) = render_line(event) {
                    if matches!(event, Event::Error { .. }) {
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

/// The text form of an event, or `None` for events line mode keeps quiet about.
pub fn render_line(event: &Event) -> Option<String> {
    Some(match event {
        Event::Room { room, command } => {
            format!("Room code: {room}\nOn the other side, run:\n    {command}")
        }
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
        Event::Verify { sas, peer } => format!(
            "Security code: {sas}. Read it to {} over another channel; it must match theirs.",
            safe(peer)
        ),
        Event::Info { text } => text.clone(),
        Event::Disconnected { reason } => format!("Session ended: {}", safe(reason)),
        Event::Error { text, .. } => format!("error: {text}"),
    })
}

/// The text `/help` shows.
pub const HELP: &str = "\
Type a line and press Enter to send it. Commands:
  /help      this list
  /peers     who you are talking to: address, path, security code, round trip
  /verify    show the security code again (compare it with your peer)
  /quit      leave (so do Ctrl-C and Ctrl-D)
A line starting with // sends a message that starts with /.";
