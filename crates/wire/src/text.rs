//! The name check and the terminal-safety filter: the only two places that decide
//! what a peer-supplied string may look like.

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
    #[error("name contains control or invisible characters")]
    NotPrintable,
    #[error("name starts or ends with whitespace")]
    Whitespace,
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

/// A name is 1–32 printable characters with no surrounding whitespace.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(NameError::TooLong(chars));
    }
    if name
        .chars()
        .any(|c| c.is_control() || is_invisible_format(c))
    {
        return Err(NameError::NotPrintable);
    }
    if name.starts_with(char::is_whitespace) || name.ends_with(char::is_whitespace) {
        return Err(NameError::Whitespace);
    }
    Ok(())
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
