//! The simulator's rows: `sim-tcp`, `sim-blk-read`, and `sim-density`
//! (printed as two rows, `sim-density-memory` and `sim-density-create`).
//! The measuring code is `apps/benches/sim_rows.rs`, built and run by
//! `cargo bench` (the release profile: xtask itself is built unoptimised);
//! it interleaves ours and the baseline and prints one `sample` line per
//! measurement, and the medians become the rows here. See that file for
//! what each row does; in short:
//!
//! - `sim-tcp` (MB/s): a TCP stream between two simulated guests
//!   (netfront, netback, the switch), 64 MiB (16 MiB with `--quick`),
//!   against smoltcp to smoltcp over smoltcp's `Loopback` in one thread,
//!   same socket buffers. Goal ≥ 0.5. An info line gives the baseline over
//!   a loopback with netfront's MTU (1500) and checksums too.
//! - `sim-blk-read` (MB/s): a guest reads a 64 MiB file (16 MiB with
//!   `--quick`) through blkfront, read-ahead and FAT, against host `pread`
//!   of the same bytes from the image file, in the same 64 KiB chunks.
//!   Goal ≥ 0.5.
//! - `sim-density-memory` (KiB per guest) and `sim-density-create` (µs per
//!   guest, from building to each guest having its event channel and
//!   having written to xenstore): 1,000, 10,000 and 100,000 guests (1,000
//!   and 10,000 with `--quick`), each count in a fresh process; the rows
//!   are the largest count's figures, against the goals as
//!   constant baselines (32 KiB and 20 µs), smaller is better, goal ≤ 1.
//!   Info lines give every count's figures and how much the per-guest
//!   figures grow from the smallest count to the largest (the issue's
//!   check is linear growth: they should not).
//!
//! The simulated rows run the simulator in deterministic mode (all domains
//! on one thread, virtual time): their figure is the CPU cost of the path,
//! comparable with the one-thread baselines.

use super::{ROUNDS, Row, median, output};
use std::path::Path;
use std::process::Command;

/// The density goal per guest, in KiB (the baseline of its memory row).
const DENSITY_KIB_GOAL: f64 = 32.0;

/// The density goal per guest, in µs (the baseline of its creation row).
const DENSITY_US_GOAL: f64 = 20.0;

/// How much a per-guest figure may grow from the smallest count to the
/// largest and still be called linear growth.
const LINEAR_SLACK: f64 = 1.25;

/// What one run measures.
struct Sizes {
    /// MiB streamed by `sim-tcp`.
    tcp_mib: u32,
    /// MiB of the file `sim-blk-read` reads.
    blk_mib: u32,
    /// Guest counts of `sim-density`, smallest first.
    density: &'static [usize],
}

/// The sizes of a full run, or of a quick one.
fn sizes(quick: bool) -> Sizes {
    if quick {
        Sizes {
            tcp_mib: 16,
            blk_mib: 16,
            density: &[1_000, 10_000],
        }
    } else {
        Sizes {
            tcp_mib: 64,
            blk_mib: 64,
            density: &[1_000, 10_000, 100_000],
        }
    }
}

/// The rows for `names` (`sim-tcp`, `sim-blk-read`, `sim-density`).
///
/// Errors: a message if the benchmark cannot be built or run, or prints
/// fewer samples than asked for.
pub(super) fn rows(root: &Path, quick: bool, names: &[&str]) -> Result<Vec<Row>, String> {
    let s = sizes(quick);
    let counts = s
        .density
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",");
    println!(
        "== bench: {} ({ROUNDS} rounds; {} MiB streamed, a {} MiB file, {counts} guests; \
         cargo bench -p xenpal-apps --bench sim_rows)",
        names.join(", "),
        s.tcp_mib,
        s.blk_mib
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = output(
        Command::new(&cargo)
            .current_dir(root)
            .args([
                "bench",
                "-q",
                "-p",
                "xenpal-apps",
                "--bench",
                "sim_rows",
                "--",
            ])
            .args(["--rounds", &ROUNDS.to_string()])
            .args(["--tcp-mib", &s.tcp_mib.to_string()])
            .args(["--blk-mib", &s.blk_mib.to_string()])
            .args(["--density", &counts])
            .args(names),
    )?;
    let mut rows = Vec::new();
    for &name in names {
        match name {
            "sim-tcp" => {
                let [ours, base, like] =
                    sides(&out, name, ["ours", "baseline", "baseline-mtu1500"])?;
                let like = median(like) / 1e6;
                let ours = median(ours) / 1e6;
                println!(
                    "   sim-tcp: the baseline over a loopback like netfront (MTU 1500, \
                     checksums): {like:.1} MB/s; ours is {:.3} of that",
                    ours / like
                );
                rows.push(throughput("sim-tcp", ours, median(base) / 1e6));
            }
            "sim-blk-read" => {
                let [ours, base] = sides(&out, name, ["ours", "baseline"])?;
                rows.push(throughput(
                    "sim-blk-read",
                    median(ours) / 1e6,
                    median(base) / 1e6,
                ));
            }
            _ => rows.extend(density(&out, s.density)?),
        }
    }
    Ok(rows)
}

