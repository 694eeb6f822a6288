//! A FAT image builder: pack a directory tree, or files held in memory,
//! into a FAT16 or FAT32 disk image on the host, with no external tools.
//!
//! The simulator's demos serve a user's own directory to a guest: pack it
//! with [`FatImage`], write it to a file ([`FatImage::write_file`]) or
//! build it in memory ([`FatImage::build`]), hand it to blkback, and the
//! guest reads it through blkfront and `embedded-sdmmc`.
//!
//! ```
//! use xenpal_fatimg::{FatImage, FatType};
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
//! # Who does what
//!
//! The [`fatfs`] crate formats the volume (boot sector, FSInfo, FATs) and
//! writes every directory entry (long names, 8.3 aliases, checksums) and
//! every file. This crate adds what `fatfs` does not do:
//!
//! - **Sizing.** The image's size comes from what it must hold: the census
//!   of clusters each file and directory needs at each cluster size, kept
//!   as entries are added, and `fatfs`'s own geometry (its reserved
//!   sectors and FAT size formula), so the volume is as small as it can be
//!   and [`FatImage::layout`] knows it before anything is written. After
//!   writing, the clusters `fatfs` used are checked against the plan.
//! - **Splitting** a tree across images of a bounded size
//!   ([`FatImage::split`], [`FatImage::split_growing`]).
//! - **The partition table.** `embedded-sdmmc` opens volumes only from an
//!   MBR partition table (it reads block 0, wants the `55 AA` signature and
//!   a partition of type 0x04, 0x06, 0x0B, 0x0C or 0x0E). As with
//!   `mkfs.fat --mbr=y`, the FAT boot sector *is* that MBR: its partition
//!   table has one active entry that starts at sector 0 and spans the whole
//!   image (type 0x04 for FAT16 under 32 MiB, 0x06 above, 0x0C for FAT32).
//!   So the partition offset is 0, and tools that expect a bare file system
//!   (`fsck.fat`, `mtools`, Linux's `mount -o loop`) read the image as is.
//! - **Reproducible bytes**: timestamps are 2024-01-01 12:00:00, the volume
//!   serial number is a hash of the names and sizes, entries go in a fixed
//!   order, so the same input gives the same image, byte for byte.
//! - **Contiguous files**: each file is written whole before the next is
//!   created, so `fatfs` gives it consecutive clusters.
//! - **Streaming from disk**: [`FatImage::write_file`] reads host files as
//!   it writes them and keeps only FAT and directory sectors in memory.
//! - **Two fixes** to what `fatfs` 0.3.6 (the newest release) writes in
//!   each new directory, fixed upstream but unreleased: see
//!   `fix_dot_entries` in the source.
//!
//! # The image
//!
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
//! - **Directories** start with `.` and `..`; every name gets VFAT
//!   long-name entries (UTF-16, checksummed) before a unique 8.3 alias
//!   (`SITEMA~1.HTM`), as `fatfs` writes them. Entries are sorted by name,
//!   case-insensitively. The FAT16 root directory has 512 entries, more if
//!   needed.
//! - **Fixed**: OEM name `MSWIN4.1`, media 0xF8, 2 FATs, geometry 64 heads
//!   × 32 sectors.
//!
//! # Names
//!
//! Paths use `/`. A name is 1 to [`MAX_NAME_UNITS`] UTF-16 units, not `.`
//! or `..`, without control characters or any of `" * / : < > ? \ |`, and
//! does not end with a dot or a space (FAT drops those). `fatfs` 0.3 adds
//! two limits of its own, refused here with a [`NameError`] naming the
//! file: no characters outside the Basic Multilingual Plane (emoji), and
//! at most 255 bytes of UTF-8 (so at most 127 accented letters, say,
//! where FAT holds 255). Names compare
//! case-insensitively, as on FAT: `Docs/a.txt` goes into an existing `DOCS`,
//! and `A.TXT` next to `a.txt` is refused. Paths are at most
//! [`MAX_PATH_UNITS`] units and [`MAX_DEPTH`] components.
//!
//! What readers make of valid names varies: `embedded-sdmmc` 0.10
//! reassembles long names of at most 19 entries (247 units); a guest opens
//! longer ones by their 8.3 alias. Windows refuses device names (`CON`,
//! `NUL.txt`), which FAT itself holds.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

