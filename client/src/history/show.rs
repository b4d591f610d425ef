//! `client history`: prints past chats from the history database, as readable
//! text or as one JSON object per chat.

use std::io::Write;
use std::path::Path;

use wire::sanitize_for_terminal as safe;

use super::{shown_at, ChatRecord, History};
use crate::cli::HistoryArgs;
use crate::exit::ClientError;

/// Runs `client history [--room R] [--peer NAME] [--limit N] [--json]`.
pub fn run_command(args: &HistoryArgs) -> Result<(), ClientError> {
    let path = History::path_for(args.history.as_deref(), args.profile.as_deref())?;
    // Reading must not create a database where there was none.
    if matches!(std::fs::metadata(&path), Err(e) if e.kind() == std::io::ErrorKind::NotFound) {
        let note = format!("no history yet at {}", path.display());
        if args.json {
            // Standard output stays pure JSON lines (here: none).
            eprintln!("{note}");
        } else {
            println!("{note}");
        }
        return Ok(());
    }
    let history = History::open(&path)?;
    let chats = history.query(args.room.as_deref(), args.peer.as_deref(), args.limit)?;
    // A group room's messages, in the order every member shares (§17.3).
    let group = match (&args.room, &args.peer) {
        (Some(room), None) => history.group_lines(room, MAX_GROUP_LINES)?,
        _ => Vec::new(),
    };
    let text = if args.json {
        let group = group
            .iter()
            .map(|line| serde_json::to_string(line).map_err(|e| ClientError::Internal(e.into())))
            .map(|line| line.map(|l| l + "\n"))
            .collect::<Result<String, _>>()?;
        chats
            .iter()
            .map(|chat| serde_json::to_string(chat).map_err(|e| ClientError::Internal(e.into())))
            .map(|line| line.map(|l| l + "\n"))
            .collect::<Result<String, _>>()?
            + &group
    } else if !group.is_empty() {
        render_group(&group)
    } else if chats.is_empty() {
        format!("{}\n", no_chats(args, &path))
    } else {
        chats.iter().map(render_chat).collect::<Vec<_>>().join("\n")
    };
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        // `client history | head` closing the pipe early is not a failure.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(ClientError::File(format!(
            "cannot write the history to standard output: {e}"
        ))),
        _ => Ok(()),
    }
}

/// Most group messages `client history --room` lists.
const MAX_GROUP_LINES: u32 = 10_000;

/// A group room's messages as text: a header, then one line per message.
fn render_group(lines: &[super::GroupLine]) -> String {
    let mut text = format!(
        "group room {}  {} messages\n",
        safe(&lines[0].room),
        lines.len()
    );
    for l in lines {
        text += &format!(
            "[{}] {} ({}…): {}\n",
            local_time(l.sent_at_ms, "%Y-%m-%d %H:%M:%S"),
            safe(&l.author_name),
            &l.author[..8],
            safe(&l.text)
        );
    }
    text
}

fn no_chats(args: &HistoryArgs, path: &Path) -> String {
    let mut filters = Vec::new();
    if let Some(room) = &args.room {
        filters.push(format!("room {}", safe(room)));
    }
    if let Some(peer) = &args.peer {
        filters.push(format!("peer {}", safe(peer)));
    }
    if filters.is_empty() {
        format!("no chats in {}", path.display())
    } else {
        format!("no chats with {} in {}", filters.join(", "), path.display())
    }
}

/// One chat as text: a header line, then one line per message, each ending in a
/// newline. Every stored string passes through the terminal sanitizer: names
/// and texts came from the network.
pub(crate) fn render_chat(chat: &ChatRecord) -> String {
    let mut text = format!(
        "{}  {}  room {}  {}  SAS {} {}",
        local_time(chat.started_ms, "%Y-%m-%d %H:%M"),
        safe(&chat.peer),
        safe(&chat.room),
        safe(&chat.path),
        safe(&chat.sas),
        if chat.verified {
            "✓verified"
        } else {
            "not verified"
        }
    );
    if chat.reconnects > 0 {
        text += &format!(
            "  reconnected {}× ({} resumed)",
            chat.reconnects, chat.resumes
        );
    }
    text += &match (&chat.ended_ms, &chat.end_reason) {
        (Some(_), Some(reason)) => format!("  (ended: {})", safe(reason)),
        (Some(_), None) => "  (ended)".to_string(),
        (None, _) => "  (no end recorded)".to_string(),
    };
    text.push('\n');
    for m in &chat.messages {
        let outgoing = m.direction == "out";
        let mark = if outgoing && !m.acked {
            " (not delivered)"
        } else {
            ""
        };
        text += &format!(
            "[{}] {}: {}{mark}\n",
            local_time(shown_at(outgoing, m.sent_ms, m.received_ms), "%H:%M:%S"),
            safe(&m.sender),
            safe(&m.text)
        );
    }
    text
}

fn local_time(ms: u64, format: &str) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.with_timezone(&chrono::Local).format(format).to_string())
        .unwrap_or_else(|| "????".to_string())
}
