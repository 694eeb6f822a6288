//! A FAT image builder: pack a directory tree, or files held in memory,
//! into a FAT16 or FAT32 disk image on the host, with no external tools.
//!
//! The simulator's demos serve a user's own directory to a guest: pack it
//! with [`FatImage`], hand the bytes to blkback ([`Disk::memory`]) or write
//! them to a file ([`Disk::file`]), and the guest reads it through blkfront
//! and `embedded-sdmmc`.
//!
//! ```
//! use xenpal_sim::fatimg::{FatImage, FatType};
//!
//! let mut img = FatImage::new();
//! img.add_file("index.html", b"<h1>hello</h1>".to_vec()).unwrap();
//! img.add_file("css/Site Style.css", b"h1 { color: red }".to_vec()).unwrap();
//! let layout = img.layout().unwrap();
//! assert_eq!(layout.fat_type, FatType::Fat16);
//! let bytes = img.build().unwrap();
//! assert_eq!(bytes.len() as u64, layout.image_bytes);
//! assert_eq!(&bytes[510..512], &[0x55, 0xAA]);
//! ```
//!
//! # The image
//!
//! - **Partitioning.** `embedded-sdmmc` opens volumes only from an MBR
//!   partition table (it reads block 0, wants the `55 AA` signature and a
//!   partition of type 0x04, 0x06, 0x0B, 0x0C or 0x0E). As with
//!   `mkfs.fat --mbr=y`, the FAT boot sector *is* that MBR: its partition
//!   table has one active entry that starts at sector 0 and spans the whole
//!   image (type 0x04 for FAT16 under 32 MiB, 0x06 above, 0x0C for FAT32).
//!   So the partition offset is 0, and tools that expect a bare file system
//!   (`fsck.fat`, `mtools`, Linux's `mount -o loop`) read the image as is.
//! - **FAT type and cluster size**, as `mkfs.fat` chooses them, except that
//!   FAT12 is never used (`embedded-sdmmc` cannot read it): FAT16 while the
//!   volume stays under 512 MiB, with 2 KiB clusters, doubled as needed to
//!   stay under 65,525 clusters; small payloads that would leave fewer than
//!   4,085 clusters (FAT12 territory) get 1 KiB or 512-byte clusters instead,
//!   and the volume is padded to 4,096 clusters (about 2.1 MiB: the smallest
//!   image). From 512 MiB on, FAT32 with `mkfs.fat`'s (and Microsoft's)
//!   cluster sizes: 512 bytes up to 260 MiB (when FAT32 is forced), 4 KiB up
//!   to 8 GiB, 8 KiB to 16 GiB, 16 KiB to 32 GiB, 32 KiB beyond. FAT32
//!   volumes have at least 65,600 clusters (about 33 MiB with 512-byte
//!   clusters). Cluster counts keep clear of the FAT12/16/32 boundaries, so
//!   every implementation agrees on the type. [`FatImage::set_fat_type`]
//!   forces a type.
//! - **Size**: the payload (files and directories, cluster-rounded), plus
//!   free space ([`FatImage::set_free_space`]; by default 1/16 of the payload
//!   plus 256 KiB), plus the boot sectors and two FATs, rounded up to 16 KiB.
//!   The data area is aligned to the cluster size (at least 4 KiB).
//! - **Directories** start with `.` and `..`; every name that is not
//!   already an upper-case 8.3 name gets VFAT long-name entries (UTF-16,
//!   checksummed, in the order the specification gives) before a unique
//!   8.3 alias (`SITEMA~1.HTM`; characters that 8.3 names cannot hold become
//!   `_`). Entries are sorted by name, case-insensitively. The FAT16 root
//!   directory has 512 entries, more if needed.
//! - **Contents**: every file and directory is contiguous. Directories come
//!   first (breadth-first), then files in directory order.
//! - **Everything else is fixed**: timestamps are 2024-01-01 12:00:00, the
//!   volume serial number is a hash of the names and sizes, the OEM name is
//!   `MSWIN4.1`, media 0xF8, 2 FATs, geometry 64 heads × 32 sectors, so the
//!   same input gives the same image, byte for byte.
//!
//! # Names
//!
//! Paths use `/`. A name is 1 to [`MAX_NAME_UNITS`] UTF-16 units, not `.`
//! or `..`, without control characters or any of `" * / : < > ? \ |`, and
//! does not end with a dot or a space (FAT drops those). Names compare
//! case-insensitively, as on FAT: `Docs/a.txt` goes into an existing `DOCS`,
//! and `A.TXT` next to `a.txt` is refused. Paths are at most
//! [`MAX_PATH_UNITS`] units and [`MAX_DEPTH`] components.
//!
//! Characters outside the Basic Multilingual Plane (emoji) are stored as
//! UTF-16 surrogate pairs, as Windows and Linux store them.
//!
//! What readers make of valid names varies: `embedded-sdmmc` 0.10
//! reassembles long names of at most 19 entries (247 units) and, while it
//! lists names with surrogate pairs, cannot open a file by such a name; a
//! guest opens those by their 8.3 alias. mtools 4.0 shows each half of a
//! surrogate pair as `_`. Windows refuses device names (`CON`, `NUL.txt`),
//! which FAT itself holds.
//!
//! [`Disk::memory`]: crate::backends::blk::Disk::memory
//! [`Disk::file`]: crate::backends::blk::Disk::file

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// The longest name, in UTF-16 code units (VFAT's limit).
pub const MAX_NAME_UNITS: usize = 255;
/// The longest path in an image, in UTF-16 code units, `/` separators
/// included (as Windows' `MAX_PATH`, less the drive and terminator).
pub const MAX_PATH_UNITS: usize = 255;
/// The most components in a path, the file's own name included.
pub const MAX_DEPTH: usize = 32;
/// The largest file: FAT records sizes in 32 bits.
pub const MAX_FILE_BYTES: u64 = 0xFFFF_FFFF;
/// The most 32-byte entries in a directory (the FAT specification's
/// limit), long-name entries and `.`/`..` included.
pub const MAX_DIR_ENTRIES: u32 = 65_536;

const SECTOR: u64 = 512;
/// Cluster sizes considered: `512 << k` for `k` in `0..CLUSTER_SIZES`.
const CLUSTER_SIZES: usize = 7;
const FAT16_MIN_CLUSTERS: u64 = 4_096;
const FAT16_MAX_CLUSTERS: u64 = 65_480;
/// The FAT16 limit proper, with no margin.
const FAT16_HARD_MAX: u64 = 65_524;
const FAT32_MIN_CLUSTERS: u64 = 65_600;
const FAT32_MAX_CLUSTERS: u64 = 0x0FFF_FF00;
/// `mkfs.fat` makes FAT32 from this volume size on.
const FAT32_FROM_BYTES: u64 = 512 << 20;
/// The most entries a FAT16 root directory may have (a multiple of 16 that
/// fits the 16-bit field).
const FAT16_MAX_ROOT: u32 = 65_520;
const HEADS: u64 = 64;
const SECTORS_PER_TRACK: u64 = 32;
/// 2024-01-01.
const DATE: u16 = ((2024 - 1980) << 9) | (1 << 5) | 1;
/// 12:00:00.
const TIME: u16 = 12 << 11;
const ATTR_VOLUME: u8 = 0x08;
const ATTR_DIR: u8 = 0x10;
const ATTR_ARCHIVE: u8 = 0x20;
const ATTR_LFN: u8 = 0x0F;
/// Characters an 8.3 name may hold besides `A-Z` and `0-9`.
const SHORT_SPECIALS: &str = "!#$%&'()-@^_`{}~";
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// A FAT type.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum FatType {
    /// FAT16: 4,096 to about 65,500 clusters of 512 bytes to 32 KiB (so at
    /// most about 2 GiB), and a fixed-size root directory.
    Fat16,
    /// FAT32: at least 65,600 clusters; the root directory is a cluster
    /// chain.
    Fat32,
}

impl fmt::Display for FatType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FatType::Fat16 => "FAT16",
            FatType::Fat32 => "FAT32",
        })
    }
}

