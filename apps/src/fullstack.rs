//! The full-stack check: the guest's blkfront and netfront against whatever
//! backends the toolstack gives it — Linux's `xen-blkback` and
//! `xen-netback` under QEMU (`cargo xtask qemu --arch aarch64 --dom0 linux
//! fullstack`), or the simulator's.
//!
//! 1. Disk 0 holds a FAT volume with [`INPUT`]. The guest reads it, writes
//!    [`transform`] of it as [`OUTPUT`], flushes, reads that back, and
//!    closes the disk (which fails if the backend still maps a page).
//! 2. It then serves the volume over HTTP ([`crate::site`], 10.0.0.2:80)
//!    until [`FullstackConfig::requests`] responses went out: the peer
//!    fetches both files and checks them, and after the guest has shut
//!    down the image itself can be checked for [`OUTPUT`].
//!
//! Results are self-test lines ([`crate::selftest::Report`]).

use crate::selftest::{Outcome, Report};
use crate::site::{self, FixedTime, SiteConfig};
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use embedded_sdmmc::{Mode, VolumeIdx, VolumeManager};
use hal::Console;
use xenpal::Platform;
use xenpal_drivers::blk::{Blkfront, BlkfrontConfig, vbd_ids};
use xenpal_drivers::block_device::BlockDevice;

/// The file the guest reads (in the volume's root directory).
pub const INPUT: &str = "DATA.BIN";
/// The file the guest writes.
pub const OUTPUT: &str = "OUT.BIN";

/// What the guest writes for input `data`: each byte XORed with its
/// offset's low byte and 0x5a, so a misplaced or stale block shows.
pub fn transform(data: &[u8]) -> Vec<u8> {
    data.iter()
        .enumerate()
        .map(|(i, b)| b ^ (i as u8) ^ 0x5a)
        .collect()
}

/// FNV-1a, 64-bit: a checksum to print and compare.
pub fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// How the check runs.
#[derive(Clone, Debug)]
pub struct FullstackConfig {
    /// HTTP responses to serve before stopping (the peer's requests).
    pub requests: u64,
}

impl Default for FullstackConfig {
    fn default() -> Self {
        FullstackConfig { requests: 2 }
    }
}

fn read_all(
    file: &embedded_sdmmc::File<'_, impl embedded_sdmmc::BlockDevice, FixedTime, 4, 4, 1>,
    len: usize,
) -> Result<Vec<u8>, String> {
    let mut data = vec![0u8; len];
    let mut at = 0;
    while at < len {
        let n = file.read(&mut data[at..]).map_err(|e| format!("{e:?}"))?;
        if n == 0 {
            break;
        }
        at += n;
    }
    data.truncate(at);
    Ok(data)
}

