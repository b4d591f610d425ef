//! What peers may name: the terminal filter and the name check of `wire::text`,
//! and the client's download-name sanitiser (`engine::files::safe_file_name`).
//!
//! The sanitiser is compiled from the client's own source file rather than through
//! a dependency on the client crate: that file needs only std, `wire`, `rand` and
//! `thiserror`, while the client crate would pull some 200 crates (terminal UI,
//! SQLite, tokio's full runtime) into every instrumented fuzz build. `tests/corpus.rs` checks that
//! this copy and `engine::files::safe_file_name` agree on every corpus input.

use std::borrow::Cow;
use std::path::{Component, Path};

#[allow(rustdoc::broken_intra_doc_links)]
#[path = "../../../crates/engine/src/files/name.rs"]
mod client_name;

pub use client_name::safe_file_name;
use client_name::{part_path, unique_destination, FileNameError, PartScope, MAX_NAME_BYTES};
use wire::text::{
    is_default_ignorable, is_invisible_format, name_skeleton, sanitize_for_terminal, validate_name,
    MAX_NAME_CHARS,
};
use wire::NameError;

/// A character a terminal may act on or that hides text: never printed.
fn unprintable(c: char) -> bool {
    c.is_control() || is_invisible_format(c)
}

/// Arbitrary text (invalid UTF-8 becomes U+FFFD, as the message decoders refuse it
/// anyway) through the terminal filter and the name check.
pub fn terminal_text(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let shown = sanitize_for_terminal(&text);
    assert!(
        !shown.chars().any(unprintable),
        "unprintable character left in {shown:?}"
    );
    match &shown {
        Cow::Borrowed(s) => {
            assert_eq!(*s, &*text);
            assert!(!text.chars().any(unprintable));
        }
        Cow::Owned(_) => assert!(text.chars().any(unprintable), "clean text was copied"),
    }
    // Idempotent: filtered text passes unchanged.
    assert!(matches!(sanitize_for_terminal(&shown), Cow::Borrowed(_)));
    // The filter only removes: the result is a subsequence of the input, with tab,
    // newline and carriage return read as spaces. It never makes up text.
    let mut input = text.chars().map(|c| {
        if matches!(c, '\t' | '\n' | '\r') {
            ' '
        } else {
            c
        }
    });
    for c in shown.chars() {
        assert!(
            input.any(|i| i == c),
            "{c:?} in {shown:?} does not come from the input"
        );
    }

    // The name check, against its definition in docs/protocol.md §10.
    let chars = text.chars().count();
    let expected = if text.is_empty() {
        Err(NameError::Empty)
    } else if chars > MAX_NAME_CHARS {
        Err(NameError::TooLong(chars))
    } else if text.chars().any(|c| {
        unprintable(c)
            || is_default_ignorable(c)
            || (c.is_whitespace() && c != ' ')
            || matches!(c, '\u{2800}' | '\u{1D159}')
    }) {
        Err(NameError::NotPrintable)
    } else if text.starts_with(char::is_whitespace) || text.ends_with(char::is_whitespace) {
        Err(NameError::Whitespace)
    } else if text
        .chars()
        .all(|c| c == ' ' || unicode_normalization::char::is_combining_mark(c))
    {
        Err(NameError::Blank)
    } else {
        Ok(())
    };
    assert_eq!(validate_name(&text), expected, "name check of {text:?}");
    if expected.is_ok() {
        assert!(matches!(sanitize_for_terminal(&text), Cow::Borrowed(_)));
    }
    // The skeleton takes any text, and is a fixed point of itself.
    let skeleton = name_skeleton(&text);
    assert_eq!(name_skeleton(&skeleton), skeleton, "skeleton of {text:?}");
}

/// An arbitrary offered file name: what is kept is one plain, printable,
/// non-empty path component that stays inside the downloads directory, fits the
/// file-name limit with `.part` added, and is a fixed point of the sanitiser.
pub fn file_name(data: &[u8]) {
    let offered = String::from_utf8_lossy(data);
    let base = offered.rsplit(['/', '\\']).next().unwrap_or(&offered);
    let name = match safe_file_name(&offered) {
        Ok(name) => name,
        Err(FileNameError::Empty) => {
            // Refused only when nothing visible is left: the base name is all
            // invisible characters and (non-control) whitespace.
            assert!(
                base.chars()
                    .all(|c| is_invisible_format(c) || (c.is_whitespace() && !c.is_control())),
                "{offered:?} refused as empty"
            );
            return;
        }
        Err(FileNameError::DotName(dots)) => {
            assert!(
                dots == "." || dots == "..",
                "{offered:?} refused as {dots:?}"
            );
            return;
        }
    };
    assert!(!name.is_empty());
    assert!(name != "." && name != "..", "{offered:?} became {name:?}");
    assert!(
        !name.contains(['/', '\\', '\0']),
        "{offered:?} became {name:?}"
    );
    assert!(
        !name.chars().any(unprintable),
        "{offered:?} became {name:?}"
    );
    assert_eq!(name.trim(), name, "{offered:?} became {name:?}");
    assert!(name.len() <= MAX_NAME_BYTES, "{offered:?} became {name:?}");
    assert!(name.len() + ".part".len() <= 255);
    // One normal component: joined to the downloads directory it stays directly in it.
    let components: Vec<_> = Path::new(&name).components().collect();
    assert_eq!(
        components,
        [Component::Normal(name.as_ref())],
        "{offered:?} became {name:?}"
    );
    let dir = Path::new("/nonexistent-p2pchat-fuzz/downloads");
    assert_eq!(dir.join(&name).parent(), Some(dir));
    // The part file is named by the sender and the transfer id, never by the
    // offered name: no offer can aim at a file that is not ours.
    let part = part_path(dir, PartScope::new(&name), 7);
    assert_eq!(part.parent(), Some(dir));
    let part_name = part
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    assert!(
        part_name.starts_with(".p2pchat-") && part_name.ends_with("-0000000000000007.part"),
        "{part_name}"
    );
    // In a directory that does not exist every name is free: the first choice is
    // the name itself, inside the directory.
    assert_eq!(unique_destination(dir, &name), dir.join(&name));
    // Sanitising a sanitised name changes nothing.
    assert_eq!(safe_file_name(&name).as_deref(), Ok(name.as_str()));
}
