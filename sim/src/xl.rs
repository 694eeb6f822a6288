//! xl's domain configuration files, read into a typed [`DomainSpec`].
//!
//! The simulator's [toolstack](crate::toolstack) reads the same file `xl
//! create` reads, so one file describes a guest's devices on the simulator
//! and on real Xen (the Linux dom0 rig already feeds `xl create`).
//!
//! ```
//! use xenpal_sim::xl::DomainSpec;
//! use std::net::Ipv4Addr;
//!
//! let spec = DomainSpec::parse(
//!     "# the demo site\n\
//!      name = \"static-site\"\n\
//!      memory = 32\n\
//!      vcpus = 1                       # ignored: every key xl knows and we don't\n\
//!      vif = [ 'ip=10.0.0.2/24, mac=00:16:3e:00:00:02, bridge=xenbr0' ]\n\
//!      disk = [\n\
//!          'format=raw, vdev=xvda, access=ro, target=site',\n\
//!      ]\n\
//!      xenpal_forward = [ '8080:80' ]\n",
//! )
//! .unwrap();
//! assert_eq!(spec.name, "static-site");
//! assert_eq!(spec.vifs[0].ip, Some((Ipv4Addr::new(10, 0, 0, 2), 24)));
//! assert!(spec.disks[0].read_only);
//! assert_eq!(spec.forwards[0].host_port, 8080);
//! ```
//!
//! # The syntax (`man xl.cfg`, libxlu's lexer and grammar)
//!
//! - One setting per line, `key = value` (or several on a line, separated
//!   by `;`). `key += value` appends to a list, or to a string.
//! - Keys are `[a-z][_0-9a-z]*`.
//! - A value is a number (`[0-9][0-9a-fx]*`, read as C's `strtol` with base
//!   0 reads it: `0x20` is hex, `040` octal), a string in `"..."` or `'...'`
//!   (both take the escapes `\" \' \\ \a \b \f \n \r \t \v`; numeric escapes,
//!   which xl drops, are refused), or a list `[ v, v, ... ]` that may span
//!   lines, may be empty, may end with a comma, and may nest.
//! - `#` starts a comment, to the end of the line.
//! - As in xl, numbers and strings are the same kind of value: `memory =
//!   "32"` is 32 and `name = 7` is `"7"`. A key that takes a list refuses a
//!   single value, and the other way round.
//! - A key set twice takes the last value.
//!
//! # Keys read
//!
//! | key | meaning |
//! |---|---|
//! | `name` | the domain's name (required) |
//! | `memory` | RAM in MiB (default 32) |
//! | `vif` | list of network interfaces, [`VifSpec`] |
//! | `disk` | list of disks, [`DiskSpec`] |
//! | `xenpal_forward` | xenpal's own: host TCP ports forwarded to the guest, [`ForwardSpec`] |
//!
//! Every other key (`kernel`, `type`, `vcpus`, `on_poweroff`, ...) is
//! ignored, so the file still feeds `xl create`; xl in turn ignores the
//! `xenpal_*` keys, as it ignores every key it does not look up.
//!
//! # Errors
//!
//! Every problem is an [`XlError`] naming the line. Nothing here panics,
//! whatever the input.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The default RAM of a domain, in MiB (the simulator gives a domain
/// `memory × 256` pages of 4 KiB).
pub const DEFAULT_MEMORY_MIB: u64 = 32;

/// The prefix length given to a vif's `ip=` without one.
pub const DEFAULT_PREFIX: u8 = 24;

/// How deeply lists may nest (xl has no limit; deeper input is refused
/// rather than risking the stack).
const MAX_NESTING: usize = 32;

/// Why a configuration cannot be read. Lines count from 1; a spec parsed
/// on its own (not from a file, as with [`VifSpec::parse`]) has line 0.
#[derive(Debug)]
#[non_exhaustive]
pub enum XlError {
    /// The file could not be read ([`DomainSpec::from_file`]).
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Not xl's syntax: a stray character, an unterminated string, a
    /// missing `=`, two values on one line, a bad escape, text that is not
    /// UTF-8.
    Syntax {
        /// Where.
        line: usize,
        /// What is wrong.
        what: String,
    },
    /// No `name` setting (xl requires one too).
    MissingName,
    /// A key that takes a number has something else, or a number out of
    /// range.
    BadNumber {
        /// Where.
        line: usize,
        /// The key.
        key: String,
        /// The value, as written.
        value: String,
        /// What is wrong.
        what: String,
    },
    /// A key's value has the wrong shape (a list where a single value goes,
    /// or the other way round), or `+=` mixes the two.
    BadValue {
        /// Where.
        line: usize,
        /// The key.
        key: String,
        /// What is wrong.
        what: String,
    },
    /// A `vif` entry that cannot be used.
    BadVif {
        /// Where.
        line: usize,
        /// The entry, as written.
        spec: String,
        /// What is wrong.
        what: String,
    },
    /// A `disk` entry that cannot be used.
    BadDisk {
        /// Where.
        line: usize,
        /// The entry, as written.
        spec: String,
        /// What is wrong.
        what: String,
    },
    /// An `xenpal_forward` entry that cannot be used.
    BadForward {
        /// Where.
        line: usize,
        /// The entry, as written.
        spec: String,
        /// What is wrong.
        what: String,
    },
}

impl XlError {
    /// The line at fault, if the error has one (0: a spec parsed on its
    /// own).
    pub fn line(&self) -> Option<usize> {
        match self {
            XlError::Io { .. } | XlError::MissingName => None,
            XlError::Syntax { line, .. }
            | XlError::BadNumber { line, .. }
            | XlError::BadValue { line, .. }
            | XlError::BadVif { line, .. }
            | XlError::BadDisk { line, .. }
            | XlError::BadForward { line, .. } => Some(*line),
        }
    }

    fn at(self, new_line: usize) -> Self {
        match self {
            XlError::BadVif { spec, what, .. } => XlError::BadVif {
                line: new_line,
                spec,
                what,
            },
            XlError::BadDisk { spec, what, .. } => XlError::BadDisk {
                line: new_line,
                spec,
                what,
            },
            XlError::BadForward { spec, what, .. } => XlError::BadForward {
                line: new_line,
                spec,
                what,
            },
            other => other,
        }
    }
}

