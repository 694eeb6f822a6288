//! The static site given a corrupt disk: the `fat` fuzz target found FAT
//! images on which `embedded_sdmmc` panicked (0 sectors per cluster divides
//! by zero) or followed clusters that do not exist. The site must refuse
//! such a volume with `SiteError::Fat`, and leave out entries whose
//! clusters are broken while serving the rest.

use std::sync::{Arc, Mutex};
use xenpal_apps::site::{self, SiteConfig, SiteError};
use xenpal_fatimg as fatimg;
use xenpal_sim::backends::blk::{Blkback, Disk, VbdOptions};
use xenpal_sim::{DomainConfig, Sim, SimConfig};

fn image() -> Vec<u8> {
    let mut img = fatimg::FatImage::new();
    img.add_file("index.html", b"<h1>home</h1>".to_vec())
        .unwrap();
    img.add_file("big.bin", vec![7; 70_000]).unwrap();
    img.build().unwrap()
}

/// Run the site over `image` until it fails (it has no vif, so a site
/// that indexes its disk stops at the network).
fn run_site(image: Vec<u8>) -> (SiteError, String) {
    let mut sim = Sim::new(SimConfig::seeded(5));
    let out: Arc<Mutex<Option<SiteError>>> = Arc::default();
    let o = out.clone();
    let d = sim
        .spawn(
            DomainConfig::new("site").memory_pages(2048).paused(),
            move |p| async move {
                let e = site::run(&p, SiteConfig::default()).await.unwrap_err();
                *o.lock().unwrap() = Some(e);
            },
        )
        .unwrap();
    let blk = Blkback::new();
    blk.add_vbd(&sim, d, 0, Disk::memory(image), VbdOptions::default())
        .unwrap();
    blk.spawn(&mut sim).unwrap();
    sim.unpause(d).unwrap();
    let report = sim.run();
    assert!(report.all_clean(), "{report:?}\n{}", sim.console_output(d));
    let e = out.lock().unwrap().take().expect("the site returned");
    (e, sim.console_output(d))
}

#[test]
fn a_volume_with_zero_sectors_per_cluster_is_refused() {
    let mut img = image();
    img[13] = 0;
    let (e, _) = run_site(img);
    assert!(
        matches!(&e, SiteError::Fat(0, why) if why.contains("sectors per cluster")),
        "{e}"
    );
}

#[test]
fn a_file_at_cluster_zero_is_left_out_and_said() {
    let mut img = image();
    let reserved = usize::from(u16::from_le_bytes([img[14], img[15]]));
    let fat_size = usize::from(u16::from_le_bytes([img[22], img[23]]));
    let root = (reserved + usize::from(img[16]) * fat_size) * 512;
    let at = (0..512)
        .map(|k| root + 32 * k)
        .find(|&a| img[a..].starts_with(b"BIG     BIN"))
        .unwrap();
    img[at + 26..at + 28].copy_from_slice(&[0, 0]);
    let (e, console) = run_site(img);
    // The disk was indexed (without the broken file): the site went on to
    // the network, which this guest does not have.
    assert!(matches!(e, SiteError::Net(_)), "{e}");
    assert!(console.contains("1 entries under / left out"), "{console}");
}
