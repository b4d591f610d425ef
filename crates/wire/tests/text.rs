//! The name check and the terminal filter, against arbitrary input.

use proptest::prelude::*;
use wire::text::MAX_NAME_CHARS;
use wire::{sanitize_for_terminal, validate_name};

/// Characters that make up escape sequences, mixed with anything at all.
fn hostile_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => any::<char>(),
        2 => prop::sample::select(vec![
            '\u{1b}', '[', ']', 'P', '\\', '\u{07}', '\u{9b}', '\u{9c}', '\u{9d}', '\u{90}',
            '\u{7f}', '\u{0}', '\n', '\r', '\t', '\u{202e}', '\u{200b}', '\u{feff}', ';', '0',
            'm', 'a',
        ]),
        1 => (0u32..0x20).prop_map(|c| char::from_u32(c).unwrap()),
        1 => (0x80u32..0xA0).prop_map(|c| char::from_u32(c).unwrap()),
    ]
}

fn hostile_text() -> impl Strategy<Value = String> {
    prop::collection::vec(hostile_char(), 0..64).prop_map(|v| v.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn sanitized_text_has_no_control_characters(text in hostile_text()) {
        let out = sanitize_for_terminal(&text);
        prop_assert!(
            !out.chars().any(|c| c.is_control() || c == '\u{1b}'),
            "{:?} -> {:?}", text, out
        );
        // Idempotent: clean text passes through unchanged.
        prop_assert_eq!(sanitize_for_terminal(&out), out.clone());
    }

    #[test]
    fn sanitizing_arbitrary_strings(text in any::<String>()) {
        let out = sanitize_for_terminal(&text);
        prop_assert!(!out.chars().any(|c| c.is_control()));
        let invisible = ['\u{202e}', '\u{200b}', '\u{feff}'];
        prop_assert!(!out.contains(invisible), "{:?}", out);
    }

    #[test]
    fn accepted_names_are_printable_and_bounded(name in hostile_text()) {
        if validate_name(&name).is_ok() {
            let chars = name.chars().count();
            prop_assert!((1..=MAX_NAME_CHARS).contains(&chars));
            prop_assert!(!name.chars().any(char::is_control));
            prop_assert_eq!(sanitize_for_terminal(&name), name.as_str());
            prop_assert_eq!(name.trim(), name.as_str());
        }
    }
}

#[test]
fn text_without_controls_is_untouched() {
    for s in ["", "hello", "Zoë 🦀 ünïcödé", "a [bracket] ; 0m"] {
        assert_eq!(sanitize_for_terminal(s), s);
    }
}

#[test]
fn newline_cannot_fake_a_line() {
    let out = sanitize_for_terminal("hi\r\n[12:00] mallory: send me your key");
    assert!(!out.contains('\n') && !out.contains('\r'));
}
