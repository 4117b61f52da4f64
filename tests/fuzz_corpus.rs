//! Replays every fuzz target's committed corpus (`fuzz/corpus/<target>/`, seeds and the
//! reproducers of fixed crashes) through the same target bodies libFuzzer runs
//! (`streamfold::fuzzing`), on stable, as a regression test. Needs the `fuzzing` feature:
//! `cargo test --features fuzzing --test fuzz_corpus` (run by `.ci/run`).
//!
//! Every input runs even after one fails; the test fails naming each input that panicked.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Fewest corpus files a target must have (a seed corpus, not a placeholder).
const MIN_CORPUS_FILES: usize = 12;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_target_has_a_seed_corpus() {
    for (target, _) in streamfold::fuzzing::TARGETS {
        let files = corpus(target);
        assert!(
            files.len() >= MIN_CORPUS_FILES,
            "{target}: {} corpus files, want at least {MIN_CORPUS_FILES}",
            files.len()
        );
    }
    let fuzz_targets = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    for (target, _) in streamfold::fuzzing::TARGETS {
        assert!(
            fuzz_targets.join(format!("{target}.rs")).is_file(),
            "no fuzz target for {target}"
        );
    }
}

#[test]
fn every_corpus_input_passes_its_target() {
    let mut failures = Vec::new();
    let mut inputs = 0;
    for (target, body) in streamfold::fuzzing::TARGETS {
        for file in corpus(target) {
            let data = std::fs::read(&file).expect("a readable corpus file");
            inputs += 1;
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| body(&data))) {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                failures.push(format!("{}: {message}", file.display()));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {inputs} corpus inputs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Writes the seed corpus (`streamfold::fuzzing::seeds`) as `fuzz/corpus/<target>/seed-<name>`.
/// Run by hand after changing the seeds:
/// `cargo test --features fuzzing --test fuzz_corpus -- --ignored write_seed_corpus`.
#[test]
#[ignore = "writes the seed corpus into the source tree"]
fn write_seed_corpus() {
    for (target, name, bytes) in streamfold::fuzzing::seeds::seeds() {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).expect("the corpus directory");
        std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("a seed file");
    }
}

/// The committed seeds are what the writers produce today: a change to an encoder (a new
/// field of the blob record or the Table row) must come with the corpus written again, or the
/// fuzzers start from inputs the code no longer writes.
#[test]
fn the_committed_seeds_are_what_the_writers_produce_today() {
    let mut stale = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (target, name, bytes) in streamfold::fuzzing::seeds::seeds() {
        if !names.insert((target, name.clone())) {
            stale.push(format!("{target}: two seeds named {name:?} (one file)"));
        }
        let path = corpus_dir(target).join(format!("seed-{name}"));
        match std::fs::read(&path) {
            Ok(committed) if committed == bytes => {}
            Ok(_) => stale.push(format!("{} differs", path.display())),
            Err(error) => stale.push(format!("{}: {error}", path.display())),
        }
    }
    assert!(
        stale.is_empty(),
        "{} seeds are out of date; write them again with `cargo test --features fuzzing --test \
         fuzz_corpus -- --ignored write_seed_corpus`:\n{}",
        stale.len(),
        stale.join("\n")
    );
}
