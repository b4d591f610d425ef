//! The name check, the name skeleton and the terminal-safety filter: the only
//! places that decide what a peer-supplied string may look like, and when two
//! names look alike.

use std::borrow::Cow;

/// Longest name, in characters.
pub const MAX_NAME_CHARS: usize = 32;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name is {0} characters long (at most {MAX_NAME_CHARS})")]
    TooLong(usize),
    #[error("name contains control, invisible or blank-looking characters")]
    NotPrintable,
    #[error("name starts or ends with whitespace")]
    Whitespace,
    #[error("name has no visible character")]
    Blank,
}

/// Characters that print nothing but change how text around them is shown:
/// zero-width marks, bidirectional overrides and isolates, the byte-order mark.
/// The one list of them: names, terminal output and file names all use it.
pub fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2069}'
        | '\u{FEFF}'
        | '\u{061C}'
    )
}

/// Unicode's Default_Ignorable_Code_Point property (DerivedCoreProperties.txt):
/// characters a renderer shows as nothing, or as nothing when it lacks them,
/// such as the Hangul fillers (U+3164 looks like a blank), the soft hyphen,
/// variation selectors and tag characters, besides [`is_invisible_format`]'s set.
/// A test checks it against the skeleton data's own table.
pub fn is_default_ignorable(c: char) -> bool {
    matches!(c,
        '\u{00AD}'
        | '\u{034F}'
        | '\u{061C}'
        | '\u{115F}'..='\u{1160}'
        | '\u{17B4}'..='\u{17B5}'
        | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}'
        | '\u{3164}'
        | '\u{FE00}'..='\u{FE0F}'
        | '\u{FEFF}'
        | '\u{FFA0}'
        | '\u{FFF0}'..='\u{FFF8}'
        | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// Whether `c` may not appear in a name: a control character, anything
/// default-ignorable, White_Space other than U+0020 (no-break, ideographic and
/// line/paragraph separators), and the printing characters that draw as blank
/// space (U+2800 BRAILLE PATTERN BLANK, U+1D159 MUSICAL SYMBOL NULL NOTEHEAD).
fn unfit_for_name(c: char) -> bool {
    c.is_control()
        || is_invisible_format(c)
        || is_default_ignorable(c)
        || (c.is_whitespace() && c != ' ')
        || matches!(c, '\u{2800}' | '\u{1D159}')
}

/// A name is 1–32 characters, none of them control, invisible or blank-looking,
/// with no surrounding space, and at least one that draws something of its own
/// (not a space, not a combining mark).
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(NameError::TooLong(chars));
    }
    if name.chars().any(unfit_for_name) {
        return Err(NameError::NotPrintable);
    }
    if name.starts_with(char::is_whitespace) || name.ends_with(char::is_whitespace) {
        return Err(NameError::Whitespace);
    }
    if name
        .chars()
        .all(|c| c == ' ' || unicode_normalization::char::is_combining_mark(c))
    {
        return Err(NameError::Blank);
    }
    Ok(())
}

/// The form in which two names are compared to tell whether one may pass for
/// the other (the impersonation check): the UTS #39 confusable skeleton
/// (`unicode-security`: NFD, default-ignorables dropped, each character mapped to
/// its prototype, NFD), lower-cased and skeletonised again (so `B`, Cyrillic `В`
/// and `b` meet), runs of whitespace made one space, and punctuation and spaces
/// at either end dropped (`bob.` is `bob`) unless nothing else is left.
/// `Bob`, `Воb`, `bob.` and `b\u{200B}ob` all give `bob`. Works on any string,
/// valid name or not (contacts stored before a rule tightened).
pub fn name_skeleton(name: &str) -> String {
    let once: String = unicode_security::skeleton(name).collect();
    let lower: String = once.chars().flat_map(char::to_lowercase).collect();
    let mut folded = String::with_capacity(lower.len());
    let mut space = false;
    for c in unicode_security::skeleton(&lower) {
        if c.is_whitespace() || c.is_control() {
            space = true;
            continue;
        }
        if space && !folded.is_empty() {
            folded.push(' ');
        }
        space = false;
        folded.push(c);
    }
    let trimmed = folded.trim_matches(|c: char| c == ' ' || is_punctuation(c));
    if trimmed.is_empty() {
        folded
    } else {
        trimmed.to_string()
    }
}

