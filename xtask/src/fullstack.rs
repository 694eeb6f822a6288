//! The full-stack rig's pieces (`--dom0 linux fullstack`): the guest's disk,
//! dom0's side of the checks, and the check of the disk after the run.
//!
//! The disk is a FAT image file on the host, given to dom0 as a QEMU virtio
//! disk (`/dev/vda`) and by dom0 to the guest as `xvda` through Linux's
//! blkback, so after QEMU exits the host reads what the guest wrote. The
//! vif sits on dom0's bridge `xenbr0` (10.0.0.1/24); the guest is 10.0.0.2.

use crate::cpio::Entry;
use crate::dom0::script;
use std::path::Path;
use std::process::Command;
use xenpal_apps::fullstack::{INPUT, OUTPUT, fnv1a64, transform};

/// Bytes of the input file (1 MiB, so the TCP exchange moves at least that
/// each way).
pub const INPUT_BYTES: usize = 1 << 20;

/// The input file: [`noise`] of [`INPUT_BYTES`].
pub fn input() -> Vec<u8> {
    noise(INPUT_BYTES)
}

/// `len` deterministic pseudo-random bytes (xorshift64): test data that
/// compresses badly and is the same in every run.
pub fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Write the guest's disk to `path`: a FAT volume holding [`INPUT`], with
/// room for the output.
///
/// Errors: a message if the image cannot be built or written.
pub fn write_disk(path: &Path, data: &[u8]) -> Result<(), String> {
    let mut img = xenpal_fatimg::FatImage::new();
    img.add_file(INPUT, data.to_vec())
        .map_err(|e| format!("disk image: {e}"))?;
    img.set_free_space(4 * INPUT_BYTES as u64);
    img.write_file(path)
        .map(|_| ())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// What dom0 gives blkback for the guest's disk.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Backing {
    /// QEMU's virtio disk itself, `/dev/vda`.
    Virtio,
    /// A copy of `/dev/vda` in dom0's RAM on `/dev/loop0`, written back to
    /// `/dev/vda` once the guest is down. For the 32-bit Arm rig: there,
    /// Debian's armhf dom0 under Xen 4.17 leaves a virtio read of a page
    /// blkback mapped from the guest in flight for ever
    /// (`/sys/block/vda/inflight` stays 1, no virtio interrupt comes),
    /// while dom0's own reads of `/dev/vda` complete.
    RamCopy,
}

impl Backing {
    fn device(self) -> &'static str {
        match self {
            Backing::Virtio => "/dev/vda",
            Backing::RamCopy => "/dev/loop0",
        }
    }
}

/// The guest's devices, as `xl` config lines: a vif on `xenbr0` and the
/// disk (`/dev/vda`, or its copy) as `xvda`, with our hotplug scripts
/// (Debian's are bash, with bash-only helpers).
pub fn guest_devices(backing: Backing) -> String {
    format!(
        "vif = ['bridge=xenbr0,mac=00:16:3e:00:00:02,script=/etc/xen/scripts/vif-xenpal']\n\
         disk = ['format=raw,vdev=xvda,access=rw,script=/etc/xen/scripts/block-xenpal,target={}']\n",
        backing.device()
    )
}

/// libxl runs a vif's script with `vif` and `XENBUS_PATH` set, argument
/// `online` or `offline`: put the backend interface on the bridge.
const VIF_SCRIPT: &str = r#"#!/bin/sh
bridge=$(xenstore-read "$XENBUS_PATH/bridge" 2>/dev/null) || bridge=xenbr0
case "$1" in
online)
    ip link set dev "$vif" master "$bridge" && ip link set dev "$vif" up \
        && xenstore-write "$XENBUS_PATH/hotplug-status" connected ;;
offline)
    ip link set dev "$vif" down 2>/dev/null; true ;;
esac
"#;

/// A disk's script (`add` or `remove`): `params` names a block device;
/// blkback opens it by the major:minor written to `physical-device`.
const BLOCK_SCRIPT: &str = r#"#!/bin/sh
case "$1" in
add)
    dev=$(xenstore-read "$XENBUS_PATH/params") || exit 1
    [ -b "$dev" ] || { echo "block-xenpal: $dev is not a block device" >&2; exit 1; }
    xenstore-write "$XENBUS_PATH/physical-device" "$(stat -L -c %t:%T "$dev")" \
        "$XENBUS_PATH/physical-device-path" "$dev" \
        "$XENBUS_PATH/hotplug-status" connected ;;
esac
"#;

/// Run before `xl create`: the bridge's address, the disk present.
const BEFORE: &str = r#"ip addr add 10.0.0.1/24 dev xenbr0 || fail "address on xenbr0"
[ -b /dev/vda ] || fail "no /dev/vda (QEMU's virtio disk)"
say "bridge xenbr0 10.0.0.1/24; guest disk /dev/vda $(cat /sys/block/vda/size) sectors"
"#;