impl fmt::Display for XlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line().filter(|l| *l > 0) {
            write!(f, "line {line}: ")?;
        }
        match self {
            XlError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            XlError::Syntax { what, .. } => write!(f, "syntax error: {what}"),
            XlError::MissingName => f.write_str("no `name` setting: a domain needs a name"),
            XlError::BadNumber {
                key, value, what, ..
            } => write!(f, "`{key}` = {value:?}: {what}"),
            XlError::BadValue { key, what, .. } => write!(f, "`{key}`: {what}"),
            XlError::BadVif { spec, what, .. } => write!(f, "bad vif spec {spec:?}: {what}"),
            XlError::BadDisk { spec, what, .. } => write!(f, "bad disk spec {spec:?}: {what}"),
            XlError::BadForward { spec, what, .. } => {
                write!(f, "bad xenpal_forward spec {spec:?}: {what}")
            }
        }
    }
}

impl std::error::Error for XlError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            XlError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------
// The typed result.

/// A domain as a configuration file describes it: what the
/// [toolstack](crate::toolstack) builds. Build one from a file
/// ([`from_file`](Self::from_file)), from text ([`parse`](Self::parse)), or
/// in code:
///
/// ```
/// use xenpal_sim::xl::{DiskSpec, DomainSpec, VifSpec};
/// use std::net::Ipv4Addr;
///
/// let spec = DomainSpec::new("static-site")
///     .memory_mib(32)
///     .vif(VifSpec::new().ip(Ipv4Addr::new(10, 0, 0, 2), 24))
///     .disk(DiskSpec::new("apps/site", "xvda").read_only())
///     .forward(8080, 80);
/// assert_eq!(spec.disks[0].vdev, "xvda");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainSpec {
    /// `name`.
    pub name: String,
    /// `memory`, in MiB.
    pub memory_mib: u64,
    /// `vif`, in order (vif 0 first).
    pub vifs: Vec<VifSpec>,
    /// `disk`, in order.
    pub disks: Vec<DiskSpec>,
    /// `xenpal_forward`.
    pub forwards: Vec<ForwardSpec>,
}

/// One `vif` entry: comma-separated `key=value` pairs, as
/// `'ip=10.0.0.2/24, mac=00:16:3e:00:00:02, bridge=xenbr0'`.
///
/// Keys read: `ip` (`a.b.c.d` or `a.b.c.d/prefix`, prefix
/// [`DEFAULT_PREFIX`] if left out; xl allows several addresses separated
/// by spaces, for `vif-route`: the first is the guest's), `mac`
/// (`xx:xx:xx:xx:xx:xx`), `bridge`, `gateway` (`a.b.c.d`) and `mtu`. Other
/// keys (`script`, `model`, `vifname`, `rate`, ...) are ignored, as are
/// empty entries; a malformed value of a key read is an error.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VifSpec {
    /// `ip=`: the guest's address and prefix length.
    pub ip: Option<(Ipv4Addr, u8)>,
    /// `mac=`.
    pub mac: Option<[u8; 6]>,
    /// `bridge=`: the switch to join.
    pub bridge: Option<String>,
    /// `gateway=`: the guest's router (the simulator puts dom0's gateway
    /// there).
    pub gateway: Option<Ipv4Addr>,
    /// `mtu=`.
    pub mtu: Option<u16>,
}

/// One `disk` entry, in xl's `key=value` form (`'format=raw, vdev=xvda,
/// access=ro, target=disk.img'`; `target=` must come last, as it takes the
/// rest of the entry) or the positional legacy form (`'disk.img,raw,xvda,rw'`
/// = target, format, vdev, access; `'phy:/dev/sdb,xvdb,w'` with a prefix
/// that stands for the format).
///
/// Read: `target`, `vdev` (required, as for xl), `access` (`ro`/`r` or
/// `rw`/`w`), `format` (only `raw`: the simulator serves raw images).
/// Ignored: `backend`, `backendtype`, `script` (the simulator runs no
/// hotplug scripts; it opens the target itself), `devtype=disk`,
/// `specification=xen`, `discard`, `trusted` and xl's other flags. Refused:
/// what xl refuses (unknown parameters, unknown formats, a respecified
/// `vdev` or `target`), and what the simulator cannot do (`cdrom`,
/// `qcow2`, `vhd`, virtio disks, `iscsi:`/`nbd:`/`drbd:` targets).
///
/// A target that is a directory is xenpal's extension: the toolstack packs
/// it into read-only FAT images.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskSpec {
    /// `target=`: an image file, or a directory to pack. Relative paths
    /// are resolved against the configuration file's directory by
    /// [`DomainSpec::from_file`], else against the working directory.
    pub target: PathBuf,
    /// `vdev=`: the guest's name for it (`xvda` ...).
    pub vdev: String,
    /// `access=ro`.
    pub read_only: bool,
}

/// One `xenpal_forward` entry, `'HOST:GUEST'`: TCP port `HOST` on the host's
/// 127.0.0.1 (0: any free port) forwarded to port `GUEST` of the guest's
/// address (its first vif with an `ip=`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ForwardSpec {
    /// The host's port; 0 for any free one.
    pub host_port: u16,
    /// The guest's port (not 0).
    pub guest_port: u16,
}

impl DomainSpec {
    /// A domain named `name` with [`DEFAULT_MEMORY_MIB`] and no devices.
    pub fn new(name: impl Into<String>) -> Self {
        DomainSpec {
            name: name.into(),
            memory_mib: DEFAULT_MEMORY_MIB,
            vifs: Vec::new(),
            disks: Vec::new(),
            forwards: Vec::new(),
        }
    }

    /// Set the RAM in MiB.
    pub fn memory_mib(mut self, mib: u64) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Add a vif (after those already there).
    pub fn vif(mut self, vif: VifSpec) -> Self {
        self.vifs.push(vif);
        self
    }

    /// Add a disk.
    pub fn disk(mut self, disk: DiskSpec) -> Self {
        self.disks.push(disk);
        self
    }

    /// Forward the host's `127.0.0.1:host_port` (0: any free port) to the
    /// guest's `guest_port`.
    pub fn forward(mut self, host_port: u16, guest_port: u16) -> Self {
        self.forwards.push(ForwardSpec {
            host_port,
            guest_port,
        });
        self
    }

