//! The screen rendered into ratatui's `TestBackend`: status derivation, delivery
//! marks, scrolling, the help overlay, keys, sanitizing and wrapping.

use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::style::Color;
use ratatui::Terminal;

use super::*;
use crate::tui::on_key;
use crate::tui::Editor;
use crate::ui::HELP;
use crate::ui::{ConvItem, ConvRef};

fn rows(terminal: &Terminal<TestBackend>) -> Vec<String> {
    let buffer = terminal.backend().buffer();
    let area = buffer.area;
    (0..area.height)
        .map(|y| {
            (0..area.width)
                .map(|x| buffer[(x, y)].symbol().to_string())
                .collect::<String>()
        })
        .collect()
}

fn draw(screen: &mut Screen, width: u16, height: u16) -> Vec<String> {
    draw_with(screen, &Editor::new(100), width, height)
}

fn draw_with(screen: &mut Screen, editor: &Editor, width: u16, height: u16) -> Vec<String> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|f| screen.render(f, editor.line())).unwrap();
    rows(&terminal)
}

/// A key as the terminal thread hands it over: to the editor or the screen.
fn press(screen: &mut Screen, editor: &mut Editor, key: KeyEvent) -> Action {
    on_key(screen, editor, key)
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn ctrl(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
}

fn type_text(screen: &mut Screen, editor: &mut Editor, text: &str) {
    for c in text.chars() {
        assert_eq!(press(screen, editor, key(KeyCode::Char(c))), Action::None);
    }
}

fn connected(verified: bool, resumed: bool) -> Event {
    Event::Connected {
        peer: "bob".into(),
        addr: "127.0.0.1:4000".into(),
        path: "direct".into(),
        sas: "482 093".into(),
        role: "host".into(),
        resumed,
        verified,
        fingerprint: "ea10 695a f766 1f0e 1345 7f35 4cff 16ec".into(),
    }
}

fn message(text: &str) -> Event {
    Event::Message {
        from: "bob".into(),
        text: text.into(),
        id: 1,
        sent_at_ms: 0,
    }
}

#[test]
fn status_follows_the_session() {
    let mut s = Screen::new();
    assert_eq!(s.status().state, State::Connecting);
    s.apply(
        &Event::Waiting {
            listen: "127.0.0.1:1".into(),
            expires_in_secs: 600,
        },
        "10:00",
    );
    assert_eq!(s.status().state, State::Waiting);
    s.apply(
        &Event::Matched {
            peer: "bob".into(),
            role: "host".into(),
        },
        "10:00",
    );
    assert_eq!(s.status().state, State::Connecting);
    assert_eq!(s.status().peer.as_deref(), Some("bob"));
    s.apply(&connected(false, false), "10:00");
    s.apply(&Event::Rtt { rtt_ms: 12 }, "10:00");
    assert_eq!(
        s.status(),
        &Status {
            peer: Some("bob".into()),
            path: Some("direct".into()),
            sas: Some("482 093".into()),
            verified: false,
            rtt_ms: Some(12),
            state: State::Secure,
            transfer: None,
        }
    );
    let bar = &draw(&mut s, 70, 6)[4];
    assert!(
        bar.contains("bob │ direct │ SAS 482 093 unverified │ 12 ms │ secure"),
        "{bar}"
    );

    s.apply(
        &Event::Verify {
            sas: "482 093".into(),
            peer: "bob".into(),
            verified: true,
        },
        "10:01",
    );
    s.apply(
        &Event::Verify {
            sas: "482 093".into(),
            peer: "bob".into(),
            verified: false,
        },
        "10:01",
    );
    assert!(s.status().verified, "showing the code does not un-verify");
    let bar = &draw(&mut s, 70, 6)[4];
    assert!(bar.contains("SAS 482 093 ✓ │ 12 ms │ secure"), "{bar}");

    s.apply(
        &Event::Reconnecting {
            reason: "reset".into(),
            attempt: 1,
            retry_in_ms: 1000,
        },
        "10:02",
    );
    assert_eq!(s.status().state, State::Reconnecting);
    assert_eq!(s.status().rtt_ms, None);
    s.apply(&connected(true, true), "10:03");
    assert_eq!(s.status().state, State::Secure);
    assert!(s.status().verified);
    let last = &s.lines().back().unwrap().text;
    assert!(
        last.contains("Reconnected") && last.contains("still verified"),
        "{last}"
    );
    s.apply(&connected(false, false), "10:04");
    assert!(!s.status().verified, "new keys need a new comparison");

    s.apply(
        &Event::Disconnected {
            reason: "bob left".into(),
        },
        "10:05",
    );
    assert_eq!(s.status().state, State::Ended);
    assert_eq!(s.farewell(), Some("Session ended: bob left"));
    let bar = &draw(&mut s, 70, 6)[4];
    assert!(bar.trim_end().ends_with("ended"), "{bar}");
}

#[test]
fn progress_shows_in_the_status_bar_until_done() {
    let mut s = Screen::new();
    s.apply(
        &Event::Progress {
            id: 1,
            direction: "send".into(),
            name: "a.txt".into(),
            bytes: 512,
            total: 1024,
            rate_bps: 10,
            eta_secs: None,
        },
        "10:00",
    );
    assert!(s.lines().is_empty(), "progress is not a line");
    let bar = &draw(&mut s, 70, 6)[4];
    assert!(bar.contains("↑ a.txt 50% of 1.0 KiB"), "{bar}");
    s.apply(
        &Event::FileDone {
            id: 1,
            direction: "send".into(),
            name: "a.txt".into(),
            path: None,
            blake3: String::new(),
        },
        "10:00",
    );
    assert_eq!(s.status().transfer, None);
    assert_eq!(s.lines().len(), 1);
}

#[test]
fn own_messages_get_their_mark_when_acked() {
    let mut s = Screen::new();
    s.apply(
        &Event::Sent {
            id: 7,
            text: "hi".into(),
            pending: false,
        },
        "10:00",
    );
    s.apply(
        &Event::Sent {
            id: 8,
            text: "later".into(),
            pending: true,
        },
        "10:00",
    );
    let screen = draw(&mut s, 40, 6);
    assert_eq!(screen[0].trim_end(), "10:00 you: hi …");
    assert_eq!(screen[1].trim_end(), "10:00 you: later … queued");

    s.apply(&Event::Ack { id: 7 }, "10:01");
    s.apply(&Event::Ack { id: 99 }, "10:01");
    // The queued one goes out after a reconnect: same id, same line.
    s.apply(
        &Event::Sent {
            id: 8,
            text: "later".into(),
            pending: false,
        },
        "10:02",
    );
    assert_eq!(s.lines().len(), 2);
    let screen = draw(&mut s, 40, 6);
    assert_eq!(screen[0].trim_end(), "10:00 you: hi ✓");
    assert_eq!(screen[1].trim_end(), "10:00 you: later …");
    s.apply(&Event::Ack { id: 8 }, "10:02");
    assert_eq!(
        s.lines()[1].speaker,
        Speaker::Own {
            id: 8,
            delivery: Delivery::Delivered
        }
    );
}

#[test]
fn peer_text_and_names_are_sanitized() {
    let mut s = Screen::new();
    s.apply(
        &Event::Message {
            from: "ev\u{1b}[31mil".into(),
            text: "hi\u{1b}]0;owned\u{7} there\nnext\u{202e}".into(),
            id: 1,
            sent_at_ms: 0,
        },
        "10:00",
    );
    s.apply(
        &Event::Info {
            text: "two\nlines\u{1b}[2J".into(),
        },
        "10:00",
    );
    let screen = draw(&mut s, 40, 6);
    assert_eq!(screen[0].trim_end(), "10:00 evil: hi there next");
    // An info is one line: a line break in it (a peer's words) cannot fake another.
    assert_eq!(screen[1].trim_end(), "10:00 two lines");
    assert_eq!(screen[2].trim_end(), "");
    assert!(screen.iter().all(|r| !r.contains('\u{1b}')));
}

#[test]
fn errors_are_red_and_system_lines_dim() {
    let mut s = Screen::new();
    s.apply(
        &Event::Error {
            code: "x".into(),
            text: "it broke".into(),
        },
        "10:00",
    );
    s.apply(
        &Event::Info {
            text: "note".into(),
        },
        "10:00",
    );
    let mut terminal = Terminal::new(TestBackend::new(30, 5)).unwrap();
    terminal
        .draw(|f| s.render(f, &InputLine::new(100)))
        .unwrap();
    assert_eq!(rows(&terminal)[0].trim_end(), "10:00 error: it broke");
    let buffer = terminal.backend().buffer();
    assert_eq!(buffer[(6, 0)].fg, Color::Red);
    assert!(buffer[(6, 1)].modifier.contains(Modifier::DIM));
}

#[test]
fn help_is_an_overlay_that_any_key_closes() {
    let mut s = Screen::new();
    let mut e = Editor::new(100);
    s.apply(&Event::Info { text: HELP.into() }, "10:00");
    assert!(s.overlay_open());
    assert!(s.lines().is_empty(), "help is not added to the pane");
    let screen = draw(&mut s, 100, 20).join("\n");
    assert!(screen.contains("help · any key closes"), "{screen}");
    assert!(screen.contains("/verify yes"), "{screen}");
    assert_eq!(press(&mut s, &mut e, key(KeyCode::Char('x'))), Action::None);
    assert!(!s.overlay_open());
    assert_eq!(e.line().text(), "", "the closing key is not typed");
    let screen = draw(&mut s, 100, 20).join("\n");
    assert!(!screen.contains("any key closes"));
    s.apply(&Event::Info { text: HELP.into() }, "10:00");
    press(&mut s, &mut e, key(KeyCode::Esc));
    assert!(!s.overlay_open());
}

#[test]
fn typing_sending_and_recall() {
    let mut s = Screen::new();
    let mut e = Editor::new(100);
    type_text(&mut s, &mut e, "hello");
    press(&mut s, &mut e, key(KeyCode::Left));
    press(&mut s, &mut e, key(KeyCode::Backspace));
    assert_eq!(e.line().text(), "helo");
    assert_eq!(
        press(&mut s, &mut e, key(KeyCode::Enter)),
        Action::Send("helo".into())
    );
    assert_eq!(
        press(&mut s, &mut e, key(KeyCode::Enter)),
        Action::None,
        "empty line"
    );
    type_text(&mut s, &mut e, "/quit now");
    press(&mut s, &mut e, ctrl('w'));
    assert_eq!(e.line().text(), "/quit ");
    press(&mut s, &mut e, ctrl('u'));
    assert_eq!(e.line().text(), "");
    type_text(&mut s, &mut e, "draft");
    press(&mut s, &mut e, key(KeyCode::Up));
    assert_eq!(e.line().text(), "helo");
    press(&mut s, &mut e, key(KeyCode::Down));
    assert_eq!(e.line().text(), "draft");
    press(&mut s, &mut e, key(KeyCode::Home));
    assert_eq!(
        press(&mut s, &mut e, ctrl('d')),
        Action::None,
        "Ctrl-D deletes on a line"
    );
    assert_eq!(e.line().text(), "raft");
    press(&mut s, &mut e, ctrl('u'));
    assert_eq!(press(&mut s, &mut e, ctrl('d')), Action::Quit);
    type_text(&mut s, &mut e, "x");
    assert_eq!(press(&mut s, &mut e, ctrl('c')), Action::Quit);
}

#[test]
fn the_input_line_keeps_its_bound_and_the_cursor_in_view() {
    let mut s = Screen::new();
    let mut e = Editor::new(30);
    type_text(&mut s, &mut e, &"a".repeat(25));
    type_text(&mut s, &mut e, "bcdef");
    press(&mut s, &mut e, key(KeyCode::Char('z')));
    assert_eq!(e.line().text().len(), 30);
    let screen = draw_with(&mut s, &e, 20, 4);
    assert!(screen[2].contains("the line is full"), "{}", screen[2]);
    // The tail of the line is visible, the prompt stays.
    assert!(screen[3].starts_with("> "), "{}", screen[3]);
    assert!(screen[3].contains("bcdef"), "{}", screen[3]);
    e.paste("more");
    assert_eq!(e.line().text().len(), 30);
}

#[test]
fn paging_scrolls_and_end_returns_to_live() {
    let mut s = Screen::new();
    let mut e = Editor::new(100);
    for i in 0..30 {
        s.apply(&message(&format!("line {i}")), "10:00");
    }
    // 8 rows: 6 for messages, status, input.
    let screen = draw(&mut s, 40, 8);
    assert_eq!(screen[5].trim_end(), "10:00 bob: line 29");
    assert_eq!(screen[0].trim_end(), "10:00 bob: line 24");

    press(&mut s, &mut e, key(KeyCode::PageUp));
    assert_eq!(s.scroll(), 5);
    let screen = draw(&mut s, 40, 8);
    assert_eq!(screen[5].trim_end(), "10:00 bob: line 24");
    assert!(
        screen[6].contains("↑ scrolled (End: live)"),
        "{}",
        screen[6]
    );

    // New lines while scrolled do not move the view.
    s.apply(&message("new one"), "10:01");
    let screen = draw(&mut s, 40, 8);
    assert_eq!(screen[5].trim_end(), "10:00 bob: line 24");
    assert!(screen[6].contains("1 new"), "{}", screen[6]);

    for _ in 0..20 {
        press(&mut s, &mut e, key(KeyCode::PageUp));
    }
    let screen = draw(&mut s, 40, 8);
    assert_eq!(
        screen[0].trim_end(),
        "10:00 bob: line 0",
        "clamped at the top"
    );
    assert_eq!(s.scroll(), 31 - 6);

    press(&mut s, &mut e, key(KeyCode::PageDown));
    assert_eq!(s.scroll(), 20);
    press(&mut s, &mut e, key(KeyCode::End));
    assert_eq!(s.scroll(), 0);
    let screen = draw(&mut s, 40, 8);
    assert_eq!(screen[5].trim_end(), "10:01 bob: new one");
    assert!(!screen[6].contains("scrolled"));

    // Sending jumps back to live too.
    press(&mut s, &mut e, key(KeyCode::PageUp));
    type_text(&mut s, &mut e, "x");
    press(&mut s, &mut e, key(KeyCode::Enter));
    assert_eq!(s.scroll(), 0);
}

#[test]
fn scrollback_is_bounded() {
    let mut s = Screen::new();
    for i in 0..SCROLLBACK + 10 {
        s.apply(&message(&format!("m{i}")), "10:00");
    }
    assert_eq!(s.lines().len(), SCROLLBACK);
    assert_eq!(s.lines()[0].text, "m10");
}

#[test]
fn long_lines_wrap_with_a_hanging_indent_and_redraw_on_resize() {
    let mut s = Screen::new();
    s.apply(
        &message("the quick brown fox jumps over the lazy dog again and again"),
        "10:00",
    );
    let screen = draw(&mut s, 30, 8);
    assert_eq!(screen[0].trim_end(), "10:00 bob: the quick brown fox");
    assert_eq!(screen[1].trim_end(), "      jumps over the lazy dog");
    assert_eq!(screen[2].trim_end(), "      again and again");

    let mut terminal = Terminal::new(TestBackend::new(60, 8)).unwrap();
    terminal
        .draw(|f| s.render(f, &InputLine::new(100)))
        .unwrap();
    terminal.backend_mut().resize(24, 6);
    terminal
        .draw(|f| s.render(f, &InputLine::new(100)))
        .unwrap();
    let screen = rows(&terminal);
    assert_eq!(screen.len(), 6);
    assert_eq!(screen[0].trim_end(), "10:00 bob: the quick");
    assert!(screen[4].contains("no peer yet"), "{}", screen[4]);
    assert!(screen[5].starts_with("> "));
}

#[test]
fn wrap_breaks_words_only_when_they_do_not_fit() {
    let plain = |s: &str| vec![(s.to_string(), Style::default())];
    let text = |lines: Vec<Line<'static>>| -> Vec<String> {
        lines.iter().map(|l| l.to_string()).collect()
    };
    assert_eq!(
        text(wrap(&plain("abcdefghij"), 4, 0)),
        ["abcd", "efgh", "ij"]
    );
    assert_eq!(text(wrap(&plain("ab cd ef"), 5, 0)), ["ab cd", "ef"]);
    assert_eq!(text(wrap(&plain(""), 5, 0)), [""]);
    // Wide characters take two cells.
    assert_eq!(
        text(wrap(&plain("日本語です"), 4, 0)),
        ["日本", "語で", "す"]
    );
    // Too narrow for the indent: none.
    assert_eq!(text(wrap(&plain("abcdefgh"), 4, 2)), ["abcd", "efgh"]);
    assert_eq!(
        text(wrap(&plain("abcdefghijkl"), 8, 2)),
        ["abcdefgh", "  ijkl"]
    );
}