/// Why an image cannot be made. Each error names the path or the limit at
/// fault.
#[derive(Debug)]
#[non_exhaustive]
pub enum FatError {
    /// A name FAT cannot hold.
    InvalidName {
        /// The path, as given.
        path: String,
        /// What is wrong with it.
        reason: NameError,
    },
    /// A path longer than [`MAX_PATH_UNITS`].
    PathTooLong {
        /// The path.
        path: String,
        /// Its length in UTF-16 units.
        units: usize,
    },
    /// A path with more than [`MAX_DEPTH`] components.
    TooDeep {
        /// The path.
        path: String,
        /// Its number of components.
        depth: usize,
    },
    /// A file, or a directory where a file was to go, already has this name
    /// (names compare case-insensitively).
    AlreadyExists {
        /// The path.
        path: String,
    },
    /// A file is where a directory is needed.
    NotADirectory {
        /// The file's path.
        path: String,
    },
    /// A file larger than [`MAX_FILE_BYTES`].
    FileTooLarge {
        /// The path.
        path: String,
        /// Its size.
        bytes: u64,
    },
    /// A directory with more entries than FAT allows.
    DirectoryFull {
        /// The directory (`/` for the root).
        path: String,
        /// The entries it would need (32 bytes each, long-name entries
        /// included).
        entries: u32,
        /// The most it may have.
        max: u32,
    },
    /// More data than a volume of this FAT type can hold.
    VolumeTooLarge {
        /// The FAT type.
        fat_type: FatType,
        /// The clusters the volume would need.
        clusters: u64,
        /// The most that type (and a 32-bit sector count) allows.
        max: u64,
    },
    /// [`split`]: a file (or an empty directory) that does not fit in an
    /// image of `max_bytes` even alone.
    DoesNotFit {
        /// The path.
        path: String,
        /// The smallest image that holds it, or 0 if no valid one does.
        image_bytes: u64,
        /// The limit.
        max_bytes: u64,
    },
    /// Reading a host file or directory failed.
    Io {
        /// The host path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Writing the image failed.
    Write(io::Error),
    /// A host directory that contains itself through a symbolic link.
    SymlinkLoop {
        /// The host path of the link.
        path: PathBuf,
    },
    /// A host entry that is neither a regular file nor a directory (a
    /// socket, a device, a FIFO).
    Unsupported {
        /// The host path.
        path: PathBuf,
    },
    /// A host file whose size changed after it was added.
    Changed {
        /// The host path.
        path: PathBuf,
        /// Its size when added.
        expected: u64,
        /// Its size (or the bytes read) when packed.
        found: u64,
    },
    /// A volume label FAT cannot hold.
    InvalidLabel {
        /// The label.
        label: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl fmt::Display for FatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FatError::InvalidName { path, reason } => {
                write!(f, "`{path}`: not a valid FAT name: {reason}")
            }
            FatError::PathTooLong { path, units } => write!(
                f,
                "`{path}`: path of {units} UTF-16 units, longer than the {MAX_PATH_UNITS} allowed"
            ),
            FatError::TooDeep { path, depth } => write!(
                f,
                "`{path}`: {depth} levels deep, more than the {MAX_DEPTH} allowed"
            ),
            FatError::AlreadyExists { path } => {
                write!(f, "`{path}`: already in the image (FAT names ignore case)")
            }
            FatError::NotADirectory { path } => {
                write!(f, "`{path}` is a file, and a directory is needed there")
            }
            FatError::FileTooLarge { path, bytes } => write!(
                f,
                "`{path}`: {bytes} bytes, more than FAT's largest file ({MAX_FILE_BYTES} bytes)"
            ),
            FatError::DirectoryFull { path, entries, max } => write!(
                f,
                "directory `{path}` would need {entries} entries, more than the {max} allowed"
            ),
            FatError::VolumeTooLarge {
                fat_type,
                clusters,
                max,
            } => write!(
                f,
                "the files need a {fat_type} volume of {clusters} clusters, more than the {max} possible"
            ),
            FatError::DoesNotFit {
                path,
                image_bytes,
                max_bytes,
            } => {
                if *image_bytes == 0 {
                    write!(f, "`{path}` fits in no image of at most {max_bytes} bytes")
                } else {
                    write!(
                        f,
                        "`{path}` needs an image of {image_bytes} bytes, more than the {max_bytes} allowed"
                    )
                }
            }
            FatError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            FatError::Write(e) => write!(f, "writing the image: {e}"),
            FatError::SymlinkLoop { path } => write!(
                f,
                "{}: symbolic link to a directory that contains it (a loop)",
                path.display()
            ),
            FatError::Unsupported { path } => write!(
                f,
                "{}: neither a regular file nor a directory",
                path.display()
            ),
            FatError::Changed {
                path,
                expected,
                found,
            } => write!(
                f,
                "{}: was {expected} bytes when added, now {found}",
                path.display()
            ),
            FatError::InvalidLabel { label, reason } => {
                write!(f, "volume label `{label}`: {reason}")
            }
        }
    }
}

impl std::error::Error for FatError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FatError::InvalidName { reason, .. } => Some(reason),
            FatError::Io { source, .. } => Some(source),
            FatError::Write(e) => Some(e),
            _ => None,
        }
    }
}

/// Why a path or one of its names cannot be held by FAT
/// ([`FatError::InvalidName`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameError {
    /// The path is empty (or only slashes).
    EmptyPath,
    /// An empty name: `//` in the path, or a trailing `/`.
    EmptyName,
    /// `.` or `..`, which FAT reserves.
    Dots {
        /// The name.
        name: String,
    },
    /// A name ending with a dot or a space, which FAT drops.
    TrailingDotOrSpace {
        /// The name.
        name: String,
    },
    /// A name holding a control character or one of `"*/:<>?\|`.
    BadChar {
        /// The name.
        name: String,
        /// The first such character.
        c: char,
    },
    /// A name longer than [`MAX_NAME_UNITS`] UTF-16 units.
    TooLong {
        /// The name.
        name: String,
        /// Its length in UTF-16 units.
        units: usize,
    },
    /// A host file name that is not UTF-8 (when packing a directory).
    NotUtf8,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::EmptyPath => f.write_str("the path is empty"),
            NameError::EmptyName => f.write_str("empty name (`//` or a trailing `/`)"),
            NameError::Dots { name } => write!(f, "`{name}` cannot be a name"),
            NameError::TrailingDotOrSpace { name } => {
                write!(f, "`{name}` ends with a dot or a space, which FAT drops")
            }
            NameError::BadChar { name, c } => write!(f, "`{name}` holds the character {c:?}"),
            NameError::TooLong { name, units } => write!(
                f,
                "`{name}` is {units} UTF-16 units long, more than {MAX_NAME_UNITS}"
            ),
            NameError::NotUtf8 => f.write_str("the host name is not UTF-8"),
        }
    }
}

impl std::error::Error for NameError {}

/// Where a built image's parts are, as [`FatImage::layout`] computes them.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// FAT16 or FAT32.
    pub fat_type: FatType,
    /// Bytes per cluster (512 to 32,768); sectors are 512 bytes.
    pub cluster_bytes: u32,
    /// Data clusters in the volume.
    pub clusters: u32,
    /// Clusters the files and directories use; the rest are free.
    pub used_clusters: u32,
    /// Reserved sectors before the first FAT (boot sector, FSInfo and
    /// backups on FAT32, alignment).
    pub reserved_sectors: u32,
    /// Sectors per FAT (there are two).
    pub fat_sectors: u32,
    /// Entries of the fixed FAT16 root directory; 0 on FAT32.
    pub root_entries: u32,
    /// Byte offset of the first data cluster (cluster 2).
    pub data_offset: u64,
    /// Byte offset of the partition: always 0, as the boot sector doubles as
    /// the MBR (see the [module documentation](self)).
    pub partition_offset: u64,
    /// The image's size in bytes.
    pub image_bytes: u64,
}

/// A symbolic link [`FatImage::add_dir_tree`] left out because it leads
/// outside the directory being added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutsideLink {
    /// Where it is, relative to the directory (`docs/secrets`).
    pub path: String,
    /// Where it leads (resolved).
    pub target: PathBuf,
}

impl fmt::Display for OutsideLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: a symbolic link to {}, outside the directory: left out",
            self.path,
            self.target.display()
        )
    }
}

/// A FAT image being put together: add files and directories, then
/// [`build`](FatImage::build) or [`write_to`](FatImage::write_to).
///
/// Files added with [`add_file`](FatImage::add_file) are held in memory;
/// files found by [`add_dir_tree`](FatImage::add_dir_tree) are read from
/// the host when the image is written.
pub struct FatImage {
    root: Dir,
    census: Census,
    opts: Options,
}

impl fmt::Debug for FatImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FatImage")
            .field("files", &self.census.files)
            .field("payload_bytes", &self.census.payload)
            .field("fat_type", &self.opts.fat_type)
            .field("free_space", &self.opts.free_space)
            .finish_non_exhaustive()
    }
}