/// A bigger-is-better MB/s row with the goal ≥ 0.5.
fn throughput(name: &'static str, ours: f64, baseline: f64) -> Row {
    Row {
        name,
        unit: "MB/s",
        ours,
        baseline,
        goal: 0.5,
        smaller_is_better: false,
    }
}

/// The two density rows, for the largest of `counts`, with info lines for
/// each count and for the growth between the smallest and the largest.
///
/// Errors: a message if a count has fewer samples than rounds.
fn density(out: &str, counts: &[usize]) -> Result<Vec<Row>, String> {
    let mut per = Vec::new();
    for &n in counts {
        let [kib] = sides(out, &format!("sim-density-memory/{n}"), ["ours"])?;
        let [create] = sides(out, &format!("sim-density-create/{n}"), ["ours"])?;
        let [build] = sides(out, &format!("sim-density-build/{n}"), ["ours"])?;
        let (kib, create, build) = (median(kib), median(create), median(build));
        println!(
            "   sim-density: {n} guests: {kib:.1} KiB and {create:.1} µs each \
             ({build:.1} µs of it building them)"
        );
        per.push((n, kib, create));
    }
    let (Some(&(n0, kib0, us0)), Some(&(n1, kib1, us1))) = (per.first(), per.last()) else {
        return Err("sim-density: no guest counts".into());
    };
    let verdict = |g: f64| {
        if g <= LINEAR_SLACK {
            "linear"
        } else {
            "NOT linear"
        }
    };
    let (gm, gc) = (kib1 / kib0, us1 / us0);
    println!(
        "   sim-density: from {n0} to {n1} guests, memory per guest ×{gm:.2} ({}), \
         creation time per guest ×{gc:.2} ({}; linear means within ×{LINEAR_SLACK})",
        verdict(gm),
        verdict(gc)
    );
    Ok(vec![
        Row {
            name: "sim-density-memory",
            unit: "KiB/guest",
            ours: kib1,
            baseline: DENSITY_KIB_GOAL,
            goal: 1.0,
            smaller_is_better: true,
        },
        Row {
            name: "sim-density-create",
            unit: "us/guest",
            ours: us1,
            baseline: DENSITY_US_GOAL,
            goal: 1.0,
            smaller_is_better: true,
        },
    ])
}

/// The samples of `name` for each of `which` sides, [`ROUNDS`] of each.
///
/// Errors: a message (with the benchmark's output) if a side has another
/// number of samples.
fn sides<const N: usize>(out: &str, name: &str, which: [&str; N]) -> Result<[Vec<f64>; N], String> {
    let got = which.map(|side| samples(out, name, side));
    if let Some((side, v)) = which.iter().zip(&got).find(|(_, v)| v.len() != ROUNDS) {
        return Err(format!(
            "{name}: {} {side} samples, want {ROUNDS}:\n{out}",
            v.len()
        ));
    }
    Ok(got)
}

/// The values of `name`'s `sample NAME SIDE VALUE` lines for `side` in
/// `out`.
fn samples(out: &str, name: &str, side: &str) -> Vec<f64> {
    out.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            match f[..] {
                ["sample", n, s, v] if n == name && s == side => v.parse().ok(),
                _ => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_read_by_name_and_side() {
        let out = "sample sim-tcp ours 9e8\nsample sim-tcp baseline 8e9\n\
                   sample sim-tcp baseline-mtu1500 4e9\nnoise\n\
                   sample sim-density-memory/1000 ours 67.2\nsample sim-tcp ours 8e8\n";
        assert_eq!(samples(out, "sim-tcp", "ours"), vec![9e8, 8e8]);
        assert_eq!(samples(out, "sim-tcp", "baseline-mtu1500"), vec![4e9]);
        assert_eq!(samples(out, "sim-density-memory/1000", "ours"), vec![67.2]);
        assert!(samples(out, "sim-density-memory/100", "ours").is_empty());
        assert!(sides(out, "sim-tcp", ["ours"]).is_err(), "2 of 5 samples");
    }

    #[test]
    fn density_rows_are_the_largest_count_against_the_goals() {
        let mut out = String::new();
        for _ in 0..ROUNDS {
            for (n, kib, us) in [(1000, 70.0, 50.0), (10000, 64.0, 160.0)] {
                out += &format!("sample sim-density-memory/{n} ours {kib}\n");
                out += &format!("sample sim-density-create/{n} ours {us}\n");
                out += &format!("sample sim-density-build/{n} ours 1\n");
            }
        }
        let rows = density(&out, &[1000, 10000]).unwrap();
        assert_eq!(
            rows[0].line(),
            "bench: sim-density-memory ours=64.0 KiB/guest baseline=32.0 KiB/guest ratio=2.000 goal=<=1"
        );
        assert_eq!(
            rows[1].line(),
            "bench: sim-density-create ours=160.0 us/guest baseline=20.0 us/guest ratio=8.000 goal=<=1"
        );
        assert!(!rows[0].met() && !rows[1].met());
        assert!(density(&out, &[1000, 100000]).is_err());
    }
}