// The messenger: one pane per conversation, the engine's list, switching,
// the bell and notifications.

fn conv(number: u32, label: &str) -> ConvRef {
    ConvRef {
        number,
        id: String::new(),
        label: label.into(),
    }
}

fn item(number: u32, label: &str, kind: &str, unread: u32) -> ConvItem {
    ConvItem {
        number,
        id: format!("{number:016x}"),
        label: label.into(),
        kind: kind.into(),
        state: "connected".into(),
        path: if kind == "group" { "" } else { "direct" }.into(),
        members: if kind == "group" { 3 } else { 0 },
        verified: number == 1,
        unread,
    }
}

/// Three conversations: a room with bob (1), a group (2), a contact (3).
fn three(front: u32, unread: [u32; 3]) -> Vec<ConvItem> {
    vec![
        item(1, "r-one", "room", unread[0]),
        item(2, "group g-two", "group", unread[1]),
        item(3, "contact erin", "contact", unread[2]),
    ]
    .into_iter()
    .map(|mut i| {
        if i.number == front {
            i.unread = 0;
        }
        i
    })
    .collect()
}

fn group_message(from: &str, text: &str, own: bool) -> Event {
    Event::GroupMessage {
        from: from.into(),
        author: "ea10".into(),
        linked: true,
        own,
        seq: 1,
        depth: 1,
        sent_at_ms: 0,
        text: text.into(),
    }
}