    /// Read a configuration file. Relative disk targets are resolved
    /// against the file's directory.
    ///
    /// Errors: [`XlError::Io`] if it cannot be read; otherwise as
    /// [`parse`](Self::parse) (text that is not UTF-8 is a
    /// [`XlError::Syntax`]).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, XlError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| XlError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let text = match std::str::from_utf8(&bytes) {
            Ok(t) => t,
            Err(e) => {
                let line = 1 + bytes[..e.valid_up_to()]
                    .iter()
                    .filter(|b| **b == b'\n')
                    .count();
                return Err(XlError::Syntax {
                    line,
                    what: "the file is not UTF-8".into(),
                });
            }
        };
        let base = path.parent().unwrap_or(Path::new(""));
        Self::parse_in(text, Some(base))
    }

    /// Read a configuration from text. Relative disk targets stay relative.
    ///
    /// Errors: [`XlError::Syntax`], [`XlError::MissingName`],
    /// [`XlError::BadNumber`] (`memory` not a number, or 0),
    /// [`XlError::BadValue`] (a list for `name`, a single value for
    /// `vif`, ...), [`XlError::BadVif`], [`XlError::BadDisk`],
    /// [`XlError::BadForward`].
    pub fn parse(text: &str) -> Result<Self, XlError> {
        Self::parse_in(text, None)
    }

    fn parse_in(text: &str, base: Option<&Path>) -> Result<Self, XlError> {
        let settings = Parser::new(text).file()?;
        let mut spec = DomainSpec::new("");
        let mut named = false;
        for (key, s) in &settings {
            match key.as_str() {
                "name" => {
                    let name = s.atom(key)?;
                    if name.is_empty() {
                        return Err(XlError::BadValue {
                            line: s.line,
                            key: key.clone(),
                            what: "the name is empty".into(),
                        });
                    }
                    spec.name = name.to_string();
                    named = true;
                }
                "memory" => {
                    let text = s.atom(key)?;
                    let bad = |what: &str| XlError::BadNumber {
                        line: s.line,
                        key: key.clone(),
                        value: text.to_string(),
                        what: what.into(),
                    };
                    let n = strtol(text).ok_or_else(|| bad("not a number"))?;
                    spec.memory_mib = u64::try_from(n)
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| bad("memory must be at least 1 MiB"))?;
                }
                "vif" => {
                    for (line, entry) in s.strings(key)? {
                        spec.vifs
                            .push(VifSpec::parse(entry).map_err(|e| e.at(line))?);
                    }
                }
                "disk" => {
                    for (line, entry) in s.strings(key)? {
                        let mut d = DiskSpec::parse(entry).map_err(|e| e.at(line))?;
                        if let Some(base) = base.filter(|_| d.target.is_relative()) {
                            d.target = base.join(&d.target);
                        }
                        spec.disks.push(d);
                    }
                }
                "xenpal_forward" => {
                    for (line, entry) in s.strings(key)? {
                        spec.forwards
                            .push(ForwardSpec::parse(entry).map_err(|e| e.at(line))?);
                    }
                }
                _ => {}
            }
        }
        if !named {
            return Err(XlError::MissingName);
        }
        Ok(spec)
    }
}

impl VifSpec {
    /// A vif with nothing set: xl's defaults (a MAC chosen by the
    /// toolstack, bridge `xenbr0`, no address).
    pub fn new() -> Self {
        Self::default()
    }

    /// Set `ip=` (address and prefix length).
    pub fn ip(mut self, ip: Ipv4Addr, prefix: u8) -> Self {
        self.ip = Some((ip, prefix));
        self
    }

    /// Set `mac=`.
    pub fn mac(mut self, mac: [u8; 6]) -> Self {
        self.mac = Some(mac);
        self
    }

    /// Set `bridge=`.
    pub fn bridge(mut self, bridge: impl Into<String>) -> Self {
        self.bridge = Some(bridge.into());
        self
    }

    /// Set `gateway=`.
    pub fn gateway(mut self, gateway: Ipv4Addr) -> Self {
        self.gateway = Some(gateway);
        self
    }

    /// Read one `vif` entry (see the type's documentation).
    ///
    /// Errors: [`XlError::BadVif`] (line 0) for a malformed `ip`, `mac`,
    /// `bridge`, `gateway` or `mtu`, or a pair without `=`.
    pub fn parse(spec: &str) -> Result<Self, XlError> {
        let bad = |what: String| XlError::BadVif {
            line: 0,
            spec: spec.to_string(),
            what,
        };
        let mut v = VifSpec::default();
        for token in spec.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let Some((key, value)) = token.split_once('=') else {
                return Err(bad(format!("`{token}` is not key=value")));
            };
            let (key, value) = (key.trim(), value.trim());
            match key {
                "ip" => {
                    let mut first = None;
                    for addr in value.split_whitespace() {
                        let cidr = parse_cidr(addr).ok_or_else(|| {
                            bad(format!("ip `{addr}` is not a.b.c.d or a.b.c.d/prefix"))
                        })?;
                        first.get_or_insert(cidr);
                    }
                    v.ip = Some(first.ok_or_else(|| bad("ip= is empty".into()))?);
                }
                "mac" => {
                    v.mac =
                        Some(parse_mac(value).ok_or_else(|| {
                            bad(format!("mac `{value}` is not xx:xx:xx:xx:xx:xx"))
                        })?);
                }
                "bridge" => {
                    if value.is_empty() {
                        return Err(bad("bridge= is empty".into()));
                    }
                    v.bridge = Some(value.to_string());
                }
                "gateway" => {
                    v.gateway = Some(
                        value
                            .parse()
                            .map_err(|_| bad(format!("gateway `{value}` is not a.b.c.d")))?,
                    );
                }
                "mtu" => {
                    v.mtu = Some(
                        value
                            .parse()
                            .ok()
                            .filter(|m| *m >= 68)
                            .ok_or_else(|| bad(format!("mtu `{value}` is not 68 to 65535")))?,
                    );
                }
                _ => {}
            }
        }
        Ok(v)
    }
}

/// The simulator's blkback serves raw images only.
#[derive(Copy, Clone, PartialEq, Eq)]
enum Format {
    Unknown,
    Raw,
}

impl DiskSpec {
    /// A writable disk `vdev` backed by `target`.
    pub fn new(target: impl Into<PathBuf>, vdev: impl Into<String>) -> Self {
        DiskSpec {
            target: target.into(),
            vdev: vdev.into(),
            read_only: false,
        }
    }

