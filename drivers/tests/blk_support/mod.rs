//! Shared by the `blk_*` tests: running a simulation with blkback in dom0,
//! host tools for FAT images, deterministic data, resource accounting.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use xenpal_sim::backends::blk::Blkback;
use xenpal_sim::hal::{EventPort, GrantTable, PageAlloc};
use xenpal_sim::xen_pv::abi::evtchnstat;
use xenpal_sim::xen_pv::hypercall;
use xenpal_sim::{RunReport, Sim, SimConfig, SimPlatform};
pub use xenpal_tests::{Scratch, pattern};

/// A simulator with blkback ready to be given disks; call
/// [`finish`] to start dom0 and run.
pub fn sim(seed: u64) -> (Sim, Blkback) {
    (Sim::new(SimConfig::seeded(seed)), Blkback::new())
}

/// Start blkback in dom0, run to the end, and check that every guest
/// finished cleanly (printing their consoles otherwise).
pub fn finish(sim: &mut Sim, blkback: &Blkback, label: &str) -> RunReport {
    blkback.clone().spawn(sim).expect("dom0 is free");
    let report = sim.run();
    if !report.all_clean() {
        let mut out = String::new();
        for d in report.exits.keys().chain(report.alive.iter()) {
            out.push_str(&format!(
                "--- console of d{}:\n{}\n",
                d.0,
                sim.console_output(*d)
            ));
        }
        out.push_str(&format!(
            "--- console of dom0:\n{}\n",
            sim.console_output(xenpal_sim::hal::DomId::DOM0)
        ));
        panic!(
            "{label} (seed {:#x}): not clean: {report:?}\n{out}",
            sim.seed()
        );
    }
    report
}

/// Grants, pages of a guest: to check that a driver gives everything back.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Grants made and not ended.
    pub grants: usize,
    /// Pages allocated and not freed.
    pub pages: usize,
}

/// The guest's current usage.
pub fn usage(p: &SimPlatform) -> Usage {
    Usage {
        grants: p.grants().active_grants(),
        pages: p.pages().outstanding(),
    }
}

/// Whether `port` is closed (`EVTCHNOP_status` says so).
pub fn port_closed(p: &SimPlatform, port: EventPort) -> bool {
    hypercall::evtchn_status(p.hypervisor(), port)
        .map(|st| st.status == evtchnstat::CLOSED)
        .unwrap_or(false)
}

/// A fixed clock for `embedded_sdmmc`.
pub struct FixedTime;

impl embedded_sdmmc::TimeSource for FixedTime {
    fn get_timestamp(&self) -> embedded_sdmmc::Timestamp {
        embedded_sdmmc::Timestamp::from_calendar(2024, 5, 17, 12, 0, 0).expect("valid date")
    }
}

/// The path of host tool `name` from Debian package `package`.
pub fn tool(name: &str, package: &str) -> PathBuf {
    xenpal_tests::host_tool(name, package)
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A file system the host builds: `mkfs.fat` with a one-partition MBR (as
/// `embedded_sdmmc` wants), then `mmd`/`mcopy` for directories and files.
pub struct FatImage {
    /// FAT type: 16 or 32.
    pub fat: u32,
    /// Size in KiB.
    pub kib: u64,
    /// Volume label.
    pub label: &'static str,
    /// Directories to create (`DIR` or `DIR/SUB`).
    pub dirs: Vec<&'static str>,
    /// Files: path in the image (`DIR/NAME.EXT`, long names allowed) and
    /// contents.
    pub files: Vec<(String, Vec<u8>)>,
}

impl FatImage {
    /// Create the image at `path`.
    pub fn build(&self, path: &Path, scratch: &Scratch) {
        let mkfs = tool("mkfs.fat", "dosfstools");
        let mmd = tool("mmd", "mtools");
        let mcopy = tool("mcopy", "mtools");
        let _ = std::fs::remove_file(path);
        let sectors_per_cluster = if self.fat == 32 { "1" } else { "4" };
        run(Command::new(mkfs)
            .arg("-F")
            .arg(self.fat.to_string())
            .arg("-s")
            .arg(sectors_per_cluster)
            .arg("-n")
            .arg(self.label)
            .arg("--mbr=y")
            .arg("-C")
            .arg(path)
            .arg(self.kib.to_string()));
        for d in &self.dirs {
            run(Command::new(&mmd).arg("-i").arg(path).arg(format!("::{d}")));
        }
        for (i, (name, data)) in self.files.iter().enumerate() {
            let src = scratch.path(&format!("host-file-{i}"));
            std::fs::write(&src, data).expect("write a host file");
            run(Command::new(&mcopy)
                .arg("-i")
                .arg(path)
                .arg(&src)
                .arg(format!("::{name}")));
        }
    }
}

/// A file's bytes as the host's `mcopy` reads them from the image.
pub fn mcopy_out(image: &Path, name: &str) -> Vec<u8> {
    run(Command::new(tool("mcopy", "mtools"))
        .arg("-n")
        .arg("-i")
        .arg(image)
        .arg(format!("::{name}"))
        .arg("-"))
}

/// `fsck.fat -n` on the image: the file system is consistent.
pub fn fsck(image: &Path) {
    run(Command::new(tool("fsck.fat", "dosfstools"))
        .arg("-n")
        .arg(image));
}

/// Run futures concurrently in the calling task; their outputs in order.
pub async fn join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<std::pin::Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if o.is_none()
                && let std::task::Poll::Ready(v) = f.as_mut().poll(cx)
            {
                *o = Some(v);
            }
        }
        if out.iter().all(Option::is_some) {
            std::task::Poll::Ready(out.iter_mut().map(|o| o.take().unwrap()).collect())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}
