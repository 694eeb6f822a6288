//! `xenpal_drivers::fat`: corrupt FAT images found by the `fat` fuzz target
//! (`fuzz/`), each of which made `embedded_sdmmc` panic or hang, are
//! refused with a typed error before `embedded_sdmmc` reads them, while a
//! valid image (made by the simulator's image builder) lists in full.

use core::cell::RefCell;
use embedded_sdmmc::{
    Block, BlockCount, BlockDevice, BlockIdx, Mode, TimeSource, Timestamp, VolumeIdx, VolumeManager,
};
use xenpal_drivers::fat::{self, FatError, FatKind};
use xenpal_fatimg::FatImage;

/// A disk's error.
#[derive(Debug)]
struct Oops(&'static str);

impl core::fmt::Display for Oops {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Oops {}

/// A disk in memory.
struct Mem(RefCell<Vec<u8>>);

impl BlockDevice for Mem {
    type Error = Oops;

    fn read(&self, blocks: &mut [Block], start: BlockIdx) -> Result<(), Self::Error> {
        let d = self.0.borrow();
        for (k, b) in blocks.iter_mut().enumerate() {
            let at = (start.0 as usize + k) * 512;
            let src = d.get(at..at + 512).ok_or(Oops("read past the end"))?;
            b.contents.copy_from_slice(src);
        }
        Ok(())
    }

    fn write(&self, _blocks: &[Block], _start: BlockIdx) -> Result<(), Self::Error> {
        Err(Oops("read-only"))
    }

    fn num_blocks(&self) -> Result<BlockCount, Self::Error> {
        Ok(BlockCount((self.0.borrow().len() / 512) as u32))
    }
}

impl BlockDevice for &Mem {
    type Error = Oops;

    fn read(&self, blocks: &mut [Block], start: BlockIdx) -> Result<(), Self::Error> {
        (*self).read(blocks, start)
    }

    fn write(&self, blocks: &[Block], start: BlockIdx) -> Result<(), Self::Error> {
        (*self).write(blocks, start)
    }

    fn num_blocks(&self) -> Result<BlockCount, Self::Error> {
        (*self).num_blocks()
    }
}

struct Clock;

impl TimeSource for Clock {
    fn get_timestamp(&self) -> Timestamp {
        Timestamp::from_calendar(2024, 1, 1, 0, 0, 0).expect("a date")
    }
}

fn image() -> Vec<u8> {
    let mut img = FatImage::new();
    img.add_file("index.html", b"<h1>hello</h1>".to_vec())
        .unwrap();
    img.add_file("docs/A long name.txt", vec![b'x'; 5000])
        .unwrap();
    img.add_file("BIG.BIN", vec![7; 70_000]).unwrap();
    img.add_file("empty.txt", Vec::new()).unwrap();
    img.build().unwrap()
}

fn u16_at(img: &[u8], at: usize) -> usize {
    usize::from(u16::from_le_bytes([img[at], img[at + 1]]))
}

/// Byte offsets of the first FAT and of the (FAT16) root directory.
fn layout(img: &[u8]) -> (usize, usize) {
    let reserved = u16_at(img, 14);
    let fats = usize::from(img[16]);
    let fat_size = u16_at(img, 22);
    (reserved * 512, (reserved + fats * fat_size) * 512)
}

/// The root directory entry whose 8.3 name starts with `prefix`.
fn root_entry(img: &[u8], prefix: &[u8]) -> usize {
    let (_, root) = layout(img);
    (0..512)
        .map(|k| root + 32 * k)
        .find(|&at| img[at..].starts_with(prefix) && img[at + 11] != 0x0f)
        .expect("the entry exists")
}

/// What the site does with a disk: check the volume, open it, list every
/// directory through the checks, open every file. Returns the names of
/// the files read, or the check's error.
fn read_all(img: Vec<u8>) -> Result<(Vec<String>, usize), FatError> {
    let disk = Mem(RefCell::new(img));
    let vol = fat::check_volume(&disk, 0)?;
    let vm: VolumeManager<&Mem, Clock, 4, 4, 1> = VolumeManager::new_with_limits(&disk, Clock, 0);
    let raw = vm
        .open_raw_volume(VolumeIdx(0))
        .map_err(|e| FatError::Directory(format!("{e:?}")))?;
    let root = vm
        .open_root_dir(raw)
        .map_err(|e| FatError::Directory(format!("{e:?}")))?
        .to_directory(&vm);
    let mut files = Vec::new();
    let mut refused = 0;
    let mut dirs = vec![(root, 0)];
    while let Some((dir, depth)) = dirs.pop() {
        let (listed, skipped, _) = fat::list_dir(&dir, &vol, &disk, 1000)?;
        refused += skipped;
        for l in listed {
            let name = l.entry.name.to_string();
            if l.entry.attributes.is_directory() {
                if depth < 4 {
                    let sub = dir.open_dir(name.as_str()).expect("a checked directory");
                    dirs.push((sub, depth + 1));
                }
            } else {
                let f = dir
                    .open_file_in_dir(name.as_str(), Mode::ReadOnly)
                    .expect("a checked file");
                let mut buf = [0u8; 4096];
                while !f.is_eof() {
                    if f.read(&mut buf).expect("a checked chain") == 0 {
                        break;
                    }
                }
                files.push(name);
            }
        }
    }
    files.sort();
    Ok((files, refused))
}

#[test]
fn a_valid_image_lists_in_full() {
    let img = image();
    let vol = fat::check_volume(&Mem(RefCell::new(img.clone())), 0).unwrap();
    assert_eq!(vol.kind, FatKind::Fat16);
    let (files, refused) = read_all(img).unwrap();
    assert_eq!(refused, 0);
    assert_eq!(
        files,
        ["ALONGN~1.TXT", "BIG.BIN", "EMPTY.TXT", "INDEX~1.HTM"],
        "{files:?}"
    );
}

/// Fuzz finding: 0 sectors per cluster made `embedded_sdmmc` divide by zero.
#[test]
fn zero_sectors_per_cluster_is_refused() {
    let mut img = image();
    img[13] = 0;
    assert_eq!(
        read_all(img),
        Err(FatError::BootSector(
            "sectors per cluster is not a power of two"
        ))
    );
}

/// Fuzz finding: FATs larger than the volume underflowed its data-area
/// arithmetic.
#[test]
fn fats_larger_than_the_volume_are_refused() {
    let mut img = image();
    img[22..24].copy_from_slice(&0xffffu16.to_le_bytes());
    assert!(matches!(read_all(img), Err(FatError::BootSector(_))));
}

/// Fuzz finding: a file entry starting at cluster 0 or 1 underflowed its
/// cluster-to-block arithmetic.
#[test]
fn a_file_at_cluster_zero_is_left_out() {
    for cluster in [0u16, 1] {
        let mut img = image();
        let at = root_entry(&img, b"BIG     BIN");
        img[at + 26..at + 28].copy_from_slice(&cluster.to_le_bytes());
        let (files, refused) = read_all(img).unwrap();
        assert_eq!(refused, 1, "cluster {cluster}");
        assert!(!files.contains(&"BIG.BIN".to_string()), "{files:?}");
    }
}

/// A file whose chain is shorter than its size, or leaves the volume.
#[test]
fn a_broken_chain_is_left_out() {
    let mut img = image();
    let at = root_entry(&img, b"BIG     BIN");
    let first = u16_at(&img, at + 26);
    let (fat0, _) = layout(&img);
    // End the chain after its first cluster: too short for 70,000 bytes.
    img[fat0 + 2 * first..fat0 + 2 * first + 2].copy_from_slice(&0xffffu16.to_le_bytes());
    let (files, refused) = read_all(img.clone()).unwrap();
    assert_eq!((files.len(), refused), (3, 1));
    // Point it outside the volume.
    img[fat0 + 2 * first..fat0 + 2 * first + 2].copy_from_slice(&0xfff0u16.to_le_bytes());
    let (files, refused) = read_all(img).unwrap();
    assert_eq!((files.len(), refused), (3, 1));
}

/// A directory whose chain loops would be listed forever.
#[test]
fn a_looping_directory_is_left_out() {
    let mut img = image();
    let at = root_entry(&img, b"DOCS       ");
    let first = u16_at(&img, at + 26);
    let (fat0, _) = layout(&img);
    img[fat0 + 2 * first..fat0 + 2 * first + 2].copy_from_slice(&(first as u16).to_le_bytes());
    let (files, refused) = read_all(img).unwrap();
    assert_eq!(refused, 1);
    assert_eq!(files.len(), 3, "{files:?}");
}

/// Two entries with the same short name: opening by name would open the
/// first, whichever was checked.
#[test]
fn duplicate_short_names_are_left_out() {
    let mut img = image();
    let big = root_entry(&img, b"BIG     BIN");
    let empty = root_entry(&img, b"EMPTY   TXT");
    let name: Vec<u8> = img[big..big + 11].to_vec();
    img[empty..empty + 11].copy_from_slice(&name);
    let (files, refused) = read_all(img).unwrap();
    assert_eq!(refused, 2);
    assert!(!files.contains(&"BIG.BIN".to_string()), "{files:?}");
}

#[test]
fn no_partition_table_is_refused() {
    let mut img = image();
    img[510] = 0;
    assert_eq!(read_all(img), Err(FatError::Partition("no MBR signature")));
}