impl Default for FatImage {
    fn default() -> Self {
        FatImage::new()
    }
}

#[derive(Clone, Debug, Default)]
struct Options {
    label: Option<[u8; 11]>,
    fat_type: Option<FatType>,
    free_space: Option<u64>,
}

/// What the volume must hold, kept up to date as entries are added so that
/// sizing an image (and [`split`]'s what-ifs) need not walk the tree.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
struct Census {
    /// Bytes of file contents.
    payload: u64,
    /// Files.
    files: u64,
    /// Clusters the files need, for each cluster size.
    file_clusters: [u64; CLUSTER_SIZES],
    /// Clusters the directories other than the root need, for each cluster
    /// size.
    dir_clusters: [u64; CLUSTER_SIZES],
    /// Entries in the root directory (without the volume label).
    root_entries: u32,
}

struct Dir {
    name: String,
    /// 32-byte entries of this directory's contents: `.` and `..` (except
    /// in the root), and for each child its long-name entries and its 8.3
    /// entry.
    entries: u32,
    /// By case-folded name.
    children: BTreeMap<String, Node>,
}

struct File {
    name: String,
    len: u64,
    source: Source,
}

enum Node {
    Dir(Dir),
    File(File),
}

enum Source {
    Memory(Vec<u8>),
    Host(PathBuf),
}

enum Leaf {
    Dir,
    File { len: u64, source: Source },
}

#[derive(Copy, Clone)]
enum LeafKind {
    Dir,
    File(u64),
}

impl Leaf {
    fn kind(&self) -> LeafKind {
        match self {
            Leaf::Dir => LeafKind::Dir,
            Leaf::File { len, .. } => LeafKind::File(*len),
        }
    }
}

impl Dir {
    fn new(name: &str, entries: u32) -> Dir {
        Dir {
            name: name.to_string(),
            entries,
            children: BTreeMap::new(),
        }
    }
}

fn cluster_bytes(k: usize) -> u64 {
    SECTOR << k
}

/// Clusters a directory of `entries` entries takes (at least one).
fn dir_clusters(entries: u32, k: usize) -> u64 {
    (u64::from(entries) * 32).div_ceil(cluster_bytes(k)).max(1)
}

/// A name in FAT's case-insensitive form.
fn fold(name: &str) -> String {
    name.chars().flat_map(char::to_uppercase).collect()
}

impl FatImage {
    /// An empty image: no files, no label, the FAT type chosen by size.
    pub fn new() -> Self {
        FatImage {
            root: Dir::new("", 0),
            census: Census::default(),
            opts: Options::default(),
        }
    }

    /// Add a file at `path` (`css/site.css`; a leading `/` is ignored),
    /// creating its directories.
    ///
    /// Errors: a name FAT cannot hold, a path too long or too deep, a file
    /// or directory of that name (in any case) already there, a file where
    /// a directory is needed, a file over [`MAX_FILE_BYTES`], a full
    /// directory. The image is unchanged on error.
    pub fn add_file(&mut self, path: &str, data: Vec<u8>) -> Result<(), FatError> {
        let len = data.len() as u64;
        self.insert(
            path,
            Leaf::File {
                len,
                source: Source::Memory(data),
            },
        )
    }

    /// Add a directory at `path` and its parents; nothing happens if it
    /// exists. Needed only for empty directories: [`add_file`] makes the
    /// others.
    ///
    /// Errors: as [`add_file`].
    ///
    /// [`add_file`]: FatImage::add_file
    pub fn add_dir(&mut self, path: &str) -> Result<(), FatError> {
        self.insert(path, Leaf::Dir)
    }

    /// Add the contents of the host directory `root` (its files and
    /// subdirectories, empty ones too) at the top of the image. Symbolic
    /// links are followed while they stay inside `root`; one that leads
    /// outside it is left out and returned, so the caller can say so (a
    /// site must not publish `/etc` through a stray link). Files are only
    /// looked at now (their sizes) and read when the image is written.
    ///
    /// Errors: anything [`add_file`] refuses, a host name that is not
    /// UTF-8, an I/O error (a dangling symbolic link, for one), a symbolic
    /// link that loops back to a directory containing it, an entry that is
    /// neither a file nor a directory. Entries added before the error stay
    /// in the image.
    ///
    /// [`add_file`]: FatImage::add_file
    pub fn add_dir_tree(&mut self, root: &Path) -> Result<Vec<OutsideLink>, FatError> {
        let io_err = |source| FatError::Io {
            path: root.to_path_buf(),
            source,
        };
        let meta = fs::metadata(root).map_err(io_err)?;
        if !meta.is_dir() {
            return Err(FatError::Io {
                path: root.to_path_buf(),
                source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
            });
        }
        let canonical = fs::canonicalize(root).map_err(io_err)?;
        let mut outside = Vec::new();
        self.walk(root, "", &mut vec![canonical], &mut outside)?;
        Ok(outside)
    }

