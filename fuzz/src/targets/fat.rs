//! A guest reading a corrupt FAT image through blkfront, in the
//! simulator: the read path of the static site (`ReadAhead` over
//! `Blkfront`, `embedded_sdmmc`'s volume manager), served by the real
//! blkback in dom0 from an image in memory. The image is a valid FAT16
//! volume made by the simulator's image builder (directories, long names,
//! small and multi-cluster files), corrupted by the fuzz input: a list of
//! patches (offset, bytes) anywhere in it: MBR, boot sector, FATs,
//! directories, file data. The guest opens the volume, walks every
//! directory and reads every file, as the site does when it indexes a
//! disk and serves it. A corrupt image must give `embedded_sdmmc` errors,
//! never a panic or a hang. The guest reads as the site does: the volume
//! and every directory entry go through `xenpal_drivers::fat`'s checks
//! before `embedded_sdmmc` trusts them.

use crate::input::Input;
use crate::simkit::sim;
use embedded_sdmmc::{Mode, VolumeIdx, VolumeManager};
use std::sync::OnceLock;
use xenpal_apps::site::FixedTime;
use xenpal_drivers::blk::{Blkfront, BlkfrontConfig, ReadAhead, vbd_ids};
use xenpal_drivers::fat;
use xenpal_fatimg::FatImage;
use xenpal_sim::backends::blk::{Blkback, Disk, VbdOptions};
use xenpal_sim::{DomainConfig, SimPlatform};

/// The site's read-ahead: 128 blocks per window, 8 windows.
const READ_AHEAD_BLOCKS: u32 = 128;
/// See [`READ_AHEAD_BLOCKS`].
const READ_AHEAD_WINDOWS: usize = 8;
/// Deepest directory walked (the site's limit is of the same order).
const MAX_DEPTH: usize = 6;
/// Most directory entries looked at in one walk.
const MAX_ENTRIES: usize = 256;
/// Most bytes read in one walk.
const MAX_READ: usize = 1 << 20;

/// The valid image the patches apply to (built once).
pub fn base_image() -> &'static [u8] {
    static IMAGE: OnceLock<Vec<u8>> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let mut img = FatImage::new();
        let files: [(&str, Vec<u8>); 6] = [
            ("index.html", b"<h1>hello</h1>\n".to_vec()),
            ("css/Site Style.css", b"h1 { color: red }\n".to_vec()),
            ("docs/A rather long file name.txt", vec![b'x'; 5000]),
            (
                "docs/deep/er/still/file.bin",
                (0..3000u32).map(|v| v as u8).collect(),
            ),
            ("BIG.BIN", (0..70_000u32).map(|v| (v * 7) as u8).collect()),
            ("empty.txt", Vec::new()),
        ];
        for (path, data) in files {
            img.add_file(path, data).expect("a valid name");
        }
        img.add_dir("empty dir").expect("a valid name");
        img.set_free_space(64 * 1024);
        img.build().expect("a small image")
    })
}

/// Apply the input's patches to a copy of the base image: each patch is a
/// `u32` offset (modulo the image size) and a short byte string.
pub fn patched(data: &[u8]) -> Vec<u8> {
    let mut img = base_image().to_vec();
    let mut i = Input::new(data);
    while !i.is_empty() {
        let at = i.u32() as usize % img.len();
        let bytes = i.short();
        let n = bytes.len().min(img.len() - at);
        img[at..at + n].copy_from_slice(&bytes[..n]);
    }
    img
}

/// Run one input: a list of patches.
pub fn run(data: &[u8]) {
    let image = patched(data);
    let mut sim = sim();
    let blkback = Blkback::new();
    let Ok(d) = sim.spawn(DomainConfig::new("reader").memory_pages(1024), reader) else {
        return;
    };
    if blkback
        .add_vbd(
            &sim,
            d,
            0,
            Disk::memory(image),
            VbdOptions::default().read_only(),
        )
        .is_err()
        || blkback.spawn(&mut sim).is_err()
    {
        return;
    }
    let report = sim.run();
    crate::simkit::show(&sim, &report);
}

type Vm<'a> = VolumeManager<ReadAhead<&'a Front<'a>>, FixedTime, 4, 4, 1>;
type Dir<'v, 'a> = embedded_sdmmc::Directory<'v, ReadAhead<&'a Front<'a>>, FixedTime, 4, 4, 1>;

/// What a walk has used up.
#[derive(Default)]
struct Budget {
    entries: usize,
    bytes: usize,
    refused: usize,
}

type Front<'a> = Blkfront<
    'a,
    xenpal_sim::SimHypervisor,
    xenpal_sim::SimClock,
    xenpal_sim::xen_pv::timer::XenAlarm<xenpal_sim::SimHypervisor>,
>;

/// The guest: open the disk, check and open the volume, walk and read
/// everything, as the site does.
async fn reader(p: SimPlatform) {
    let Ok(ids) = vbd_ids(&p).await else { return };
    let Some(id) = ids.first() else { return };
    let Ok(disk) = Blkfront::open(&p, id, BlkfrontConfig::default()).await else {
        return;
    };
    {
        let checked = fat::check_volume(&&disk, 0);
        let vm: Vm<'_> = VolumeManager::new_with_limits(
            ReadAhead::new(&disk, READ_AHEAD_BLOCKS, READ_AHEAD_WINDOWS),
            FixedTime,
            5000,
        );
        match checked {
            Ok(vol) => {
                if let Ok(raw) = vm.open_raw_volume(VolumeIdx(0))
                    && let Ok(root) = vm.open_root_dir(raw)
                {
                    let root = root.to_directory(&vm);
                    let mut budget = Budget::default();
                    walk(&root, &vol, &disk, 0, &mut budget);
                    if crate::simkit::debug() {
                        eprintln!(
                            "reader: {} entries ({} refused), {} bytes read",
                            budget.entries, budget.refused, budget.bytes
                        );
                    }
                }
            }
            Err(e) => {
                if crate::simkit::debug() {
                    eprintln!("reader: {e}");
                }
            }
        }
    }
    let _ = disk.close().await;
}

/// List `dir` through the checks, read each file in it, and walk each
/// subdirectory.
fn walk(dir: &Dir<'_, '_>, vol: &fat::Volume, disk: &Front<'_>, depth: usize, budget: &mut Budget) {
    let Ok((entries, refused, _why)) = fat::list_dir(dir, vol, &disk, MAX_ENTRIES) else {
        return;
    };
    budget.refused += refused;
    for l in entries {
        let _ = l.long_name.as_deref().map(str::len);
        let short = l.entry.name.to_string();
        budget.entries += 1;
        if budget.entries > MAX_ENTRIES || budget.bytes > MAX_READ {
            return;
        }
        if l.entry.attributes.is_directory() {
            if depth < MAX_DEPTH
                && let Ok(sub) = dir.open_dir(short.as_str())
            {
                walk(&sub, vol, disk, depth + 1, budget);
            }
        } else if let Ok(f) = dir.open_file_in_dir(short.as_str(), Mode::ReadOnly) {
            let mut buf = [0u8; 4096];
            while !f.is_eof() && budget.bytes <= MAX_READ {
                match f.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => budget.bytes += n,
                }
            }
            let _ = f.length();
            let _ = f.close();
        }
    }
}

/// Script writers for the seed corpus.
pub mod script {
    use crate::input::Script;

    /// Overwrite `bytes` at `at` of the image.
    pub fn patch(s: &mut Script, at: u32, bytes: &[u8]) {
        s.u32(at).short(bytes);
    }
}