fn alt(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::ALT)
}

fn texts(lines: &VecDeque<ChatLine>) -> Vec<String> {
    lines.iter().map(|l| l.text.clone()).collect()
}

#[test]
fn each_conversation_keeps_its_own_scrollback_and_status() {
    let mut s = Screen::new();
    s.set_list(Some(1), three(1, [0; 3]));
    s.apply_in(Some(&conv(1, "r-one")), &connected(true, false), "10:00");
    s.apply_in(Some(&conv(1, "r-one")), &message("for one"), "10:00");
    s.apply_in(
        Some(&conv(2, "group g-two")),
        &group_message("carol", "for two", false),
        "10:01",
    );
    s.apply_in(
        Some(&conv(2, "group g-two")),
        &Event::GroupJoined {
            room: "g-two".into(),
            member: 1,
            present: 2,
            max_members: 16,
        },
        "10:01",
    );
    let two = Some(conv(2, "group g-two"));
    s.apply_in(
        two.as_ref(),
        &Event::Matched {
            peer: "carol".into(),
            role: "joiner".into(),
        },
        "10:01",
    );
    s.apply_in(
        two.as_ref(),
        &Event::MemberJoined {
            member: 2,
            peer: "carol".into(),
            fingerprint: "8deb".into(),
            addr: "127.0.0.1:1".into(),
            path: "direct".into(),
            sas: "617 256".into(),
            verified: false,
        },
        "10:01",
    );
    assert_eq!(s.status_of(2).unwrap().state, State::Secure);
    assert_eq!(
        s.status_of(2).unwrap().peer.as_deref(),
        Some("2 members: carol")
    );
    assert_eq!(s.front(), 1);
    let one = texts(s.lines());
    let two = texts(s.lines_of(2).unwrap());
    assert!(one.iter().any(|l| l == "for one"), "{one:?}");
    assert!(!one.iter().any(|l| l.contains("for two")), "{one:?}");
    assert_eq!(two[0], "for two");
    assert!(
        !two.iter()
            .any(|l| l.contains("for one") || l.contains("bob")),
        "{two:?}"
    );
    assert_eq!(s.status().peer.as_deref(), Some("bob"));
    assert!(
        s.status_of(2).unwrap().sas.is_none(),
        "bob's code is not the group's"
    );
    let screen = draw(&mut s, 100, 12).join("\n");
    assert!(screen.contains("bob: for one"), "{screen}");
    assert!(!screen.contains("for two"), "{screen}");
    // The list beside the messages: number, label, kind, path or members,
    // the verified mark, the state; the one in front is marked.
    assert!(screen.contains("▸1 r-one"), "{screen}");
    assert!(screen.contains("room·direct ✓ connected"), "{screen}");
    assert!(screen.contains(" 2 group g-two"), "{screen}");
    assert!(screen.contains("group·3 members connected"), "{screen}");
    assert!(screen.contains("contact·direct connected"), "{screen}");
    // Messenger events (no conversation) go to the one in front.
    s.apply(
        &Event::Error {
            code: "usage".into(),
            text: "usage: /room CODE".into(),
        },
        "10:02",
    );
    assert_eq!(s.lines().back().unwrap().text, "error: usage: /room CODE");
    assert!(!texts(s.lines_of(2).unwrap())
        .iter()
        .any(|l| l.contains("usage")));
}

