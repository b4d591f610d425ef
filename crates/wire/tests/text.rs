//! The name check and the terminal filter, against arbitrary input.

use proptest::prelude::*;
use wire::text::{is_default_ignorable, is_invisible_format, MAX_NAME_CHARS};
use wire::{sanitize_for_terminal, validate_name, NameError};

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
    fn generated_names_are_accepted(name in valid_name()) {
        prop_assert_eq!(validate_name(&name), Ok(()), "{:?}", name);
    }

    /// Most cases are accepted names (the property about them is checked on
    /// each); the rest are names with one thing wrong, and the error must name
    /// what is wrong with them.
    #[test]
    fn accepted_names_are_printable_and_bounded(name in nearly_valid_name()) {
        match validate_name(&name) {
            Ok(()) => {
                let chars = name.chars().count();
                prop_assert!((1..=MAX_NAME_CHARS).contains(&chars), "{:?}", name);
                prop_assert!(!name.chars().any(unfit), "{:?}", name);
                prop_assert_eq!(sanitize_for_terminal(&name), name.as_str());
                prop_assert_eq!(name.trim(), name.as_str());
                prop_assert!(!blank(&name), "{:?}", name);
            }
            Err(NameError::Empty) => prop_assert!(name.is_empty()),
            Err(NameError::TooLong(n)) => {
                prop_assert_eq!(n, name.chars().count());
                prop_assert!(n > MAX_NAME_CHARS);
            }
            Err(NameError::NotPrintable) => prop_assert!(name.chars().any(unfit), "{:?}", name),
            Err(NameError::Whitespace) => prop_assert!(
                name.starts_with(char::is_whitespace) || name.ends_with(char::is_whitespace),
                "{:?}", name
            ),
            Err(NameError::Blank) => prop_assert!(blank(&name), "{:?}", name),
            Err(e) => prop_assert!(false, "unknown refusal {:?} of {:?}", e, name),
        }
    }

    #[test]
    fn hostile_text_is_never_an_accepted_name_with_unfit_characters(name in hostile_text()) {
        if validate_name(&name).is_ok() {
            prop_assert!(!name.chars().any(unfit), "{:?}", name);
            prop_assert_eq!(sanitize_for_terminal(&name), name.as_str());
        }
    }
}

/// What docs/protocol.md §10 keeps out of names: controls, default-ignorables
/// (zero-width, bidi, fillers, variation selectors, tags), White_Space other than
/// U+0020, and the blank-looking U+2800 and U+1D159.
fn unfit(c: char) -> bool {
    c.is_control()
        || is_invisible_format(c)
        || is_default_ignorable(c)
        || (c.is_whitespace() && c != ' ')
        || matches!(c, '\u{2800}' | '\u{1D159}')
}

/// Nothing drawn of its own: spaces and combining marks only.
fn blank(name: &str) -> bool {
    name.chars()
        .all(|c| c == ' ' || unicode_normalization::char::is_combining_mark(c))
}

/// A character that draws something: ASCII, Latin-1 letters, Greek, Cyrillic,
/// CJK, emoji.
fn visible_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::char::range('!', '~'),
        1 => prop::char::range('\u{C0}', '\u{FF}'),
        1 => prop::char::range('\u{391}', '\u{3A1}'),
        1 => prop::char::range('\u{410}', '\u{44F}'),
        1 => prop::char::range('\u{4E00}', '\u{9FA5}'),
        1 => prop::char::range('\u{1F600}', '\u{1F64F}'),
    ]
}

/// A visible character, sometimes with a combining accent on it (U+0300–034E:
/// U+034F, the grapheme joiner, is default-ignorable).
fn cluster() -> impl Strategy<Value = String> {
    (
        visible_char(),
        prop::option::weighted(0.2, prop::char::range('\u{300}', '\u{34E}')),
    )
        .prop_map(|(base, mark)| base.to_string() + &mark.map(String::from).unwrap_or_default())
}

/// A valid name built directly: words of visible clusters joined by single
/// spaces, cut to 32 characters.
fn valid_name() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::collection::vec(cluster(), 1..8), 1..5).prop_map(|words| {
        let joined = words
            .iter()
            .map(|w| w.concat())
            .collect::<Vec<_>>()
            .join(" ");
        joined
            .chars()
            .take(MAX_NAME_CHARS)
            .collect::<String>()
            .trim_end()
            .to_string()
    })
}

/// A character that has no place in a name, of each kind the rules name.
fn unfit_char() -> impl Strategy<Value = char> {
    prop::sample::select(vec![
        '\u{0}',
        '\t',
        '\n',
        '\r',
        '\u{1b}',
        '\u{7f}',
        '\u{85}',
        '\u{9b}', // controls
        '\u{200b}',
        '\u{200d}',
        '\u{2060}',
        '\u{feff}',
        '\u{202e}',
        '\u{2066}', // zero-width, bidi
        '\u{3164}',
        '\u{115f}',
        '\u{ffa0}',
        '\u{ad}',
        '\u{fe0f}',
        '\u{e0041}', // fillers, ignorables
        '\u{a0}',
        '\u{2028}',
        '\u{2029}',
        '\u{3000}',
        '\u{2003}', // other spaces
        '\u{2800}',
        '\u{1d159}', // blank-looking
    ])
}

/// Mostly valid names; otherwise a valid name with one thing wrong: an unfit
/// character somewhere, a space at one end, too long, empty, or only marks.
fn nearly_valid_name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => valid_name(),
        1 => (valid_name(), unfit_char(), any::<prop::sample::Index>()).prop_map(|(name, c, at)| {
            let mut chars: Vec<char> = name.chars().collect();
            chars.insert(at.index(chars.len() + 1), c);
            chars.into_iter().collect()
        }),
        1 => (valid_name(), any::<bool>()).prop_map(|(name, front)| {
            if front { format!(" {name}") } else { format!("{name} ") }
        }),
        1 => (valid_name(), valid_name()).prop_map(|(a, b)| {
            format!("{a}{}{b}", "x".repeat(MAX_NAME_CHARS))
        }),
        1 => prop::collection::vec(prop::char::range('\u{300}', '\u{34E}'), 0..4)
            .prop_map(|marks| marks.into_iter().collect::<String>()),
    ]
}

#[test]
fn most_property_cases_are_accepted_names() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = nearly_valid_name();
    let cases = 2000;
    let accepted = (0..cases)
        .filter(|_| {
            let name = strategy.new_tree(&mut runner).unwrap().current();
            validate_name(&name).is_ok()
        })
        .count();
    // 6 in 10 are valid by construction; the property must mostly run on them.
    assert!(
        accepted * 2 > cases,
        "only {accepted} of {cases} generated names were accepted"
    );
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
