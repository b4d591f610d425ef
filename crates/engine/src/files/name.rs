//! The one place that decides what a received file is called on disk: the offered
//! name becomes a plain base name, the final name never replaces a file, and the
//! `.part` it grows in is named by who sends it and the transfer id, never by the
//! offered name.

use std::path::{Path, PathBuf};

/// Longest name we keep, in bytes of UTF-8: 255 (the usual file name limit) minus
/// room for `.part` and a ` (NNN)` suffix.
pub const MAX_NAME_BYTES: usize = 240;

/// Distinct ` (N)` suffixes tried before falling back to a random one.
const UNIQUE_ATTEMPTS: u32 = 999;

/// Why an offered name cannot be used at all (everything else is repaired).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FileNameError {
    /// Nothing usable is left (empty, only separators, only invisible characters).
    #[error("the offered file name is empty")]
    Empty,
    /// `.` or `..`: a directory, not a file.
    #[error("the offered file name `{0}` names a directory")]
    DotName(String),
}

/// Turns a peer-offered name into a safe base name, or refuses it. The rules, in
/// order:
///
/// 1. Only what follows the last `/` or `\` is kept: `../../x` → `x`,
///    `/etc/x` → `x`, `a/b` and `a\b` → `b` (the peer can name a file, never a
///    place).
/// 2. Control characters (NUL, newline, ESC, DEL, C1) become `_`; bidi and
///    zero-width characters are dropped.
/// 3. Surrounding whitespace is trimmed.
/// 4. Over [`MAX_NAME_BYTES`], the stem is shortened and the extension kept.
/// 5. Empty, `.` and `..` are refused, after shortening too (`.` followed by 300
///    spaces and an `x` shortens to `.`).
pub fn safe_file_name(offered: &str) -> Result<String, FileNameError> {
    let base = offered.rsplit(['/', '\\']).next().unwrap_or(offered);
    let cleaned: String = base
        .chars()
        // Invisible characters are dropped: what is left is what the name says.
        .filter(|c| !wire::text::is_invisible_format(*c))
        .map(|c| if c.is_control() { '_' } else { c })
        .collect();
    let name = truncate_name(cleaned.trim(), MAX_NAME_BYTES);
    match name.as_str() {
        "" => Err(FileNameError::Empty),
        "." | ".." => Err(FileNameError::DotName(name)),
        _ => Ok(name),
    }
}

/// Splits `name` into stem and extension (with its dot). A leading dot is part of
/// the stem (`.bashrc`), and `.tar.*` stays whole (`x.tar.gz` → `x` + `.tar.gz`).
fn split_extension(name: &str) -> (&str, &str) {
    let Some(dot) = name.rfind('.').filter(|&i| i > 0) else {
        return (name, "");
    };
    let (stem, ext) = name.split_at(dot);
    if let Some(tar) = stem.strip_suffix(".tar").filter(|s| !s.is_empty()) {
        return (tar, &name[tar.len()..]);
    }
    (stem, ext)
}

/// Shortens `name` to at most `max` bytes on a character boundary, keeping a short
/// extension (≤ 32 bytes) when there is room for some of the stem.
fn truncate_name(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_string();
    }
    let (stem, ext) = split_extension(name);
    let ext = if ext.len() <= 32 && ext.len() < max {
        ext
    } else {
        ""
    };
    let stem_room = max - ext.len();
    let stem = if ext.is_empty() { name } else { stem };
    let mut cut = stem_room.min(stem.len());
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    let stem = stem[..cut].trim_end();
    format!("{stem}{ext}")
}

/// Whose downloads a `.part` belongs to: a hash of the sending peer's name
/// (docs/protocol.md §7.1). Transfers from another peer never share a `.part`
/// name with this one, whatever id they pick.
///
/// The room code is deliberately left out: it is a password (PAKE, §13), and a
/// fast hash of it in a file name anyone who can list the downloads directory
/// sees would let them test guesses offline. The random transfer id, which only
/// the two ends know, is what no stranger can aim at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartScope([u8; 8]);

/// The BLAKE3 key-derivation context of [`PartScope`].
const PART_SCOPE_CONTEXT: &str = "p2pchat 2026-12 download part scope v2";

impl PartScope {
    /// The scope of transfers from `peer`.
    pub fn new(peer: &str) -> PartScope {
        let hash = blake3::derive_key(PART_SCOPE_CONTEXT, peer.as_bytes());
        let mut scope = [0u8; 8];
        scope.copy_from_slice(&hash[..8]);
        PartScope(scope)
    }
}

/// Where transfer `id` from `scope` is written while it arrives:
/// `dir/.p2pchat-<scope hex>-<id hex>.part`. The offered name plays no part, so
/// an offer cannot aim at an existing `x.part` (or `x`); the id is random and only
/// the two ends know it, so a peer cannot aim at another transfer's `.part`. The
/// same sender and id give the same name, which is what lets a restarted receiver
/// resume.
pub fn part_path(dir: &Path, scope: PartScope, id: u64) -> PathBuf {
    dir.join(format!(".p2pchat-{}-{id:016x}.part", hex::encode(scope.0)))
}