#[test]
fn switching_asks_the_engine_and_follows_its_list() {
    let mut s = Screen::new();
    let mut e = Editor::new(100);
    s.set_list(Some(1), three(1, [0; 3]));
    s.apply_in(Some(&conv(1, "r-one")), &message("in one"), "10:00");
    s.apply_in(
        Some(&conv(3, "contact erin")),
        &message("in three"),
        "10:00",
    );
    type_text(&mut s, &mut e, "draft");
    assert_eq!(press(&mut s, &mut e, alt('2')), Action::Switch(2));
    assert_eq!(press(&mut s, &mut e, ctrl('n')), Action::Switch(2));
    assert_eq!(
        press(&mut s, &mut e, ctrl('p')),
        Action::Switch(3),
        "round to the last"
    );
    assert_eq!(
        press(&mut s, &mut e, alt('1')),
        Action::None,
        "1 is in front already"
    );
    assert_eq!(press(&mut s, &mut e, alt('7')), Action::None);
    assert!(draw(&mut s, 100, 12)[10].contains("no conversation 7"));
    assert_eq!(e.line().text(), "draft", "switch keys type nothing");
    // Nothing moves until the engine says so.
    assert_eq!(s.front(), 1);
    s.switch_sent();
    s.set_list(Some(3), three(3, [0; 3]));
    // The engine answers /switch with its list; the list is on screen already.
    s.apply(
        &Event::Conversations {
            front: Some(3),
            items: three(3, [0; 3]),
        },
        "10:01",
    );
    assert_eq!(s.front(), 3);
    assert_eq!(texts(s.lines()), ["in three"]);
    let screen = draw(&mut s, 100, 12).join("\n");
    assert!(screen.contains("bob: in three"), "{screen}");
    assert!(!screen.contains("in one"), "{screen}");
    assert!(screen.contains("▸3 contact erin"), "{screen}");
    assert_eq!(
        press(&mut s, &mut e, ctrl('n')),
        Action::Switch(1),
        "round to the first"
    );
    // A /list the person typed is shown.
    s.apply(
        &Event::Conversations {
            front: Some(3),
            items: three(3, [0; 3]),
        },
        "10:02",
    );
    assert_eq!(s.lines().len(), 4, "{:?}", texts(s.lines()));
    // One conversation: nothing to switch to.
    s.set_list(Some(3), vec![item(3, "contact erin", "contact", 0)]);
    assert_eq!(press(&mut s, &mut e, ctrl('n')), Action::None);
    assert!(
        s.lines_of(1).is_none(),
        "a closed conversation's pane is gone"
    );
}

