//! FAT images made by `xenpal_fatimg`, checked by the real tools:
//! `fsck.fat -n` (dosfstools) must find nothing to say, and mtools (`mdir`,
//! `mcopy`, `mtype`, `mlabel`) must list every file and directory and read
//! every file back, byte for byte, by its long name. (A simulated guest
//! reading them through blkfront and `embedded-sdmmc`:
//! `tests/guest.rs`.)
//!
//! Needs Debian's `dosfstools` and `mtools`; without them these tests fail
//! and say so.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
mod common;

use common::{Expect, long_name};
use xenpal_fatimg::{self as fatimg, FatError, FatImage, FatType, Layout, NameError};
use xenpal_tests::{Scratch, assert_same as same, pattern};

// ---------------------------------------------------------------------------
// Host tools.

/// The path of host tool `name` (from `dosfstools` or `mtools`); a failure
/// naming the package if it is missing.
fn tool(name: &str) -> PathBuf {
    let package = if name.ends_with(".fat") {
        "dosfstools"
    } else {
        "mtools"
    };
    xenpal_tests::host_tool(name, package)
}

/// Run a tool; its standard output and error. mtools work in UTF-8 (long
/// names) and check the boot sector's geometry (no `MTOOLS_SKIP_CHECK`).
fn run(cmd: &mut Command) -> (Vec<u8>, String) {
    let out = cmd
        .env("LC_ALL", "C.UTF-8")
        .env_remove("MTOOLS_SKIP_CHECK")
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}\n{stderr}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
    );
    (out.stdout, stderr)
}

/// The `-i` argument of mtools: the image at the partition's offset.
fn mtools_image(img: &Path, layout: &Layout) -> String {
    format!("{}@@{}", img.display(), layout.partition_offset)
}

/// `fsck.fat -n`: no complaint at all, and the counts it finds.
fn fsck(img: &Path, layout: &Layout, entries: usize) {
    let (out, err) = run(Command::new(tool("fsck.fat")).arg("-n").arg(img));
    let out = String::from_utf8_lossy(&out);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.len() == 2 && lines[0].starts_with("fsck.fat") && err.is_empty(),
        "fsck.fat has something to say about {}:\n{out}{err}",
        img.display()
    );
    let want = format!(
        "{}: {entries} files, {}/{} clusters",
        img.display(),
        layout.used_clusters,
        layout.clusters
    );
    assert_eq!(lines[1], want, "fsck.fat's summary");
}

/// `mdir -/ -b`: every path, directories with a trailing `/`.
fn mdir(img: &Path, layout: &Layout) -> BTreeSet<String> {
    let (out, _) = run(Command::new(tool("mdir"))
        .arg("-i")
        .arg(mtools_image(img, layout))
        .args(["-/", "-b", "::"]));
    String::from_utf8(out)
        .expect("mdir prints UTF-8")
        .lines()
        .map(|l| {
            l.strip_prefix("::/")
                .unwrap_or_else(|| panic!("mdir line {l:?}"))
                .to_string()
        })
        .collect()
}

/// `path` as an mtools file name: mtools expands `*`, `?` and `[...]`
/// (only `[` can be in a FAT name; `[[]` matches it).
fn mtools_name(path: &str) -> String {
    format!("::/{}", path.replace('[', "[[]"))
}

/// A file's bytes as `mcopy` reads them.
fn mcopy_out(img: &Path, layout: &Layout, path: &str) -> Vec<u8> {
    run(Command::new(tool("mcopy"))
        .arg("-n")
        .arg("-i")
        .arg(mtools_image(img, layout))
        .arg(mtools_name(path))
        .arg("-"))
    .0
}

/// A file's bytes as `mtype` prints them.
fn mtype_out(img: &Path, layout: &Layout, path: &str) -> Vec<u8> {
    run(Command::new(tool("mtype"))
        .arg("-i")
        .arg(mtools_image(img, layout))
        .arg(mtools_name(path)))
    .0
}

/// Every check the tools can make, on the image file `img`.
fn check_with_tools(img: &Path, layout: &Layout, want: &Expect) {
    check_sampled(img, layout, want, 1);
}