    fn walk(
        &mut self,
        dir: &Path,
        prefix: &str,
        ancestors: &mut Vec<PathBuf>,
        outside: &mut Vec<OutsideLink>,
    ) -> Result<(), FatError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| FatError::Io { path, source }
        };
        let mut entries = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            let host = entry.path();
            let name = entry
                .file_name()
                .into_string()
                .map_err(|raw| FatError::InvalidName {
                    path: join(prefix, &raw.to_string_lossy()),
                    reason: NameError::NotUtf8,
                })?;
            entries.push((name, host));
        }
        entries.sort();
        for (name, host) in entries {
            let rel = join(prefix, &name);
            let link = fs::symlink_metadata(&host).map_err(io_err(&host))?;
            if link.file_type().is_symlink() {
                let target = fs::canonicalize(&host).map_err(io_err(&host))?;
                if !target.starts_with(&ancestors[0]) {
                    outside.push(OutsideLink { path: rel, target });
                    continue;
                }
            }
            let meta = fs::metadata(&host).map_err(io_err(&host))?;
            if meta.is_dir() {
                let canonical = fs::canonicalize(&host).map_err(io_err(&host))?;
                if ancestors.contains(&canonical) {
                    return Err(FatError::SymlinkLoop { path: host });
                }
                self.add_dir(&rel)?;
                ancestors.push(canonical);
                self.walk(&host, &rel, ancestors, outside)?;
                ancestors.pop();
            } else if meta.is_file() {
                self.insert(
                    &rel,
                    Leaf::File {
                        len: meta.len(),
                        source: Source::Host(host),
                    },
                )?;
            } else {
                return Err(FatError::Unsupported { path: host });
            }
        }
        Ok(())
    }

    /// Set the volume label: 1 to 11 characters, ASCII letters (made upper
    /// case), digits, spaces (not first) and `! # $ % & ' ( ) - @ ^ _ `` ` ``
    /// { } ~`. Without one the boot sector says `NO NAME`.
    pub fn set_label(&mut self, label: &str) -> Result<(), FatError> {
        let bad = |reason| FatError::InvalidLabel {
            label: label.to_string(),
            reason,
        };
        if label.is_empty() || label.len() > 11 {
            return Err(bad("must be 1 to 11 characters"));
        }
        if label.starts_with(' ') {
            return Err(bad("must not start with a space"));
        }
        let mut out = [b' '; 11];
        for (o, c) in out.iter_mut().zip(label.chars()) {
            *o = match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' | ' ' => c.to_ascii_uppercase() as u8,
                c if SHORT_SPECIALS.contains(c) => c as u8,
                _ => {
                    return Err(bad(
                        "only ASCII letters, digits, spaces and !#$%&'()-@^_`{}~ are allowed",
                    ));
                }
            };
        }
        self.opts.label = Some(out);
        Ok(())
    }

    /// Force the FAT type (`None`: choose by size, the default). FAT32 makes
    /// images of at least about 33 MiB; FAT16 holds at most about 2 GiB.
    pub fn set_fat_type(&mut self, fat_type: Option<FatType>) {
        self.opts.fat_type = fat_type;
    }

    /// Leave at least `bytes` free in the volume (rounded up to clusters)
    /// for the guest to write. The default is 1/16 of the payload plus
    /// 256 KiB. Small volumes have more, as FAT16 needs 4,096 clusters.
    pub fn set_free_space(&mut self, bytes: u64) {
        self.opts.free_space = Some(bytes);
    }

    /// The payload: the sum of the files' sizes.
    pub fn total_bytes(&self) -> u64 {
        self.census.payload
    }

    /// The number of files.
    pub fn file_count(&self) -> u64 {
        self.census.files
    }

    /// The files' paths and sizes, in path order: depth first, each
    /// directory's entries sorted case-insensitively. Names are spelled as
    /// added (for a directory, as first added).
    pub fn files(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        visit(&self.root, "", &mut |path, node| {
            if let Node::File(f) = node {
                out.push((path.to_string(), f.len));
            }
        });
        out
    }

    /// The directories' paths, in path order (as [`files`](FatImage::files);
    /// parents before their contents).
    pub fn dirs(&self) -> Vec<String> {
        let mut out = Vec::new();
        visit(&self.root, "", &mut |path, node| {
            if let Node::Dir(_) = node {
                out.push(path.to_string());
            }
        });
        out
    }

    /// The layout [`build`](FatImage::build) will use: FAT type, cluster
    /// size, where things are, the image's size.
    ///
    /// Errors: [`FatError::VolumeTooLarge`], or [`FatError::DirectoryFull`]
    /// for a FAT16 root directory over 65,520 entries.
    pub fn layout(&self) -> Result<Layout, FatError> {
        compute_layout(&self.census, &self.opts)
    }

    /// The image, in memory.
    ///
    /// Errors: as [`layout`](FatImage::layout), and for files from
    /// [`add_dir_tree`](FatImage::add_dir_tree) that cannot be read or
    /// changed size.
    pub fn build(&self) -> Result<Vec<u8>, FatError> {
        let layout = self.layout()?;
        let mut out = Vec::with_capacity(usize::try_from(layout.image_bytes).unwrap_or(0));
        self.emit(&mut out, &layout, true)?;
        Ok(out)
    }

    /// Write the image to `out`, streaming file contents (only the FATs and
    /// directories are held in memory). Returns its layout.
    ///
    /// Errors: as [`build`](FatImage::build), and [`FatError::Write`]. On
    /// error, what was written is not a valid image.
    pub fn write_to<W: Write>(&self, mut out: W) -> Result<Layout, FatError> {
        let layout = self.layout()?;
        self.emit(&mut out, &layout, true)?;
        out.flush().map_err(FatError::Write)?;
        Ok(layout)
    }

    /// Write the image to a new file at `path` (replacing any), as a sparse
    /// file where the host's file system allows: the free clusters at the
    /// end are not written. Returns its layout.
    ///
    /// Errors: as [`write_to`](FatImage::write_to); creating the file is a
    /// [`FatError::Io`].
    pub fn write_file(&self, path: &Path) -> Result<Layout, FatError> {
        let layout = self.layout()?;
        let file = fs::File::create(path).map_err(|source| FatError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut w = io::BufWriter::with_capacity(1 << 20, file);
        self.emit(&mut w, &layout, false)?;
        let file = w
            .into_inner()
            .map_err(|e| FatError::Write(e.into_error()))?;
        file.set_len(layout.image_bytes).map_err(FatError::Write)?;
        Ok(layout)
    }

    /// Split this image's contents into images of at most `max_bytes` each
    /// (see [`split`]). Each gets this image's label, FAT type and free
    /// space settings.
    pub fn split(self, max_bytes: u64) -> Result<Vec<FatImage>, FatError> {
        self.split_with(max_bytes, false)
    }

    /// As [`split`](FatImage::split), but a file too large for an image of
    /// `max_bytes` gets an image of its own, as large as it needs, instead
    /// of an error: so any file FAT32 can hold (under 4 GiB) can be packed
    /// whatever `max_bytes` is.
    ///
    /// Errors: what [`add_file`](FatImage::add_file) refuses (a file over
    /// [`MAX_FILE_BYTES`] among them), and [`FatError::DoesNotFit`] only for
    /// an empty image larger than `max_bytes`.
    pub fn split_growing(self, max_bytes: u64) -> Result<Vec<FatImage>, FatError> {
        self.split_with(max_bytes, true)
    }

    fn split_with(self, max_bytes: u64, grow: bool) -> Result<Vec<FatImage>, FatError> {
        let opts = self.opts.clone();
        let fresh = || FatImage {
            opts: opts.clone(),
            ..FatImage::new()
        };
        let mut items = Vec::new();
        into_items(self.root, String::new(), &mut items);
        let mut images: Vec<FatImage> = Vec::new();
        for (path, leaf) in items {
            let comps: Vec<&str> = path.split('/').collect();
            let kind = leaf.kind();
            let fits = |img: &FatImage| {
                img.size_with(&comps, kind)
                    .is_ok_and(|bytes| bytes <= max_bytes)
            };
            let index = match images.iter().position(&fits) {
                Some(i) => i,
                None => {
                    let img = fresh();
                    if !fits(&img) {
                        let image_bytes = match img.size_with(&comps, kind) {
                            // An image of its own, over the limit.
                            Ok(_) if grow => {
                                images.push(img);
                                let last = images.len() - 1;
                                images[last].insert(&path, leaf)?;
                                continue;
                            }
                            Ok(bytes) => bytes,
                            Err(e) if grow => return Err(e),
                            Err(_) => 0,
                        };
                        return Err(FatError::DoesNotFit {
                            path: path.clone(),
                            image_bytes,
                            max_bytes,
                        });
                    }
                    images.push(img);
                    images.len() - 1
                }
            };
            images[index].insert(&path, leaf)?;
        }
        if images.is_empty() {
            let img = fresh();
            let image_bytes = img.layout()?.image_bytes;
            if image_bytes > max_bytes {
                return Err(FatError::DoesNotFit {
                    path: "/".into(),
                    image_bytes,
                    max_bytes,
                });
            }
            images.push(img);
        }
        Ok(images)
    }

    /// The image's size with one more entry, without adding it.
    fn size_with(&self, comps: &[&str], kind: LeafKind) -> Result<u64, FatError> {
        let census = self.plan(comps, kind)?.unwrap_or(self.census);
        Ok(compute_layout(&census, &self.opts)?.image_bytes)
    }

    fn insert(&mut self, path: &str, leaf: Leaf) -> Result<(), FatError> {
        let comps = parse_path(path)?;
        if let Leaf::File { len, .. } = leaf
            && len > MAX_FILE_BYTES
        {
            return Err(FatError::FileTooLarge {
                path: path.to_string(),
                bytes: len,
            });
        }
        let Some(census) = self.plan(&comps, leaf.kind())? else {
            return Ok(());
        };
        self.census = census;
        let (last, dirs) = comps.split_last().expect("a path has a component");
        let mut dir = &mut self.root;
        for name in dirs {
            let key = fold(name);
            if !dir.children.contains_key(&key) {
                dir.entries += slots(name);
                dir.children
                    .insert(key.clone(), Node::Dir(Dir::new(name, 2)));
            }
            let Some(Node::Dir(d)) = dir.children.get_mut(&key) else {
                unreachable!("plan() checked that `{name}` is a directory");
            };
            dir = d;
        }
        dir.entries += slots(last);
        let node = match leaf {
            Leaf::Dir => Node::Dir(Dir::new(last, 2)),
            Leaf::File { len, source } => Node::File(File {
                name: last.to_string(),
                len,
                source,
            }),
        };
        dir.children.insert(fold(last), node);
        Ok(())
    }

    /// The census after adding `comps`, or `None` if it is a directory that
    /// exists; checks everything [`insert`](Self::insert) needs.
    fn plan(&self, comps: &[&str], kind: LeafKind) -> Result<Option<Census>, FatError> {
        let mut c = self.census;
        let last = comps.len() - 1;
        let mut dir = &self.root;
        let mut i = 0;
        while i < last {
            match dir.children.get(&fold(comps[i])) {
                Some(Node::Dir(d)) => {
                    dir = d;
                    i += 1;
                }
                Some(Node::File(_)) => {
                    return Err(FatError::NotADirectory {
                        path: comps[..=i].join("/"),
                    });
                }
                None => break,
            }
        }
        if i == last {
            match (dir.children.get(&fold(comps[last])), kind) {
                (None, _) => {}
                (Some(Node::Dir(_)), LeafKind::Dir) => return Ok(None),
                (Some(_), _) => {
                    return Err(FatError::AlreadyExists {
                        path: comps.join("/"),
                    });
                }
            }
        }
        // `dir`, at depth `i`, gains `comps[i]`.
        let old = dir.entries;
        let new = old + slots(comps[i]);
        if new > MAX_DIR_ENTRIES {
            let path = comps[..i].join("/");
            return Err(FatError::DirectoryFull {
                path: if path.is_empty() { "/".into() } else { path },
                entries: new,
                max: MAX_DIR_ENTRIES,
            });
        }
        if i == 0 {
            c.root_entries = new;
        } else {
            for (k, n) in c.dir_clusters.iter_mut().enumerate() {
                *n += dir_clusters(new, k) - dir_clusters(old, k);
            }
        }
        // New directories `comps[i..last]`, each holding the next name.
        for name in &comps[i + 1..] {
            let entries = 2 + slots(name);
            for (k, n) in c.dir_clusters.iter_mut().enumerate() {
                *n += dir_clusters(entries, k);
            }
        }
        match kind {
            LeafKind::Dir => {
                for (k, n) in c.dir_clusters.iter_mut().enumerate() {
                    *n += dir_clusters(2, k);
                }
            }
            LeafKind::File(len) => {
                c.files += 1;
                c.payload += len;
                for (k, n) in c.file_clusters.iter_mut().enumerate() {
                    *n += len.div_ceil(cluster_bytes(k));
                }
            }
        }
        Ok(Some(c))
    }

    /// Write the whole image; if `zero_tail` is false, stop after the last
    /// used cluster (the caller extends the file).
    fn emit(&self, out: &mut dyn Write, l: &Layout, zero_tail: bool) -> Result<(), FatError> {
        let fat32 = l.fat_type == FatType::Fat32;
        let k = l.cluster_bytes.trailing_zeros() as usize - 9;
        let cs = u64::from(l.cluster_bytes);
        let label = self.opts.label;
        let root_slots = self.root.entries + u32::from(label.is_some());

        // Allocate: the FAT32 root, the other directories breadth-first,
        // then files in directory order; each contiguous.
        let mut next: u32 = 2;
        let mut alloc = |n: u64| {
            let first = next;
            next += n as u32;
            first
        };
        let root_cluster = if fat32 {
            alloc(dir_clusters(root_slots, k))
        } else {
            0
        };
        let mut cluster_of: HashMap<usize, u32> = HashMap::new();
        // (directory, its first cluster, the cluster its `..` names)
        let mut dirs: Vec<(&Dir, u32, u32)> = vec![(&self.root, root_cluster, 0)];
        let mut i = 0;
        while i < dirs.len() {
            let (d, own, _) = dirs[i];
            for child in d.children.values() {
                if let Node::Dir(sub) = child {
                    let first = alloc(dir_clusters(sub.entries, k));
                    cluster_of.insert(addr(sub), first);
                    dirs.push((sub, first, if i == 0 { 0 } else { own }));
                }
            }
            i += 1;
        }
        let mut files: Vec<(&File, u32, u64)> = Vec::new();
        for (d, _, _) in &dirs {
            for child in d.children.values() {
                if let Node::File(f) = child {
                    let n = f.len.div_ceil(cs);
                    let first = if n == 0 { 0 } else { alloc(n) };
                    cluster_of.insert(addr(f), first);
                    files.push((f, first, n));
                }
            }
        }
        let used = u64::from(next - 2);
        assert!(
            used == u64::from(l.used_clusters) && used <= u64::from(l.clusters),
            "fatimg: internal error: {used} clusters allocated, {} planned",
            l.used_clusters
        );

        // The FAT.
        let entry_bytes = if fat32 { 4 } else { 2 };
        let mut fat = vec![0u8; l.fat_sectors as usize * SECTOR as usize];
        let mut set = |cluster: u64, value: u32| {
            let at = cluster as usize * entry_bytes;
            if fat32 {
                fat[at..at + 4].copy_from_slice(&value.to_le_bytes());
            } else {
                fat[at..at + 2].copy_from_slice(&(value as u16).to_le_bytes());
            }
        };
        let (eoc, media) = if fat32 {
            (0x0FFF_FFFF, 0x0FFF_FFF8)
        } else {
            (0xFFFF, 0xFFF8)
        };
        set(0, media);
        set(1, eoc); // clean, no I/O errors
        let mut chain = |first: u32, n: u64| {
            let first = u64::from(first);
            for c in first..first + n {
                set(
                    c,
                    if c + 1 == first + n {
                        eoc
                    } else {
                        c as u32 + 1
                    },
                );
            }
        };
        if fat32 {
            chain(root_cluster, dir_clusters(root_slots, k));
        }
        for &(d, first, _) in &dirs[1..] {
            chain(first, dir_clusters(d.entries, k));
        }
        for &(_, first, n) in &files {
            if n > 0 {
                chain(first, n);
            }
        }

        // Boot sector(s).
        let vol_id = self.volume_id();
        let boot = boot_sector(l, label.unwrap_or(*b"NO NAME    "), vol_id);
        let mut reserved = vec![0u8; l.reserved_sectors as usize * SECTOR as usize];
        reserved[..512].copy_from_slice(&boot);
        if fat32 {
            let free = u64::from(l.clusters) - used;
            let info = fsinfo(free as u32, if free == 0 { u32::MAX } else { next });
            reserved[512..1024].copy_from_slice(&info);
            reserved[6 * 512..7 * 512].copy_from_slice(&boot);
            reserved[7 * 512..8 * 512].copy_from_slice(&info);
        }
        let w = |out: &mut dyn Write, bytes: &[u8]| out.write_all(bytes).map_err(FatError::Write);
        w(out, &reserved)?;
        w(out, &fat)?;
        w(out, &fat)?;
        drop(fat);

        // Directories, then files.
        for (i, &(d, own, parent)) in dirs.iter().enumerate() {
            let is_root = i == 0;
            let bytes = dir_bytes(
                d,
                (!is_root).then_some((own, parent)),
                if is_root { label } else { None },
                &cluster_of,
                fat32,
            );
            let room = if is_root && !fat32 {
                u64::from(l.root_entries) * 32
            } else {
                dir_clusters(d.entries + u32::from(is_root && label.is_some()), k) * cs
            };
            w(out, &bytes)?;
            write_zeros(out, room - bytes.len() as u64)?;
        }
        for &(f, _, n) in &files {
            match &f.source {
                Source::Memory(data) => w(out, data)?,
                Source::Host(path) => copy_host_file(path, f.len, out)?,
            }
            write_zeros(out, n * cs - f.len)?;
        }
        if zero_tail {
            write_zeros(out, (u64::from(l.clusters) - used) * cs)?;
            let end = l.data_offset + u64::from(l.clusters) * cs;
            write_zeros(out, l.image_bytes - end)?;
        }
        Ok(())
    }

    /// A serial number from the names and sizes (FNV-1a).
    fn volume_id(&self) -> u32 {
        let mut h: u32 = 0x811C_9DC5;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
            }
        };
        visit(&self.root, "", &mut |path, node| {
            eat(path.as_bytes());
            if let Node::File(f) = node {
                eat(&f.len.to_le_bytes());
            }
        });
        h
    }
}