#[test]
fn a_message_behind_highlights_its_entry_and_rings_the_bell_once() {
    let mut s = Screen::new();
    s.set_list(Some(1), three(1, [0; 3]));
    s.apply_in(Some(&conv(1, "r-one")), &message("in front"), "10:00");
    assert!(
        s.take_alerts().is_empty(),
        "no bell for the conversation in front"
    );
    s.apply_in(
        Some(&conv(2, "group g-two")),
        &group_message("me", "my own", true),
        "10:00",
    );
    assert!(s.take_alerts().is_empty(), "no bell for our own words");
    s.apply_in(
        Some(&conv(2, "group g-two")),
        &group_message("carol", "behind", false),
        "10:00",
    );
    assert_eq!(s.take_alerts(), [BEL], "no notification without --notify");
    // The engine counts it; the entry is highlighted with the count.
    s.set_list(Some(1), three(1, [0, 1, 0]));
    s.apply_in(
        Some(&conv(2, "group g-two")),
        &group_message("carol", "again", false),
        "10:00",
    );
    assert!(
        s.take_alerts().is_empty(),
        "one bell until the person looks"
    );
    s.set_list(Some(1), three(1, [0, 2, 0]));
    s.apply_in(
        Some(&conv(3, "contact erin")),
        &Event::FileOffer {
            id: 1,
            from: "erin".into(),
            name: "a.txt".into(),
            size: 3,
        },
        "10:00",
    );
    assert_eq!(s.take_alerts(), [BEL], "a file offer behind rings too");
    let mut terminal = Terminal::new(TestBackend::new(100, 12)).unwrap();
    terminal
        .draw(|f| s.render(f, &InputLine::new(100)))
        .unwrap();
    let screen = rows(&terminal);
    let row = screen
        .iter()
        .position(|r| r.contains(" 2 group g-two"))
        .unwrap();
    assert!(screen[row].contains("[2]"), "{}", screen[row]);
    let buffer = terminal.backend().buffer();
    assert_eq!(buffer[(1, row as u16)].fg, Color::Yellow);
    assert!(buffer[(1, row as u16)].modifier.contains(Modifier::BOLD));
    let front = screen.iter().position(|r| r.contains("▸1 r-one")).unwrap();
    assert!(buffer[(1, front as u16)]
        .modifier
        .contains(Modifier::REVERSED));
    // Switching to it: the engine resets its count.
    s.set_list(Some(2), three(2, [0, 2, 0]));
    let screen = draw(&mut s, 100, 12).join("\n");
    assert!(!screen.contains("[2]"), "{screen}");
    assert!(screen.contains("carol: behind"), "{screen}");
    assert!(screen.contains("carol: again"), "{screen}");
}