/// As [`check_with_tools`], reading back only every `every`-th file (the
/// listing is still checked whole).
fn check_sampled(img: &Path, layout: &Layout, want: &Expect, every: usize) {
    assert_eq!(
        std::fs::metadata(img).unwrap().len(),
        layout.image_bytes,
        "image size"
    );
    fsck(
        img,
        layout,
        want.files.len() + want.dirs.len() + usize::from(want.label.is_some()),
    );
    let listed = mdir(img, layout);
    let expected: BTreeSet<String> = want
        .files
        .keys()
        .cloned()
        .chain(want.dirs.iter().map(|d| format!("{d}/")))
        .collect();
    assert_eq!(listed, expected, "mdir's listing");
    for (i, (path, data)) in want.files.iter().enumerate().step_by(every) {
        // mtype for a few, mcopy for all.
        if i % 7 == 0 {
            same(path, &mtype_out(img, layout, path), data);
        }
        same(path, &mcopy_out(img, layout, path), data);
    }
    if let Some(label) = &want.label {
        let (out, _) = run(Command::new(tool("mlabel"))
            .arg("-s")
            .arg("-i")
            .arg(mtools_image(img, layout))
            .arg("::"));
        let out = String::from_utf8_lossy(&out);
        assert_eq!(out.trim(), format!("Volume label is {label}"));
    }
}

/// Build `img` in memory, write it to a file, check it with the tools.
fn build_and_check(img: &FatImage, want: &Expect, scratch: &Scratch, name: &str) -> Layout {
    let layout = img.layout().unwrap();
    let bytes = img.build().unwrap();
    assert_eq!(bytes.len() as u64, layout.image_bytes);
    let path = scratch.path(name);
    std::fs::write(&path, &bytes).unwrap();
    check_with_tools(&path, &layout, want);
    layout
}

// ---------------------------------------------------------------------------
// The tools' verdict.

/// A few files at the top: long names of every length class, accents, exact
/// 8.3 names, an empty file, a label. (No name outside the BMP: the builder
/// refuses those, see `names_and_paths_fat_cannot_hold`.)
fn small_site() -> (FatImage, Expect) {
    let mut img = FatImage::new();
    let mut want = Expect::default();
    img.set_label("Xenpal Site").unwrap();
    want.label = Some("XENPAL SITE".into());
    for (i, name) in [
        "index.html",
        "Site Map.html",
        "très.css",
        "README",
        "INDEX.HTM",
        "MiXeD.TxT",
        ".htaccess",
        "my.file.name.txt",
        "abcdefghij.kl",               // 13 units: one full long-name entry
        "abcdefghijklmnopqrstuvwx.yz", // 27
        "a+b,c;d=e[f].g h",
    ]
    .into_iter()
    .enumerate()
    {
        want.file(&mut img, name, pattern(i as u64, 100 + 997 * i));
    }
    want.file(&mut img, "empty.txt", Vec::new());
    want.file(&mut img, &long_name(255, ".txt"), pattern(99, 5000));
    want.file(&mut img, &long_name(247, ".bin"), pattern(98, 3000));
    (img, want)
}

#[test]
fn a_small_image_with_long_names() {
    let scratch = Scratch::new("small");
    let (img, want) = small_site();
    let layout = build_and_check(&img, &want, &scratch, "small.img");
    assert_eq!(layout.fat_type, FatType::Fat16);
    assert_eq!(layout.cluster_bytes, 512);
    assert!(
        layout.image_bytes < 2300 * 1024,
        "a small image stays small: {layout:?}"
    );
    // The same input, the same bytes.
    assert_eq!(img.build().unwrap(), small_site().0.build().unwrap());
}

