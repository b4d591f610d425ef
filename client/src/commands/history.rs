//! `client history`: prints past chats from the history database, as readable
//! text or as one JSON object per chat; `list`, `show ID` and `forget ID` work
//! on conversations of every kind (see `conversations.rs`).

use std::io::Write;
use std::path::Path;

use wire::sanitize_for_terminal as safe;

use engine::error::ClientError;
use engine::history::{
    shown_at, ChatRecord, ConversationKind, ConversationMessages, History, StoredConversation,
};

use super::confirm::confirm;
use crate::cli::{HistoryAction, HistoryArgs};

/// Runs `client history [--room R] [--peer NAME] [--limit N] [--json]`.
pub fn run(args: &HistoryArgs) -> Result<(), ClientError> {
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
    let text = match &args.action {
        None => chats_text(args, &history)?,
        Some(HistoryAction::List) => list_text(args.json, &history)?,
        Some(HistoryAction::Show { id }) => {
            let conversation = history.find_conversation(id)?;
            show_text(args.json, &history, &conversation)?
        }
        Some(HistoryAction::Forget { id, yes }) => forget(args.json, *yes, &history, id)?,
    };
    write_out(&text)
}

/// Prints `text` on standard output.
fn write_out(text: &str) -> Result<(), ClientError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        // `client history | head` closing the pipe early is not a failure.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(ClientError::File(format!(
            "cannot write the history to standard output: {e}"
        ))),
        _ => Ok(()),
    }
}

/// JSON lines of `items`, one object each.
fn json_lines<T: serde::Serialize>(items: &[T]) -> Result<String, ClientError> {
    items
        .iter()
        .map(|item| serde_json::to_string(item).map_err(|e| ClientError::Internal(e.into())))
        .map(|line| line.map(|l| l + "\n"))
        .collect()
}

/// `client history list`: one line (or JSON object) per conversation.
fn list_text(json: bool, history: &History) -> Result<String, ClientError> {
    let all = history.conversations()?;
    if json {
        return json_lines(&all);
    }
    if all.is_empty() {
        return Ok(format!(
            "no conversations in {}\n",
            history.path().display()
        ));
    }
    Ok(all.iter().map(|c| describe(c) + "\n").collect())
}

/// One conversation in one line: id, kind, last activity, size, label, names.
fn describe(c: &StoredConversation) -> String {
    let kind = match c.kind {
        ConversationKind::Log => "conversation",
        ConversationKind::Chat => "chat (v2)",
        ConversationKind::GroupV2 => "group (v2)",
    };
    let mut line = format!(
        "{}  {kind:<12}  {}  {:>5} messages  {}",
        c.id,
        local_time(c.last_ms, "%Y-%m-%d %H:%M"),
        c.messages,
        safe(&c.label)
    );
    if !c.with.is_empty() {
        let names: Vec<String> = c.with.iter().map(|n| safe(n).into_owned()).collect();
        line += &format!("  with {}", names.join(", "));
    }
    line
}

/// `client history show ID`: the conversation's messages.
fn show_text(
    json: bool,
    history: &History,
    conversation: &StoredConversation,
) -> Result<String, ClientError> {
    Ok(
        match history.conversation_messages(&conversation.key, MAX_GROUP_LINES)? {
            ConversationMessages::Chat(chat) if json => json_lines(&[chat])?,
            ConversationMessages::Chat(chat) => render_chat(&chat),
            ConversationMessages::Log(lines) if json => json_lines(&lines)?,
            ConversationMessages::Log(lines) if lines.is_empty() => {
                format!("{}\n(no messages)\n", describe(conversation))
            }
            ConversationMessages::Log(lines) => render_group(&lines),
        },
    )
}

/// `client history forget ID [--yes]`: after the confirmation, deletes it.
fn forget(json: bool, yes: bool, history: &History, id: &str) -> Result<String, ClientError> {
    let conversation = history.find_conversation(id)?;
    confirm(
        &format!(
            "Forget this conversation and everything stored about it?\n  {}",
            describe(&conversation)
        ),
        yes,
        &format!("conversation {}", conversation.id),
    )?;
    let forgotten = history.forget_conversation(&conversation.key)?;
    if !forgotten.wiped {
        eprintln!(
            "note: another program has {} open; the deleted texts leave its write-ahead log \
             when that program closes it",
            history.path().display()
        );
    }
    if json {
        #[derive(serde::Serialize)]
        struct Line<'a> {
            event: &'static str,
            id: &'a str,
            conversation: &'a str,
            #[serde(flatten)]
            forgotten: engine::history::Forgotten,
        }
        return json_lines(&[Line {
            event: "forgotten",
            id: &conversation.id,
            conversation: &conversation.conversation,
            forgotten,
        }]);
    }
    Ok(format!(
        "forgot conversation {} ({}): {} messages\n",
        conversation.id,
        safe(&conversation.label),
        forgotten.messages
    ))
}

/// `client history [--room R] [--peer NAME] [--limit N]`: past chats with
/// their messages (and a group room's lines with `--room`).
fn chats_text(args: &HistoryArgs, history: &History) -> Result<String, ClientError> {
    let path = history.path();
    let chats = history.query(args.room.as_deref(), args.peer.as_deref(), args.limit)?;
    // A group room's messages, in the order every member shares (§17.3).
    let group = match (&args.room, &args.peer) {
        (Some(room), None) => history.group_lines(room, MAX_GROUP_LINES)?,
        _ => Vec::new(),
    };
    Ok(if args.json {
        json_lines(&chats)? + &json_lines(&group)?
    } else if !group.is_empty() {
        render_group(&group)
    } else if chats.is_empty() {
        format!("{}\n", no_chats(args, path))
    } else {
        chats.iter().map(render_chat).collect::<Vec<_>>().join("\n")
    })
}

/// Most group messages `client history --room` lists.
const MAX_GROUP_LINES: u32 = 10_000;

/// A group room's messages as text: a header, then one line per message.
fn render_group(lines: &[engine::history::GroupLine]) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_rendering_sanitizes_and_marks_undelivered() {
        let dir = std::env::temp_dir().join(format!("p2pchat-render-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let h = History::open(&dir.join("history.sqlite3")).unwrap();
        let c = h
            .start_chat(
                "7-velvet-harbor",
                "ali\u{1b}[2Jce",
                "",
                "192.0.2.7:4000",
                "direct",
                "482 093",
                1_700_000_000_000,
            )
            .unwrap();
        h.set_verified(c, true).unwrap();
        h.record_outgoing(c, 1, "bob", "delivered", 1_700_000_001_000)
            .unwrap();
        h.record_outgoing(c, 2, "bob", "lost", 1_700_000_002_000)
            .unwrap();
        h.mark_acked(c, 1).unwrap();
        h.record_incoming(
            c,
            1,
            "ali\u{1b}[2Jce",
            "hi\u{7}\nthere",
            0,
            1_700_000_003_000,
        )
        .unwrap();
        h.end_chat(c, 1_700_000_004_000, "bob left").unwrap();
        let text = render_chat(&h.query(None, None, 1).unwrap()[0]);
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{text:?}"
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(
            lines[0].contains(
                "  alice  room 7-velvet-harbor  direct  SAS 482 093 ✓verified  (ended: bob left)"
            ),
            "{text}"
        );
        assert!(lines[1].ends_with("] bob: delivered"), "{text}");
        assert!(lines[2].ends_with("] bob: lost (not delivered)"), "{text}");
        assert!(lines[3].ends_with("] alice: hi there"), "{text}");
        drop(h);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