#[test]
fn notifications_name_only_the_conversation_number_and_a_sanitised_sender() {
    let mut s = Screen::new();
    s.set_notify(true);
    s.set_list(Some(1), three(1, [0; 3]));
    s.apply_in(
        Some(&conv(3, "contact e;rin\u{7}")),
        &Event::Message {
            from: "ev;il\u{7}\u{1b}]777;notify;x;pwned\u{7}\u{1b}\\\u{9c}\u{202e}".into(),
            text: "the secret plan".into(),
            id: 1,
            sent_at_ms: 0,
        },
        "10:00",
    );
    let alerts = s.take_alerts();
    let expected = "\u{7}\
                    \u{1b}]9;p2pchat: message from evil (conversation 3)\u{7}\
                    \u{1b}]777;notify;p2pchat;message from evil (conversation 3)\u{7}";
    assert_eq!(String::from_utf8(alerts).unwrap(), expected);
    // A room's label is its code, the password of its key exchange: never in
    // a notification, nor is the text.
    s.set_list(Some(1), three(1, [0, 0, 1]));
    s.apply_in(
        Some(&conv(2, "g-two")),
        &group_message("carol", "the secret plan", false),
        "10:00",
    );
    let alerts = String::from_utf8(s.take_alerts()).unwrap();
    assert!(
        alerts.ends_with("message from carol (conversation 2)\u{7}"),
        "{alerts:?}"
    );
    assert!(
        !alerts.contains("g-two") && !alerts.contains("secret"),
        "{alerts:?}"
    );
    assert_eq!(notify_text(&"x".repeat(500)).len(), NOTIFY_FIELD);
    let bytes = notification(1, "bob", "message");
    // Exactly two sequences, each ended by the one BEL that ends it.
    assert_eq!(bytes.iter().filter(|&&b| b == BEL).count(), 2);
    assert_eq!(bytes.iter().filter(|&&b| b == 0x1b).count(), 2);
}