/// Nested directories with long names, a directory spanning many clusters
/// with hundreds of `~N` aliases, empty directories, a path as deep as
/// allowed, names merged case-insensitively into one directory.
fn nested_site() -> (FatImage, Expect) {
    let mut img = FatImage::new();
    let mut want = Expect::default();
    want.file(&mut img, "css/site.css", b"body { margin: 0 }\n".to_vec());
    want.file(&mut img, "css/Print Style Sheet.css", pattern(1, 4000));
    let deep = "A very long directory name, indeed/and a nested one with accents, éàü";
    want.file(
        &mut img,
        &format!("{deep}/deep file.txt"),
        pattern(2, 70_000),
    );
    want.file(&mut img, &format!("{deep}/index.html"), pattern(3, 10));
    for i in 0..300 {
        want.file(
            &mut img,
            &format!("reports/Report number {i}.txt"),
            pattern(100 + i, (i * 37) as usize),
        );
    }
    // The same names in other directories.
    want.file(&mut img, "index.html", pattern(4, 1234));
    want.file(&mut img, "css/index.html", pattern(5, 4321));
    want.dir(&mut img, "empty");
    want.dir(&mut img, "Empty Too/and nested");
    // A directory found again in another case.
    want.file(&mut img, "Docs/a.txt", b"a".to_vec());
    img.add_file("DOCS/b.txt", b"b".to_vec()).unwrap();
    want.files.insert("Docs/b.txt".into(), b"b".to_vec());
    // As deep as allowed.
    let deepest = vec!["d"; fatimg::MAX_DEPTH - 1].join("/") + "/f";
    want.file(&mut img, &deepest, b"deep".to_vec());
    (img, want)
}

#[test]
fn nested_directories_with_long_names() {
    let scratch = Scratch::new("nested");
    let (img, want) = nested_site();
    assert_eq!(img.files().len(), want.files.len());
    let layout = build_and_check(&img, &want, &scratch, "nested.img");
    assert_eq!(layout.fat_type, FatType::Fat16);
}

#[test]
fn a_file_spanning_many_clusters() {
    let scratch = Scratch::new("span");
    let mut img = FatImage::new();
    let mut want = Expect::default();
    want.file(
        &mut img,
        "big/video file.bin",
        pattern(7, 3 * 1024 * 1024 + 1),
    );
    want.file(&mut img, "big/small.txt", pattern(8, 511));
    want.file(&mut img, "big/exact.bin", pattern(9, 4096));
    let layout = build_and_check(&img, &want, &scratch, "span.img");
    assert!(
        3 * 1024 * 1024 / u64::from(layout.cluster_bytes) > 1000,
        "{layout:?}"
    );
}

/// Over 40 MiB, written to a file: FAT16 with 2 KiB clusters as chosen by
/// size, and FAT32 (forced; 512-byte clusters, about 90,000 of them).
#[test]
fn images_of_over_40_mib_fat16_and_fat32() {
    let scratch = Scratch::new("large");
    let mut img = FatImage::new();
    let mut want = Expect::default();
    want.file(&mut img, "media/first big file.bin", pattern(20, 20 << 20));
    want.file(
        &mut img,
        "media/second big file.bin",
        pattern(21, (15 << 20) + 3),
    );
    want.file(&mut img, "media/third.bin", pattern(22, (7 << 20) - 5));
    for i in 0..20 {
        want.file(
            &mut img,
            &format!("pages/page {i}.html"),
            pattern(30 + i, 3000),
        );
    }
    want.dir(&mut img, "uploads");
    assert!(img.total_bytes() > 42 << 20);
    for (fat_type, name) in [(None, "large16.img"), (Some(FatType::Fat32), "large32.img")] {
        img.set_fat_type(fat_type);
        let path = scratch.path(name);
        let start = Instant::now();
        let layout = img.write_file(&path).unwrap();
        eprintln!("{name}: {layout:?}, written in {:?}", start.elapsed());
        match fat_type {
            None => {
                assert_eq!(layout.fat_type, FatType::Fat16);
                assert_eq!(layout.cluster_bytes, 2048);
            }
            Some(_) => {
                assert_eq!(layout.fat_type, FatType::Fat32);
                assert_eq!(layout.cluster_bytes, 512);
                assert!(layout.clusters > 65_525);
            }
        }
        check_with_tools(&path, &layout, &want);
        // The sparse file and the image in memory are the same.
        if fat_type.is_some() {
            same(name, &std::fs::read(&path).unwrap(), &img.build().unwrap());
        }
        std::fs::remove_file(&path).unwrap();
    }
}

