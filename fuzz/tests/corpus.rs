//! Every file of every seed corpus (and of `regressions/`, inputs that once
//! crashed a target) runs through its harness without a panic: a quick
//! replay that needs neither nightly nor libFuzzer (`cargo test` here).

use std::path::Path;

#[test]
fn every_corpus_file_replays() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut ran = 0;
    for (name, run) in xenpal_fuzz::TARGETS {
        let mut files = 0;
        for dir in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
                continue;
            };
            for e in entries {
                let path = e.expect("a directory entry").path();
                let bytes = std::fs::read(&path).expect("a corpus file");
                run(&bytes);
                files += 1;
            }
        }
        assert!(files > 0, "no seed corpus for {name}");
        ran += files;
    }
    println!("{ran} inputs replayed");
}

#[test]
fn every_target_has_a_fuzz_target_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, _) in xenpal_fuzz::TARGETS {
        let f = root.join("fuzz_targets").join(format!("{name}.rs"));
        assert!(f.exists(), "{} is missing", f.display());
    }
}
