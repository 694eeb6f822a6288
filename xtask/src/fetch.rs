//! Fetching Xen from Debian's archive, the way `../shared/notes` describes:
//! `apt-get download` with a private package list for the wanted release and
//! architecture, unpacked with `dpkg -x`. Nothing else is downloaded from
//! anywhere. Results are cached under `target/xenpal-qemu/cache`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A Xen version the runner knows how to fetch.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum XenVersion {
    /// Xen 4.17, from Debian 12 (bookworm).
    V4_17,
    /// Xen 4.20, from Debian 13 (trixie).
    V4_20,
}

impl XenVersion {
    /// Parse `4.17` or `4.20`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "4.17" => Some(XenVersion::V4_17),
            "4.20" => Some(XenVersion::V4_20),
            _ => None,
        }
    }

    /// `4.17` or `4.20`.
    pub fn as_str(self) -> &'static str {
        match self {
            XenVersion::V4_17 => "4.17",
            XenVersion::V4_20 => "4.20",
        }
    }

    /// The Debian release that ships this version.
    pub fn suite(self) -> &'static str {
        match self {
            XenVersion::V4_17 => "bookworm",
            XenVersion::V4_20 => "trixie",
        }
    }
}

/// The Debian mirror this machine's own sources name.
fn mirror() -> String {
    let mut text = String::new();
    for f in [
        "/etc/apt/sources.list.d/debian.sources",
        "/etc/apt/sources.list",
    ] {
        text.push_str(&std::fs::read_to_string(f).unwrap_or_default());
        text.push('\n');
    }
    for line in text.lines() {
        let line = line.trim();
        if let Some(u) = line.strip_prefix("URIs:") {
            let u = u.trim();
            if u.contains("debian") && !u.contains("security") {
                return u.split_whitespace().next().unwrap_or(u).to_string();
            }
        }
        if let Some(rest) = line.strip_prefix("deb ")
            && let Some(u) = rest.split_whitespace().find(|w| w.starts_with("http"))
            && !u.contains("security")
        {
            return u.to_string();
        }
    }
    "http://deb.debian.org/debian".to_string()
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .rev()
                .take(10)
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    Ok(())
}

/// apt options for a private package list of `suite` for `arch` under
/// `cache/<suite>-<arch>/apt`, updated once. Returns the directory and the
/// options.
fn apt(cache: &Path, suite: &str, arch: &str) -> Result<(PathBuf, Vec<String>), String> {
    let root = cache.join(format!("{suite}-{arch}"));
    let apt = root.join("apt");
    std::fs::create_dir_all(apt.join("lists/partial")).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(apt.join("cache/archives/partial")).map_err(|e| e.to_string())?;
    std::fs::write(
        apt.join("sources.list"),
        format!("deb {} {suite} main\n", mirror()),
    )
    .map_err(|e| e.to_string())?;
    let opts = vec![
        format!("-oAPT::Architecture={arch}"),
        format!("-oAPT::Architectures={arch}"),
        format!("-oDir::State::Lists={}", apt.join("lists").display()),
        format!("-oDir::Cache={}", apt.join("cache").display()),
        format!(
            "-oDir::Etc::SourceList={}",
            apt.join("sources.list").display()
        ),
        "-oDir::Etc::SourceParts=/dev/null".to_string(),
        // Not this machine's installed packages: a newer installed version
        // (say libxen-dev's libraries from a point release) would become
        // the candidate, and it is not in this list to download.
        "-oDir::State::status=/dev/null".to_string(),
        "-oAPT::Sandbox::User=root".to_string(),
        "-q".to_string(),
    ];
    if !apt.join("lists/.updated").exists() {
        run(
            Command::new("apt-get").args(&opts).arg("update"),
            "apt-get update",
        )?;
        std::fs::write(apt.join("lists/.updated"), "").map_err(|e| e.to_string())?;
    }
    Ok((root, opts))
}

