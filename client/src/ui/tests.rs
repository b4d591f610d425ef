//! The output layer's terminal safety: every event kind, with escape sequences,
//! C1 controls, bidi overrides and line breaks in every text field, reaches
//! neither the plain lines nor the full-screen buffer with any of them; `--json`
//! keeps the text exactly.

use ratatui::backend::TestBackend;
use ratatui::Terminal;

use super::*;
use crate::tui::screen::Screen;

/// What a hostile peer puts in every string: CSI (7- and 8-bit), OSC with BEL
/// and with ST, DCS, a two-character ESC sequence, bare C0 and C1 controls,
/// bidi overrides and isolates, a zero-width space and line breaks that would
/// fake a line of our own.
const HOSTILE: &str = "\u{1b}[2J\u{1b}[31mred\u{1b}]0;owned\u{7}\u{1b}]8;;http://e\u{1b}\\x\
                       \u{9b}1;1H\u{9d}2;t\u{9c}\u{90}q\u{9c}\u{1b}c\u{7}\u{8}\u{85}\u{7f}\
                       \u{202e}txt.exe\u{202d}\u{2066}\u{2069}\u{200b}\
                       \r\nVerified contact connected\n";

/// A character that must never reach a terminal from a peer. `newlines_ok`:
/// line breaks our own format puts between parts of one event.
fn forbidden(c: char, newlines_ok: bool) -> bool {
    (c.is_control() && !(newlines_ok && c == '\n')) || wire::text::is_invisible_format(c)
}

/// One of each event kind (both shapes where the text differs), every string
/// field set to `s`.
fn every_event(s: &str) -> Vec<Event> {
    let s = || s.to_string();
    vec![
        Event::Room {
            room: s(),
            command: s(),
        },
        Event::Token {
            token: s(),
            command: s(),
            expires_in_secs: 60,
        },
        Event::Admission {
            peer: s(),
            fingerprint: s(),
            sas: s(),
        },
        Event::Waiting {
            listen: s(),
            expires_in_secs: 60,
        },
        Event::Matched {
            peer: s(),
            role: s(),
        },
        Event::Rejected {
            addr: s(),
            reason: s(),
        },
        Event::Connected {
            peer: s(),
            addr: s(),
            path: s(),
            sas: s(),
            role: s(),
            resumed: false,
            verified: true,
            fingerprint: s(),
        },
        Event::Connected {
            peer: s(),
            addr: s(),
            path: s(),
            sas: s(),
            role: s(),
            resumed: true,
            verified: false,
            fingerprint: s(),
        },
        Event::Warning {
            code: s(),
            text: s(),
        },
        Event::Message {
            from: s(),
            text: s(),
            id: 1,
            sent_at_ms: 0,
        },
        Event::Sent {
            id: 1,
            text: s(),
            pending: true,
        },
        Event::Ack { id: 1 },
        Event::Stored {
            id: 2,
            expires_unix: 1_800_000_000,
        },
        Event::Expired { id: 3 },
        Event::Read { id: 2 },
        Event::Contacts {
            contacts: vec![engine::events::ContactState {
                name: s(),
                fingerprint: s(),
                verified: true,
                online: true,
                conversation: Some(2),
            }],
        },
        Event::Peer {
            name: s(),
            addr: s(),
            path: s(),
            sas: s(),
            rtt_ms: Some(3),
        },
        Event::Verify {
            sas: s(),
            peer: s(),
            verified: true,
        },
        Event::Verify {
            sas: s(),
            peer: s(),
            verified: false,
        },
        Event::Rtt { rtt_ms: 3 },
        Event::Reconnecting {
            reason: s(),
            attempt: 1,
            retry_in_ms: 10,
        },
        Event::History {
            lines: vec![
                HistoryLine {
                    at_ms: 0,
                    from: s(),
                    text: s(),
                    outgoing: true,
                    acked: false,
                },
                HistoryLine {
                    at_ms: 1,
                    from: s(),
                    text: s(),
                    outgoing: false,
                    acked: true,
                },
            ],
        },
        Event::FileOffer {
            id: 1,
            from: s(),
            name: s(),
            size: 10,
        },
        Event::Progress {
            id: 1,
            direction: s(),
            name: s(),
            bytes: 1,
            total: 10,
            rate_bps: 1,
            eta_secs: Some(1),
        },
        Event::FileDone {
            id: 1,
            direction: "receive".into(),
            name: s(),
            path: Some(s()),
            blake3: s(),
        },
        Event::FileDone {
            id: 1,
            direction: s(),
            name: s(),
            path: None,
            blake3: s(),
        },
        Event::FileStopped {
            id: 1,
            direction: s(),
            name: s(),
            reason: s(),
        },
        Event::Info { text: s() },
        Event::GroupJoined {
            room: s(),
            member: 1,
            present: 1,
            max_members: 16,
        },
        Event::MemberJoined {
            member: 2,
            peer: s(),
            fingerprint: s(),
            addr: s(),
            path: s(),
            sas: s(),
            verified: true,
        },
        Event::MemberLeft {
            member: 2,
            peer: s(),
            reason: s(),
        },
        Event::GroupMessage {
            from: s(),
            author: s(),
            linked: false,
            own: false,
            seq: 1,
            depth: 1,
            sent_at_ms: 0,
            text: s(),
        },
        Event::Member {
            member: 2,
            name: s(),
            fingerprint: s(),
            addr: s(),
            path: s(),
            sas: s(),
            rtt_ms: None,
            verified: false,
        },
        Event::Disconnected { reason: s() },
        Event::Error {
            code: s(),
            text: s(),
        },
        Event::Conversations {
            front: Some(1),
            items: vec![engine::events::ConvItem {
                number: 1,
                id: s(),
                label: s(),
                kind: s(),
                state: s(),
                path: s(),
                members: 2,
                verified: true,
                unread: 3,
            }],
        },
        Event::Closed { reason: s() },
    ]
}

