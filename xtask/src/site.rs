//! The static site on emulated Xen, reachable from the host
//! (`--dom0 linux --site DIR site`): the site guest runs as an `xl` domU of
//! the Linux dom0, with the user's directory packed into as many FAT disks
//! as it needs, and QEMU forwards a port on the host's 127.0.0.1 into
//! dom0's bridge, where the guest answers.
//!
//! The network: dom0's QEMU NIC (user networking, 10.0.2.0/24) is a port of
//! dom0's bridge `xenbr0`, and so is the guest's vif, so the guest sits on
//! QEMU's user network at [`GUEST_IP`] and QEMU's `hostfwd` reaches it
//! directly; dom0 forwards nothing itself.
//!
//! The disks: the images go to dom0 as QEMU virtio disks (`/dev/vda`,
//! `/dev/vdb`, ...) and from dom0 to the guest as `xvda`, `xvdb`, ...
//! through Linux's blkback.

use crate::cpio::Entry;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use xenpal_apps::site_client;
use xenpal_fatimg::FatImage;

/// The guest's address on QEMU's user network.
pub const GUEST_IP: &str = "10.0.2.16";

/// What `--site DIR [--image-mib N] [--port PORT] [--check]` asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteArgs {
    /// The directory to serve.
    pub dir: PathBuf,
    /// Largest FAT image, in MiB.
    pub image_mib: u64,
    /// The host port (on 127.0.0.1) that reaches the guest's port 80.
    pub port: u16,
    /// Fetch and compare every file, then stop.
    pub check: bool,
}

impl Default for SiteArgs {
    fn default() -> Self {
        SiteArgs {
            dir: PathBuf::new(),
            image_mib: 64,
            port: 8080,
            check: false,
        }
    }
}

