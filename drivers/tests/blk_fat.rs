//! FAT file systems made on the host by the real tools (`mkfs.fat`, `mmd`,
//! `mcopy`), read and written by a simulated guest through `embedded_sdmmc`
//! on blkfront, with blkback in dom0 serving the image file; then read back
//! on the host by `mcopy` and checked by `fsck.fat`.
//!
//! Needs Debian's `dosfstools` and `mtools`; without them these tests fail
//! and say so.

mod blk_support;

use blk_support::{FatImage, FixedTime, Scratch, finish, fsck, mcopy_out, pattern, sim, usage};
use core::ops::ControlFlow;
use embedded_sdmmc::{BlockDevice, LfnBuffer, Mode, TimeSource, VolumeIdx, VolumeManager};
use xenpal_drivers::blk::{Blkfront, BlkfrontConfig, vbd_ids};
use xenpal_drivers::block_device::BlockDevice as _;
use xenpal_sim::DomainConfig;
use xenpal_sim::backends::blk::{Disk, VbdOptions};
use xenpal_tests::assert_same;

type File<'a, D, T> = embedded_sdmmc::File<'a, D, T, 4, 4, 1>;

/// A whole file, read in odd-sized pieces that straddle blocks.
fn read_file<D: BlockDevice, T: TimeSource>(f: &File<'_, D, T>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 1000];
    while !f.is_eof() {
        let n = f.read(&mut buf).expect("read a file");
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// Write a file in odd-sized pieces.
fn write_file<D: BlockDevice, T: TimeSource>(f: &File<'_, D, T>, data: &[u8]) {
    for chunk in data.chunks(3000) {
        f.write(chunk).expect("write a file");
    }
}

struct Files {
    hello: Vec<u8>,
    big: Vec<u8>,
    long: Vec<u8>,
    inner: Vec<u8>,
    new_small: Vec<u8>,
    new_big: Vec<u8>,
    new_inner: Vec<u8>,
}

const LONG_NAME: &str = "A rather long file name.txt";

fn files() -> Files {
    Files {
        hello: b"Hello from the host's mcopy.\n".to_vec(),
        big: pattern(1, 300_001),
        long: pattern(2, 5_000),
        inner: b"in a directory\n".to_vec(),
        new_small: b"written by a Xen guest through blkfront\n".to_vec(),
        new_big: pattern(3, 150_000),
        new_inner: pattern(4, 7_777),
    }
}

fn image(f: &Files) -> FatImage {
    FatImage {
        fat: 16,
        kib: 16 * 1024,
        label: "XENPAL",
        dirs: vec!["DOCS"],
        files: vec![
            ("HELLO.TXT".into(), f.hello.clone()),
            ("BIG.BIN".into(), f.big.clone()),
            (LONG_NAME.into(), f.long.clone()),
            ("DOCS/INNER.TXT".into(), f.inner.clone()),
        ],
    }
}

/// The guest's part: read what the host wrote, write new files.
async fn use_fat_disk(p: &xenpal_sim::SimPlatform, f: &Files) {
    let before = usage(p);
    let ids = vbd_ids(p).await.expect("list disks");
    assert_eq!(ids.len(), 1, "one disk: {ids:?}");
    let disk = Blkfront::open(p, &ids[0], BlkfrontConfig::default())
        .await
        .expect("connect the disk");
    {
        let vm = VolumeManager::new(&disk, FixedTime);
        let volume = vm.open_volume(VolumeIdx(0)).expect("open the FAT volume");
        let root = volume.open_root_dir().expect("open /");
        let hello = root
            .open_file_in_dir("HELLO.TXT", Mode::ReadOnly)
            .expect("open HELLO.TXT");
        assert_same("HELLO.TXT", &read_file(&hello), &f.hello);
        hello.close().expect("close");
        let big = root
            .open_file_in_dir("BIG.BIN", Mode::ReadOnly)
            .expect("open BIG.BIN");
        assert_same("BIG.BIN", &read_file(&big), &f.big);
        big.close().expect("close");
        // The long name, as mcopy wrote it, found by listing the directory.
        let mut storage = [0u8; 128];
        let mut lfn = LfnBuffer::new(&mut storage);
        let mut names = Vec::new();
        root.iterate_dir_lfn(&mut lfn, |_, long| {
            if let Some(l) = long {
                names.push(l.to_string());
            }
            ControlFlow::Continue(())
        })
        .expect("list /");
        assert!(
            names.iter().any(|n| n == LONG_NAME),
            "long names: {names:?}"
        );
        let long = root
            .open_long_name_file_in_dir(LONG_NAME, Mode::ReadOnly)
            .expect("open by long name");
        assert_same(LONG_NAME, &read_file(&long), &f.long);
        long.close().expect("close");
        let docs = root.open_dir("DOCS").expect("open DOCS");
        let inner = docs
            .open_file_in_dir("INNER.TXT", Mode::ReadOnly)
            .expect("open DOCS/INNER.TXT");
        assert_same("DOCS/INNER.TXT", &read_file(&inner), &f.inner);
        inner.close().expect("close");
        // New files.
        for (dir, name, data) in [
            (&root, "NEW.TXT", &f.new_small),
            (&root, "NEWBIG.BIN", &f.new_big),
            (&docs, "NEWIN.BIN", &f.new_inner),
        ] {
            let file = dir
                .open_file_in_dir(name, Mode::ReadWriteCreate)
                .expect("create a file");
            write_file(&file, data);
            file.close().expect("close a new file");
        }
        // Read one back through the same stack.
        let again = root
            .open_file_in_dir("NEWBIG.BIN", Mode::ReadOnly)
            .expect("reopen NEWBIG.BIN");
        assert_same("NEWBIG.BIN (guest)", &read_file(&again), &f.new_big);
        again.close().expect("close");
        docs.close().expect("close DOCS");
        root.close().expect("close /");
        volume.close().expect("close the volume");
    }
    disk.flush_blocking().expect("flush");
    let port = disk.transport().expect("connected").port;
    disk.close().await.expect("close the disk");
    assert_eq!(usage(p), before, "everything given back");
    assert!(blk_support::port_closed(p, port));
}

#[test]
fn guest_reads_and_writes_a_fat_image_made_on_the_host() {
    let f = std::sync::Arc::new(files());
    for seed in 0..2 {
        let scratch = Scratch::new("fat");
        let img = scratch.path("disk.img");
        image(&f).build(&img, &scratch);
        let (mut sim, blkback) = sim(seed);
        let guest_files = f.clone();
        let d = sim
            .spawn(DomainConfig::new("fat-guest"), move |p| async move {
                use_fat_disk(&p, &guest_files).await;
            })
            .unwrap();
        let vbd = blkback
            .add_vbd(&sim, d, 0, Disk::file(&img).unwrap(), VbdOptions::default())
            .unwrap();
        finish(&mut sim, &blkback, "fat");
        assert_eq!(vbd.dirty_sectors(), 0, "the guest flushed");
        // The host's tools see what the guest wrote, byte for byte.
        assert_same("NEW.TXT", &mcopy_out(&img, "NEW.TXT"), &f.new_small);
        assert_same("NEWBIG.BIN", &mcopy_out(&img, "NEWBIG.BIN"), &f.new_big);
        assert_same(
            "DOCS/NEWIN.BIN",
            &mcopy_out(&img, "DOCS/NEWIN.BIN"),
            &f.new_inner,
        );
        assert_same("HELLO.TXT", &mcopy_out(&img, "HELLO.TXT"), &f.hello);
        fsck(&img);
    }
}

#[test]
fn fat_on_a_disk_with_4096_byte_sectors() {
    // The file system uses 512-byte sectors; the disk's are 4096 bytes,
    // so blkfront's embedded_sdmmc adapter reads whole sectors and
    // read-modify-writes partial ones.
    let f = std::sync::Arc::new(files());
    let scratch = Scratch::new("fat4k");
    let img = scratch.path("disk.img");
    image(&f).build(&img, &scratch);
    let (mut sim, blkback) = sim(7);
    let guest_files = f.clone();
    let d = sim
        .spawn(DomainConfig::new("fat-4k"), move |p| async move {
            use_fat_disk(&p, &guest_files).await;
        })
        .unwrap();
    blkback
        .add_vbd(
            &sim,
            d,
            0,
            Disk::file(&img).unwrap(),
            VbdOptions::default().sector_size(4096),
        )
        .unwrap();
    finish(&mut sim, &blkback, "fat on 4k sectors");
    assert_same("NEW.TXT", &mcopy_out(&img, "NEW.TXT"), &f.new_small);
    assert_same("NEWBIG.BIN", &mcopy_out(&img, "NEWBIG.BIN"), &f.new_big);
    assert_same(
        "DOCS/NEWIN.BIN",
        &mcopy_out(&img, "DOCS/NEWIN.BIN"),
        &f.new_inner,
    );
    fsck(&img);
}

#[test]
fn a_guest_serves_files_from_two_fat_disks() {
    let scratch = Scratch::new("fat2");
    let a_img = scratch.path("a.img");
    let b_img = scratch.path("b.img");
    let a_data = pattern(10, 40_000);
    let b_data = pattern(11, 60_000);
    FatImage {
        fat: 16,
        kib: 16 * 1024,
        label: "DISK-A",
        dirs: vec![],
        files: vec![("A.BIN".into(), a_data.clone())],
    }
    .build(&a_img, &scratch);
    FatImage {
        fat: 32,
        kib: 40 * 1024,
        label: "DISK-B",
        dirs: vec![],
        files: vec![("B.BIN".into(), b_data.clone())],
    }
    .build(&b_img, &scratch);
    let (mut sim, blkback) = sim(3);
    let (a, b) = (a_data.clone(), b_data.clone());
    let d = sim
        .spawn(
            DomainConfig::new("two-disks").memory_pages(512),
            move |p| async move {
                let ids = vbd_ids(&p).await.unwrap();
                assert_eq!(ids.len(), 2, "{ids:?}");
                let disk_a = Blkfront::open(&p, &ids[0], BlkfrontConfig::default())
                    .await
                    .unwrap();
                let disk_b = Blkfront::open(&p, &ids[1], BlkfrontConfig::default())
                    .await
                    .unwrap();
                {
                    let vm_a = VolumeManager::new(&disk_a, FixedTime);
                    let vm_b = VolumeManager::new(&disk_b, FixedTime);
                    let va = vm_a.open_volume(VolumeIdx(0)).expect("volume A");
                    let vb = vm_b.open_volume(VolumeIdx(0)).expect("volume B");
                    let ra = va.open_root_dir().unwrap();
                    let rb = vb.open_root_dir().unwrap();
                    // Serve each disk's file from the other, interleaved.
                    let fa = ra.open_file_in_dir("A.BIN", Mode::ReadOnly).unwrap();
                    let fb = rb.open_file_in_dir("B.BIN", Mode::ReadOnly).unwrap();
                    let got_a = read_file(&fa);
                    let got_b = read_file(&fb);
                    assert_same("A.BIN", &got_a, &a);
                    assert_same("B.BIN", &got_b, &b);
                    let to_b = rb
                        .open_file_in_dir("FROMA.BIN", Mode::ReadWriteCreate)
                        .unwrap();
                    let to_a = ra
                        .open_file_in_dir("FROMB.BIN", Mode::ReadWriteCreate)
                        .unwrap();
                    for (ca, cb) in got_a.chunks(4000).zip(got_b.chunks(6000)) {
                        to_b.write(ca).unwrap();
                        to_a.write(cb).unwrap();
                    }
                    for f in [fa, fb, to_a, to_b] {
                        f.close().unwrap();
                    }
                }
                for disk in [&disk_a, &disk_b] {
                    disk.flush_blocking().unwrap();
                    disk.close().await.unwrap();
                }
                assert_eq!(disk_a.info().sectors, 16 * 1024 * 2);
                assert_eq!(disk_b.info().sectors, 40 * 1024 * 2);
            },
        )
        .unwrap();
    for (i, img) in [&a_img, &b_img].into_iter().enumerate() {
        blkback
            .add_vbd(
                &sim,
                d,
                i as u32,
                Disk::file(img).unwrap(),
                VbdOptions::default(),
            )
            .unwrap();
    }
    finish(&mut sim, &blkback, "two FAT disks");
    assert_same("FROMA.BIN on B", &mcopy_out(&b_img, "FROMA.BIN"), &a_data);
    assert_same("FROMB.BIN on A", &mcopy_out(&a_img, "FROMB.BIN"), &b_data);
    fsck(&a_img);
    fsck(&b_img);
}

/// A disk whose reads and writes fail now and then (seeded I/O errors in
/// blkback): through `embedded_sdmmc`, which has no retry of its own,
/// blkfront tries a failed request again, so the same reads and writes
/// succeed and the host sees the same files.
#[test]
fn fat_through_transient_io_errors() {
    use xenpal_sim::backends::blk::DiskFaults;
    let f = std::sync::Arc::new(files());
    let scratch = Scratch::new("fat-io");
    let img = scratch.path("disk.img");
    image(&f).build(&img, &scratch);
    let (mut sim, blkback) = sim(3);
    let guest_files = f.clone();
    let d = sim
        .spawn(DomainConfig::new("fat-io"), move |p| async move {
            use_fat_disk(&p, &guest_files).await;
        })
        .unwrap();
    // One request in a hundred fails: each of the thousands of reads and
    // writes here would meet one; three tries in a row fail one in a
    // million.
    let faults = DiskFaults {
        io_error: 0.01,
        ..DiskFaults::seeded(0x10e)
    };
    let vbd = blkback
        .add_vbd(
            &sim,
            d,
            0,
            Disk::file(&img).unwrap(),
            VbdOptions::default().faults(faults),
        )
        .unwrap();
    finish(&mut sim, &blkback, "fat-io");
    assert!(vbd.stats().faults.io_errors > 0, "no error was injected");
    assert_same("NEW.TXT", &mcopy_out(&img, "NEW.TXT"), &f.new_small);
    assert_same("NEWBIG.BIN", &mcopy_out(&img, "NEWBIG.BIN"), &f.new_big);
    fsck(&img);
}