/// Split files into FAT images of at most `max_bytes` bytes each (image
/// size, as [`Layout::image_bytes`]), for a tree too large for one image.
///
/// Files (and empty directories) are taken in path order (as
/// [`FatImage::files`] lists them) and each goes into the first image it
/// fits in, a new one if none: first fit, greedily. Each image gets the
/// directories its files need. The images together hold every file once.
///
/// Errors: what [`FatImage::add_file`] refuses, and
/// [`FatError::DoesNotFit`] for a file too large for an image of
/// `max_bytes` (at least about 2.1 MiB are needed for any image).
pub fn split<I, P>(files: I, max_bytes: u64) -> Result<Vec<FatImage>, FatError>
where
    I: IntoIterator<Item = (P, Vec<u8>)>,
    P: AsRef<str>,
{
    let mut all = FatImage::new();
    for (path, data) in files {
        all.add_file(path.as_ref(), data)?;
    }
    all.split(max_bytes)
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

/// An identity for a node while the image is written.
fn addr<T>(x: &T) -> usize {
    std::ptr::from_ref(x) as usize
}

/// Every node below `dir`, parents first, with its path.
fn visit(dir: &Dir, prefix: &str, f: &mut dyn FnMut(&str, &Node)) {
    for child in dir.children.values() {
        let name = match child {
            Node::Dir(d) => &d.name,
            Node::File(file) => &file.name,
        };
        let path = join(prefix, name);
        f(&path, child);
        if let Node::Dir(d) = child {
            visit(d, &path, f);
        }
    }
}

/// Files and empty directories, in path order, taken apart for [`split`].
fn into_items(dir: Dir, prefix: String, out: &mut Vec<(String, Leaf)>) {
    for child in dir.children.into_values() {
        match child {
            Node::Dir(d) => {
                let path = join(&prefix, &d.name);
                if d.children.is_empty() {
                    out.push((path, Leaf::Dir));
                } else {
                    into_items(d, path, out);
                }
            }
            Node::File(f) => out.push((
                join(&prefix, &f.name),
                Leaf::File {
                    len: f.len,
                    source: f.source,
                },
            )),
        }
    }
}

fn parse_path(path: &str) -> Result<Vec<&str>, FatError> {
    let trimmed = path.trim_start_matches('/');
    let invalid = |reason| FatError::InvalidName {
        path: path.to_string(),
        reason,
    };
    if trimmed.is_empty() {
        return Err(invalid(NameError::EmptyPath));
    }
    let comps: Vec<&str> = trimmed.split('/').collect();
    for name in &comps {
        check_name(name).map_err(invalid)?;
    }
    if comps.len() > MAX_DEPTH {
        return Err(FatError::TooDeep {
            path: path.to_string(),
            depth: comps.len(),
        });
    }
    let units = trimmed.encode_utf16().count();
    if units > MAX_PATH_UNITS {
        return Err(FatError::PathTooLong {
            path: path.to_string(),
            units,
        });
    }
    Ok(comps)
}

fn check_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::EmptyName);
    }
    if name == "." || name == ".." {
        return Err(NameError::Dots { name: name.into() });
    }
    if name.ends_with('.') || name.ends_with(' ') {
        return Err(NameError::TrailingDotOrSpace { name: name.into() });
    }
    if let Some(c) = name.chars().find(|&c| c < ' ' || "\"*/:<>?\\|".contains(c)) {
        return Err(NameError::BadChar {
            name: name.into(),
            c,
        });
    }
    let units = name.encode_utf16().count();
    if units > MAX_NAME_UNITS {
        return Err(NameError::TooLong {
            name: name.into(),
            units,
        });
    }
    Ok(())
}

