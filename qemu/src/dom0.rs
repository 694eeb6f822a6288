//! A Linux dom0 for the AArch64 rig, built from Debian's arm64 packages only:
//! the distribution kernel with Xen's backend modules, busybox, xenstored,
//! `xl` and the libraries they load, packed with our `/init` into an
//! initramfs. `/init` brings the toolstack up and starts the guest with
//! `xl create`; the guest's lines reach the serial console prefixed `(d1)`,
//! as in the dom0less runs, so the same runner judges them.

use crate::cpio::{Archive, Entry};
use crate::fetch::{self, XenVersion};
use std::path::{Path, PathBuf};

/// Xen's backend modules and what they need, in load order (dependencies
/// first, as the kernel's `modules.dep` gives them; none is built in).
pub const MODULES: &[&str] = &[
    "net/llc/llc",
    "net/802/stp",
    "net/bridge/bridge",
    "drivers/block/loop",
    "drivers/xen/xen-privcmd",
    "drivers/xen/xenfs/xenfs",
    "drivers/xen/xen-evtchn",
    "drivers/xen/xen-gntdev",
    "drivers/xen/xen-gntalloc",
    "drivers/net/xen-netback/xen-netback",
    "drivers/block/xen-blkback/xen-blkback",
    // QEMU's virtio disks (the full-stack guest's disk image).
    "drivers/virtio/virtio_mmio",
    "drivers/block/virtio_blk",
];

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
    /// The kernel (an arm64 `Image`).
    pub kernel: PathBuf,
    /// The initramfs (uncompressed `newc` cpio).
    pub initramfs: PathBuf,
    /// The kernel release, e.g. `6.1.0-18-arm64`.
    pub release: String,
    /// Files in the initramfs.
    pub files: usize,
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
    v: XenVersion,
    guest_image: &[u8],
    guest_cfg: &str,
    extra: Vec<(String, Entry)>,
) -> Result<Dom0, String> {
    let suite = v.suite();
    let name = |p: &str| p.replace("{v}", v.as_str());
    let kernel_pkg = fetch::depends(cache, suite, "arm64", "linux-image-arm64")?
        .into_iter()
        .find(|d| d.starts_with("linux-image-") && d.ends_with("-arm64"))
        .ok_or("linux-image-arm64 names no kernel package")?;
    let release = kernel_pkg["linux-image-".len()..].to_string();
    let kdir = fetch::package(cache, suite, "arm64", &kernel_pkg)?;
    let kernel = kdir.join(format!("boot/vmlinuz-{release}"));
    if !kernel.exists() {
        return Err(format!("{kernel_pkg} has no boot/vmlinuz-{release}"));
    }
    let mut a = Archive::default();
    let mdir = format!("lib/modules/{release}/kernel");
    for m in MODULES {
        let rel = format!("{mdir}/{m}.ko");
        let bytes = std::fs::read(kdir.join(&rel))
            .map_err(|e| format!("{kernel_pkg}: module {m}: {e} (compressed or built in?)"))?;
        a.add(&rel, Entry::File(0o644, bytes))?;
    }
    for p in LIBRARIES {
        let p = name(p);
        let dir = fetch::package(cache, suite, "arm64", &p)?;
        add_tree(&mut a, &dir, Path::new(""), &|rel| {
            (rel.starts_with("lib/") || rel.starts_with("usr/lib/aarch64-linux-gnu/"))
                && !rel.contains("/gconv/")
        })?;
    }
    for (p, paths) in PROGRAMS {
        let p = name(p);
        let dir = fetch::package(cache, suite, "arm64", &p)?;
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
    let init = init_script(&release, v.as_str());
    a.add("init", Entry::File(0o755, init.into_bytes()))?;
    // dom0's memory is fixed by `dom0_mem`: nothing to balloon.
    a.add(
        "etc/xen/xl.conf",
        Entry::File(0o644, b"autoballoon = \"off\"\n".to_vec()),
    )?;
    for (path, e) in extra {
        a.add(&path, e)?;
    }
    a.add("guest/Image", Entry::File(0o644, guest_image.to_vec()))?;
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

/// dom0's `/init`: mount what the toolstack needs, load the backend
/// modules, start xenstored and the console daemon, then `xl create` the
/// guest and relay its PV console to ours with the `(d1)` prefix. Ends by
/// powering off when the guest is gone; any failure is printed as
/// `dom0: FAILED: ...` first.
pub fn init_script(release: &str, xen: &str) -> String {
    let modules = MODULES.join(" ");
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
# read the next one.
tail -n +1 -f $log | while IFS= read -r line; do echo "(d1) $line"; done &
[ -x /etc/xen/with-guest ] && . /etc/xen/with-guest
# The guest's config preserves it after shutdown, so its last console
# lines can be read before it is destroyed.
state() {{ xl list xenpal 2>/dev/null | tail -n 1 | tr -s ' ' | cut -d ' ' -f 5; }}
while state | grep -q '^[rb-]*$'; do sleep 1; done
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
    fn init_loads_every_module_in_order() {
        let s = init_script("6.1.0-1-arm64", "4.17");
        assert!(s.starts_with("#!/bin/sh\n"));
        let list = s.lines().find(|l| l.starts_with("for m in ")).unwrap();
        let at = |m: &str| list.find(&format!("{m} ")).unwrap_or(usize::MAX);
        assert!(at("net/llc/llc") < at("net/802/stp"));
        assert!(at("net/802/stp") < at("net/bridge/bridge"));
        assert!(at("drivers/xen/xen-privcmd") < at("drivers/xen/xenfs/xenfs"));
        assert!(s.contains("/lib/modules/6.1.0-1-arm64/kernel/$m.ko"));
        assert!(s.contains("/usr/lib/xen-4.17/bin"));
    }
}
