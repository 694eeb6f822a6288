//! The `image-size-*` rows: the size on disk of the guest images users
//! load, built as `cargo xtask qemu` builds them (`cargo build --profile
//! guest -p xenpal-guests --target ...`: the workspace's `guest` profile,
//! as the front door's template builds a user's crate; no features), and
//! made into what Xen loads as the runner makes it: on
//! AArch64 the flat `Image` (`objcopy -O binary`), on x86_64 the stripped
//! PV ELF. The baseline is a constant, Mirage's 172 KB web appliance.
//!
//! Rows: `image-size-site-ARCH` (goal: at most the baseline) and
//! `image-size-hello-ARCH` (goal: at most 16 KiB, printed as a ratio of
//! the baseline). The self-test's sizes are printed as info lines. Sizes
//! do not vary from run to run, so there are no rounds.

use super::Row;
use std::path::Path;
use std::process::Command;

/// Mirage's web appliance, in bytes (the figure).
const MIRAGE_BYTES: f64 = 172_000.0;

/// The goal for hello, in bytes.
const HELLO_GOAL_BYTES: f64 = 16.0 * 1024.0;

/// The guests measured (`guests/src/bin/`).
const GUESTS: [&str; 3] = ["hello", "selftest", "site"];

/// The bare-metal targets, with the arch name used in row names.
const TARGETS: [(&str, &str); 2] = [
    ("aarch64-unknown-none", "aarch64"),
    ("x86_64-unknown-none", "x86_64"),
];

/// Build the guests and measure them.
///
/// Errors: a message if a guest cannot be built, read or converted.
pub(super) fn rows(root: &Path) -> Result<Vec<Row>, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut rows = Vec::new();
    for (target, arch) in TARGETS {
        println!(
            "== bench: image-size: building {} for {target} (profile guest)",
            GUESTS.join(", ")
        );
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(root).args([
            "build",
            "-q",
            "--profile",
            "guest",
            "-p",
            "xenpal-guests",
            "--target",
            target,
        ]);
        for g in GUESTS {
            cmd.args(["--bin", g]);
        }
        let status = cmd.status().map_err(|e| format!("cargo build: {e}"))?;
        if !status.success() {
            return Err(format!(
                "building the guests for {target} failed ({status})"
            ));
        }
        for guest in GUESTS {
            let path = root.join("target").join(target).join("guest").join(guest);
            let elf = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let (what, image, in_memory) = loaded(arch, &elf)?;
            println!(
                "   {guest} {arch}: {} bytes ({what}; the ELF with symbols and debug info: {} bytes), {} KiB in memory",
                image,
                elf.len(),
                in_memory / 1024
            );
            let Some((name, goal)) = row_of(guest, arch) else {
                continue;
            };
            rows.push(Row {
                name,
                unit: "KB",
                ours: image as f64 / 1000.0,
                baseline: MIRAGE_BYTES / 1000.0,
                goal: goal / MIRAGE_BYTES,
                smaller_is_better: true,
            });
        }
    }
    Ok(rows)
}

/// What Xen loads, made from the guest's ELF: its kind, its size in bytes,
/// and the memory it spans once loaded (with `.bss`, stack and heap).
fn loaded(arch: &str, elf: &[u8]) -> Result<(&'static str, usize, u64), String> {
    if arch == "aarch64" {
        let image = crate::elf::to_flat(elf)?;
        // The Image header's image_size: what the loader reserves.
        let in_memory = image
            .get(16..24)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
            .ok_or("image too short")?;
        Ok(("the flat Image", image.len(), in_memory))
    } else {
        let (image, in_memory) = crate::elf::strip(elf)?;
        Ok(("the stripped ELF", image.len(), in_memory))
    }
}

/// The row of `guest` on `arch` and its goal in bytes; `None` for a guest
/// that has no goal (the self-test).
fn row_of(guest: &str, arch: &str) -> Option<(&'static str, f64)> {
    Some(match (guest, arch) {
        ("site", "aarch64") => ("image-size-site-aarch64", MIRAGE_BYTES),
        ("site", "x86_64") => ("image-size-site-x86_64", MIRAGE_BYTES),
        ("hello", "aarch64") => ("image-size-hello-aarch64", HELLO_GOAL_BYTES),
        ("hello", "x86_64") => ("image-size-hello-x86_64", HELLO_GOAL_BYTES),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_and_hello_have_rows_and_goals() {
        for (_, arch) in TARGETS {
            assert_eq!(row_of("site", arch).unwrap().1, 172_000.0);
            assert_eq!(row_of("hello", arch).unwrap().1, 16_384.0);
            assert!(row_of("selftest", arch).is_none());
        }
        assert!(row_of("site", "x86_64").unwrap().0.ends_with("site-x86_64"));
    }
}