#[test]
fn a_narrow_window_hides_the_list_and_keeps_the_messages() {
    let mut s = Screen::new();
    s.set_list(Some(1), three(1, [0, 4, 1]));
    s.apply_in(Some(&conv(1, "r-one")), &connected(false, false), "10:00");
    s.apply_in(Some(&conv(1, "r-one")), &message("still here"), "10:00");
    let screen = draw(&mut s, 60, 8);
    assert_eq!(screen[5].trim_end(), "10:00 bob: still here");
    assert!(!screen.join("\n").contains("group g-two"), "{screen:?}");
    let bar = &screen[6];
    assert!(bar.starts_with(" 1 r-one │ bob │ direct"), "{bar}");
    assert!(bar.contains("5 unread elsewhere"), "{bar}");
    // Wide enough again: the list is back.
    let screen = draw(&mut s, 100, 8).join("\n");
    assert!(screen.contains("group g-two"), "{screen}");
}

#[test]
fn lines_before_the_first_list_and_a_closing_notice_stay_in_view() {
    let mut s = Screen::new();
    s.apply(
        &Event::Info {
            text: "Reopened 2 conversation(s) from your last run.".into(),
        },
        "10:00",
    );
    s.set_list(Some(1), three(1, [0; 3]));
    assert_eq!(
        texts(s.lines()),
        ["Reopened 2 conversation(s) from your last run."]
    );
    // The front conversation closes: the engine picks another.
    s.apply_in(
        Some(&conv(1, "r-one")),
        &Event::Closed {
            reason: "it ended".into(),
        },
        "10:01",
    );
    s.set_list(Some(2), three(2, [0; 3])[1..].to_vec());
    assert_eq!(s.front(), 2);
    let last = s.lines().back().unwrap();
    assert_eq!(last.text, "[1 r-one] conversation closed: it ended");
    assert!(s.lines_of(1).is_none());
    // A warning behind is shown in front too.
    s.apply_in(
        Some(&conv(3, "contact erin")),
        &Event::Warning {
            code: "impersonation".into(),
            text: "not the erin you verified".into(),
        },
        "10:02",
    );
    assert_eq!(
        s.lines().back().unwrap().text,
        "[3 contact erin] WARNING: not the erin you verified"
    );
}