/// Punctuation (and the ASCII symbols) as it can stand at the end of a name:
/// ASCII, Latin-1, General Punctuation, CJK and the full-width forms. Most other
/// look-alike dots and dashes map to one of these in the skeleton.
fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation()
        || matches!(c,
            '\u{A1}' | '\u{A7}' | '\u{AB}' | '\u{B6}' | '\u{B7}' | '\u{BB}' | '\u{BF}'
            | '\u{2010}'..='\u{2027}'
            | '\u{2030}'..='\u{205E}'
            | '\u{3001}'..='\u{3003}'
            | '\u{3008}'..='\u{3011}'
            | '\u{3014}'..='\u{301F}'
            | '\u{FE10}'..='\u{FE19}'
            | '\u{FE30}'..='\u{FE6B}'
            | '\u{FF01}'..='\u{FF0F}'
            | '\u{FF1A}'..='\u{FF20}'
            | '\u{FF3B}'..='\u{FF40}'
            | '\u{FF5B}'..='\u{FF65}'
        )
}

/// Makes peer-supplied text safe to print on a terminal: escape sequences (CSI,
/// OSC, DCS and the like, in their 7-bit and 8-bit forms) are removed whole; tab,
/// newline and carriage return become a space (a message cannot fake a new line);
/// every other control character and invisible formatting character is dropped.
pub fn sanitize_for_terminal(text: &str) -> Cow<'_, str> {
    if !text
        .chars()
        .any(|c| c.is_control() || is_invisible_format(c))
    {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1B}' => match chars.next() {
                Some('[') => skip_csi(&mut chars),
                Some(']' | 'P' | '_' | '^' | 'X') => skip_string(&mut chars),
                // A two-character sequence (ESC c, ESC 7, ...): both are gone.
                _ => {}
            },
            '\u{9B}' => skip_csi(&mut chars),
            '\u{90}' | '\u{98}' | '\u{9D}' | '\u{9E}' | '\u{9F}' => skip_string(&mut chars),
            '\t' | '\n' | '\r' => out.push(' '),
            c if c.is_control() || is_invisible_format(c) => {}
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Skips a control sequence's parameters up to and including its final byte.
fn skip_csi(chars: &mut impl Iterator<Item = char>) {
    for c in chars.by_ref() {
        if ('\u{40}'..='\u{7E}').contains(&c) {
            return;
        }
    }
}