/// Root directories of thousands of entries: FAT16's fixed one made larger,
/// FAT32's spanning many clusters.
#[test]
fn a_crowded_root_directory() {
    let scratch = Scratch::new("crowded");
    let mut img = FatImage::new();
    let mut want = Expect::default();
    for i in 0..700 {
        // 3 entries each: two long-name entries and the alias.
        want.file(&mut img, &format!("File number {i}.txt"), pattern(i, 10));
    }
    want.dir(&mut img, "a directory too");
    for (fat_type, name) in [
        (None, "crowded16.img"),
        (Some(FatType::Fat32), "crowded32.img"),
    ] {
        img.set_fat_type(fat_type);
        let layout = img.layout().unwrap();
        let path = scratch.path(name);
        img.write_file(&path).unwrap();
        match fat_type {
            None => assert!(layout.root_entries > 2100, "{layout:?}"),
            Some(_) => assert_eq!(layout.root_entries, 0),
        }
        check_sampled(&path, &layout, &want, 37);
    }
}

#[test]
fn building_50_mib_is_fast() {
    let mut img = FatImage::new();
    for i in 0..50 {
        img.add_file(
            &format!("dir {}/file {i}.bin", i % 5),
            vec![i as u8; 1 << 20],
        )
        .unwrap();
    }
    let start = Instant::now();
    let bytes = img.build().unwrap();
    let took = start.elapsed();
    eprintln!("50 MiB image ({} bytes) built in {took:?}", bytes.len());
    // Well under a second in release; leave room for a loaded machine.
    assert!(took.as_secs_f64() < 5.0, "{took:?}");
}

/// A tree too large for one image, split in two; each image valid, each
/// file in exactly one, the directories recreated where needed.
#[test]
fn a_tree_split_into_two_images() {
    let scratch = Scratch::new("split");
    let mut files = Vec::new();
    for i in 0..12u64 {
        let dir = ["assets/images", "assets/Fonts and Things", "pages"][i as usize % 3];
        files.push((
            format!("{dir}/file number {i}.dat"),
            pattern(200 + i, 400_000),
        ));
    }
    files.push(("index.html".into(), pattern(300, 5000)));
    let max_bytes = 4 << 20;
    let images = fatimg::split(files.clone(), max_bytes).unwrap();
    assert_eq!(images.len(), 2, "{images:?}");
    let mut seen = BTreeMap::new();
    for (n, img) in images.iter().enumerate() {
        let mut want = Expect::default();
        for (path, _) in img.files() {
            let data = files.iter().find(|(p, _)| *p == path).unwrap().1.clone();
            want.parents(&path);
            want.files.insert(path.clone(), data);
            assert!(seen.insert(path, n).is_none(), "in one image only");
        }
        let layout = build_and_check(img, &want, &scratch, &format!("part{n}.img"));
        assert!(layout.image_bytes <= max_bytes, "{layout:?}");
    }
    assert_eq!(seen.len(), files.len(), "every file somewhere");

    // A file that fits in no image.
    let err = fatimg::split([("huge/file.bin", vec![0; 5 << 20])], max_bytes).unwrap_err();
    assert!(
        matches!(&err, FatError::DoesNotFit { path, .. } if path == "huge/file.bin"),
        "{err}"
    );
    assert!(err.to_string().contains("huge/file.bin"), "{err}");

    // Growing instead: the large file gets an image of its own, larger
    // than the limit; the small ones share one within it. Both valid.
    let mut all = FatImage::new();
    all.add_file("huge/file.bin", pattern(7, 5 << 20)).unwrap();
    all.add_file("index.html", pattern(8, 5000)).unwrap();
    all.add_file("a.css", pattern(9, 700)).unwrap();
    let images = all.split_growing(max_bytes).unwrap();
    assert_eq!(images.len(), 2, "{images:?}");
    let sizes: Vec<u64> = images
        .iter()
        .map(|i| i.layout().unwrap().image_bytes)
        .collect();
    let big = sizes.iter().position(|b| *b > max_bytes).unwrap();
    assert!(sizes[1 - big] <= max_bytes, "{sizes:?}");
    assert_eq!(
        images[big].files(),
        [("huge/file.bin".to_string(), 5 << 20)]
    );
    for (n, img) in images.iter().enumerate() {
        let mut want = Expect::default();
        for (path, _) in img.files() {
            let data = match path.as_str() {
                "huge/file.bin" => pattern(7, 5 << 20),
                "index.html" => pattern(8, 5000),
                _ => pattern(9, 700),
            };
            want.parents(&path);
            want.files.insert(path, data);
        }
        build_and_check(img, &want, &scratch, &format!("grown{n}.img"));
    }
}