#[test]
fn the_messenger_help_joins_the_conversation_help_in_one_overlay() {
    let mut s = Screen::new();
    s.apply(
        &Event::Info {
            text: engine::events::MESSENGER_HELP.into(),
        },
        "10:00",
    );
    s.apply(&Event::Info { text: HELP.into() }, "10:00");
    assert!(s.lines().is_empty());
    let screen = draw(&mut s, 100, 30).join("\n");
    assert!(screen.contains("/switch N|NAME"), "{screen}");
    assert!(screen.contains("/verify yes"), "{screen}");
}

#[test]
fn each_scrollback_is_bounded_in_bytes() {
    let mut s = Screen::new();
    let big = "x".repeat(16 * 1024);
    for _ in 0..(2 * SCROLLBACK_BYTES / big.len()) {
        s.apply(&message(&big), "10:00");
    }
    let kept: usize = s.lines().iter().map(|l| l.text.len()).sum();
    assert!(kept <= SCROLLBACK_BYTES, "{kept}");
    assert!(kept > SCROLLBACK_BYTES / 2, "{kept}");
}

#[test]
fn a_hostile_label_in_the_list_reaches_no_cell_as_a_control() {
    let mut s = Screen::new();
    let mut items = three(1, [0, 1, 0]);
    items[1].label = "group \u{1b}]0;owned\u{7}g\u{9b}2J\u{202e}x".into();
    items[1].state = "joined\r\nfake".into();
    s.set_list(Some(1), items);
    let mut terminal = Terminal::new(TestBackend::new(100, 12)).unwrap();
    terminal
        .draw(|f| s.render(f, &InputLine::new(100)))
        .unwrap();
    let screen = rows(&terminal).join("\n");
    assert!(screen.contains(" 2 group gx"), "{screen}");
    assert!(screen.contains("joined  fa…"), "{screen}");
    for cell in terminal.backend().buffer().content() {
        assert!(
            !cell
                .symbol()
                .chars()
                .any(|c| c.is_control() || wire::text::is_invisible_format(c)),
            "{:?} in the buffer",
            cell.symbol()
        );
    }
}