/// The 8.3 form of an upper-case ASCII character, if it has one.
fn short_char(c: char) -> Option<u8> {
    match c {
        'A'..='Z' | '0'..='9' => Some(c as u8),
        'a'..='z' => Some(c.to_ascii_uppercase() as u8),
        c if SHORT_SPECIALS.contains(c) => Some(c as u8),
        _ => None,
    }
}

/// The basis of an 8.3 alias (FAT specification, "basis-name
/// generation"): upper case, spaces and leading dots dropped, other dots
/// but the last dropped, characters 8.3 cannot hold made `_`, base cut to
/// 8 characters and extension to 3. Also whether information was lost
/// (other than case), which calls for a `~N` tail.
fn basis(name: &str) -> ([u8; 11], bool) {
    let mut lossy = false;
    let chars: Vec<char> = name
        .chars()
        .filter(|&c| {
            lossy |= c == ' ';
            c != ' '
        })
        .collect();
    let start = chars.iter().position(|&c| c != '.').unwrap_or(chars.len());
    lossy |= start > 0;
    let chars = &chars[start..];
    let (base, ext) = match chars.iter().rposition(|&c| c == '.') {
        Some(dot) => (&chars[..dot], &chars[dot + 1..]),
        None => (chars, &[][..]),
    };
    let mut out = [b' '; 11];
    let mut fill = |part: &[char], out: &mut [u8]| {
        let mut n = 0;
        for &c in part {
            if c == '.' {
                lossy = true;
                continue;
            }
            if n == out.len() {
                lossy = true;
                break;
            }
            out[n] = short_char(c).unwrap_or_else(|| {
                lossy = true;
                b'_'
            });
            n += 1;
        }
    };
    let (b, e) = out.split_at_mut(8);
    fill(base, b);
    fill(ext, e);
    if out[0] == b' ' {
        // Cannot happen for a checked name; keep the alias valid anyway.
        out[0] = b'_';
        lossy = true;
    }
    (out, lossy)
}

/// The 8.3 entry name of `name` if it is one already (upper case, nothing
/// lost): such names need no long-name entries.
fn exact_short(name: &str) -> Option<[u8; 11]> {
    if name.chars().any(|c| c.is_ascii_lowercase()) {
        return None;
    }
    match basis(name) {
        (short, false) => Some(short),
        (_, true) => None,
    }
}

/// Long-name entries for `name` (0 if it is an exact 8.3 name).
fn lfn_entries(name: &str) -> u32 {
    if exact_short(name).is_some() {
        0
    } else {
        name.encode_utf16().count().div_ceil(13) as u32
    }
}

/// Directory entries `name` takes.
fn slots(name: &str) -> u32 {
    1 + lfn_entries(name)
}

/// The 8.3 aliases of a directory's children, in order, unique in the
/// directory, and whether each needs long-name entries.
fn short_names(dir: &Dir) -> Vec<([u8; 11], bool)> {
    let names = dir.children.values().map(|n| match n {
        Node::Dir(d) => d.name.as_str(),
        Node::File(f) => f.name.as_str(),
    });
    let mut taken: HashSet<[u8; 11]> = names.clone().filter_map(exact_short).collect();
    let mut tails: HashMap<[u8; 11], u32> = HashMap::new();
    names
        .map(|name| {
            if let Some(short) = exact_short(name) {
                return (short, false);
            }
            let (base, lossy) = basis(name);
            if !lossy && taken.insert(base) {
                return (base, true);
            }
            let n = tails.entry(base).or_insert(0);
            loop {
                *n += 1;
                let tail = format!("~{n}");
                let keep = base[..8]
                    .iter()
                    .position(|&b| b == b' ')
                    .unwrap_or(8)
                    .min(8 - tail.len());
                let mut short = base;
                short[keep..keep + tail.len()].copy_from_slice(tail.as_bytes());
                short[keep + tail.len()..8].fill(b' ');
                if taken.insert(short) {
                    return (short, true);
                }
            }
        })
        .collect()
}

/// The checksum of an 8.3 name that long-name entries carry.
fn lfn_checksum(short: &[u8; 11]) -> u8 {
    short
        .iter()
        .fold(0u8, |sum, &b| sum.rotate_right(1).wrapping_add(b))
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// A short (8.3) directory entry.
fn short_entry(name: &[u8; 11], attr: u8, cluster: u32, size: u32) -> [u8; 32] {
    let mut e = [0u8; 32];
    e[..11].copy_from_slice(name);
    e[11] = attr;
    put16(&mut e, 14, TIME); // created
    put16(&mut e, 16, DATE);
    put16(&mut e, 18, DATE); // accessed
    put16(&mut e, 20, (cluster >> 16) as u16);
    put16(&mut e, 22, TIME); // written
    put16(&mut e, 24, DATE);
    put16(&mut e, 26, cluster as u16);
    put32(&mut e, 28, size);
    e
}

/// Where a long-name entry keeps its 13 UTF-16 units.
const LFN_OFFSETS: [usize; 13] = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];

/// Long-name entries for `name`, in the order they are stored (last part
/// first).
fn lfn(name: &str, short: &[u8; 11], out: &mut Vec<u8>) {
    let units: Vec<u16> = name.encode_utf16().collect();
    let n = units.len().div_ceil(13);
    let sum = lfn_checksum(short);
    for seq in (1..=n).rev() {
        let mut e = [0u8; 32];
        e[0] = seq as u8 | if seq == n { 0x40 } else { 0 };
        e[11] = ATTR_LFN;
        e[13] = sum;
        let part = &units[(seq - 1) * 13..units.len().min(seq * 13)];
        for (i, &at) in LFN_OFFSETS.iter().enumerate() {
            let unit = match i.cmp(&part.len()) {
                std::cmp::Ordering::Less => part[i],
                std::cmp::Ordering::Equal => 0x0000,
                std::cmp::Ordering::Greater => 0xFFFF,
            };
            put16(&mut e, at, unit);
        }
        out.extend_from_slice(&e);
    }
}

/// A directory's entries: `.` and `..` (`dots`: its own cluster and its
/// parent's, 0 for the root), the volume label (root only), the children.
fn dir_bytes(
    dir: &Dir,
    dots: Option<(u32, u32)>,
    label: Option<[u8; 11]>,
    cluster_of: &HashMap<usize, u32>,
    fat32: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(dir.entries as usize * 32 + 32);
    if let Some((own, parent)) = dots {
        out.extend_from_slice(&short_entry(b".          ", ATTR_DIR, own, 0));
        out.extend_from_slice(&short_entry(b"..         ", ATTR_DIR, parent, 0));
    }
    if let Some(label) = label {
        out.extend_from_slice(&short_entry(&label, ATTR_VOLUME, 0, 0));
    }
    for (child, (short, long)) in dir.children.values().zip(short_names(dir)) {
        let (name, attr, size, id) = match child {
            Node::Dir(d) => (&d.name, ATTR_DIR, 0, addr(d)),
            Node::File(f) => (&f.name, ATTR_ARCHIVE, f.len as u32, addr(f)),
        };
        if long {
            lfn(name, &short, &mut out);
        }
        let cluster = cluster_of[&id];
        debug_assert!(fat32 || cluster <= 0xFFFF);
        out.extend_from_slice(&short_entry(&short, attr, cluster, size));
    }
    out
}

