//! The `ring-rtt` and `ring-stream` rows: our shared ring between two host
//! threads, against a raw cache-line ping-pong and against two `rtrb` SPSC
//! queues. The measuring code is `hal/benches/rings.rs`, built and run by
//! `cargo bench` (the release profile: xtask itself is built unoptimised);
//! it interleaves ours and the baseline and prints one `sample` line per
//! measurement, and the medians become the rows here.

use super::{ROUNDS, Row, median, output};
use std::path::Path;
use std::process::Command;

/// Milliseconds per measurement: each of ours and the baseline, each round.
fn millis(quick: bool) -> u32 {
    if quick { 100 } else { 300 }
}

/// The rows for `names` (`ring-rtt`, `ring-stream`).
///
/// Errors: a message if the benchmark cannot be built or run, or prints
/// fewer samples than asked for.
pub(super) fn rows(root: &Path, quick: bool, names: &[&str]) -> Result<Vec<Row>, String> {
    let ms = millis(quick);
    println!(
        "== bench: {} ({ROUNDS} rounds of {ms} ms each, ours and baseline; cargo bench -p xenpal-hal --bench rings)",
        names.join(", ")
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = output(
        Command::new(&cargo)
            .current_dir(root)
            .args(["bench", "-q", "-p", "xenpal-hal", "--bench", "rings", "--"])
            .args(["--rounds", &ROUNDS.to_string(), "--ms", &ms.to_string()])
            .args(names),
    )?;
    names
        .iter()
        .map(|&name| {
            let (ours, baseline) = samples(&out, name);
            if ours.len() != ROUNDS || baseline.len() != ROUNDS {
                return Err(format!(
                    "{name}: {} and {} samples, want {ROUNDS} of each:\n{out}",
                    ours.len(),
                    baseline.len()
                ));
            }
            Ok(if name == "ring-rtt" {
                Row {
                    name: "ring-rtt",
                    unit: "ns/rtt",
                    ours: median(ours),
                    baseline: median(baseline),
                    goal: 2.0,
                    smaller_is_better: true,
                }
            } else {
                // Millions of entries (answered requests) per second.
                Row {
                    name: "ring-stream",
                    unit: "Mentries/s",
                    ours: median(ours) / 1e6,
                    baseline: median(baseline) / 1e6,
                    goal: 1.0,
                    smaller_is_better: false,
                }
            })
        })
        .collect()
}

/// The values of `name`'s `sample NAME ours|baseline VALUE` lines in `out`.
fn samples(out: &str, name: &str) -> (Vec<f64>, Vec<f64>) {
    let (mut ours, mut baseline) = (Vec::new(), Vec::new());
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let ["sample", n, which, v] = f[..]
            && n == name
            && let Ok(v) = v.parse::<f64>()
        {
            match which {
                "ours" => ours.push(v),
                "baseline" => baseline.push(v),
                _ => {}
            }
        }
    }
    (ours, baseline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_read_by_name_and_side() {
        let out = "sample ring-rtt ours 300.5\nsample ring-rtt baseline 150\n\
                   sample ring-stream ours 1e7\nnoise\nsample ring-rtt ours 310\n";
        assert_eq!(samples(out, "ring-rtt"), (vec![300.5, 310.0], vec![150.0]));
        assert_eq!(samples(out, "ring-stream"), (vec![1e7], vec![]));
    }
}