mod storage;

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
/// Entries `.` and `..` take at the start of a directory other than the
/// root: `fatfs` writes a long-name entry before each.
const DOT_ENTRIES: u32 = 4;
/// Characters an 8.3 name may hold besides `A-Z` and `0-9`.
const SHORT_SPECIALS: &str = "!#$%&'()-@^_`{}~";

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
    /// A bug here: `fatfs` laid out or filled the volume otherwise than
    /// planned (the message says how). Please report it.
    Internal(String),
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
            FatError::Internal(what) => {
                write!(f, "internal error in the FAT image builder: {what}")
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
    /// A name holding a character outside Unicode's Basic Multilingual
    /// Plane (an emoji, say): FAT holds it, but `fatfs` 0.3, which writes
    /// the image, refuses it.
    OutsideBmp {
        /// The name.
        name: String,
        /// The first such character.
        c: char,
    },
    /// A name over 255 bytes in UTF-8: FAT counts UTF-16 units, but
    /// `fatfs` 0.3, which writes the image, refuses it.
    TooManyBytes {
        /// The name.
        name: String,
        /// Its length in UTF-8 bytes.
        bytes: usize,
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
            NameError::OutsideBmp { name, c } => write!(
                f,
                "`{name}` holds {c:?}, outside Unicode's Basic Multilingual Plane, \
                 which the FAT writer (fatfs 0.3) cannot write"
            ),
            NameError::TooManyBytes { name, bytes } => write!(
                f,
                "`{name}` is {bytes} bytes long in UTF-8, more than the 255 \
                 the FAT writer (fatfs 0.3) takes"
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
    /// Reserved sectors before the first FAT, as `fatfs` lays them out: 8
    /// on FAT32 (boot sector, FSInfo, their backups), 1 on FAT16.
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
/// [`build`](FatImage::build) or [`write_file`](FatImage::write_file).
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
        let len = usize::try_from(layout.image_bytes).map_err(|_| {
            FatError::Write(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "the image is larger than this host's address space",
            ))
        })?;
        let mut disk = io::Cursor::new(vec![0u8; len]);
        self.write_volume(&mut disk, &layout)?;
        Ok(disk.into_inner())
    }

    /// Write the image to a new file at `path` (replacing any), as a sparse
    /// file where the host's file system allows: free clusters are never
    /// written. File contents are streamed; memory holds the FATs and
    /// directories (at most about 8 MiB of them at a time). Returns its
    /// layout.
    ///
    /// Errors: as [`build`](FatImage::build), [`FatError::Write`] if
    /// writing fails (what was written is then not a valid image);
    /// creating the file is a [`FatError::Io`].
    pub fn write_file(&self, path: &Path) -> Result<Layout, FatError> {
        let layout = self.layout()?;
        let file = fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|source| FatError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        file.set_len(layout.image_bytes).map_err(FatError::Write)?;
        let mut disk = storage::Storage::new(file, layout.image_bytes);
        self.write_volume(&mut disk, &layout)?;
        disk.finish().map_err(FatError::Write)?;
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
                    .insert(key.clone(), Node::Dir(Dir::new(name, DOT_ENTRIES)));
            }
            let Some(Node::Dir(d)) = dir.children.get_mut(&key) else {
                unreachable!("plan() checked that `{name}` is a directory");
            };
            dir = d;
        }
        dir.entries += slots(last);
        let node = match leaf {
            Leaf::Dir => Node::Dir(Dir::new(last, DOT_ENTRIES)),
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
            let entries = DOT_ENTRIES + slots(name);
            for (k, n) in c.dir_clusters.iter_mut().enumerate() {
                *n += dir_clusters(entries, k);
            }
        }
        match kind {
            LeafKind::Dir => {
                for (k, n) in c.dir_clusters.iter_mut().enumerate() {
                    *n += dir_clusters(DOT_ENTRIES, k);
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

    /// Format `disk` (zeroed, `l.image_bytes` long) with `fatfs`, add the
    /// partition table, then create every directory and file, breadth
    /// first, each directory's entries in order. Each file is written
    /// whole before the next is created, so its clusters are contiguous.
    fn write_volume<D: Read + Write + Seek>(
        &self,
        disk: &mut D,
        l: &Layout,
    ) -> Result<(), FatError> {
        let total = l.image_bytes / SECTOR;
        let mut options = fatfs::FormatVolumeOptions::new()
            .bytes_per_sector(SECTOR as u16)
            .total_sectors(total as u32)
            .bytes_per_cluster(l.cluster_bytes)
            .fats(2)
            .media(0xF8)
            .heads(HEADS as u16)
            .sectors_per_track(SECTORS_PER_TRACK as u16)
            .drive_num(0x80)
            .volume_id(self.volume_id());
        if l.fat_type == FatType::Fat16 {
            options = options
                .fat_type(fatfs::FatType::Fat16)
                .max_root_dir_entries(l.root_entries as u16);
        } else {
            options = options.fat_type(fatfs::FatType::Fat32);
        }
        if let Some(label) = self.opts.label {
            options = options.volume_label(label);
        }
        let w = FatError::Write;
        disk.seek(SeekFrom::Start(0)).map_err(w)?;
        fatfs::format_volume(&mut *disk, options).map_err(w)?;
        // The MBR in the boot sector (and its FAT32 backup, which fsck.fat
        // compares with it).
        let table = partition_table(l, self.volume_id());
        let backups: &[u64] = if l.fat_type == FatType::Fat32 {
            &[0, 6]
        } else {
            &[0]
        };
        for &sector in backups {
            disk.seek(SeekFrom::Start(sector * SECTOR + 440))
                .map_err(w)?;
            disk.write_all(&table).map_err(w)?;
        }
        disk.seek(SeekFrom::Start(0)).map_err(w)?;

        let fs = fatfs::FileSystem::new(
            &mut *disk,
            fatfs::FsOptions::new()
                .time_provider(&FIXED_TIME)
                .update_accessed_date(false),
        )
        .map_err(w)?;
        if fs.fat_type() != fat_type_of(l.fat_type) {
            return Err(FatError::Internal(format!(
                "fatfs made {:?} where the layout says {}",
                fs.fat_type(),
                l.fat_type
            )));
        }
        let mut queue = std::collections::VecDeque::from([(&self.root, fs.root_dir())]);
        while let Some((dir, at)) = queue.pop_front() {
            for child in dir.children.values() {
                match child {
                    Node::Dir(d) => {
                        let sub = at.create_dir(&d.name).map_err(w)?;
                        queue.push_back((d, sub));
                    }
                    Node::File(f) => {
                        let mut file = at.create_file(&f.name).map_err(w)?;
                        match &f.source {
                            Source::Memory(data) => file.write_all(data).map_err(w)?,
                            Source::Host(path) => copy_host_file(path, f.len, &mut file)?,
                        }
                        file.flush().map_err(w)?;
                    }
                }
            }
        }
        drop(queue);
        let stats = fs.stats().map_err(w)?;
        let used = stats.total_clusters() - stats.free_clusters();
        if used != l.used_clusters || stats.total_clusters() != l.clusters {
            return Err(FatError::Internal(format!(
                "{used} of {} clusters used, {} of {} planned",
                stats.total_clusters(),
                l.used_clusters,
                l.clusters
            )));
        }
        fs.unmount().map_err(w)?;
        fix_dot_entries(disk, l)
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
    if let Some(c) = name
        .chars()
        .find(|&c| c < ' ' || c == '\x7F' || "\"*/:<>?\\|".contains(c))
    {
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
    if let Some(c) = name.chars().find(|&c| u32::from(c) > 0xFFFF) {
        return Err(NameError::OutsideBmp {
            name: name.into(),
            c,
        });
    }
    if name.len() > 255 {
        return Err(NameError::TooManyBytes {
            name: name.into(),
            bytes: name.len(),
        });
    }
    Ok(())
}

/// Directory entries `name` takes as `fatfs` writes it: long-name entries
/// (13 UTF-16 units each; `fatfs` writes them for every name, an exact 8.3
/// one too) and the 8.3 entry.
fn slots(name: &str) -> u32 {
    name.encode_utf16().count().div_ceil(13) as u32 + 1
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

/// Bytes 440..510 of the boot sector: the disk signature and an MBR
/// partition table of one active partition that starts at sector 0 and
/// spans the image (as `mkfs.fat --mbr=y` makes it): `embedded-sdmmc`
/// opens volumes only through a partition table.
fn partition_table(l: &Layout, signature: u32) -> [u8; 70] {
    let total = l.image_bytes / SECTOR;
    let mut b = [0u8; 70];
    b[..4].copy_from_slice(&signature.to_le_bytes());
    let p = 6;
    b[p] = 0x80;
    b[p + 1..p + 4].copy_from_slice(&chs(0));
    b[p + 4] = match (l.fat_type, total < 0x1_0000) {
        (FatType::Fat32, _) => 0x0C,
        (FatType::Fat16, true) => 0x04,
        (FatType::Fat16, false) => 0x06,
    };
    b[p + 5..p + 8].copy_from_slice(&chs(total - 1));
    b[p + 8..p + 12].copy_from_slice(&0u32.to_le_bytes());
    b[p + 12..p + 16].copy_from_slice(&(total as u32).to_le_bytes());
    b
}

/// Put right what `fatfs` 0.3.6 (the newest on crates.io) writes wrong
/// in every directory it creates, fixed upstream but not released
/// (rafalh/rust-fatfs#100, #99): a long-name entry before `.` and before
/// `..`, so they are not in the first two slots, and on FAT32 a `..`
/// naming the root by its cluster instead of 0. `fsck.fat` reports both.
/// Each directory's first four entries, `[LFN, ., LFN, ..]`, become
/// `[., .., free, free]`: the directory keeps its size (the census counts
/// four entries for the two, [`DOT_ENTRIES`]).
///
/// Walks the written volume's directories from the root, reading the FAT
/// to follow their cluster chains.
fn fix_dot_entries<D: Read + Write + Seek>(disk: &mut D, l: &Layout) -> Result<(), FatError> {
    let w = FatError::Write;
    let fat32 = l.fat_type == FatType::Fat32;
    let cs = u64::from(l.cluster_bytes);
    let fat_at = u64::from(l.reserved_sectors) * SECTOR;
    let cluster_at = |c: u32| l.data_offset + u64::from(c - 2) * cs;
    let read = |disk: &mut D, at: u64, buf: &mut [u8]| -> Result<(), FatError> {
        disk.seek(SeekFrom::Start(at)).map_err(w)?;
        disk.read_exact(buf).map_err(w)
    };
    // A directory's bytes, its cluster chain followed.
    let dir_bytes = |disk: &mut D, first: u32| -> Result<Vec<u8>, FatError> {
        let mut out = Vec::new();
        let mut c = first;
        for _ in 0..=l.clusters {
            if c < 2 || c - 2 >= l.clusters {
                return Err(FatError::Internal(format!(
                    "directory chain reaches cluster {c}"
                )));
            }
            let start = out.len();
            out.resize(start + cs as usize, 0);
            read(disk, cluster_at(c), &mut out[start..])?;
            let mut entry = [0u8; 4];
            let width = if fat32 { 4 } else { 2 };
            read(
                disk,
                fat_at + u64::from(c) * width as u64,
                &mut entry[..width],
            )?;
            let next = u32::from_le_bytes(entry) & 0x0FFF_FFFF;
            if next >= if fat32 { 0x0FFF_FFF8 } else { 0xFFF8 } {
                return Ok(out);
            }
            c = next;
        }
        Err(FatError::Internal(format!(
            "directory chain from cluster {first} loops"
        )))
    };
    let root = if fat32 {
        dir_bytes(disk, 2)?
    } else {
        let mut b = vec![0u8; l.root_entries as usize * 32];
        read(disk, fat_at + 2 * u64::from(l.fat_sectors) * SECTOR, &mut b)?;
        b
    };
    let mut queue = std::collections::VecDeque::from([(root, true)]);
    while let Some((bytes, is_root)) = queue.pop_front() {
        for e in bytes.chunks_exact(32) {
            match e[0] {
                0 => break,
                0xE5 | b'.' => continue,
                _ => {}
            }
            let attr = e[11];
            if attr == 0x0F || attr & 0x08 != 0 || attr & 0x10 == 0 {
                continue; // long name, label, file
            }
            let first = u32::from(u16::from_le_bytes([e[26], e[27]]))
                | u32::from(u16::from_le_bytes([e[20], e[21]])) << 16;
            let mut head = [0u8; 128];
            read(disk, cluster_at(first), &mut head)?;
            let lfn = |i: usize| head[i * 32 + 11] == 0x0F;
            if !(lfn(0)
                && &head[32..43] == b".          "
                && lfn(2)
                && &head[96..107] == b"..         ")
            {
                return Err(FatError::Internal(format!(
                    "directory at cluster {first} does not start as fatfs 0.3.6 starts one"
                )));
            }
            let mut fixed = [0u8; 128];
            fixed[..32].copy_from_slice(&head[32..64]);
            fixed[32..64].copy_from_slice(&head[96..128]);
            if is_root {
                fixed[32 + 20..32 + 22].fill(0);
                fixed[32 + 26..32 + 28].fill(0);
            }
            fixed[64] = 0xE5;
            fixed[96] = 0xE5;
            disk.seek(SeekFrom::Start(cluster_at(first))).map_err(w)?;
            disk.write_all(&fixed).map_err(w)?;
            queue.push_back((dir_bytes(disk, first)?, false));
        }
    }
    Ok(())
}

/// `fatfs`'s name for a FAT type.
fn fat_type_of(t: FatType) -> fatfs::FatType {
    match t {
        FatType::Fat16 => fatfs::FatType::Fat16,
        FatType::Fat32 => fatfs::FatType::Fat32,
    }
}

/// The time every entry gets: 2024-01-01 12:00:00, so that the same input
/// gives the same image.
#[derive(Debug)]
struct FixedTime;

static FIXED_TIME: FixedTime = FixedTime;

impl fatfs::TimeProvider for FixedTime {
    fn get_current_date(&self) -> fatfs::Date {
        fatfs::Date {
            year: 2024,
            month: 1,
            day: 1,
        }
    }

    fn get_current_date_time(&self) -> fatfs::DateTime {
        fatfs::DateTime {
            date: self.get_current_date(),
            time: fatfs::Time {
                hour: 12,
                min: 0,
                sec: 0,
                millis: 0,
            },
        }
    }
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
    loop {
        let layout = finish_layout(
            FatType::Fat16,
            k,
            used(k),
            want(k).max(FAT16_MIN_CLUSTERS),
            root_entries,
        );
        match layout {
            // Near the limit, with a large root: larger clusters.
            Err(FatError::VolumeTooLarge { .. }) if k + 1 < CLUSTER_SIZES => k += 1,
            layout => return layout,
        }
    }
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

/// The geometry `fatfs::format_volume` gives `total` sectors with
/// `spc`-sector clusters and a FAT16 root of `root_entries` entries:
/// (FAT type, sectors per FAT, data clusters, first data sector), or
/// `None` if it refuses them. `fatfs` tries FAT32 (8 reserved sectors, no
/// fixed root), then FAT16 (1 reserved sector); a type is taken when the
/// cluster count it leads to is that type's.
fn fatfs_geometry(total: u64, spc: u64, root_entries: u32) -> Option<(FatType, u64, u64, u64)> {
    for (fat_type, reserved, root, bits) in [
        (FatType::Fat32, 8, 0, 32),
        (FatType::Fat16, 1, u64::from(root_entries) * 32 / SECTOR, 16),
    ] {
        // Its FAT size: ceil((t0 + 2 spc) / (spc * 512 * 8 / bits + 2)).
        let t0 = total.checked_sub(reserved + root)?;
        let fat = (t0 + 2 * spc).div_ceil(spc * SECTOR * 8 / bits + 2);
        let start = reserved + root + 2 * fat;
        let clusters = total.checked_sub(start)? / spc;
        let type_of = match clusters {
            0..4_085 => None,
            4_085..65_525 => Some(FatType::Fat16),
            _ => Some(FatType::Fat32),
        };
        if type_of == Some(fat_type) {
            return Some((fat_type, fat, clusters, start));
        }
    }
    None
}

/// The smallest image, a whole number of 32-sector tracks (16 KiB), whose
/// volume has at least `count` clusters of `512 << k` bytes, as `fatfs`
/// lays it out.
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
    let max = if fat32 {
        FAT32_MAX_CLUSTERS.min((u64::from(u32::MAX) - 0x10_0000) / spc)
    } else {
        FAT16_HARD_MAX
    };
    if count > max {
        return Err(FatError::VolumeTooLarge {
            fat_type,
            clusters: count,
            max,
        });
    }
    let reserved = if fat32 { 8 } else { 1 };
    let root = u64::from(root_entries) * 32 / SECTOR;
    let fat = ((count + 2) * entry_bytes).div_ceil(SECTOR);
    let round = spc.max(SECTORS_PER_TRACK);
    let mut total = (reserved + root + 2 * fat + count * spc).next_multiple_of(round);
    loop {
        let geometry = fatfs_geometry(total, spc, root_entries);
        match geometry {
            Some((t, fat, clusters, start)) if t == fat_type && clusters >= count => {
                if clusters > max {
                    return Err(FatError::VolumeTooLarge {
                        fat_type,
                        clusters,
                        max,
                    });
                }
                return Ok(Layout {
                    fat_type,
                    cluster_bytes: (SECTOR << k) as u32,
                    clusters: clusters as u32,
                    used_clusters: used as u32,
                    reserved_sectors: reserved as u32,
                    fat_sectors: fat as u32,
                    root_entries,
                    data_offset: start * SECTOR,
                    partition_offset: 0,
                    image_bytes: total * SECTOR,
                });
            }
            // Too few clusters: a larger image.
            Some((t, _, _, _)) if t == fat_type => total += round,
            // A FAT16 volume whose root directory's sectors, given to
            // clusters instead, make enough for FAT32: fatfs would make
            // FAT32 of it. Too large for FAT16 with these clusters.
            Some((FatType::Fat32, _, clusters, _)) if fat_type == FatType::Fat16 => {
                return Err(FatError::VolumeTooLarge {
                    fat_type,
                    clusters,
                    max: FAT16_HARD_MAX,
                });
            }
            // Cannot happen with the margins the callers keep from the
            // type boundaries; say so rather than loop.
            _ => {
                return Err(FatError::Internal(format!(
                    "no {fat_type} geometry for {count} clusters of {} bytes ({total} sectors: {geometry:?})",
                    SECTOR << k
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recount(dir: &Dir, root: bool, c: &mut Census) {
        let entries: u32 = (if root { 0 } else { DOT_ENTRIES })
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
        // Every planned cluster is allocated, no more: write_volume()
        // checks it against fatfs's count.
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
        }
    }

    /// Across the cluster counts each type allows, the layout is the one
    /// `fatfs` makes: its type, at least the clusters asked for, no more
    /// than a track's worth beyond.
    #[test]
    fn layouts_match_fatfs_geometry_at_every_size() {
        let mut x: u64 = 3;
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let k = ((x >> 40) % CLUSTER_SIZES as u64) as usize;
            let fat32 = x >> 63 == 1;
            let (t, count, root) = if fat32 {
                let max = FAT32_MAX_CLUSTERS.min((u64::from(u32::MAX) - 0x10_0000) >> k);
                (
                    FatType::Fat32,
                    FAT32_MIN_CLUSTERS + (x >> 8) % (max - FAT32_MIN_CLUSTERS),
                    0,
                )
            } else {
                let root = (512 + ((x >> 20) % 4000) as u32 * 16).min(FAT16_MAX_ROOT);
                (
                    FatType::Fat16,
                    FAT16_MIN_CLUSTERS + (x >> 8) % (FAT16_MAX_CLUSTERS - FAT16_MIN_CLUSTERS + 1),
                    root,
                )
            };
            let l = match finish_layout(t, k, 0, count, root) {
                Ok(l) => l,
                // Only where the root's sectors would make it FAT32.
                Err(FatError::VolumeTooLarge { clusters, .. })
                    if t == FatType::Fat16 && clusters >= 65_525 =>
                {
                    continue;
                }
                Err(e) => panic!("{t} {count} k={k}: {e}"),
            };
            let spc = 1u64 << k;
            let slack = SECTORS_PER_TRACK.max(spc) / spc + 1;
            assert!(
                u64::from(l.clusters) >= count && u64::from(l.clusters) <= count + slack,
                "{t} {count} k={k}: {l:?}"
            );
            assert_eq!(l.image_bytes % (16 << 10), 0);
            let g = fatfs_geometry(l.image_bytes / SECTOR, spc, root).unwrap();
            assert_eq!(g.0, t);
            assert_eq!(g.2, u64::from(l.clusters));
        }
    }
}