/// A CHS address in a partition entry, for `lba`.
fn chs(lba: u64) -> [u8; 3] {
    let (c, h, s) = if lba >= 1024 * HEADS * SECTORS_PER_TRACK {
        (1023, HEADS - 1, SECTORS_PER_TRACK)
    } else {
        (
            lba / (HEADS * SECTORS_PER_TRACK),
            (lba / SECTORS_PER_TRACK) % HEADS,
            lba % SECTORS_PER_TRACK + 1,
        )
    };
    [h as u8, (s as u8) | ((c >> 2) as u8 & 0xC0), c as u8]
}

/// The boot sector, with the one-partition MBR table in its boot code
/// area (as `mkfs.fat --mbr=y` makes it).
fn boot_sector(l: &Layout, label: [u8; 11], vol_id: u32) -> [u8; 512] {
    let fat32 = l.fat_type == FatType::Fat32;
    let total = l.image_bytes / SECTOR;
    let mut b = [0u8; 512];
    b[..3].copy_from_slice(if fat32 {
        &[0xEB, 0x58, 0x90]
    } else {
        &[0xEB, 0x3C, 0x90]
    });
    b[3..11].copy_from_slice(b"MSWIN4.1");
    put16(&mut b, 11, SECTOR as u16);
    b[13] = (u64::from(l.cluster_bytes) / SECTOR) as u8;
    put16(&mut b, 14, l.reserved_sectors as u16);
    b[16] = 2;
    put16(&mut b, 17, l.root_entries as u16);
    if !fat32 && total < 0x1_0000 {
        put16(&mut b, 19, total as u16);
    } else {
        put32(&mut b, 32, total as u32);
    }
    b[21] = 0xF8;
    if !fat32 {
        put16(&mut b, 22, l.fat_sectors as u16);
    }
    put16(&mut b, 24, SECTORS_PER_TRACK as u16);
    put16(&mut b, 26, HEADS as u16);
    put32(&mut b, 28, 0); // hidden sectors: the partition starts at 0
    let ext = if fat32 {
        put32(&mut b, 36, l.fat_sectors);
        put16(&mut b, 40, 0); // both FATs mirrored
        put16(&mut b, 42, 0); // version 0.0
        put32(&mut b, 44, 2); // root directory cluster
        put16(&mut b, 48, 1); // FSInfo sector
        put16(&mut b, 50, 6); // backup boot sector
        64
    } else {
        36
    };
    b[ext] = 0x80; // drive number
    b[ext + 2] = 0x29; // extended boot signature
    put32(&mut b, ext + 3, vol_id);
    b[ext + 7..ext + 18].copy_from_slice(&label);
    b[ext + 18..ext + 26].copy_from_slice(if fat32 { b"FAT32   " } else { b"FAT16   " });
    // Boot code, where the jump lands: INT 18h ("no bootable disk"), halt.
    b[ext + 26..ext + 30].copy_from_slice(&[0xCD, 0x18, 0xEB, 0xFE]);
    // The MBR: disk signature, one active partition from sector 0.
    put32(&mut b, 440, vol_id);
    let p = 446;
    b[p] = 0x80;
    b[p + 1..p + 4].copy_from_slice(&chs(0));
    b[p + 4] = match (fat32, total < 0x1_0000) {
        (true, _) => 0x0C,
        (false, true) => 0x04,
        (false, false) => 0x06,
    };
    b[p + 5..p + 8].copy_from_slice(&chs(total - 1));
    put32(&mut b, p + 8, 0);
    put32(&mut b, p + 12, total as u32);
    b[510] = 0x55;
    b[511] = 0xAA;
    b
}

/// The FAT32 FSInfo sector.
fn fsinfo(free: u32, next_free: u32) -> [u8; 512] {
    let mut b = [0u8; 512];
    put32(&mut b, 0, 0x4161_5252);
    put32(&mut b, 484, 0x6141_7272);
    put32(&mut b, 488, free);
    put32(&mut b, 492, next_free);
    put32(&mut b, 508, 0xAA55_0000);
    b
}

fn write_zeros(out: &mut dyn Write, mut n: u64) -> Result<(), FatError> {
    while n > 0 {
        let chunk = n.min(ZEROS.len() as u64) as usize;
        out.write_all(&ZEROS[..chunk]).map_err(FatError::Write)?;
        n -= chunk as u64;
    }
    Ok(())
}

fn copy_host_file(path: &Path, len: u64, out: &mut dyn Write) -> Result<(), FatError> {
    let io_err = |source| FatError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = fs::File::open(path).map_err(io_err)?;
    let mut buf = vec![0u8; len.min(1 << 20) as usize];
    let mut left = len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = file.read(&mut buf[..want]).map_err(io_err)?;
        if n == 0 {
            return Err(FatError::Changed {
                path: path.to_path_buf(),
                expected: len,
                found: len - left,
            });
        }
        out.write_all(&buf[..n]).map_err(FatError::Write)?;
        left -= n as u64;
    }
    let mut extra = [0u8; 1];
    if file.read(&mut extra).map_err(io_err)? != 0 {
        let found = file.metadata().map_or(len + 1, |m| m.len());
        return Err(FatError::Changed {
            path: path.to_path_buf(),
            expected: len,
            found,
        });
    }
    Ok(())
}

fn compute_layout(c: &Census, o: &Options) -> Result<Layout, FatError> {
    let root_slots = c.root_entries + u32::from(o.label.is_some());
    let free = o.free_space.unwrap_or(c.payload / 16 + (256 << 10));
    match o.fat_type {
        Some(FatType::Fat16) => fat16_layout(c, root_slots, free),
        Some(FatType::Fat32) => fat32_layout(c, root_slots, free),
        None => match fat16_layout(c, root_slots, free) {
            Ok(l) if l.image_bytes < FAT32_FROM_BYTES => Ok(l),
            _ => fat32_layout(c, root_slots, free),
        },
    }
}

fn fat16_layout(c: &Census, root_slots: u32, free: u64) -> Result<Layout, FatError> {
    let wanted = root_slots + root_slots / 8 + 16;
    let root_entries = wanted.max(512).next_multiple_of(16).min(FAT16_MAX_ROOT);
    if root_slots > root_entries {
        return Err(FatError::DirectoryFull {
            path: "/".into(),
            entries: root_slots,
            max: FAT16_MAX_ROOT,
        });
    }
    let used = |k: usize| c.file_clusters[k] + c.dir_clusters[k];
    let want = |k: usize| used(k) + free.div_ceil(cluster_bytes(k));
    // As mkfs.fat: 2 KiB clusters, larger while there would be too many.
    let Some(mut k) = (2..CLUSTER_SIZES).find(|&k| want(k) <= FAT16_MAX_CLUSTERS) else {
        return Err(FatError::VolumeTooLarge {
            fat_type: FatType::Fat16,
            clusters: want(CLUSTER_SIZES - 1),
            max: FAT16_MAX_CLUSTERS,
        });
    };
    // Too few for FAT16 (mkfs.fat would make FAT12): smaller clusters, and
    // padding if even 512-byte ones are too few.
    if k == 2 && want(2) < FAT16_MIN_CLUSTERS {
        k = if want(1) >= FAT16_MIN_CLUSTERS { 1 } else { 0 };
    }
    finish_layout(
        FatType::Fat16,
        k,
        used(k),
        want(k).max(FAT16_MIN_CLUSTERS),
        root_entries,
    )
}

fn fat32_layout(c: &Census, root_slots: u32, free: u64) -> Result<Layout, FatError> {
    let used = |k: usize| c.file_clusters[k] + c.dir_clusters[k] + dir_clusters(root_slots, k);
    let want = |k: usize| used(k) + free.div_ceil(cluster_bytes(k));
    // As mkfs.fat (and Microsoft's format), by the volume's size.
    let bytes = want(3) * 4096;
    let k = match bytes >> 20 {
        0..=260 => 0,
        261..=8192 => 3,
        8193..=16384 => 4,
        16385..=32768 => 5,
        _ => 6,
    };
    finish_layout(
        FatType::Fat32,
        k,
        used(k),
        want(k).max(FAT32_MIN_CLUSTERS),
        0,
    )
}