/// Pack `dir` into FAT images of at most `image_mib` MiB (a file too large
/// for that gets an image of its own, as large as it needs), written as
/// `site-0.img`, `site-1.img`, ... in `out`. Returns their paths.
///
/// Errors: a message naming the directory, or the image that cannot be
/// written; an empty directory is an error too.
pub fn pack(dir: &Path, image_mib: u64, out: &Path) -> Result<Vec<PathBuf>, String> {
    let mut all = FatImage::new();
    let outside = all
        .add_dir_tree(dir)
        .map_err(|e| format!("packing {}: {e}", dir.display()))?;
    for link in outside {
        println!("== {}: {link}", dir.display());
    }
    if all.file_count() == 0 {
        return Err(format!("{}: no files to serve", dir.display()));
    }
    let parts = all
        .split_growing(image_mib << 20)
        .map_err(|e| format!("packing {} into {image_mib} MiB images: {e}", dir.display()))?;
    let mut paths = Vec::new();
    for (i, img) in parts.iter().enumerate() {
        let path = out.join(format!("site-{i}.img"));
        img.write_file(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        paths.push(path);
    }
    Ok(paths)
}

/// The guest's devices, as `xl` config lines: the vif on `xenbr0` at
/// [`GUEST_IP`], and one disk per image (dom0's `/dev/vda`, ...).
pub fn guest_devices(images: usize) -> String {
    let disks: Vec<String> = (0..images)
        .map(|i| {
            let letter = char::from(b'a' + i as u8);
            format!(
                "'format=raw,vdev=xvd{letter},access=rw,script=/etc/xen/scripts/block-xenpal,target=/dev/vd{letter}'"
            )
        })
        .collect();
    format!(
        "vif = ['bridge=xenbr0,mac=00:16:3e:00:00:02,ip={GUEST_IP}/24,script=/etc/xen/scripts/vif-xenpal']\n\
         disk = [{}]\n",
        disks.join(", ")
    )
}

/// Run before `xl create`: dom0's QEMU NIC joins the bridge, and every
/// disk is there.
fn before_guest(images: usize) -> String {
    let mut s = String::from(
        "ip link set dev eth0 master xenbr0 && ip link set dev eth0 up \\\n    \
         || fail \"eth0 (QEMU's user network) into xenbr0\"\n",
    );
    for i in 0..images {
        let letter = char::from(b'a' + i as u8);
        s.push_str(&format!(
            "[ -b /dev/vd{letter} ] || fail \"no /dev/vd{letter} (site image {i})\"\n"
        ));
    }
    s.push_str(&format!(
        "say \"site: eth0 on xenbr0; {images} disk(s); guest at {GUEST_IP}\"\n"
    ));
    s
}

/// dom0's extra files for the site: the hotplug scripts and the hook.
pub fn dom0_files(images: usize) -> Vec<(String, Entry)> {
    let mut files = crate::fullstack::hotplug_scripts();
    files.push((
        "etc/xen/before-guest".into(),
        Entry::File(0o755, before_guest(images).into_bytes()),
    ));
    files
}

/// QEMU's arguments for dom0's disks (the images) and its NIC, with
/// `port` on the host's 127.0.0.1 forwarded to the guest's port 80.
pub fn qemu_devices(cmd: &mut Command, images: &[PathBuf], port: u16, x86: bool) {
    for (i, img) in images.iter().enumerate() {
        cmd.arg("-drive")
            .arg(format!(
                "file={},if=none,format=raw,id=site{i}",
                img.display()
            ))
            .arg("-device")
            .arg(if x86 {
                format!("virtio-blk-pci,drive=site{i}")
            } else {
                format!("virtio-blk-device,drive=site{i}")
            });
    }
    cmd.arg("-netdev")
        .arg(format!(
            "user,id=net0,hostfwd=tcp:127.0.0.1:{port}-{GUEST_IP}:80"
        ))
        .arg("-device")
        .arg(if x86 {
            "virtio-net-pci,netdev=net0"
        } else {
            "virtio-net-device,netdev=net0"
        });
}

/// Kills QEMU when dropped, however `serve` ends.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Boot `cmd` (QEMU with Xen, dom0 and the site guest), logging its
/// output to `log`; wait up to `timeout` for the site to answer on
/// `127.0.0.1:port`, then print `serving http://127.0.0.1:PORT/` and either
/// serve until QEMU ends or is interrupted, or (`check`) fetch every file
/// of `dir` and compare. Returns whether all went well.
///
/// Errors: a message if QEMU cannot start, dom0 fails, the guest crashes
/// or the site never answers.
pub fn serve(cmd: Command, log: &Path, site: &SiteArgs, timeout: Duration) -> Result<bool, String> {
    let files = site_client::site_files(&site.dir)?;
    let mut cmd = cmd;
    let mut file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let (child, rx) = crate::run::spawn_lines(&mut cmd)?;
    let mut qemu = Qemu(child);
    // A thread logs every line, echoes dom0's and the guest's (while
    // `echo` is set), and keeps the first line that means the run is over.
    let echo = Arc::new(AtomicBool::new(true));
    let ended: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    {
        let (echo, ended) = (echo.clone(), ended.clone());
        std::thread::spawn(move || {
            for line in rx {
                let _ = writeln!(file, "{line}");
                if echo.load(Ordering::Relaxed)
                    && (line.starts_with("dom0: ") || line.starts_with("(d1) "))
                {
                    println!("   {line}");
                }
                if line.starts_with("dom0: FAILED")
                    || line.contains("Kernel panic - not syncing")
                    || line.starts_with("(d1) panic:")
                    || line.starts_with("(d1) xenpal: exit: ")
                {
                    let mut e = ended.lock().unwrap_or_else(|p| p.into_inner());
                    e.get_or_insert(line);
                }
            }
            let mut e = ended.lock().unwrap_or_else(|p| p.into_inner());
            e.get_or_insert_with(|| "QEMU exited".to_string());
        });
    }
    let over = || {
        ended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .map(|l| format!("the run ended: {l} (log: {})", log.display()))
    };
    let start = Instant::now();
    loop {
        if let Some(e) = over() {
            return Err(e);
        }
        if site_client::get(site.port, "/").is_ok() {
            break;
        }
        if start.elapsed() > timeout {
            return Err(format!(
                "the site did not answer on 127.0.0.1:{} within {timeout:?} (log: {})",
                site.port,
                log.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    println!(
        "serving http://127.0.0.1:{}/ (up {:.0} s after QEMU started)",
        site.port,
        start.elapsed().as_secs_f64()
    );
    if site.check {
        echo.store(false, Ordering::Relaxed);
        let failures = site_client::check(site.port, &files);
        if !failures.is_empty() {
            println!(
                "== {} page(s) failed: {}",
                failures.len(),
                failures.join(", ")
            );
            return Ok(false);
        }
        let index = files.iter().any(|f| f.path == "/index.html");
        println!(
            "== all {} pages verified",
            files.len() + 1 + usize::from(index)
        );
        return Ok(true);
    }
    println!("   (Ctrl-C to stop; log: {})", log.display());
    loop {
        std::thread::sleep(Duration::from_secs(1));
        if let Ok(Some(status)) = qemu.0.try_wait() {
            return Err(format!("QEMU exited ({status})"));
        }
        if let Some(e) = over() {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_disk_per_image() {
        let d = guest_devices(2);
        assert!(d.contains("vdev=xvda") && d.contains("target=/dev/vda"));
        assert!(d.contains("vdev=xvdb") && d.contains("target=/dev/vdb"));
        assert!(d.contains(&format!("ip={GUEST_IP}/24")));
        let hook = before_guest(2);
        assert!(hook.contains("/dev/vdb") && !hook.contains("/dev/vdc"));
    }

    #[test]
    fn a_site_needing_two_images_is_packed_into_two() {
        let dir = std::env::temp_dir().join(format!("xenpal-site-pack-{}", std::process::id()));
        let out = dir.join("out");
        let site = dir.join("site");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::create_dir_all(&site).unwrap();
        // Two files of 3 MiB each cannot share a 4 MiB image.
        std::fs::write(site.join("a.bin"), vec![1u8; 3 << 20]).unwrap();
        std::fs::write(site.join("b.bin"), vec![2u8; 3 << 20]).unwrap();
        let images = pack(&site, 4, &out).unwrap();
        assert_eq!(images.len(), 2);
        for i in &images {
            assert!(std::fs::metadata(i).unwrap().len() <= 4 << 20);
        }
        // An empty folder is refused.
        let empty = dir.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        assert!(pack(&empty, 4, &out).unwrap_err().contains("no files"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