/// The variant's name; a new variant does not compile until it is named here
/// (and then [`every_event`] must show one, see the count below).
fn kind(event: &Event) -> &'static str {
    match event {
        Event::Room { .. } => "room",
        Event::Token { .. } => "token",
        Event::Admission { .. } => "admission",
        Event::Waiting { .. } => "waiting",
        Event::Matched { .. } => "matched",
        Event::Rejected { .. } => "rejected",
        Event::Connected { .. } => "connected",
        Event::Warning { .. } => "warning",
        Event::Message { .. } => "message",
        Event::Sent { .. } => "sent",
        Event::Ack { .. } => "ack",
        Event::Stored { .. } => "stored",
        Event::Expired { .. } => "expired",
        Event::Read { .. } => "read",
        Event::Contacts { .. } => "contacts",
        Event::Peer { .. } => "peer",
        Event::Verify { .. } => "verify",
        Event::Rtt { .. } => "rtt",
        Event::Reconnecting { .. } => "reconnecting",
        Event::History { .. } => "history",
        Event::FileOffer { .. } => "file_offer",
        Event::Progress { .. } => "progress",
        Event::FileDone { .. } => "file_done",
        Event::FileStopped { .. } => "file_stopped",
        Event::Info { .. } => "info",
        Event::GroupJoined { .. } => "group_joined",
        Event::MemberJoined { .. } => "member_joined",
        Event::MemberLeft { .. } => "member_left",
        Event::GroupMessage { .. } => "group_message",
        Event::Member { .. } => "member",
        Event::Disconnected { .. } => "disconnected",
        Event::Error { .. } => "error",
        Event::Conversations { .. } => "conversations",
        Event::Closed { .. } => "closed",
    }
}

#[test]
fn the_sample_covers_every_event_kind() {
    let mut kinds: Vec<&str> = every_event("x").iter().map(kind).collect();
    kinds.dedup();
    assert_eq!(kinds.len(), 34, "add the new event kind to every_event");
}

#[test]
fn plain_lines_carry_no_control_or_bidi_character_from_any_field() {
    for (hostile, clean) in every_event(HOSTILE).iter().zip(every_event("x")) {
        let Some(line) = render_line(hostile) else {
            continue;
        };
        let bad: Vec<char> = line.chars().filter(|&c| forbidden(c, true)).collect();
        assert!(bad.is_empty(), "{}: {bad:?} in {line:?}", kind(hostile));
        // The line breaks are the format's own: a peer adds none.
        let breaks = |s: &str| s.matches('\n').count();
        let expected = render_line(&clean).map_or(0, |l| breaks(&l));
        assert_eq!(breaks(&line), expected, "{}: {line:?}", kind(hostile));
        if Some(&line) == render_line(&clean).as_ref() {
            // No field of this event comes from anyone else.
            continue;
        }
        // The words are still there, without their escapes.
        assert!(line.contains("Verified contact connected"), "{line:?}");
    }
}