    /// Make it read-only (`access=ro`).
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// Read one `disk` entry (see the type's documentation).
    ///
    /// Errors: [`XlError::BadDisk`] (line 0).
    pub fn parse(spec: &str) -> Result<Self, XlError> {
        let bad = |what: String| XlError::BadDisk {
            line: 0,
            spec: spec.to_string(),
            what,
        };
        let mut target: Option<String> = None;
        let mut vdev: Option<String> = None;
        let mut format = Format::Unknown;
        let mut access: Option<bool> = None;
        let mut had_prefix = false;
        let mut positional_access = false;
        let set_format = |format: &mut Format, value: &str| -> Result<(), XlError> {
            match value {
                "" | "raw" => {
                    *format = Format::Raw;
                    Ok(())
                }
                "qcow" | "qcow2" | "vhd" | "qed" | "empty" => Err(bad(format!(
                    "format {value}: the simulator serves raw images only"
                ))),
                other => Err(bad(format!("unknown format `{other}`"))),
            }
        };
        let parse_access = |value: &str| match value {
            "r" | "ro" => Ok(true),
            "" | "w" | "rw" => Ok(false),
            other => Err(bad(format!("unknown access `{other}` (ro or rw)"))),
        };
        let save = |slot: &mut Option<String>, what: &str, value: &str| match slot {
            Some(old) if !old.is_empty() => Err(bad(format!("{what} respecified"))),
            _ => {
                *slot = Some(value.to_string());
                Ok(())
            }
        };
        let mut rest = spec;
        loop {
            rest = rest.trim_start_matches([' ', '\t', '\n']);
            if rest.is_empty() {
                break;
            }
            // `target=` takes the rest of the entry.
            if let Some(t) = rest.strip_prefix("target=") {
                let t = t.strip_suffix(',').unwrap_or(t);
                save(&mut target, "target", t.trim_end())?;
                break;
            }
            // Deprecated prefixes: `phy:`, `file:`, `raw:`, `tap:aio:`...
            if let Some((prefix, after)) = deprecated_prefix(rest) {
                match prefix {
                    "raw" => set_format(&mut format, "raw")?,
                    "qcow" | "qcow2" | "vhd" => set_format(&mut format, prefix)?,
                    "iscsi" | "nbd" | "enbd" | "drbd" => {
                        return Err(bad(format!(
                            "{prefix}: targets: the simulator opens files and directories only"
                        )));
                    }
                    "tapdisk" | "tap" | "tap2" | "aio" | "ioemu" | "file" | "phy" => {}
                    other => return Err(bad(format!("unknown deprecated disk prefix `{other}:`"))),
                }
                had_prefix = true;
                rest = after;
                continue;
            }
            let (token, after) = rest.split_once(',').unwrap_or((rest, ""));
            rest = after;
            let token_t = token.trim_end();
            if let Some((key, value)) = token_t.split_once('=') {
                let value = value.trim();
                match key {
                    "format" => set_format(&mut format, value)?,
                    "access" => access = Some(parse_access(value)?),
                    "vdev" => save(&mut vdev, "vdev", value)?,
                    "devtype" => match value {
                        "disk" => {}
                        "cdrom" => return Err(bad("cdrom devices are not supported".into())),
                        other => return Err(bad(format!("unknown devtype `{other}`"))),
                    },
                    "backendtype" => match value {
                        "phy" | "tap" | "qdisk" | "standalone" => {}
                        other => return Err(bad(format!("unknown backendtype `{other}`"))),
                    },
                    "specification" => match value {
                        "xen" => {}
                        "virtio" => {
                            return Err(bad("virtio disks are not supported (blkif only)".into()));
                        }
                        other => return Err(bad(format!("unknown specification `{other}`"))),
                    },
                    "grant_usage" if value == "0" || value == "1" => {}
                    "backend" | "script" | "colo-host" | "colo-port" | "colo-export"
                    | "active-disk" | "hidden-disk" => {}
                    other => return Err(bad(format!("unknown parameter `{other}`"))),
                }
                continue;
            }
            match token_t {
                "cdrom" => return Err(bad("cdrom devices are not supported".into())),
                "direct-io-safe" | "discard" | "no-discard" | "colo" | "no-colo" | "trusted"
                | "untrusted" => continue,
                _ => {}
            }
            // Positional: target, format, vdev, access.
            if target.is_none() {
                target = Some(token_t.to_string());
            } else if !had_prefix && format == Format::Unknown {
                set_format(&mut format, token_t)?;
            } else if vdev.is_none() {
                let v = match token_t.rsplit_once(':') {
                    Some((v, "disk")) => v,
                    Some((_, "cdrom")) => {
                        return Err(bad("cdrom devices are not supported".into()));
                    }
                    Some((_, other)) => return Err(bad(format!("unknown device type `{other}`"))),
                    None => token_t,
                };
                vdev = Some(v.to_string());
            } else if !positional_access {
                positional_access = true;
                access = Some(parse_access(token_t)?);
            } else {
                return Err(bad("too many positional parameters".into()));
            }
        }
        let target = target
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad("no target".into()))?;
        let vdev = vdev
            .filter(|v| !v.is_empty())
            .ok_or_else(|| bad("no vdev (xl requires one)".into()))?;
        Ok(DiskSpec {
            target: PathBuf::from(target),
            vdev,
            read_only: access.unwrap_or(false),
        })
    }
}

impl ForwardSpec {
    /// Read one `xenpal_forward` entry, `'HOST:GUEST'`.
    ///
    /// Errors: [`XlError::BadForward`] (line 0) unless both are port
    /// numbers and `GUEST` is not 0.
    pub fn parse(spec: &str) -> Result<Self, XlError> {
        let bad = |what: &str| XlError::BadForward {
            line: 0,
            spec: spec.to_string(),
            what: what.into(),
        };
        let (h, g) = spec
            .trim()
            .split_once(':')
            .ok_or_else(|| bad("not HOST:GUEST"))?;
        let host_port = h
            .trim()
            .parse()
            .map_err(|_| bad("the host port is not 0 to 65535"))?;
        let guest_port = g
            .trim()
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("the guest port is not 1 to 65535"))?;
        Ok(ForwardSpec {
            host_port,
            guest_port,
        })
    }
}

/// `phy:`, `tap:`, ... at the start of `s`, as xl's disk lexer sees them:
/// a known prefix anywhere, or `[a-z][a-z0-9]*:` followed by something
/// other than a letter or digit (an unknown one). Returns the prefix's name
/// and what follows the colon.
fn deprecated_prefix(s: &str) -> Option<(&str, &str)> {
    let name_len = s
        .bytes()
        .position(|b| !(b.is_ascii_lowercase() || b.is_ascii_digit()))
        .unwrap_or(s.len());
    if name_len == 0 || !s.as_bytes()[0].is_ascii_lowercase() {
        return None;
    }
    let (name, after) = s.split_at(name_len);
    let after = after.strip_prefix(':')?;
    const KNOWN: &[&str] = &[
        "raw", "qcow", "qcow2", "vhd", "iscsi", "nbd", "enbd", "drbd", "tapdisk", "tap", "tap2",
        "aio", "ioemu", "file", "phy",
    ];
    let next_alnum = after
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (KNOWN.contains(&name) || !next_alnum).then_some((name, after))
}