#[test]
fn a_host_directory_tree() {
    let scratch = Scratch::new("tree");
    let root = scratch.path("site");
    let mut want = Expect::default();
    let mut files = vec![
        ("index.html", pattern(40, 2000)),
        ("css/site.css", pattern(41, 300)),
        ("Images and Photos/holiday photo.jpg", pattern(42, 200_000)),
        ("Images and Photos/empty.gif", Vec::new()),
        ("docs/guide/chapter one.txt", pattern(43, 9000)),
    ];
    for (path, data) in &files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
    }
    std::fs::create_dir_all(root.join("empty dir")).unwrap();
    want.dirs.insert("empty dir".into());
    // A symbolic link to a file is followed.
    std::os::unix::fs::symlink("index.html", root.join("home.html")).unwrap();
    files.push(("home.html", pattern(40, 2000)));
    for (path, data) in files {
        want.parents(path);
        want.files.insert(path.into(), data);
    }
    // One that leads outside the tree is left out, and said so.
    let secret = scratch.path("secret.txt");
    std::fs::write(&secret, b"not for the site").unwrap();
    std::os::unix::fs::symlink(&secret, root.join("docs/leak.txt")).unwrap();
    let mut img = FatImage::new();
    let outside = img.add_dir_tree(&root).unwrap();
    assert_eq!(outside.len(), 1, "{outside:?}");
    assert_eq!(outside[0].path, "docs/leak.txt");
    assert!(outside[0].to_string().contains("outside the directory"));
    build_and_check(&img, &want, &scratch, "tree.img");
    std::fs::remove_file(root.join("docs/leak.txt")).unwrap();

    // A file that changes size after it was added.
    std::fs::write(root.join("css/site.css"), pattern(41, 301)).unwrap();
    let err = img.build().unwrap_err();
    assert!(matches!(err, FatError::Changed { .. }), "{err}");
    assert!(err.to_string().contains("site.css"), "{err}");

    // A symbolic link back up the tree.
    std::os::unix::fs::symlink("..", root.join("docs/up")).unwrap();
    let err = FatImage::new().add_dir_tree(&root).unwrap_err();
    assert!(matches!(err, FatError::SymlinkLoop { .. }), "{err}");
    assert!(err.to_string().contains("docs/up"), "{err}");
    std::fs::remove_file(root.join("docs/up")).unwrap();

    // A dangling one.
    std::os::unix::fs::symlink("nowhere", root.join("dangling")).unwrap();
    let err = FatImage::new().add_dir_tree(&root).unwrap_err();
    assert!(matches!(err, FatError::Io { .. }), "{err}");
    assert!(err.to_string().contains("dangling"), "{err}");
}

