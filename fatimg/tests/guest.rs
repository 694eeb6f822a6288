//! FAT images made by `xenpal_fatimg`, read by a simulated guest through
//! blkfront and `embedded-sdmmc`: every file by its long name (or its 8.3
//! alias where embedded-sdmmc cannot look a long name up), byte for byte.
//! (The host tools' verdict on the same builder: `tools.rs`.)

use embedded_sdmmc::{BlockDevice, LfnBuffer, Mode, TimeSource, VolumeIdx, VolumeManager};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::sync::Arc;
use xenpal_drivers::blk::{Blkfront, BlkfrontConfig, vbd_ids};
mod common;

use common::{Expect, long_name};
use xenpal_fatimg::{FatImage, FatType};
use xenpal_sim::backends::blk::{Blkback, Disk, VbdOptions};
use xenpal_sim::{DomainConfig, Sim, SimConfig};
use xenpal_tests::{assert_same as same, pattern};

struct FixedTime;

impl TimeSource for FixedTime {
    fn get_timestamp(&self) -> embedded_sdmmc::Timestamp {
        embedded_sdmmc::Timestamp::from_calendar(2024, 5, 17, 12, 0, 0).expect("valid date")
    }
}

type Directory<'a, D, T> = embedded_sdmmc::Directory<'a, D, T, 4, 4, 1>;

/// Every file below `dir` (path by long names, contents), and every
/// directory, as `embedded-sdmmc` reads them; files opened by long name.
fn read_tree<D: BlockDevice, T: TimeSource>(
    dir: &Directory<'_, D, T>,
    prefix: &str,
    files: &mut BTreeMap<String, Vec<u8>>,
    dirs: &mut BTreeSet<String>,
) {
    let mut storage = [0u8; 1024];
    let mut lfn = LfnBuffer::new(&mut storage);
    let mut entries = Vec::new();
    dir.iterate_dir_lfn(&mut lfn, |e, long| {
        entries.push((e.clone(), long.map(str::to_string)));
        ControlFlow::Continue(())
    })
    .expect("list a directory");
    for (e, long) in entries {
        let short = e.name.to_string();
        if e.attributes.is_volume() || short == "." || short == ".." {
            continue;
        }
        let name = long.unwrap_or_else(|| short.clone());
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        if e.attributes.is_directory() {
            let sub = dir.open_dir(e.name).expect("open a directory");
            read_tree(&sub, &path, files, dirs);
            sub.close().expect("close a directory");
            dirs.insert(path);
        } else {
            let f = dir
                .open_long_name_file_in_dir(&name, Mode::ReadOnly)
                .or_else(|_| dir.open_file_in_dir(e.name, Mode::ReadOnly))
                .expect("open a file");
            let mut data = Vec::new();
            let mut buf = [0u8; 1000];
            while !f.is_eof() {
                let n = f.read(&mut buf).expect("read a file");
                data.extend_from_slice(&buf[..n]);
            }
            assert_eq!(data.len() as u32, e.size, "{path}");
            f.close().expect("close a file");
            files.insert(path, data);
        }
    }
}

/// An image a guest can read whole in reasonable time: long names (up to
/// embedded-sdmmc's 247 units), nested directories, an empty file, one
/// spanning many clusters, an exact 8.3 name.
fn guest_site() -> (FatImage, Expect) {
    let mut img = FatImage::new();
    let mut want = Expect::default();
    img.set_label("GUEST").unwrap();
    want.file(
        &mut img,
        "index.html",
        b"<h1>served from a FAT image</h1>\n".to_vec(),
    );
    want.file(&mut img, "Site Map.html", pattern(50, 3000));
    want.file(&mut img, "très.css", pattern(51, 700));
    want.file(&mut img, "crab ünïcödé ☃.rs", pattern(58, 800));
    want.file(&mut img, "README", pattern(52, 100));
    want.file(&mut img, "empty.txt", Vec::new());
    want.file(&mut img, "css/site.css", pattern(53, 2500));
    want.file(&mut img, "css/Print Style Sheet.css", pattern(54, 1500));
    want.file(
        &mut img,
        "A long directory name/Nested Directory/deep file.txt",
        pattern(55, 9000),
    );
    want.file(&mut img, "media/movie file.bin", pattern(56, 150_000));
    want.file(&mut img, &long_name(247, ".txt"), pattern(57, 333));
    for i in 0..40 {
        want.file(
            &mut img,
            &format!("reports/Report number {i}.txt"),
            pattern(60 + i, 100),
        );
    }
    want.dir(&mut img, "empty dir");
    (img, want)
}

#[test]
fn a_guest_reads_the_images_through_blkfront() {
    let (mut img, want) = guest_site();
    let want = Arc::new(want);
    // FAT16 served read-only. FAT32 writable: embedded-sdmmc rewrites the
    // FSInfo sector when it closes a FAT32 volume (with the same values).
    for (seed, fat_type, read_only) in [(1, None, true), (2, Some(FatType::Fat32), false)] {
        img.set_fat_type(fat_type);
        let bytes = img.build().unwrap();
        let layout = img.layout().unwrap();
        assert_eq!(layout.fat_type, fat_type.unwrap_or(FatType::Fat16));
        let mut sim = Sim::new(SimConfig::seeded(seed));
        let blkback = Blkback::new();
        let expected = want.clone();
        let d = sim
            .spawn(DomainConfig::new("fat-reader"), move |p| async move {
                let ids = vbd_ids(&p).await.expect("list disks");
                let disk = Blkfront::open(&p, &ids[0], BlkfrontConfig::default())
                    .await
                    .expect("connect the disk");
                {
                    let vm = VolumeManager::new(&disk, FixedTime);
                    let volume = vm.open_volume(VolumeIdx(0)).expect("open the FAT volume");
                    let root = volume.open_root_dir().expect("open /");
                    let mut files = BTreeMap::new();
                    let mut dirs = BTreeSet::new();
                    read_tree(&root, "", &mut files, &mut dirs);
                    root.close().expect("close /");
                    volume.close().expect("close the volume");
                    assert_eq!(dirs, expected.dirs, "directories");
                    assert_eq!(
                        files.keys().collect::<Vec<_>>(),
                        expected.files.keys().collect::<Vec<_>>(),
                        "files"
                    );
                    for (path, data) in &files {
                        same(path, data, &expected.files[path]);
                    }
                }
                disk.close().await.expect("close the disk");
            })
            .unwrap();
        let options = if read_only {
            VbdOptions::default().read_only()
        } else {
            VbdOptions::default()
        };
        let vbd = blkback
            .add_vbd(&sim, d, 0, Disk::memory(bytes.clone()), options)
            .unwrap();
        blkback.spawn(&mut sim).unwrap();
        let report = sim.run();
        assert!(
            report.all_clean(),
            "{fat_type:?}: {report:?}\n{}",
            sim.console_output(d)
        );
        let after = vbd.read_durable(0, bytes.len()).unwrap();
        same("the image after the guest", &after, &bytes);
    }
}
