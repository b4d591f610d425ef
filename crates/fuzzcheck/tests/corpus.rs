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

#[test]
fn the_file_name_copy_is_the_clients() {
    let dir = fuzz_dir().join("corpus/file_name");
    let mut inputs: Vec<String> = std::fs::read_dir(&dir)
        .expect("fuzz/corpus/file_name")
        .map(|e| std::fs::read(e.expect("entry").path()).expect("corpus file"))
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .collect();
    inputs.extend(["", "..", "a/b", "x\u{1b}.txt"].map(String::from));
    for offered in inputs {
        assert_eq!(
            fuzzcheck::safe_file_name(&offered).map_err(|e| e.to_string()),
            client::files::safe_file_name(&offered).map_err(|e| e.to_string()),
            "{offered:?}"
        );
    }
}