/// Sectors for `count` clusters of `512 << k` bytes: FAT sizes, alignment
/// of the data area (to the cluster, at least 4 KiB), total rounded to
/// 16 KiB (a whole number of 32-sector tracks).
fn finish_layout(
    fat_type: FatType,
    k: usize,
    used: u64,
    count: u64,
    root_entries: u32,
) -> Result<Layout, FatError> {
    let fat32 = fat_type == FatType::Fat32;
    let spc = 1u64 << k;
    let entry_bytes = if fat32 { 4 } else { 2 };
    let base_reserved: u64 = if fat32 { 32 } else { 1 };
    let root_sectors = u64::from(root_entries) * 32 / SECTOR;
    let align = spc.max(8);
    let round = spc.max(SECTORS_PER_TRACK);
    let max = if fat32 {
        FAT32_MAX_CLUSTERS.min((u64::from(u32::MAX) - 0x10_0000) / spc)
    } else {
        FAT16_HARD_MAX
    };
    let mut count = count;
    loop {
        if count > max {
            return Err(FatError::VolumeTooLarge {
                fat_type,
                clusters: count,
                max,
            });
        }
        let fat_sectors = ((count + 2) * entry_bytes).div_ceil(SECTOR);
        let meta = base_reserved + 2 * fat_sectors + root_sectors;
        let data_start = meta.next_multiple_of(align);
        let total = (data_start + count * spc).next_multiple_of(round);
        let real = (total - data_start) / spc;
        if (real + 2) * entry_bytes > fat_sectors * SECTOR {
            count = real; // the rounding added clusters: a larger FAT
            continue;
        }
        if real > max {
            count = real;
            continue;
        }
        return Ok(Layout {
            fat_type,
            cluster_bytes: (SECTOR << k) as u32,
            clusters: real as u32,
            used_clusters: used as u32,
            reserved_sectors: (data_start - 2 * fat_sectors - root_sectors) as u32,
            fat_sectors: fat_sectors as u32,
            root_entries,
            data_offset: data_start * SECTOR,
            partition_offset: 0,
            image_bytes: total * SECTOR,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short_str(s: &[u8; 11]) -> String {
        String::from_utf8_lossy(s).into_owned()
    }

    #[test]
    fn basis_names() {
        assert_eq!(basis("README"), (*b"README     ", false));
        assert_eq!(basis("index.htm"), (*b"INDEX   HTM", false));
        assert_eq!(basis("index.html"), (*b"INDEX   HTM", true));
        assert_eq!(basis("Site Map.html"), (*b"SITEMAP HTM", true));
        assert_eq!(basis("très.css"), (*b"TR_S    CSS", true));
        assert_eq!(basis(".htaccess"), (*b"HTACCESS   ", true));
        assert_eq!(basis("my.file.name.txt"), (*b"MYFILENATXT", true));
        assert_eq!(basis("a+b[1].c"), (*b"A_B_1_  C  ", true));
        assert_eq!(exact_short("README"), Some(*b"README     "));
        assert_eq!(exact_short("A.B"), Some(*b"A       B  "));
        assert_eq!(exact_short("index.htm"), None);
        assert_eq!(lfn_entries("INDEX.HTM"), 0);
        assert_eq!(lfn_entries("index.htm"), 1);
        assert_eq!(lfn_entries("abcdefghijklm"), 1);
        assert_eq!(lfn_entries("abcdefghijklmn"), 2);
    }

    #[test]
    fn aliases_are_unique() {
        let mut img = FatImage::new();
        for name in [
            "Site Map.html",
            "Site Map 2.html",
            "SITEMA~1.HTM",
            "index.html",
            "index.htm",
            "README",
            "readme.txt",
        ] {
            img.add_file(name, vec![]).unwrap();
        }
        for i in 0..120 {
            img.add_file(&format!("Report number {i}.txt"), vec![])
                .unwrap();
        }
        let names = short_names(&img.root);
        let set: HashSet<_> = names.iter().map(|(s, _)| *s).collect();
        assert_eq!(set.len(), names.len(), "duplicates");
        let by_name: HashMap<String, String> = img
            .root
            .children
            .values()
            .zip(&names)
            .map(|(n, (s, _))| match n {
                Node::File(f) => (f.name.clone(), short_str(s)),
                Node::Dir(d) => (d.name.clone(), short_str(s)),
            })
            .collect();
        assert_eq!(by_name["SITEMA~1.HTM"], "SITEMA~1HTM");
        assert_eq!(by_name["index.htm"], "INDEX   HTM");
        assert_eq!(by_name["index.html"], "INDEX~1 HTM");
        assert_eq!(by_name["README"], "README     ");
        assert_eq!(by_name["readme.txt"], "README  TXT");
        assert!(by_name.values().any(|s| s == "REPO~100TXT"));
    }

    #[test]
    fn checksum_matches_the_specification() {
        // From embedded-sdmmc's and Linux's examples: "BCM270~1DTB" has
        // checksum 0x79 in the sample directory of embedded-sdmmc's tests.
        assert_eq!(lfn_checksum(b"BCM270~1DTB"), 0x79);
        assert_eq!(lfn_checksum(b"OVERLAYS   "), 0x47);
    }

    fn recount(dir: &Dir, root: bool, c: &mut Census) {
        let entries: u32 = (if root { 0 } else { 2 })
            + dir
                .children
                .values()
                .map(|n| match n {
                    Node::Dir(d) => slots(&d.name),
                    Node::File(f) => slots(&f.name),
                })
                .sum::<u32>();
        assert_eq!(entries, dir.entries, "entries of `{}`", dir.name);
        if root {
            c.root_entries = entries;
        } else {
            for k in 0..CLUSTER_SIZES {
                c.dir_clusters[k] += dir_clusters(entries, k);
            }
        }
        for n in dir.children.values() {
            match n {
                Node::Dir(d) => recount(d, false, c),
                Node::File(f) => {
                    c.files += 1;
                    c.payload += f.len;
                    for k in 0..CLUSTER_SIZES {
                        c.file_clusters[k] += f.len.div_ceil(cluster_bytes(k));
                    }
                }
            }
        }
    }

    #[test]
    fn census_follows_the_tree() {
        let mut img = FatImage::new();
        let mut x: u64 = 7;
        for i in 0..400u64 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let depth = (x >> 60) % 4;
            let mut path = String::new();
            for d in 0..depth {
                path.push_str(&format!("dir {} with a long name/", (x >> (d * 8)) % 5));
            }
            path.push_str(&format!("file {i}.dat"));
            img.add_file(&path, vec![0; ((x >> 20) % 70_000) as usize])
                .unwrap();
            if i % 50 == 0 {
                img.add_dir(&format!("empty {i}/inner")).unwrap();
            }
        }
        let mut c = Census::default();
        recount(&img.root, true, &mut c);
        assert_eq!(c, img.census);
        // Every planned cluster is allocated: emit() asserts it.
        img.build().unwrap();
        img.set_fat_type(Some(FatType::Fat32));
        img.build().unwrap();
    }

    #[test]
    fn layouts_by_size() {
        let mut c = Census::default();
        let o = Options::default();
        let l = compute_layout(&c, &o).unwrap();
        assert_eq!((l.fat_type, l.cluster_bytes), (FatType::Fat16, 512));
        assert!(l.clusters >= 4096 && l.image_bytes < 2300 << 10, "{l:?}");
        for (mib, fat, cluster) in [
            (10, FatType::Fat16, 2048),
            (100, FatType::Fat16, 2048),
            (200, FatType::Fat16, 4096),
            (400, FatType::Fat16, 8192),
            (600, FatType::Fat32, 4096),
        ] {
            let bytes: u64 = mib << 20;
            c.payload = bytes;
            for k in 0..CLUSTER_SIZES {
                c.file_clusters[k] = bytes.div_ceil(cluster_bytes(k));
            }
            let l = compute_layout(&c, &o).unwrap();
            assert_eq!((l.fat_type, l.cluster_bytes), (fat, cluster), "{mib} MiB");
            assert!(l.image_bytes > bytes && l.image_bytes < bytes + bytes / 8 + (1 << 20));
            assert_eq!(l.image_bytes % (16 << 10), 0);
            assert_eq!(l.data_offset % u64::from(l.cluster_bytes.max(4096)), 0);
        }
    }
}