/// Skips a string sequence (OSC, DCS, ...) up to BEL, ESC \ or the 8-bit ST.
fn skip_string(chars: &mut std::iter::Peekable<impl Iterator<Item = char>>) {
    while let Some(c) = chars.next() {
        match c {
            '\u{07}' | '\u{9C}' => return,
            '\u{1B}' => {
                if chars.peek() == Some(&'\\') {
                    chars.next();
                }
                return;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("alice").is_ok());
        assert!(validate_name("Zoë 🦀").is_ok());
        assert!(validate_name(&"x".repeat(32)).is_ok());
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert_eq!(validate_name(&"x".repeat(33)), Err(NameError::TooLong(33)));
        assert_eq!(validate_name("a\nb"), Err(NameError::NotPrintable));
        assert_eq!(validate_name("a\u{1b}[31mb"), Err(NameError::NotPrintable));
        assert_eq!(
            validate_name("evil\u{202E}txt"),
            Err(NameError::NotPrintable)
        );
        assert_eq!(validate_name(" alice"), Err(NameError::Whitespace));
    }

    #[test]
    fn names_with_invisible_or_blank_characters_are_refused() {
        for name in [
            "bob\u{3164}", // HANGUL FILLER: shows as blank space
            "\u{3164}",    // a name of nothing but it
            "\u{3164}bob",
            "bob\u{2028}", // LINE SEPARATOR
            "bo\u{2028}b",
            "b\u{200B}ob",      // ZERO WIDTH SPACE
            "bo\u{200D}b",      // ZERO WIDTH JOINER
            "\u{FEFF}bob",      // BOM / zero-width no-break space
            "bob\u{00AD}",      // SOFT HYPHEN
            "bob\u{FE0F}",      // VARIATION SELECTOR-16
            "bo\u{E0062}b",     // TAG LATIN SMALL LETTER B
            "\u{2800}",         // BRAILLE PATTERN BLANK
            "bo\u{00A0}b",      // NO-BREAK SPACE
            "bo\u{3000}b",      // IDEOGRAPHIC SPACE
            "\u{115F}\u{1160}", // Hangul fillers
        ] {
            assert_eq!(
                validate_name(name),
                Err(NameError::NotPrintable),
                "{name:?}"
            );
        }
        // Combining marks alone draw nothing of their own.
        assert_eq!(validate_name("\u{0301}\u{0302}"), Err(NameError::Blank));
        assert!(validate_name("bob smith").is_ok());
        assert!(validate_name("e\u{0301}").is_ok());
    }

    #[test]
    fn lookalike_names_share_a_skeleton() {
        let bob = name_skeleton("bob");
        assert_eq!(bob, "bob");
        for name in [
            "Bob",
            "BOB",
            "\u{412}\u{43e}b", // Cyrillic VE and O: "Воb"
            "\u{432}\u{43e}b", // small Cyrillic ve is not a b...
            "bob.",
            "bob!",
            " bob ",
            "...bob",
            "bob\u{3164}", // HANGUL FILLER
            "\u{3164}bob",
            "bob\u{2028}",                 // LINE SEPARATOR
            "b\u{200B}ob",                 // ZERO WIDTH SPACE
            "bo\u{200D}b",                 // ZERO WIDTH JOINER
            "\u{FEFF}bob",                 // ZERO WIDTH NO-BREAK SPACE
            "b\u{2060}ob",                 // WORD JOINER
            "\u{1d41b}\u{1d428}\u{1d41b}", // mathematical bold
            "\u{FF42}\u{FF4F}\u{FF42}",    // full-width
        ]
        .into_iter()
        .filter(|n| *n != "\u{432}\u{43e}b")
        {
            assert_eq!(name_skeleton(name), bob, "{name:?}");
        }
        assert_ne!(
            name_skeleton("\u{432}\u{43e}b"),
            bob,
            "в is not confusable with b"
        );
        for other in ["rob", "bobby", "bo b", "alice", "b.ob"] {
            assert_ne!(name_skeleton(other), bob, "{other:?}");
        }
        // l, I and 1 look alike; "rn" passes for "m".
        assert_eq!(name_skeleton("Iain"), name_skeleton("lain"));
        assert_eq!(name_skeleton("rnallory"), name_skeleton("mallory"));
        // Nothing but punctuation is kept as it is, not made empty.
        assert_eq!(name_skeleton("..."), "...");
        assert_ne!(name_skeleton("🦀"), name_skeleton("🐍"));
        // Idempotent.
        for name in ["Воb.", "Zoë 🦀", "  a  b  "] {
            let once = name_skeleton(name);
            assert_eq!(name_skeleton(&once), once, "{name:?}");
        }
    }

    #[test]
    fn default_ignorables_are_what_the_skeleton_drops() {
        // The skeleton data removes exactly the Default_Ignorable_Code_Point
        // characters: the table here must be that set, in the data's version.
        let mut buf = [0u8; 4];
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            let s: &str = c.encode_utf8(&mut buf);
            let dropped = unicode_security::skeleton(s).next().is_none();
            assert_eq!(is_default_ignorable(c), dropped, "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn plain_text_is_borrowed() {
        assert!(matches!(
            sanitize_for_terminal("hi there"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn escapes_are_removed_whole() {
        assert_eq!(sanitize_for_terminal("a\u{1b}[31;1mred\u{1b}[0m"), "ared");
        assert_eq!(sanitize_for_terminal("\u{1b}]0;title\u{07}x"), "x");
        assert_eq!(
            sanitize_for_terminal("\u{1b}]8;;http://e\u{1b}\\link"),
            "link"
        );
        assert_eq!(sanitize_for_terminal("\u{9b}2Jx"), "x");
        assert_eq!(sanitize_for_terminal("\u{1b}cx"), "x");
        assert_eq!(sanitize_for_terminal("line\nfake"), "line fake");
        assert_eq!(sanitize_for_terminal("a\u{0}\u{7f}b\u{202e}c"), "abc");
        assert_eq!(sanitize_for_terminal("dangling\u{1b}["), "dangling");
    }
}
