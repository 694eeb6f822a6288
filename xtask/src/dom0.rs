//! A Linux dom0 for the rig, built from Debian's packages only (arm64,
//! armhf or amd64):
//! the distribution kernel with Xen's backend modules, busybox, xenstored,
//! `xl` and the libraries they load, packed with our `/init` into an
//! initramfs. `/init` brings the toolstack up and starts the guest with
//! `xl create`; the guest's lines reach the serial console prefixed `(d1)`,
//! as in the dom0less runs, so the same runner judges them.

use crate::cpio::{Archive, Entry};
use crate::fetch::{self, XenVersion};
use std::path::{Path, PathBuf};

/// The modules dom0 loads: Xen's backend drivers and what the rig uses
/// (none is built into Debian's kernels). Their dependencies are found in
/// each module's own `depends=` and loaded first.
const MODULES: &[&str] = &[
    "drivers/xen/xen-privcmd",
    "drivers/xen/xenfs/xenfs",
    "drivers/xen/xen-evtchn",
    "drivers/xen/xen-gntdev",
    "drivers/xen/xen-gntalloc",
    "drivers/net/xen-netback/xen-netback",
    "drivers/block/xen-blkback/xen-blkback",
    "net/bridge/bridge",
    "drivers/block/loop",
    // QEMU's virtio disks (the full-stack guest's disk image, the site's
    // images) and NIC (the site: host to guest through QEMU's hostfwd).
    "drivers/net/virtio_net",
    "drivers/block/virtio_blk",
];

/// The Debian architecture dom0 is built for.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Arch {
    /// `arm64`: dom0 on Xen for Arm.
    Arm64,
    /// `armhf`: dom0 on Xen for 32-bit Arm (Debian's LPAE kernel, which
    /// Xen on Arm needs).
    Armhf,
    /// `amd64`: a PV dom0 on Xen for x86.
    Amd64,
}

impl Arch {
    /// Debian's name.
    pub fn debian(self) -> &'static str {
        match self {
            Arch::Arm64 => "arm64",
            Arch::Armhf => "armhf",
            Arch::Amd64 => "amd64",
        }
    }

    /// The flavour of Debian's kernel for it (`linux-image-FLAVOUR` is the
    /// meta package).
    fn kernel_flavour(self) -> &'static str {
        match self {
            Arch::Armhf => "armmp-lpae",
            a => a.debian(),
        }
    }

    /// The multiarch library directory's name.
    fn triple(self) -> &'static str {
        match self {
            Arch::Arm64 => "aarch64-linux-gnu",
            Arch::Armhf => "arm-linux-gnueabihf",
            Arch::Amd64 => "x86_64-linux-gnu",
        }
    }

    /// Libraries only this architecture's toolstack loads (x86's
    /// libxenguest decompresses kernels with lzma and zstd).
    fn extra_libraries(self) -> &'static [&'static str] {
        match self {
            Arch::Arm64 | Arch::Armhf => &[],
            Arch::Amd64 => &["liblzma5", "libzstd1"],
        }
    }

    /// The transport of QEMU's virtio disk on this machine.
    fn virtio_transport(self) -> &'static str {
        match self {
            Arch::Arm64 | Arch::Armhf => "drivers/virtio/virtio_mmio",
            Arch::Amd64 => "drivers/virtio/virtio_pci",
        }
    }
}