#[test]
fn names_and_paths_fat_cannot_hold() {
    let mut img = FatImage::new();
    img.add_file("Docs/a.txt", vec![1]).unwrap();
    let long = "x".repeat(256);
    // 128 UTF-16 units, which FAT holds; 256 bytes, which fatfs refuses.
    let accented = "é".repeat(128);
    let deep = vec!["d"; fatimg::MAX_DEPTH + 1].join("/");
    let long_path = vec!["abcdefghij"; 24].join("/");
    let bad_char = |name: &str, c| NameError::BadChar {
        name: name.into(),
        c,
    };
    let trailing = |name: &str| NameError::TrailingDotOrSpace { name: name.into() };
    let dots = |name: &str| NameError::Dots { name: name.into() };
    for (path, culprit, why) in [
        ("a:b.txt", "a:b.txt", bad_char("a:b.txt", ':')),
        ("what?.txt", "what?.txt", bad_char("what?.txt", '?')),
        ("tab\there", "tab\\there", bad_char("tab\there", '\t')),
        ("dir/trailing.", "dir/trailing.", trailing("trailing.")),
        (
            "trailing space ",
            "trailing space ",
            trailing("trailing space "),
        ),
        ("a//b", "a//b", NameError::EmptyName),
        ("a/./b", "a/./b", dots(".")),
        ("a/../b", "a/../b", dots("..")),
        ("", "", NameError::EmptyPath),
        (
            "back\\slash",
            "back\\\\slash",
            bad_char("back\\slash", '\\'),
        ),
        (
            long.as_str(),
            long.as_str(),
            NameError::TooLong {
                name: long.clone(),
                units: 256,
            },
        ),
        (
            "crab 🦀.rs",
            "crab 🦀.rs",
            NameError::OutsideBmp {
                name: "crab 🦀.rs".into(),
                c: '🦀',
            },
        ),
        (
            accented.as_str(),
            accented.as_str(),
            NameError::TooManyBytes {
                name: accented.clone(),
                bytes: 256,
            },
        ),
        ("del\x7f", "del", bad_char("del\x7f", '\x7f')),
    ] {
        let err = img.add_file(path, vec![]).unwrap_err();
        assert!(
            matches!(&err, FatError::InvalidName { path: p, reason } if p == path && *reason == why),
            "{path:?}: {err:?}"
        );
        let shown = err.to_string();
        assert!(
            shown.contains(culprit) || shown.contains(path),
            "{path:?}: {shown}"
        );
    }
    let err = img.add_file(&deep, vec![]).unwrap_err();
    assert!(matches!(err, FatError::TooDeep { depth: 33, .. }), "{err}");
    assert!(err.to_string().contains("33"), "{err}");
    let err = img.add_file(&long_path, vec![]).unwrap_err();
    assert!(
        matches!(err, FatError::PathTooLong { units: 263, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("255"), "{err}");
    // Names compare case-insensitively.
    let err = img.add_file("DOCS/A.TXT", vec![]).unwrap_err();
    assert!(matches!(err, FatError::AlreadyExists { .. }), "{err}");
    assert!(err.to_string().contains("DOCS/A.TXT"), "{err}");
    let err = img.add_file("docs/a.txt/inner", vec![]).unwrap_err();
    assert!(matches!(err, FatError::NotADirectory { .. }), "{err}");
    let err = img.add_dir("docs/A.txt").unwrap_err();
    assert!(matches!(err, FatError::AlreadyExists { .. }), "{err}");
    // Existing directories may be added again.
    img.add_dir("docs").unwrap();
    assert!(img.set_label("much too long").is_err());
    assert!(img.set_label("é").is_err());
    // Nothing of the above was added.
    assert_eq!(img.files(), vec![("Docs/a.txt".to_string(), 1)]);
    assert_eq!(img.dirs(), vec!["Docs".to_string()]);
    // A directory holds at most 65,536 entries, `.` and `..` included
    // (four: fatfs writes them with long-name entries, which the image
    // then frees), each of these names two.
    let mut full = FatImage::new();
    for i in 0..32_766 {
        full.add_file(&format!("full/F{i}"), Vec::new()).unwrap();
    }
    let err = full.add_file("full/one more", Vec::new()).unwrap_err();
    assert!(
        matches!(
            err,
            FatError::DirectoryFull {
                entries: 65_538,
                max: 65_536,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("`full`"), "{err}");
    // A forced FAT16 cannot hold 3 GiB; the error says why.
    let mut big = FatImage::new();
    big.set_fat_type(Some(FatType::Fat16));
    big.set_free_space(3 << 30);
    let err = big.layout().unwrap_err();
    assert!(matches!(err, FatError::VolumeTooLarge { .. }), "{err}");
    assert!(err.to_string().contains("FAT16"), "{err}");
}