/// The disk half: read [`INPUT`], write and verify [`OUTPUT`], flush,
/// close. Returns (read outcome, write outcome, close outcome).
async fn disk(p: &Platform) -> [(&'static str, Outcome); 3] {
    let fail = |why: String| {
        [
            ("disk-read", Outcome::Fail(why)),
            (
                "disk-write",
                Outcome::Skip("the disk could not be read".into()),
            ),
            (
                "disk-close",
                Outcome::Skip("the disk could not be read".into()),
            ),
        ]
    };
    let ids = match vbd_ids(p).await {
        Ok(ids) if !ids.is_empty() => ids,
        Ok(_) => return fail("the toolstack gave no disk".into()),
        Err(e) => return fail(format!("listing disks: {e}")),
    };
    let d = match Blkfront::open(p, &ids[0], BlkfrontConfig::default()).await {
        Ok(d) => d,
        Err(e) => return fail(format!("opening disk {}: {e}", ids[0])),
    };
    let info = d.info();
    let (read, write) = {
        let vm = VolumeManager::<_, _, 4, 4, 1>::new(&d, FixedTime);
        let result = (|| -> Result<(Outcome, Outcome), String> {
            let volume = vm
                .open_volume(VolumeIdx(0))
                .map_err(|e| format!("FAT volume: {e:?}"))?;
            let root = volume.open_root_dir().map_err(|e| format!("{e:?}"))?;
            let file = root
                .open_file_in_dir(INPUT, Mode::ReadOnly)
                .map_err(|e| format!("opening {INPUT}: {e:?}"))?;
            let len = file.length() as usize;
            let data = read_all(&file, len)?;
            file.close().map_err(|e| format!("{e:?}"))?;
            if data.len() != len {
                return Err(format!("{INPUT}: read {} of {len} bytes", data.len()));
            }
            let read = Outcome::Pass(format!(
                "{INPUT} from disk {} ({} sectors of {}): {len} bytes, fnv1a64 {:016x}",
                ids[0],
                info.sectors,
                info.sector_size,
                fnv1a64(&data)
            ));
            let out = transform(&data);
            let write = (|| -> Result<Outcome, String> {
                let f = root
                    .open_file_in_dir(OUTPUT, Mode::ReadWriteCreateOrTruncate)
                    .map_err(|e| format!("creating {OUTPUT}: {e:?}"))?;
                f.write(&out)
                    .map_err(|e| format!("writing {OUTPUT}: {e:?}"))?;
                f.close().map_err(|e| format!("closing {OUTPUT}: {e:?}"))?;
                d.flush_blocking().map_err(|e| format!("flush: {e}"))?;
                let f = root
                    .open_file_in_dir(OUTPUT, Mode::ReadOnly)
                    .map_err(|e| format!("reopening {OUTPUT}: {e:?}"))?;
                let back = read_all(&f, out.len() + 1)?;
                f.close().map_err(|e| format!("{e:?}"))?;
                if back != out {
                    return Ok(Outcome::Fail(format!(
                        "{OUTPUT} read back differs ({} bytes, fnv1a64 {:016x} vs {:016x})",
                        back.len(),
                        fnv1a64(&back),
                        fnv1a64(&out)
                    )));
                }
                Ok(Outcome::Pass(format!(
                    "{OUTPUT}: {} bytes written, flushed and read back, fnv1a64 {:016x}",
                    out.len(),
                    fnv1a64(&out)
                )))
            })()
            .unwrap_or_else(Outcome::Fail);
            root.close().map_err(|e| format!("{e:?}"))?;
            volume.close().map_err(|e| format!("{e:?}"))?;
            Ok((read, write))
        })();
        match result {
            Ok(r) => r,
            Err(why) => (
                Outcome::Fail(why),
                Outcome::Skip("the input could not be read".into()),
            ),
        }
    };
    let close = match d.close().await {
        Ok(()) => Outcome::Pass(format!(
            "disk {} closed; the backend let go of every page",
            ids[0]
        )),
        Err(e) => Outcome::Fail(format!("closing disk {}: {e}", ids[0])),
    };
    [
        ("disk-read", read),
        ("disk-write", write),
        ("disk-close", close),
    ]
}

/// Run the check, printing each result line on the console as it completes
/// and the verdict last.
pub async fn run(p: &Platform, cfg: FullstackConfig) -> Report {
    let mut report = Report::default();
    let say = |report: &Report| {
        let line = report.line(report.results.len() - 1);
        p.console().write_lossy(line.as_bytes());
        p.console().write_lossy(b"\n");
    };
    if p.xenstore().is_none() {
        report.results.push((
            "xenstore",
            Outcome::Fail("no xenstore: the devices need a toolstack".into()),
        ));
        say(&report);
    } else {
        for (name, o) in disk(p).await {
            report.results.push((name, o));
            say(&report);
        }
        let site = SiteConfig {
            max_requests: Some(cfg.requests),
            ..SiteConfig::default()
        };
        let net = match site::run(p, site).await {
            Ok(s) if s.not_found == 0 => Outcome::Pass(format!(
                "served {} responses from {} files over netfront; vif and disks closed with every grant back",
                s.responses, s.files
            )),
            Ok(s) => Outcome::Fail(format!(
                "{} of {} requests were for missing files",
                s.not_found, s.responses
            )),
            Err(e) => Outcome::Fail(format!("{e}")),
        };
        report.results.push(("net-serve", net));
        say(&report);
    }
    let v = report.verdict();
    p.console().write_lossy(v.as_bytes());
    p.console().write_lossy(b"\n");
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transform_depends_on_offset_and_is_its_own_inverse() {
        let d = [0u8; 300];
        let t = transform(&d);
        assert_eq!(t[0], 0x5a);
        assert_eq!(t[1], 0x5b);
        assert_eq!(t[256], 0x5a);
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        assert_eq!(transform(&transform(&data)), data);
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