/// `a.b.c.d` or `a.b.c.d/prefix`.
fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, p.parse().ok().filter(|p| *p <= 32)?),
        None => (s, DEFAULT_PREFIX),
    };
    Some((addr.parse().ok()?, prefix))
}

/// Six groups of one or two hex digits separated by `:`.
fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 2 {
            return None;
        }
        *byte = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// C's `strtol(s, &end, 0)` with `*end` required to be the end: leading
/// whitespace, a sign, `0x` hex, `0` octal, else decimal. `None` for
/// anything else, or on overflow.
fn strtol(s: &str) -> Option<i64> {
    let s = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (negative, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, digits) = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (16, h)
    } else if s.len() > 1 && s.starts_with('0') {
        (8, &s[1..])
    } else {
        (10, s)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let v = i64::from_str_radix(digits, radix).ok()?;
    Some(if negative { -v } else { v })
}

// ---------------------------------------------------------------------------
// The generic syntax: settings of atoms and lists.

/// A value: xl keeps numbers and strings alike, as text.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Value {
    Atom(String, usize),
    List(Vec<Value>),
}

/// A key's value and the line it was set on.
#[derive(Debug)]
struct Setting {
    value: Value,
    line: usize,
}

impl Setting {
    fn atom(&self, key: &str) -> Result<&str, XlError> {
        match &self.value {
            Value::Atom(s, _) => Ok(s),
            Value::List(_) => Err(XlError::BadValue {
                line: self.line,
                key: key.to_string(),
                what: "a list, but this key takes a single value".into(),
            }),
        }
    }