/// Added to [`BEFORE`] for [`Backing::RamCopy`].
const BEFORE_RAM_COPY: &str = r#"dd if=/dev/vda of=/run/guest-disk.img bs=64k 2>/dev/null || fail "copying /dev/vda to RAM"
losetup /dev/loop0 /run/guest-disk.img || fail "losetup /dev/loop0"
say "guest disk: a copy of /dev/vda in dom0's RAM, on /dev/loop0"
"#;

/// Added to [`AFTER`] for [`Backing::RamCopy`]: the copy goes back to the
/// virtio disk, where the runner reads it.
const AFTER_RAM_COPY: &str = r#"losetup -d /dev/loop0 2>/dev/null
dd if=/run/guest-disk.img of=/dev/vda bs=64k conv=fsync 2>/dev/null || fail "writing the disk back to /dev/vda"
say "guest disk written back to /dev/vda"
"#;

/// Run while the guest runs: reach it, fetch both files over TCP and
/// compare them with the copies the runner put here.
const WITH: &str = r#"n=0
until ping -c 1 -W 1 10.0.0.2 >/dev/null 2>&1; do
    n=$((n + 1)); [ $n -gt 90 ] && fail "the guest never answered ping"
done
say "net: 10.0.0.2 answers ping after $n tries: $(ping -c 3 -q 10.0.0.2 | tail -n 1)"
for f in DATA.BIN OUT.BIN; do
    t0=$(cut -d ' ' -f 1 /proc/uptime)
    wget -q -O /tmp/$f http://10.0.0.2/$f || fail "wget $f"
    t1=$(cut -d ' ' -f 1 /proc/uptime)
    want=$(md5sum < /expected/$f | cut -d ' ' -f 1)
    got=$(md5sum < /tmp/$f | cut -d ' ' -f 1)
    [ "$want" = "$got" ] || fail "net: $f differs from the runner's copy ($got, want $want)"
    say "net: GET /$f: $(wc -c < /tmp/$f) bytes in $t0..$t1 s of uptime, md5 $got as expected"
done
"#;

/// Run once the guest has shut down (still preserved): its devices'
/// final states.
const AFTER: &str = r#"for d in "vif 0" "vbd 51712"; do
    set -- $d
    b=$(xenstore-read /local/domain/0/backend/$1/1/$2/state 2>/dev/null)
    f=$(xenstore-read /local/domain/1/device/$1/$2/state 2>/dev/null)
    say "device $1/$2: backend state $b, frontend state $f (6 is Closed)"
    [ "$f" = 6 ] || fail "$1/$2: the guest's frontend did not reach Closed"
done
"#;

/// Our hotplug scripts (`vif-xenpal`, `block-xenpal`), for dom0's
/// `/etc/xen/scripts`.
pub fn hotplug_scripts() -> Vec<(String, Entry)> {
    vec![
        script("etc/xen/scripts/vif-xenpal", VIF_SCRIPT),
        script("etc/xen/scripts/block-xenpal", BLOCK_SCRIPT),
    ]
}

/// dom0's extra files: the hotplug scripts, the hooks `/init` runs, and the
/// runner's copies of both files.
pub fn dom0_files(data: &[u8], backing: Backing) -> Vec<(String, Entry)> {
    let (before, after) = match backing {
        Backing::Virtio => (BEFORE.to_string(), AFTER.to_string()),
        Backing::RamCopy => (
            format!("{BEFORE}{BEFORE_RAM_COPY}"),
            format!("{AFTER}{AFTER_RAM_COPY}"),
        ),
    };
    let mut files = hotplug_scripts();
    files.extend([
        script("etc/xen/before-guest", &before),
        script("etc/xen/with-guest", WITH),
        script("etc/xen/after-guest", &after),
        (
            format!("expected/{INPUT}"),
            Entry::File(0o644, data.to_vec()),
        ),
        (
            format!("expected/{OUTPUT}"),
            Entry::File(0o644, transform(data)),
        ),
    ]);
    files
}