#[test]
fn the_full_screen_buffer_carries_no_control_or_bidi_character_from_any_field() {
    for (hostile, clean) in every_event(HOSTILE).iter().zip(every_event("x")) {
        let mut screen = Screen::new();
        screen.apply(hostile, "10:00");
        let mut reference = Screen::new();
        reference.apply(&clean, "10:00");
        let what = kind(hostile);
        for line in screen.lines() {
            assert!(
                !line.text.chars().any(|c| forbidden(c, false)),
                "{what}: {:?}",
                line.text
            );
            if let crate::tui::screen::Speaker::Peer(name) = &line.speaker {
                assert!(
                    !name.chars().any(|c| forbidden(c, false)),
                    "{what}: {name:?}"
                );
            }
        }
        assert_eq!(
            screen.lines().len(),
            reference.lines().len(),
            "{what}: a peer's line break made a line of its own"
        );
        let status = screen.status();
        for field in [&status.peer, &status.path, &status.sas, &status.transfer]
            .into_iter()
            .flatten()
        {
            assert!(
                !field.chars().any(|c| forbidden(c, false)),
                "{what}: {field:?}"
            );
        }
        if let Some(farewell) = screen.farewell() {
            assert!(
                !farewell.chars().any(|c| forbidden(c, true)),
                "{what}: {farewell:?}"
            );
        }
        let mut terminal = Terminal::new(TestBackend::new(200, 30)).unwrap();
        terminal
            .draw(|f| screen.render(f, &crate::tui::InputLine::new(1000)))
            .unwrap();
        let buffer = terminal.backend().buffer();
        for cell in buffer.content() {
            assert!(
                !cell.symbol().chars().any(|c| forbidden(c, false)),
                "{what}: {:?} in the buffer",
                cell.symbol()
            );
        }
    }
}

#[test]
fn json_keeps_every_text_exactly() {
    for (event, clean) in every_event(HOSTILE).into_iter().zip(every_event("x")) {
        let line = serde_json::to_string(&event).unwrap();
        assert!(!line.contains('\u{1b}') && !line.contains('\n'), "{line}");
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        let strings = |v: &serde_json::Value| -> Vec<String> {
            fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
                match v {
                    serde_json::Value::String(s) => out.push(s.clone()),
                    serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
                    serde_json::Value::Object(o) => o.values().for_each(|v| walk(v, out)),
                    _ => {}
                }
            }
            let mut out = Vec::new();
            walk(v, &mut out);
            out
        };
        let texts = strings(&back);
        let fields = strings(&serde_json::to_value(&clean).unwrap())
            .iter()
            .filter(|t| *t == "x")
            .count();
        assert_eq!(
            texts.iter().filter(|t| *t == HOSTILE).count(),
            fields,
            "{}: a text changed in --json: {texts:?}",
            kind(&event)
        );
    }
}

#[test]
fn sanitizing_an_event_twice_changes_nothing() {
    for event in every_event(HOSTILE) {
        let once = event.for_terminal();
        let twice = once.for_terminal();
        assert_eq!(
            serde_json::to_string(&once).unwrap(),
            serde_json::to_string(&twice).unwrap()
        );
    }
    let text = wire::sanitize_for_terminal(HOSTILE);
    assert_eq!(wire::sanitize_for_terminal(&text), text);
}

#[test]
fn help_texts_keep_their_lines_and_other_infos_do_not() {
    for help in [HELP, GROUP_HELP] {
        let shown = render_line(&Event::Info { text: help.into() }).unwrap();
        assert_eq!(shown, help);
    }
    let faked = render_line(&Event::Info {
        text: "note\nConnected to bob".into(),
    })
    .unwrap();
    assert_eq!(faked, "note Connected to bob");
}
