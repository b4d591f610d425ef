//! Replays every checked-in fuzz input (`fuzz/corpus/<target>/*`: seeds, minimised
//! coverage, past crashes) and every seed through its harness function on stable,
//! so `cargo test --workspace` re-checks all of them on every run.

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

#[test]
fn every_corpus_input_passes_its_target() {
    let mut total = 0;
    for (target, check) in fuzzcheck::TARGETS {
        let dir = fuzz_dir().join("corpus").join(target);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("corpus entry").path())
            .collect::<Vec<_>>();
        assert!(!entries.is_empty(), "{target}: empty corpus");
        for path in entries {
            let data = std::fs::read(&path).expect("corpus file");
            let name = path.display().to_string();
            // The file name in the panic message says which input broke.
            let result = std::panic::catch_unwind(|| check(&data));
            assert!(result.is_ok(), "{target}: {name} fails its invariants");
            total += 1;
        }
    }
    assert!(total > 0);
}

#[test]
fn every_seed_passes_its_target() {
    for (target, check) in fuzzcheck::TARGETS {
        for (name, data) in fuzzcheck::seeds::seeds(target) {
            let result = std::panic::catch_unwind(|| check(&data));
            assert!(result.is_ok(), "{target}: {name} fails its invariants");
        }
    }
}

#[test]
fn every_fuzz_target_has_a_harness_function() {
    let dir = fuzz_dir().join("fuzz_targets");
    for entry in std::fs::read_dir(&dir).expect("fuzz/fuzz_targets") {
        let path = entry.expect("entry").path();
        let name = path.file_stem().and_then(|s| s.to_str()).expect("name");
        assert!(
            fuzzcheck::TARGETS.iter().any(|(t, _)| *t == name),
            "fuzz/fuzz_targets/{name}.rs has no entry in fuzzcheck::TARGETS"
        );
    }
    for (target, _) in fuzzcheck::TARGETS {
        assert!(
            dir.join(format!("{target}.rs")).exists(),
            "no fuzz target for {target}"
        );
    }
}

/// Known answers of the download-name rule (crates/engine/src/files/name.rs, docs/protocol.md
/// §7 `FileOffer`: a base name only, stripped of any path and sanitised), written
/// out by hand: `Ok` is the name kept, `Err` the refusal's text.
const FILE_NAME_ANSWERS: &[(&str, Result<&str, &str>)] = &[
    ("report.pdf", Ok("report.pdf")),
    ("Zoë 🦀.txt", Ok("Zoë 🦀.txt")),
    (".bashrc", Ok(".bashrc")),
    ("../../x", Ok("x")),
    ("/etc/passwd", Ok("passwd")),
    ("a/b", Ok("b")),
    ("a\\b", Ok("b")),
    ("C:\\Windows\\system32\\evil.dll", Ok("evil.dll")),
    ("x.txt\0.exe", Ok("x.txt_.exe")),
    ("x\u{1b}.txt", Ok("x_.txt")),
    ("a\nb\tc\u{1b}[31m", Ok("a_b_c_[31m")),
    ("del\u{7f}\u{9b}", Ok("del__")),
    ("\0", Ok("_")),
    ("evil\u{202E}fdp.exe", Ok("evilfdp.exe")),
    ("a\u{200B}b\u{2066}c\u{FEFF}.txt", Ok("abc.txt")),
    ("  padded name.txt \u{3000}", Ok("padded name.txt")),
    ("dir/ \u{200B} x ", Ok("x")),
    ("", Err("the offered file name is empty")),
    ("a/", Err("the offered file name is empty")),
    ("  ", Err("the offered file name is empty")),
    ("\u{200B}\u{2066}", Err("the offered file name is empty")),
    (".", Err("the offered file name `.` names a directory")),
    ("..", Err("the offered file name `..` names a directory")),
    ("x/..", Err("the offered file name `..` names a directory")),
    ("a\\.", Err("the offered file name `.` names a directory")),
    (
        " ..\u{202E} ",
        Err("the offered file name `..` names a directory"),
    ),
];

/// The longest name kept, in bytes: 255 minus room for `.part` and ` (NNN)`.
const MAX_NAME_BYTES: usize = 240;

/// The client's sanitiser (and the copy the fuzz target runs) give the written-out
/// answers, and on every corpus input and many generated ones they obey the rule
/// as restated here: a mistake in the sanitiser fails this test, whichever copy.
#[test]
fn the_file_name_sanitiser_follows_its_rule() {
    type Sanitiser = fn(&str) -> Result<String, String>;
    let sanitisers: [(&str, Sanitiser); 2] = [
        ("client", |s| {
            engine::files::safe_file_name(s).map_err(|e| e.to_string())
        }),
        ("fuzzcheck copy", |s| {
            fuzzcheck::safe_file_name(s).map_err(|e| e.to_string())
        }),
    ];
    let mut inputs: Vec<String> = std::fs::read_dir(fuzz_dir().join("corpus/file_name"))
        .expect("fuzz/corpus/file_name")
        .map(|e| std::fs::read(e.expect("entry").path()).expect("corpus file"))
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .collect();
    inputs.extend(generated_file_names());
    for (who, sanitise) in sanitisers {
        for (offered, answer) in FILE_NAME_ANSWERS {
            let expected = answer.map(String::from).map_err(String::from);
            assert_eq!(sanitise(offered), expected, "{who}: {offered:?}");
        }
        for offered in &inputs {
            check_file_name_rule(offered, sanitise(offered))
                .unwrap_or_else(|e| panic!("{who}: {offered:?}: {e}"));
        }
    }
}