/// After QEMU: read [`OUTPUT`] from the disk image with mtools (not our
/// FAT code) and compare it with what the guest should have written.
///
/// Errors: what differs, or why it could not be read.
pub fn check_disk(image: &Path, data: &[u8]) -> Result<String, String> {
    let out = Command::new("mcopy")
        .arg("-n")
        .arg("-i")
        .arg(image)
        .arg(format!("::{OUTPUT}"))
        .arg("-")
        .output()
        .map_err(|e| format!("mcopy: {e} (install mtools)"))?;
    if !out.status.success() {
        return Err(format!(
            "{OUTPUT} is not on the disk after the run: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let want = transform(data);
    if out.stdout != want {
        return Err(format!(
            "{OUTPUT} on the disk differs: {} bytes, fnv1a64 {:016x}; want {} bytes, {:016x}",
            out.stdout.len(),
            fnv1a64(&out.stdout),
            want.len(),
            fnv1a64(&want)
        ));
    }
    Ok(format!(
        "{OUTPUT} read from the image by mtools: {} bytes, fnv1a64 {:016x}, as expected",
        want.len(),
        fnv1a64(&want)
    ))
}

/// `GET path` from the simulated guest through the host port `port`
/// (forwarded by the simulator's gateway): the body of a `200` reply.
fn get(port: u16, path: &str) -> Result<Vec<u8>, String> {
    match xenpal_apps::site_client::get(port, path)? {
        (200, body) => Ok(body),
        (status, _) => Err(format!("status {status}")),
    }
}

/// The same guest code on the simulator, built by its toolstack from the
/// domain the rig gives `xl create`: the disk image file `disk` (made by
/// [`write_disk`]) as `xvda`, a vif at 10.0.0.2/24 with dom0's gateway in
/// the bridge's place, and the host in dom0's place fetching both files
/// through a forwarded port. Returns the guest's result lines as (name,
/// word), then the host's checks as further rows.
///
/// Errors: a message if the simulation cannot be set up.
pub fn on_simulator(disk: &Path, data: &[u8]) -> Result<Vec<(String, String)>, String> {
    use std::net::Ipv4Addr;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};
    use xenpal_sim::toolstack::Toolstack;
    use xenpal_sim::xl::{DiskSpec, DomainSpec, VifSpec};
    use xenpal_sim::{DomainStatus, Mode, SimConfig};

    let spec = DomainSpec::new("fullstack")
        .memory_mib(32)
        .vif(
            VifSpec::new()
                .mac([0x00, 0x16, 0x3e, 0x00, 0x00, 0x02])
                .ip(Ipv4Addr::new(10, 0, 0, 2), 24),
        )
        .disk(DiskSpec::new(disk, "xvda"))
        .forward(0, 80);
    let mut ts = Toolstack::new(SimConfig {
        mode: Mode::FreeRunning { threads: 2 },
        ..SimConfig::default()
    });
    let results: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let r = results.clone();
    let guest = ts
        .create(&spec, move |p| async move {
            let cfg = xenpal_apps::fullstack::FullstackConfig::default();
            let report = xenpal_apps::fullstack::run(&p, cfg).await;
            let mut v = r.lock().unwrap();
            for i in 0..report.results.len() {
                v.push(crate::line_parts(&report.line(i)));
            }
        })
        .map_err(|e| e.to_string())?;
    let running = ts.start().map_err(|e| e.to_string())?;
    let port = running
        .forwarded_port(guest, 80)
        .ok_or("the toolstack bound no host port")?;
    let mut host = Vec::new();
    for (file, want) in [(INPUT, data.to_vec()), (OUTPUT, transform(data))] {
        let start = Instant::now();
        let got = loop {
            match get(port, &format!("/{file}")) {
                Ok(b) => break Ok(b),
                Err(_) if start.elapsed() < Duration::from_secs(60) => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Err(e) => break Err(e),
            }
        };
        let word = match got {
            Ok(b) if b == want => "PASS",
            _ => "FAIL",
        };
        host.push((format!("peer GET /{file}"), word.to_string()));
    }
    let start = Instant::now();
    while !matches!(running.status(guest), Some(DomainStatus::Exited(_))) {
        if start.elapsed() > Duration::from_secs(60) {
            return Err("the simulated guest did not stop".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for d in running.domain(guest).map(|d| &d.disks[..]).unwrap_or(&[]) {
        d.vbd.write_back().map_err(|e| e.to_string())?;
    }
    let mut v = results.lock().unwrap().clone();
    v.extend(host);
    let disk_word = if check_disk(disk, data).is_ok() {
        "PASS"
    } else {
        "FAIL"
    };
    v.push(("disk image after".into(), disk_word.into()));
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disk_holds_the_input_and_the_check_sees_a_missing_output() {
        let dir = std::env::temp_dir().join(format!("xtask-fs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("disk.img");
        let data = input();
        assert_eq!(data.len(), INPUT_BYTES);
        write_disk(&img, &data).unwrap();
        // The guest has not run: no output yet, and the check says so.
        let e = check_disk(&img, &data).unwrap_err();
        assert!(e.contains("not on the disk"), "{e}");
        // With the output put there (by mtools), the check passes, and a
        // wrong one fails.
        let out = dir.join("out.bin");
        for (bytes, ok) in [(transform(&data), true), (data.clone(), false)] {
            std::fs::write(&out, &bytes).unwrap();
            let st = Command::new("mcopy")
                .args(["-o", "-n", "-i"])
                .arg(&img)
                .arg(&out)
                .arg(format!("::{OUTPUT}"))
                .status()
                .unwrap();
            assert!(st.success());
            assert_eq!(check_disk(&img, &data).is_ok(), ok);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_same_guest_passes_on_the_simulator() {
        let dir = std::env::temp_dir().join(format!("xtask-fs-sim-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("disk.img");
        let data = input();
        write_disk(&img, &data).unwrap();
        let rows = on_simulator(&img, &data).unwrap();
        let names: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "disk-read",
                "disk-write",
                "disk-close",
                "net-serve",
                "peer GET /DATA.BIN",
                "peer GET /OUT.BIN",
                "disk image after"
            ]
        );
        for (n, w) in &rows {
            assert_eq!(w, "PASS", "{n}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
