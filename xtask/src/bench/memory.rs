//! `site-memory`: the demo's peak resident memory serving a large site,
//! against the site's size (smaller is better; goal ≤ 0.1).
//!
//! The site is four equal files and a page: 1 GiB in all (256 MiB with
//! `--quick`). The demo is started with its default options, every file
//! is downloaded once with `curl` (each size checked), and the demo's
//! `VmHWM` (peak RSS, from `/proc/PID/status`) is read while it still
//! runs. It counts everything the process ever held at once: the guest's
//! RAM (32 MiB), dom0's, the simulator, and any copy of the site a
//! regression would make. One round: the figure barely varies.

use super::{Row, build_demo, download, free_port, start_demo, wait_for_guest};
use std::io::Write;
use std::path::Path;

/// Files in the site (besides the page).
const FILES: u64 = 4;

/// The row, measured on a site of 1 GiB (256 MiB if `quick`) written
/// under `out_dir`, and removed after.
///
/// Errors: a message if the site cannot be written, the demo does not
/// start or serve every file whole, or its status cannot be read.
pub(super) fn row(root: &Path, out_dir: &Path, quick: bool) -> Result<Row, String> {
    let site_bytes: u64 = if quick { 256 << 20 } else { 1 << 30 };
    let file_bytes = site_bytes / FILES;
    let site = out_dir.join("memory-site");
    let _ = std::fs::remove_dir_all(&site);
    std::fs::create_dir_all(&site).map_err(|e| format!("{}: {e}", site.display()))?;
    println!(
        "== bench: site-memory (a {} MiB site: writing it)",
        site_bytes >> 20
    );
    // Random-looking bytes, 16 MiB repeated: nothing in the path dedups.
    let chunk = crate::fullstack::noise(16 << 20);
    for i in 0..FILES {
        let path = site.join(format!("part-{i}.bin"));
        let mut f = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        for _ in 0..file_bytes / chunk.len() as u64 {
            f.write_all(&chunk)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    std::fs::write(site.join("index.html"), b"<!doctype html><p>memory</p>\n")
        .map_err(|e| format!("{}: {e}", site.display()))?;

    let demo = build_demo(root)?;
    let port = free_port()?;
    let server = start_demo(&demo, &site, port)?;
    wait_for_guest(port, "index.html")?;
    for i in 0..FILES {
        let url = format!("http://127.0.0.1:{port}/part-{i}.bin");
        download(&url, file_bytes as usize)?;
    }
    let pid = server.0.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("the demo's /proc/{pid}/status: {e}"))?;
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no VmHWM in /proc/{pid}/status"))?;
    drop(server);
    let _ = std::fs::remove_dir_all(&site);
    let mb = |b: u64| b as f64 / 1e6;
    println!(
        "   peak RSS {:.1} MB serving {:.1} MB",
        mb(peak_kib * 1024),
        mb(site_bytes)
    );
    Ok(Row {
        name: "site-memory",
        unit: "MB",
        ours: mb(peak_kib * 1024),
        baseline: mb(site_bytes),
        goal: 0.1,
        smaller_is_better: true,
    })
}