/// The `depends=` list in a kernel module's `.modinfo` strings.
pub fn module_depends(ko: &[u8]) -> Vec<String> {
    ko.split(|&b| b == 0)
        .find_map(|s| s.strip_prefix(b"depends="))
        .map(|d| {
            String::from_utf8_lossy(d)
                .split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Every module file under `dir` (recursively) by module name (`-` and `_`
/// are the same in a module name): its path relative to `dir`, without
/// `.ko`.
fn module_index(dir: &Path, sub: &Path, out: &mut std::collections::HashMap<String, String>) {
    let Ok(rd) = std::fs::read_dir(dir.join(sub)) else {
        return;
    };
    for e in rd.flatten() {
        let rel = sub.join(e.file_name());
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            module_index(dir, &rel, out);
        } else if let Some(stem) = name.strip_suffix(".ko") {
            let rel = rel.to_string_lossy();
            out.insert(stem.replace('-', "_"), rel[..rel.len() - 3].to_string());
        }
    }
}

/// `wanted` (paths under `kernel/`, without `.ko`) and their dependencies,
/// each after what it depends on.
///
/// Errors: a module or dependency that is not a file (built in, compressed
/// or missing), or a dependency cycle.
fn load_order(kernel: &Path, wanted: &[&str]) -> Result<Vec<String>, String> {
    let mut index = std::collections::HashMap::new();
    module_index(kernel, Path::new(""), &mut index);
    fn visit(
        kernel: &Path,
        index: &std::collections::HashMap<String, String>,
        m: &str,
        path: &mut Vec<String>,
        order: &mut Vec<String>,
    ) -> Result<(), String> {
        if order.iter().any(|o| o == m) {
            return Ok(());
        }
        if path.iter().any(|p| p == m) {
            return Err(format!("module dependency cycle through {m}"));
        }
        let ko = std::fs::read(kernel.join(format!("{m}.ko")))
            .map_err(|e| format!("module {m}: {e} (compressed or built in?)"))?;
        path.push(m.to_string());
        for d in module_depends(&ko) {
            let dep = index
                .get(&d.replace('-', "_"))
                .ok_or_else(|| format!("module {m} needs {d}, which is not a module file"))?;
            visit(kernel, index, dep, path, order)?;
        }
        path.pop();
        order.push(m.to_string());
        Ok(())
    }
    let mut order = Vec::new();
    for m in wanted {
        visit(kernel, &index, m, &mut Vec::new(), &mut order)?;
    }
    Ok(order)
}

/// Shared-library packages `xl`, `xenstored` and the xenstore tools load
/// (`{v}` is the Xen version). Everything under `lib/` and the multiarch
/// library directory is taken.
const LIBRARIES: &[&str] = &[
    "libc6",
    "libgcc-s1", // xl cancels threads: glibc loads libgcc_s for that
    "zlib1g",
    "libyajl2",
    "libfdt1",
    "libuuid1",
    "libxenmisc{v}",
    "libxencall1",
    "libxenevtchn1",
    "libxenforeignmemory1",
    "libxengnttab1",
    "libxenstore4",
    "libxentoollog1",
    "libxentoolcore1",
    "libxenhypfs1",
    "libxendevicemodel1",
];

/// Programs: package and the paths taken from it (prefixes).
const PROGRAMS: &[(&str, &[&str])] = &[
    ("busybox-static", &["bin/busybox"]),
    ("xenstore-utils", &["usr/bin/xenstore"]),
    (
        "xen-utils-{v}",
        &[
            "usr/lib/xen-{v}/bin/xl",
            "usr/lib/xen-{v}/bin/xenstored",
            "usr/lib/xen-{v}/bin/xen-init-dom0",
            "usr/lib/xen-{v}/bin/xenconsoled",
            "usr/lib/xen-{v}/bin/libxl-save-helper",
        ],
    ),
];

/// What the rig boots as dom0.
#[derive(Debug)]
pub struct Dom0 {
    /// The kernel (an arm64 `Image`, an armhf `zImage` or an x86 `bzImage`).
    pub kernel: PathBuf,
    /// The initramfs (uncompressed `newc` cpio).
    pub initramfs: PathBuf,
    /// The kernel release, e.g. `6.1.0-18-arm64`.
    pub release: String,
    /// Files in the initramfs.
    pub files: usize,
}

/// Debian's kernel for `arch` in the suite of Xen `v`, unpacked.
#[derive(Debug)]
pub struct Kernel {
    /// The package, e.g. `linux-image-6.1.0-18-amd64`.
    pub package: String,
    /// The release, e.g. `6.1.0-18-amd64`.
    pub release: String,
    /// Where the package is unpacked (its modules are under
    /// `lib/modules/RELEASE/kernel`).
    pub dir: PathBuf,
    /// The kernel image (`boot/vmlinuz-RELEASE`).
    pub image: PathBuf,
}

impl Kernel {
    /// The module at `rel` (e.g. `drivers/net/xen-netfront`), read.
    ///
    /// Errors: a message naming the package and the module.
    pub fn module(&self, rel: &str) -> Result<Vec<u8>, String> {
        let path = format!("lib/modules/{}/kernel/{rel}.ko", self.release);
        std::fs::read(self.dir.join(&path)).map_err(|e| format!("{}: {path}: {e}", self.package))
    }
}

/// Fetch (cached) and unpack Debian's kernel for `arch` that dom0 runs
/// with Xen `v`.
///
/// Errors: a message naming the package that is missing or incomplete.
pub fn kernel(cache: &Path, arch: Arch, v: XenVersion) -> Result<Kernel, String> {
    let (suite, deb) = (v.suite(), arch.debian());
    let flavour = arch.kernel_flavour();
    let meta = format!("linux-image-{flavour}");
    let package = fetch::depends(cache, suite, deb, &meta)?
        .into_iter()
        .find(|d| d.starts_with("linux-image-") && d.ends_with(&format!("-{flavour}")))
        .ok_or(format!("{meta} names no kernel package"))?;
    let release = package["linux-image-".len()..].to_string();
    let dir = fetch::package(cache, suite, deb, &package)?;
    let image = dir.join(format!("boot/vmlinuz-{release}"));
    if !image.exists() {
        return Err(format!("{package} has no boot/vmlinuz-{release}"));
    }
    Ok(Kernel {
        package,
        release,
        dir,
        image,
    })
}

/// Add every file, link and directory below `dir/sub` (kept if `keep` says
/// so for its path relative to `dir`) to `a` at the same relative path.
fn add_tree(
    a: &mut Archive,
    dir: &Path,
    sub: &Path,
    keep: &dyn Fn(&str) -> bool,
) -> Result<(), String> {
    let here = dir.join(sub);
    let Ok(rd) = std::fs::read_dir(&here) else {
        return Ok(());
    };
    for e in rd.flatten() {
        let rel = sub.join(e.file_name());
        let rel_s = rel.to_string_lossy().into_owned();
        let meta = std::fs::symlink_metadata(e.path()).map_err(|e| e.to_string())?;
        if meta.is_dir() {
            add_tree(a, dir, &rel, keep)?;
        } else if keep(&rel_s) {
            let entry = if meta.file_type().is_symlink() {
                let t = std::fs::read_link(e.path()).map_err(|e| e.to_string())?;
                Entry::Symlink(t.to_string_lossy().into_owned())
            } else {
                use std::os::unix::fs::PermissionsExt;
                let bytes = std::fs::read(e.path()).map_err(|err| format!("{rel_s}: {err}"))?;
                Entry::File(meta.permissions().mode() & 0o7777, bytes)
            };
            a.add(&rel_s, entry)?;
        }
    }
    Ok(())
}

/// Fetch the packages (cached) and build dom0 for Xen `v` in `out`, with
/// the guest `Image`, its `xl` config `guest_cfg`, [`init_script`] as
/// `/init`, and `extra` files (e.g. the `/etc/xen/before-guest` and
/// `after-guest` hooks `/init` runs if present).
///
/// Errors: a message naming the package, file or step that failed.
pub fn build(
    cache: &Path,
    out: &Path,
    arch: Arch,
    v: XenVersion,
    guest_image: &[u8],
    guest_cfg: &str,
    extra: Vec<(String, Entry)>,
) -> Result<Dom0, String> {
    let suite = v.suite();
    let deb = arch.debian();
    let name = |p: &str| p.replace("{v}", v.as_str());
    let Kernel {
        package: kernel_pkg,
        release,
        dir: kdir,
        image: kernel,
    } = kernel(cache, arch, v)?;
    let mut a = Archive::default();
    let mdir = format!("lib/modules/{release}/kernel");
    let mut wanted = MODULES.to_vec();
    wanted.insert(wanted.len() - 1, arch.virtio_transport());
    let modules =
        load_order(&kdir.join(&mdir), &wanted).map_err(|e| format!("{kernel_pkg}: {e}"))?;
    for m in &modules {
        let rel = format!("{mdir}/{m}.ko");
        let bytes =
            std::fs::read(kdir.join(&rel)).map_err(|e| format!("{kernel_pkg}: {rel}: {e}"))?;
        a.add(&rel, Entry::File(0o644, bytes))?;
    }
    for p in LIBRARIES.iter().chain(arch.extra_libraries()) {
        let p = name(p);
        let dir = fetch::package(cache, suite, deb, &p)?;
        let libdir = format!("usr/lib/{}/", arch.triple());
        add_tree(&mut a, &dir, Path::new(""), &|rel| {
            (rel.starts_with("lib/") || rel.starts_with("lib64/") || rel.starts_with(&libdir))
                && !rel.contains("/gconv/")
        })?;
    }
    for (p, paths) in PROGRAMS {
        let p = name(p);
        let dir = fetch::package(cache, suite, deb, &p)?;
        let paths: Vec<String> = paths.iter().map(|s| name(s)).collect();
        let before = a.len();
        add_tree(&mut a, &dir, Path::new(""), &|rel| {
            paths.iter().any(|want| rel.starts_with(want.as_str()))
        })?;
        if a.len() == before {
            return Err(format!("{p} has none of {paths:?}"));
        }
    }
    // `/init` is a script: its interpreter must exist before it runs, and
    // so must the mount points and the directories busybox links into.
    a.add("bin/sh", Entry::Symlink("busybox".into()))?;
    for d in [
        "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "run", "tmp", "var",
    ] {
        a.add(d, Entry::Dir(0o755))?;
    }
    let init = init_script(&release, v.as_str(), &modules);
    a.add("init", Entry::File(0o755, init.into_bytes()))?;
    // dom0's memory is fixed by `dom0_mem`: nothing to balloon.
    a.add(
        "etc/xen/xl.conf",
        Entry::File(0o644, b"autoballoon = \"off\"\n".to_vec()),
    )?;
    for (path, e) in extra {
        a.add(&path, e)?;
    }
    a.add("guest/kernel", Entry::File(0o644, guest_image.to_vec()))?;
    a.add(
        "etc/xen/guest.cfg",
        Entry::File(0o644, guest_cfg.as_bytes().to_vec()),
    )?;
    let initramfs = out.join("dom0-initramfs.cpio");
    let files = a.len();
    std::fs::write(&initramfs, a.to_bytes())
        .map_err(|e| format!("{}: {e}", initramfs.display()))?;
    Ok(Dom0 {
        kernel,
        initramfs,
        release,
        files,
    })
}

/// An executable file for dom0's initramfs at `path` (a hook `/init`
/// sources, a hotplug script).
pub fn script(path: &str, text: &str) -> (String, Entry) {
    (
        path.to_string(),
        Entry::File(0o755, text.as_bytes().to_vec()),
    )
}

/// dom0's `/init`: mount what the toolstack needs, load the backend
/// modules, start xenstored and the console daemon, then `xl create` the
/// guest and relay its PV console to ours with the `(d1)` prefix. Ends by
/// powering off when the guest is gone; any failure is printed as
/// `dom0: FAILED: ...` first.
pub fn init_script(release: &str, xen: &str, modules: &[String]) -> String {
    let modules = modules.join(" ");
    format!(
        r#"#!/bin/sh
/bin/busybox --install -s
export PATH=/usr/lib/xen-{xen}/bin:/usr/sbin:/usr/bin:/sbin:/bin
say() {{ echo "dom0: $*"; }}
fail() {{ echo "dom0: FAILED: $*"; poweroff -f; }}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /run /var /tmp
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
ln -s /run /var/run
mkdir -p /run/lock /run/xen /var/log/xen/console /var/lib/xen /var/lib/xenstored
ln -s /run/lock /var/lock
for m in {modules}; do
    insmod /lib/modules/{release}/kernel/$m.ko || fail "insmod $m"
done
mount -t xenfs xenfs /proc/xen || fail "mount xenfs"
grep -q control_d /proc/xen/capabilities || fail "this is not the control domain"
xenstored --pid-file /run/xen/xenstored.pid || fail "xenstored"
n=0
until xenstore-read -s / >/dev/null 2>&1; do
    n=$((n + 1)); [ $n -gt 60 ] && fail "xenstored does not answer"; sleep 1
done
xen-init-dom0 >/dev/null || fail "xen-init-dom0"
xenconsoled --pid-file /run/xen/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console \
    || fail "xenconsoled"
say "toolstack up: Linux $(uname -r), Xen $(cat /sys/hypervisor/version/major).$(cat /sys/hypervisor/version/minor), $(grep -c . /proc/modules) modules"
brctl addbr xenbr0 && ip link set xenbr0 up || fail "bridge xenbr0"
[ -x /etc/xen/before-guest ] && . /etc/xen/before-guest
xl create /etc/xen/guest.cfg || fail "xl create"
say "guest created: $(xl list | tail -n +2 | tr -s ' ' | tr '\n' ';')"
log=/var/log/xen/console/guest-xenpal.log
n=0
until [ -e $log ]; do n=$((n + 1)); [ $n -gt 30 ] && fail "no console log from the guest"; sleep 1; done
# From the first line; not sed, which holds each line back until it has
# read the next one. -F: after a reboot xenconsoled may start $log afresh,
# and tail then reopens it. $seen keeps the whole console for the hooks.
seen=/run/guest-console
tail -n +1 -F $log 2>/dev/null | while IFS= read -r line; do echo "(d1) $line"; echo "$line" >> $seen; done &
[ -x /etc/xen/with-guest ] && . /etc/xen/with-guest
# The guest's config preserves it after shutdown, so its last console
# lines can be read before it is destroyed.
state() {{ xl list xenpal 2>/dev/null | tail -n 1 | tr -s ' ' | cut -d ' ' -f 5; }}
# A guest that printed its exit line but is still running or blocked 20 s
# later is stuck on its way out: say so, with what Xen knows of it.
stuck=0
while state | grep -q '^[rb-]*$'; do
    sleep 1
    if tail -n 1 $seen 2>/dev/null | grep -q '^xenpal: exit:'; then
        stuck=$((stuck + 1))
        if [ $stuck = 20 ]; then
            say "the guest is still '$(state)' 20 s after its exit line; Xen says:"
            xl vcpu-list xenpal 2>&1 | sed 's/^/dom0:   /'
            xl debug-keys q
            xl dmesg 2>&1 | tail -n 40 | sed 's/^/dom0:   /'
        fi
    else
        stuck=0
    fi
done
sleep 2
say "guest shut down (state $(state)): $(xl list xenpal 2>/dev/null | tail -n 1 | tr -s ' ')"
[ -x /etc/xen/after-guest ] && . /etc/xen/after-guest
xl destroy xenpal
say "guest gone"
say "done"
poweroff -f
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_load_after_their_dependencies() {
        // A fake module tree: bridge needs stp and llc, stp needs llc;
        // xenfs needs xen-privcmd (named with '_' in depends=).
        let dir = std::env::temp_dir().join(format!("xtask-mods-{}", std::process::id()));
        let ko = |rel: &str, deps: &str| {
            let p = dir.join(format!("{rel}.ko"));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            let mut b = b"\x7fELF junk\0license=GPL\0".to_vec();
            b.extend_from_slice(format!("depends={deps}\0name=x\0").as_bytes());
            std::fs::write(p, b).unwrap();
        };
        ko("net/llc/llc", "");
        ko("net/802/stp", "llc");
        ko("net/bridge/bridge", "stp,llc");
        ko("drivers/xen/xen-privcmd", "");
        ko("drivers/xen/xenfs/xenfs", "xen_privcmd");
        ko("drivers/a", "b");
        ko("drivers/b", "a");
        let order = load_order(&dir, &["drivers/xen/xenfs/xenfs", "net/bridge/bridge"]).unwrap();
        assert_eq!(
            order,
            [
                "drivers/xen/xen-privcmd",
                "drivers/xen/xenfs/xenfs",
                "net/llc/llc",
                "net/802/stp",
                "net/bridge/bridge"
            ]
        );
        assert!(
            load_order(&dir, &["drivers/a"])
                .unwrap_err()
                .contains("cycle")
        );
        assert!(load_order(&dir, &["drivers/missing"]).is_err());
        let s = init_script("6.1.0-1-arm64", "4.17", &order);
        assert!(s.contains("for m in drivers/xen/xen-privcmd drivers/xen/xenfs/xenfs net/llc/llc"));
        assert!(s.contains("/lib/modules/6.1.0-1-arm64/kernel/$m.ko"));
        assert!(s.contains("/usr/lib/xen-4.17/bin"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