    /// A list of single values, each with its line.
    fn strings(&self, key: &str) -> Result<Vec<(usize, &str)>, XlError> {
        let bad = |what: &str| XlError::BadValue {
            line: self.line,
            key: key.to_string(),
            what: what.into(),
        };
        match &self.value {
            Value::Atom(..) => Err(bad(
                "a single value, but this key takes a list: [ '...', ... ]",
            )),
            Value::List(items) => items
                .iter()
                .map(|v| match v {
                    Value::Atom(s, line) => Ok((*line, s.as_str())),
                    Value::List(_) => Err(bad("a list inside the list; entries are strings")),
                })
                .collect(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// A number or a string: an atom.
    Atom(String),
    Comma,
    Open,
    Close,
    Assign,
    AddTo,
    Semi,
    Newline,
    Eof,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Atom(s) => format!("the value {s:?}"),
            Tok::Comma => "`,`".into(),
            Tok::Open => "`[`".into(),
            Tok::Close => "`]`".into(),
            Tok::Assign => "`=`".into(),
            Tok::AddTo => "`+=`".into(),
            Tok::Semi => "`;`".into(),
            Tok::Newline => "the end of the line".into(),
            Tok::Eof => "the end of the file".into(),
        }
    }
}

/// libxlu's lexer and grammar, by recursive descent with one token of
/// look-ahead.
struct Parser<'a> {
    src: &'a str,
    pos: usize,
    line: usize,
    /// The next token and its line.
    peeked: Option<(Tok, usize)>,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Parser {
            src,
            pos: 0,
            line: 1,
            peeked: None,
        }
    }

    fn syntax(line: usize, what: impl Into<String>) -> XlError {
        XlError::Syntax {
            line,
            what: what.into(),
        }
    }

    fn peek(&mut self) -> Result<&Tok, XlError> {
        let t = match self.peeked.take() {
            Some(t) => t,
            None => self.lex()?,
        };
        Ok(&self.peeked.insert(t).0)
    }

    fn next(&mut self) -> Result<(Tok, usize), XlError> {
        match self.peeked.take() {
            Some(t) => Ok(t),
            None => self.lex(),
        }
    }

    fn lex(&mut self) -> Result<(Tok, usize), XlError> {
        let bytes = self.src.as_bytes();
        loop {
            let Some(&b) = bytes.get(self.pos) else {
                return Ok((Tok::Eof, self.line));
            };
            let line = self.line;
            match b {
                b' ' | b'\t' | b'\r' => self.pos += 1,
                b'#' => {
                    self.pos = self.src[self.pos..]
                        .find('\n')
                        .map_or(self.src.len(), |i| self.pos + i);
                }
                b'\n' => {
                    self.pos += 1;
                    self.line += 1;
                    return Ok((Tok::Newline, line));
                }
                b'a'..=b'z' => {
                    let len =
                        self.run(|c| c == b'_' || c.is_ascii_lowercase() || c.is_ascii_digit());
                    return Ok((Tok::Ident(self.take(len)), line));
                }
                b'0'..=b'9' => {
                    let len =
                        self.run(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c) || c == b'x');
                    return Ok((Tok::Atom(self.take(len)), line));
                }
                b'"' | b'\'' => return Ok((Tok::Atom(self.string(b)?), line)),
                b',' | b'[' | b']' | b'=' | b';' => {
                    self.pos += 1;
                    let t = match b {
                        b',' => Tok::Comma,
                        b'[' => Tok::Open,
                        b']' => Tok::Close,
                        b'=' => Tok::Assign,
                        _ => Tok::Semi,
                    };
                    return Ok((t, line));
                }
                b'+' if bytes.get(self.pos + 1) == Some(&b'=') => {
                    self.pos += 2;
                    return Ok((Tok::AddTo, line));
                }
                _ => {
                    let c = self.src[self.pos..].chars().next().unwrap_or('?');
                    let hint = if "+-.():{}".contains(c) {
                        " (xl's config is not Python: keys are `[a-z][_0-9a-z]*`, values numbers, quoted strings or [lists])"
                    } else {
                        ""
                    };
                    return Err(Self::syntax(
                        line,
                        format!("unexpected character {c:?}{hint}"),
                    ));
                }
            }
        }
    }

    /// The length of the run of bytes from `pos` that satisfy `f`.
    fn run(&self, f: impl Fn(u8) -> bool) -> usize {
        self.src.as_bytes()[self.pos..]
            .iter()
            .position(|&c| !f(c))
            .unwrap_or(self.src.len() - self.pos)
    }

    fn take(&mut self, len: usize) -> String {
        let s = self.src[self.pos..self.pos + len].to_string();
        self.pos += len;
        s
    }

    /// A quoted string at `pos`, dequoted as libxlu does.
    fn string(&mut self, quote: u8) -> Result<String, XlError> {
        let line = self.line;
        let mut out = String::new();
        let mut chars = self.src[self.pos + 1..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\n' => break,
                c if c as u32 == u32::from(quote) => {
                    self.pos += 1 + i + 1;
                    return Ok(out);
                }
                '\\' => {
                    let Some((_, e)) = chars.next() else { break };
                    out.push(match e {
                        '"' | '\'' | '\\' => e,
                        'a' => '\x07',
                        'b' => '\x08',
                        'f' => '\x0c',
                        'n' => '\n',
                        'r' => '\r',
                        't' => '\t',
                        'v' => '\x0b',
                        '\n' => break,
                        'x' | '0'..='7' => {
                            return Err(Self::syntax(
                                line,
                                "numeric escapes in strings are not supported (xl drops them)",
                            ));
                        }
                        other => {
                            return Err(Self::syntax(
                                line,
                                format!("unknown escape `\\{other}` in a string"),
                            ));
                        }
                    });
                }
                c => out.push(c),
            }
        }
        Err(Self::syntax(
            line,
            format!(
                "unterminated string (a {} never closed on its line)",
                quote as char
            ),
        ))
    }

    /// The whole file: settings in order, a key set again replacing (or,
    /// with `+=`, extending) its value.
    fn file(mut self) -> Result<Vec<(String, Setting)>, XlError> {
        let mut settings: Vec<(String, Setting)> = Vec::new();
        loop {
            let (tok, line) = self.next()?;
            let key = match tok {
                Tok::Eof => return Ok(settings),
                Tok::Newline | Tok::Semi => continue,
                Tok::Ident(k) => k,
                other => {
                    return Err(Self::syntax(
                        line,
                        format!("expected a key, found {}", other.describe()),
                    ));
                }
            };
            let add = match self.next()? {
                (Tok::Assign, _) => false,
                (Tok::AddTo, _) => true,
                (other, l) => {
                    return Err(Self::syntax(
                        l,
                        format!("expected `=` after `{key}`, found {}", other.describe()),
                    ));
                }
            };
            let value = self.value(0)?;
            match self.next()? {
                (Tok::Newline | Tok::Semi | Tok::Eof, _) => {}
                (other, l) => {
                    return Err(Self::syntax(
                        l,
                        format!(
                            "expected the end of the line after `{key}`'s value, found {}",
                            other.describe()
                        ),
                    ));
                }
            }
            match settings.iter_mut().find(|(k, _)| *k == key) {
                Some((_, old)) if add => {
                    match (&mut old.value, value) {
                        (Value::Atom(a, _), Value::Atom(b, _)) => a.push_str(&b),
                        (Value::List(a), Value::List(b)) => a.extend(b),
                        _ => {
                            return Err(XlError::BadValue {
                                line,
                                key,
                                what:
                                    "`+=` needs the same kind of value (list or single) as before"
                                        .into(),
                            });
                        }
                    }
                    old.line = line;
                }
                Some((_, old)) => *old = Setting { value, line },
                None => settings.push((key, Setting { value, line })),
            }
        }
    }

    fn skip_newlines(&mut self) -> Result<(), XlError> {
        while *self.peek()? == Tok::Newline {
            self.next()?;
        }
        Ok(())
    }

    fn value(&mut self, depth: usize) -> Result<Value, XlError> {
        match self.next()? {
            (Tok::Atom(s), line) => Ok(Value::Atom(s, line)),
            (Tok::Open, line) => {
                if depth >= MAX_NESTING {
                    return Err(Self::syntax(line, "lists nested too deeply"));
                }
                let mut items = Vec::new();
                self.skip_newlines()?;
                if *self.peek()? == Tok::Close {
                    self.next()?;
                    return Ok(Value::List(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.skip_newlines()?;
                    match self.next()? {
                        (Tok::Close, _) => return Ok(Value::List(items)),
                        (Tok::Comma, _) => {
                            self.skip_newlines()?;
                            if *self.peek()? == Tok::Close {
                                self.next()?;
                                return Ok(Value::List(items));
                            }
                        }
                        (other, l) => {
                            return Err(Self::syntax(
                                l,
                                format!(
                                    "expected `,` or `]` in a list, found {}",
                                    other.describe()
                                ),
                            ));
                        }
                    }
                }
            }
            (other, line) => Err(Self::syntax(
                line,
                format!(
                    "expected a value (a number, a quoted string or a [list]), found {}",
                    other.describe()
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> DomainSpec {
        DomainSpec::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn err(text: &str) -> XlError {
        match DomainSpec::parse(text) {
            Ok(s) => panic!("{text:?} parsed: {s:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn a_full_config_with_keys_xl_knows_and_we_ignore() {
        let spec = parse(
            "# xl config\n\
             name = \"web\"\n\
             type = \"pvh\"\n\
             kernel = \"/boot/xenpal-site\"\n\
             memory = 64; vcpus = 2\n\
             on_poweroff = 'destroy'\n\
             vif = [ 'ip=10.0.0.2/24, mac=00:16:3e:00:00:02, bridge=xenbr0, script=vif-bridge',\n\
             \x20       'mac=00:16:3e:0:1:2,ip=192.168.1.9' ,\n\
             ]\n\
             disk = [\n\
             \x20   'format=raw, vdev=xvda, access=ro, target=/srv/site.img',   # the site\n\
             \x20   # a comment inside a list\n\
             \x20   'data.img,raw,xvdb,rw',\n\
             ]\n\
             xenpal_forward = [ '8080:80', \"0:22\" ]\n\
             cpus = [ [ 1, 2 ], [] ]\n",
        );
        assert_eq!(spec.name, "web");
        assert_eq!(spec.memory_mib, 64);
        assert_eq!(
            spec.vifs,
            vec![
                VifSpec {
                    ip: Some((Ipv4Addr::new(10, 0, 0, 2), 24)),
                    mac: Some([0, 0x16, 0x3e, 0, 0, 2]),
                    bridge: Some("xenbr0".into()),
                    gateway: None,
                    mtu: None,
                },
                VifSpec {
                    ip: Some((Ipv4Addr::new(192, 168, 1, 9), DEFAULT_PREFIX)),
                    mac: Some([0, 0x16, 0x3e, 0, 1, 2]),
                    ..VifSpec::default()
                },
            ]
        );
        assert_eq!(
            spec.disks,
            vec![
                DiskSpec::new("/srv/site.img", "xvda").read_only(),
                DiskSpec::new("data.img", "xvdb"),
            ]
        );
        assert_eq!(
            spec.forwards,
            vec![
                ForwardSpec {
                    host_port: 8080,
                    guest_port: 80
                },
                ForwardSpec {
                    host_port: 0,
                    guest_port: 22
                },
            ]
        );
    }

    #[test]
    fn defaults_and_the_minimum() {
        let spec = parse("name='x'");
        assert_eq!(spec, DomainSpec::new("x"));
        assert_eq!(spec.memory_mib, DEFAULT_MEMORY_MIB);
        assert!(matches!(err(""), XlError::MissingName));
        assert!(matches!(err("memory = 8\n"), XlError::MissingName));
    }

    #[test]
    fn numbers_read_as_strtol_reads_them() {
        assert_eq!(parse("name='x'\nmemory=0x40").memory_mib, 64);
        assert_eq!(parse("name='x'\nmemory=040").memory_mib, 32);
        assert_eq!(parse("name='x'\nmemory=\" 16\"").memory_mib, 16);
        assert_eq!(parse("name=7").name, "7");
        for bad in [
            "memory=12ab",
            "memory='x'",
            "memory=08",
            "memory=0",
            "memory='-4'",
        ] {
            match err(&format!("name='x'\n{bad}")) {
                XlError::BadNumber { line: 2, key, .. } => assert_eq!(key, "memory"),
                e => panic!("{bad}: {e}"),
            }
        }
        assert!(matches!(
            err("name='x'\nmemory=99999999999999999999"),
            XlError::BadNumber { .. }
        ));
    }

    #[test]
    fn strings_and_escapes() {
        assert_eq!(parse(r#"name = "a\"b\\c\td""#).name, "a\"b\\c\td");
        assert_eq!(parse(r"name = 'it\'s'").name, "it's");
        assert_eq!(parse("name = 'héllo wörld'").name, "héllo wörld");
        for bad in [
            r"name = 'a\x41'",
            r"name = 'a\101'",
            r"name = 'a\q'",
            "name = 'open\n'",
        ] {
            assert!(matches!(err(bad), XlError::Syntax { line: 1, .. }), "{bad}");
        }
    }

    #[test]
    fn plus_equals_extends() {
        let spec = parse(
            "name = 'a'\nname += 'b'\n\
             vif = [ 'ip=10.0.0.2' ]\nvif += [ 'bridge=br1' ]\n",
        );
        assert_eq!(spec.name, "ab");
        assert_eq!(spec.vifs.len(), 2);
        assert_eq!(spec.vifs[1].bridge.as_deref(), Some("br1"));
        assert!(matches!(
            err("name = 'a'\nname += [ 'b' ]"),
            XlError::BadValue { line: 2, .. }
        ));
        // Set twice: the last wins.
        assert_eq!(parse("name = 'a'\nname = 'b'").name, "b");
    }

    #[test]
    fn syntax_errors_name_their_line() {
        let cases = [
            ("name = 'x'\nmemory 32\n", 2),
            ("name = 'x'\n\nvif = [ 'a' 'b' ]\n", 3),
            ("name = 'x'\nvif = [ 'a',\n , ]\n", 3),
            ("name = 'x'\nvif = [ 'a'\n", 3),
            ("name = 'x' 'y'\n", 1),
            ("name = 'x'\nName = 'y'\n", 2),
            ("name = 'x'\nkernel = /boot/k\n", 2),
            ("name = 'x'\nmemory = 32 * 2\n", 2),
            ("name = 'x'\nmemory =\n32\n", 2),
            (
                "name = 'x'\nvif = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n",
                2,
            ),
            ("name = 'x'\n= 3\n", 2),
        ];
        for (text, line) in cases {
            match err(text) {
                XlError::Syntax { line: l, .. } => assert_eq!(l, line, "{text:?}"),
                e => panic!("{text:?}: {e}"),
            }
        }
        let e = err("name = 'x'\nmemory 32\n");
        assert!(e.to_string().starts_with("line 2: syntax error"), "{e}");
    }

    #[test]
    fn lists_and_single_values_are_not_interchangeable() {
        assert!(matches!(
            err("name = [ 'x' ]"),
            XlError::BadValue { line: 1, .. }
        ));
        assert!(matches!(
            err("name = 'x'\nvif = 'ip=10.0.0.2'"),
            XlError::BadValue { line: 2, .. }
        ));
        assert!(matches!(
            err("name = 'x'\ndisk = [ [ 'a' ] ]"),
            XlError::BadValue { line: 2, .. }
        ));
        // Empty lists and trailing commas are fine.
        let spec = parse("name = 'x'\nvif = [ ]\ndisk = [\n]\nxenpal_forward = [ '1:2', ]");
        assert!(spec.vifs.is_empty() && spec.disks.is_empty());
        assert_eq!(spec.forwards.len(), 1);
    }

    #[test]
    fn vif_specs() {
        let v = VifSpec::parse("ip=10.1.2.3/16,gateway=10.1.0.1, mtu=1400, model=e1000,,").unwrap();
        assert_eq!(v.ip, Some((Ipv4Addr::new(10, 1, 2, 3), 16)));
        assert_eq!(v.gateway, Some(Ipv4Addr::new(10, 1, 0, 1)));
        assert_eq!(v.mtu, Some(1400));
        let v = VifSpec::parse("ip=10.0.0.5 10.0.0.6/32").unwrap();
        assert_eq!(v.ip, Some((Ipv4Addr::new(10, 0, 0, 5), 24)));
        assert_eq!(VifSpec::parse("").unwrap(), VifSpec::new());
        for bad in [
            "ip=10.0.0",
            "ip=10.0.0.2/33",
            "ip=10.0.0.2/",
            "ip=",
            "ip=10.0.0.2 x",
            "mac=00:16:3e:00:00",
            "mac=00:16:3e:00:00:02:03",
            "mac=00:16:3e:00:00:zz",
            "mac=00:16:3e:00:00:123",
            "bridge=",
            "gateway=1.2.3",
            "mtu=10",
            "mtu=70000",
            "bridge",
        ] {
            match VifSpec::parse(bad) {
                Err(XlError::BadVif { line: 0, spec, .. }) => assert_eq!(spec, bad),
                other => panic!("{bad}: {other:?}"),
            }
        }
        // In a file, the entry's own line.
        match err("name = 'x'\nvif = [\n 'ip=1.2.3.4',\n 'mac=1' ]") {
            e @ XlError::BadVif { line: 4, .. } => {
                assert!(e.to_string().contains("\"mac=1\""), "{e}")
            }
            e => panic!("{e}"),
        }
    }

    #[test]
    fn disk_specs() {
        let ok = [
            (
                "format=raw, vdev=xvda, access=ro, target=disk.img",
                ("disk.img", "xvda", true),
            ),
            ("vdev=xvdb,target=/a,b c,", ("/a,b c", "xvdb", false)),
            ("disk.img,raw,xvda,rw", ("disk.img", "xvda", false)),
            ("disk.img,,xvdc,r", ("disk.img", "xvdc", true)),
            ("phy:/dev/vg/guest,xvda,w", ("/dev/vg/guest", "xvda", false)),
            ("file:/img,xvdb:disk,ro", ("/img", "xvdb", true)),
            ("tap:aio:/img,xvda,w", ("/img", "xvda", false)),
            ("raw:/img,xvda,ro", ("/img", "xvda", true)),
            (
                "format=raw,vdev=xvda,access=rw,script=/etc/xen/scripts/block-xenpal,target=/dev/vda",
                ("/dev/vda", "xvda", false),
            ),
            (
                "discard, vdev=xvda, backendtype=qdisk, target=x",
                ("x", "xvda", false),
            ),
            ("site, raw, xvda", ("site", "xvda", false)),
        ];
        for (spec, (target, vdev, ro)) in ok {
            let d = DiskSpec::parse(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
            assert_eq!(
                d,
                DiskSpec {
                    target: target.into(),
                    vdev: vdev.into(),
                    read_only: ro
                },
                "{spec}"
            );
        }
        let bad = [
            "format=qcow2,vdev=xvda,target=a",
            "format=nonsense,vdev=xvda,target=a",
            "vdev=xvda,access=rx,target=a",
            "vdev=xvda",
            "target=a",
            "a,raw,xvda,rw,extra",
            "a,xvda,w",
            "vdev=xvda,vdev=xvdb,target=a",
            "vdev=xvda,devtype=cdrom,target=a",
            "cdrom,vdev=xvda,target=a",
            "a,raw,hdc:cdrom",
            "foo=bar,vdev=xvda,target=a",
            "iscsi:iqn.2001-05.com.example,xvda,w",
            "weird:/x,xvda,w",
            "specification=virtio,vdev=xvda,target=a",
            "",
        ];
        for spec in bad {
            match DiskSpec::parse(spec) {
                Err(XlError::BadDisk {
                    line: 0, spec: s, ..
                }) => assert_eq!(s, spec),
                other => panic!("{spec}: {other:?}"),
            }
        }
        match err("name = 'x'\ndisk = [ 'vdev=xvda' ]") {
            e @ XlError::BadDisk { line: 2, .. } => {
                assert!(e.to_string().contains("no target"), "{e}")
            }
            e => panic!("{e}"),
        }
    }

    #[test]
    fn forward_specs() {
        assert_eq!(
            ForwardSpec::parse(" 8080 : 80 ").unwrap(),
            ForwardSpec {
                host_port: 8080,
                guest_port: 80
            }
        );
        for bad in ["8080", "8080:0", "70000:80", "a:b", ":80", "80:", "-1:80"] {
            assert!(
                matches!(ForwardSpec::parse(bad), Err(XlError::BadForward { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn relative_targets_resolve_against_the_file() {
        let dir = std::env::temp_dir().join(format!("xenpal-xl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("d.cfg");
        std::fs::write(
            &cfg,
            "name = 'd'\ndisk = [ 'vdev=xvda,target=site', 'vdev=xvdb,target=/abs.img' ]\n",
        )
        .unwrap();
        let spec = DomainSpec::from_file(&cfg).unwrap();
        assert_eq!(spec.disks[0].target, dir.join("site"));
        assert_eq!(spec.disks[1].target, PathBuf::from("/abs.img"));
        std::fs::write(&cfg, b"name = 'd'\n# \xff\n").unwrap();
        assert!(matches!(
            DomainSpec::from_file(&cfg),
            Err(XlError::Syntax { line: 2, .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(
            DomainSpec::from_file(&cfg),
            Err(XlError::Io { .. })
        ));
    }

    const SAMPLE: &str = "name = \"web\"\nmemory = 64\n\
        vif = [ 'ip=10.0.0.2/24, mac=00:16:3e:00:00:02, bridge=xenbr0' ]\n\
        disk = [ 'format=raw, vdev=xvda, access=ro, target=site', 'a.img,raw,xvdb,rw' ]\n\
        xenpal_forward = [ '8080:80' ]\n";

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = DomainSpec::parse(&text);
            let _ = VifSpec::parse(&text);
            let _ = DiskSpec::parse(&text);
            let _ = ForwardSpec::parse(&text);
        }

        #[test]
        fn random_text_from_the_alphabet_never_panics(
            text in "[a-z0-9_ =+\\[\\],;'\"#\\\\\n:./x-]{0,300}"
        ) {
            let _ = VifSpec::parse(&text);
            let _ = DiskSpec::parse(&text);
            let _ = ForwardSpec::parse(&text);
            if let Err(e) = DomainSpec::parse(&text) {
                let _ = e.to_string();
                if let Some(line) = e.line() {
                    prop_assert!(line <= text.lines().count() + 1);
                }
            }
        }

        #[test]
        fn mutated_configs_never_panic(
            edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..8)
        ) {
            let mut bytes = SAMPLE.as_bytes().to_vec();
            for (at, byte, op) in edits {
                let at = at % (bytes.len() + 1);
                match op {
                    0 => bytes.insert(at, byte),
                    1 if at < bytes.len() => { bytes.remove(at); }
                    _ if at < bytes.len() => bytes[at] = byte,
                    _ => {}
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            match DomainSpec::parse(&text) {
                Ok(spec) => prop_assert!(!spec.name.is_empty()),
                Err(e) => { let _ = e.to_string(); }
            }
        }

        #[test]
        fn specs_built_in_code_read_back(
            a in any::<[u8; 4]>(), prefix in 0u8..=32, mac in any::<[u8; 6]>(),
            host in any::<u16>(), guest in 1u16.., ro in any::<bool>(), mib in 1u64..100_000,
        ) {
            let ip = Ipv4Addr::from(a);
            let mac_s = mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
            let text = format!(
                "name = 'p'\nmemory = {mib}\nvif = [ 'ip={ip}/{prefix}, mac={mac_s}' ]\n\
                 disk = [ 'vdev=xvdc, access={}, target=/t' ]\nxenpal_forward = [ '{host}:{guest}' ]\n",
                if ro { "ro" } else { "rw" }
            );
            let mut want = DomainSpec::new("p")
                .memory_mib(mib)
                .vif(VifSpec::new().ip(ip, prefix).mac(mac))
                .forward(host, guest);
            want = want.disk(if ro { DiskSpec::new("/t", "xvdc").read_only() } else { DiskSpec::new("/t", "xvdc") });
            prop_assert_eq!(DomainSpec::parse(&text).unwrap(), want);
        }
    }
}