/// The packages `package` depends on directly (in `suite` for `arch`), as
/// `apt-cache depends` lists them.
///
/// Errors: a message naming the step that failed.
pub fn depends(
    cache: &Path,
    suite: &str,
    arch: &str,
    package: &str,
) -> Result<Vec<String>, String> {
    let (_, opts) = apt(cache, suite, arch)?;
    let out = Command::new("apt-cache")
        .args(&opts)
        .arg("depends")
        .arg(package)
        .output()
        .map_err(|e| format!("apt-cache: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "apt-cache depends {package} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .map(|d| d.trim_matches(['<', '>']).to_string())
        .collect())
}

/// Download and unpack Debian package `package` for `arch` from `suite`
/// into `cache/<suite>-<arch>/<package>`; returns the unpack directory.
///
/// Errors: a message naming the step that failed.
pub fn package(cache: &Path, suite: &str, arch: &str, package: &str) -> Result<PathBuf, String> {
    let unpacked = cache.join(format!("{suite}-{arch}")).join(package);
    if unpacked.join(".done").exists() {
        return Ok(unpacked);
    }
    let (root, opts) = apt(cache, suite, arch)?;
    let debs = root.join("debs");
    std::fs::create_dir_all(&debs).map_err(|e| e.to_string())?;
    run(
        Command::new("apt-get")
            .args(&opts)
            .arg("download")
            .arg(package)
            .current_dir(&debs),
        &format!("apt-get download {package}"),
    )?;
    let deb = std::fs::read_dir(&debs)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
        })
        .ok_or_else(|| format!("{package}: no .deb after download"))?;
    let _ = std::fs::remove_dir_all(&unpacked);
    run(
        Command::new("dpkg").arg("-x").arg(&deb).arg(&unpacked),
        "dpkg -x",
    )?;
    std::fs::write(unpacked.join(".done"), "").map_err(|e| e.to_string())?;
    Ok(unpacked)
}

/// The Xen hypervisor binary for Arm64 (a Linux-style Image).
///
/// Errors: as [`package`].
pub fn xen_arm64(cache: &Path, v: XenVersion) -> Result<PathBuf, String> {
    let name = format!("xen-hypervisor-{}-arm64", v.as_str());
    let dir = package(cache, v.suite(), "arm64", &name)?;
    let bin = dir.join(format!("boot/xen-{}-arm64", v.as_str()));
    bin.exists()
        .then_some(bin)
        .ok_or_else(|| format!("{name} has no boot/xen-{}-arm64", v.as_str()))
}

/// The Xen hypervisor binary for 32-bit Arm (a zImage). Debian ships it
/// for armhf in Debian 12 (Xen 4.17).
///
/// Errors: as [`package`].
pub fn xen_armhf(cache: &Path, v: XenVersion) -> Result<PathBuf, String> {
    let name = format!("xen-hypervisor-{}-armhf", v.as_str());
    let dir = package(cache, v.suite(), "armhf", &name)?;
    let bin = dir.join(format!("boot/xen-{}-armhf", v.as_str()));
    bin.exists()
        .then_some(bin)
        .ok_or_else(|| format!("{name} has no boot/xen-{}-armhf", v.as_str()))
}

/// The Xen hypervisor binary for x86_64 (a multiboot ELF, which Debian ships
/// gzipped; unpacked next to it on first use).
///
/// Errors: as [`package`], or a message if it cannot be decompressed.
pub fn xen_amd64(cache: &Path, v: XenVersion) -> Result<PathBuf, String> {
    let name = format!("xen-hypervisor-{}-amd64", v.as_str());
    let dir = package(cache, v.suite(), "amd64", &name)?;
    let gz = dir.join(format!("boot/xen-{}-amd64.gz", v.as_str()));
    let bin = dir.join(format!("boot/xen-{}-amd64", v.as_str()));
    if bin.exists() {
        return Ok(bin);
    }
    if !gz.exists() {
        return Err(format!("{name} has no {}", gz.display()));
    }
    let out = Command::new("gzip")
        .arg("-dc")
        .arg(&gz)
        .output()
        .map_err(|e| format!("gzip: {e}"))?;
    if !out.status.success() || out.stdout.is_empty() {
        return Err(format!(
            "gzip -dc {} failed: {}",
            gz.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // Write then rename, so an interrupted run never leaves half a binary.
    let tmp = bin.with_extension("partial");
    std::fs::write(&tmp, &out.stdout).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &bin).map_err(|e| format!("{}: {e}", bin.display()))?;
    Ok(bin)
}