/// Names long and short from the characters the rule treats specially (separators,
/// dots, spaces, controls, invisible and multi-byte characters), from a fixed seed.
fn generated_file_names() -> Vec<String> {
    use rand::{Rng, SeedableRng};
    const PARTS: &[&str] = &[
        "a", "b", ".", "..", " ", "/", "\\", "\t", "\u{1b}", "\0", "\u{7f}", "\u{9b}", "\u{200B}",
        "\u{202E}", "\u{FEFF}", "\u{3000}", "é", "🦀", ".tar", ".gz", ".txt",
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(22);
    (0..4000)
        .map(|_| {
            // Half of them longer than the limit, so shortening is exercised.
            let parts = if rng.gen() {
                rng.gen_range(0..12)
            } else {
                rng.gen_range(60..400)
            };
            (0..parts)
                .map(|_| PARTS[rng.gen_range(0..PARTS.len())])
                .collect()
        })
        .collect()
}

/// The rule, stated from its definition rather than from the sanitiser's code:
/// keep what follows the last `/` or `\`; drop invisible characters; replace
/// control characters by `_`; trim whitespace; refuse what is then empty, `.` or
/// `..`. A name of at most [`MAX_NAME_BYTES`] is then kept exactly; a longer one
/// is cut to a prefix that fills the limit (less trailing whitespace), followed by
/// its extension when that is at most 32 bytes (`.tar.*` counts whole).
fn check_file_name_rule(offered: &str, got: Result<String, String>) -> Result<(), String> {
    let base = match offered.rfind(['/', '\\']) {
        Some(i) => &offered[i + 1..],
        None => offered,
    };
    let cleaned: String = base
        .chars()
        .filter(|&c| !wire::text::is_invisible_format(c))
        .map(|c| if c.is_control() { '_' } else { c })
        .collect();
    let cleaned = cleaned.trim();
    let dot_name = |d: &str| format!("the offered file name `{d}` names a directory");
    if cleaned.len() <= MAX_NAME_BYTES {
        let expected = match cleaned {
            "" => Err("the offered file name is empty".to_string()),
            "." | ".." => Err(dot_name(cleaned)),
            name => Ok(name.to_string()),
        };
        return if got == expected {
            Ok(())
        } else {
            Err(format!("got {got:?}, the rule gives {expected:?}"))
        };
    }
    let extension = long_name_extension(cleaned);
    let room = MAX_NAME_BYTES - extension.len();
    let name = match got {
        Ok(name) => name,
        // Shortening `. ␣␣␣…x` leaves `.`: refused like `.` itself.
        Err(e) => {
            return match [".", ".."]
                .into_iter()
                .find(|d| e == dot_name(d) && extension.is_empty())
            {
                Some(d)
                    if cleaned[d.len()..floor_char_boundary(cleaned, room)]
                        .trim()
                        .is_empty() =>
                {
                    Ok(())
                }
                _ => Err(format!("a long name refused: {e}")),
            };
        }
    };
    let Some(prefix) = name.strip_suffix(extension) else {
        return Err(format!("{name:?} lost the extension {extension:?}"));
    };
    if name.len() > MAX_NAME_BYTES || !cleaned.starts_with(prefix) {
        return Err(format!(
            "{name:?} is not a prefix of {cleaned:?} within the limit"
        ));
    }
    // The prefix fills the room: what follows it up to the room is whitespace
    // (trimmed off) or less than one character.
    let end = floor_char_boundary(cleaned, room);
    if prefix.ends_with(char::is_whitespace) || !cleaned[prefix.len()..end].trim().is_empty() {
        Err(format!(
            "{name:?} does not fill the limit (cleaned {cleaned:?})"
        ))
    } else {
        Ok(())
    }
}

/// The extension a long name keeps: from its last dot (not a leading one), taking
/// `.tar` before it too, when that is at most 32 bytes; else none.
fn long_name_extension(name: &str) -> &str {
    let Some(dot) = name.rfind('.').filter(|&i| i > 0) else {
        return "";
    };
    let dot = match name[..dot].strip_suffix(".tar") {
        Some(stem) if !stem.is_empty() => stem.len(),
        _ => dot,
    };
    let extension = &name[dot..];
    if extension.len() <= 32 {
        extension
    } else {
        ""
    }
}

/// The largest character boundary of `s` at or below `i`.
fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