/// A path in `dir` for `name` (already safe) that is not taken by anything, not
/// even a dangling symlink: `name.ext`, then `name (1).ext`, `name (2).ext`...
/// After [`UNIQUE_ATTEMPTS`] a random suffix is used. The final move must still
/// refuse to replace (another program may create the file meanwhile):
/// [`super::IncomingFile::finish`] links without replacing.
pub fn unique_destination(dir: &Path, name: &str) -> PathBuf {
    let free = |p: &Path| std::fs::symlink_metadata(p).is_err();
    let first = dir.join(name);
    if free(&first) {
        return first;
    }
    let (stem, ext) = split_extension(name);
    for n in 1..=UNIQUE_ATTEMPTS {
        let candidate = dir.join(format!("{stem} ({n}){ext}"));
        if free(&candidate) {
            return candidate;
        }
    }
    dir.join(format!("{stem} ({:016x}){ext}", rand::random::<u64>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(offered: &str) -> String {
        safe_file_name(offered).unwrap()
    }

    #[test]
    fn paths_keep_only_the_base_name() {
        assert_eq!(ok("../../x"), "x");
        assert_eq!(ok("/etc/x"), "x");
        assert_eq!(ok("a/b"), "b");
        assert_eq!(ok("a\\b"), "b");
        assert_eq!(ok("C:\\Windows\\system32\\evil.dll"), "evil.dll");
        assert_eq!(ok("..\\..\\x"), "x");
        assert_eq!(ok("report.pdf"), "report.pdf");
        assert_eq!(ok("Zoë 🦀.txt"), "Zoë 🦀.txt");
        assert_eq!(ok(".bashrc"), ".bashrc");
    }

    #[test]
    fn dot_names_and_empty_are_refused() {
        for bad in [
            "..",
            ".",
            "",
            "/",
            "a/",
            "x/..",
            "a\\.",
            "  ",
            "..\u{202E}",
            "\u{200B}",
        ] {
            assert!(safe_file_name(bad).is_err(), "{bad:?} must be refused");
        }
        assert_eq!(
            safe_file_name(".."),
            Err(FileNameError::DotName("..".into()))
        );
        assert_eq!(safe_file_name(""), Err(FileNameError::Empty));
        // Found by the file_name fuzz target: shortening must not leave a dot name.
        for dots in [".", ".."] {
            let long = format!("{dots}{}x", " ".repeat(300));
            assert_eq!(
                safe_file_name(&long),
                Err(FileNameError::DotName(dots.into()))
            );
        }
    }

    #[test]
    fn control_characters_become_underscores() {
        assert_eq!(ok("x.txt\0.exe"), "x.txt_.exe");
        assert_eq!(ok("a\nb\tc\u{1b}[31m"), "a_b_c_[31m");
        assert_eq!(ok("del\u{7f}\u{9b}"), "del__");
        assert_eq!(ok("\0"), "_");
    }

    #[test]
    fn bidi_and_zero_width_are_dropped() {
        // "evil\u{202E}fdp.exe" shows as "evilexe.pdf" on a terminal.
        assert_eq!(ok("evil\u{202E}fdp.exe"), "evilfdp.exe");
        assert_eq!(ok("a\u{200B}b\u{2066}c\u{FEFF}.txt"), "abc.txt");
    }

    #[test]
    fn long_names_are_shortened_keeping_the_extension() {
        let long = format!("{}.tar.gz", "a".repeat(400));
        let short = ok(&long);
        assert_eq!(short.len(), MAX_NAME_BYTES);
        assert!(short.ends_with("a.tar.gz"), "{short}");
        // Multi-byte characters are never cut in half.
        let long = format!("{}.txt", "é".repeat(200));
        let short = ok(&long);
        assert!(
            short.len() <= MAX_NAME_BYTES && short.ends_with("é.txt"),
            "{short}"
        );
        // A giant "extension" is not kept whole.
        let long = format!("x.{}", "e".repeat(300));
        assert_eq!(ok(&long).len(), MAX_NAME_BYTES);
        // Room for `.part` and ` (999)` within 255 bytes.
        assert!(MAX_NAME_BYTES + ".part".len() <= 255);
        assert!(MAX_NAME_BYTES + " (999)".len() <= 255);
    }

    #[test]
    fn extensions_split_sensibly() {
        assert_eq!(split_extension("a.txt"), ("a", ".txt"));
        assert_eq!(split_extension("a.tar.gz"), ("a", ".tar.gz"));
        assert_eq!(split_extension(".bashrc"), (".bashrc", ""));
        assert_eq!(split_extension("noext"), ("noext", ""));
        assert_eq!(split_extension("my.report.pdf"), ("my.report", ".pdf"));
    }

    #[test]
    fn unique_destination_never_names_an_existing_file() {
        let dir = std::env::temp_dir().join(format!(
            "p2pchat-unique-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(unique_destination(&dir, "r.pdf"), dir.join("r.pdf"));
        std::fs::write(dir.join("r.pdf"), b"1").unwrap();
        assert_eq!(unique_destination(&dir, "r.pdf"), dir.join("r (1).pdf"));
        std::fs::write(dir.join("r (1).pdf"), b"2").unwrap();
        assert_eq!(unique_destination(&dir, "r.pdf"), dir.join("r (2).pdf"));
        std::fs::write(dir.join("x.tar.gz"), b"3").unwrap();
        assert_eq!(
            unique_destination(&dir, "x.tar.gz"),
            dir.join("x (1).tar.gz")
        );
        std::fs::write(dir.join("noext"), b"4").unwrap();
        assert_eq!(unique_destination(&dir, "noext"), dir.join("noext (1)"));
        // A directory or a dangling symlink counts as taken too.
        std::fs::create_dir(dir.join("d")).unwrap();
        assert_eq!(unique_destination(&dir, "d"), dir.join("d (1)"));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.join("nowhere"), dir.join("l")).unwrap();
            assert_eq!(unique_destination(&dir, "l"), dir.join("l (1)"));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn part_names_follow_the_protocol_vector() {
        // docs/protocol.md §7.1.
        assert_eq!(
            part_path(Path::new("/d"), PartScope::new("alice"), 171),
            Path::new("/d/.p2pchat-9ed8c1c85daa23cc-00000000000000ab.part")
        );
    }
}
