//! The demo: a static website served by a unikernel in the simulator,
//! reachable from the host.
//!
//! ```text
//! cargo run --release --example static-site                  # serve the demo site
//! cargo run --release --example static-site -- --site DIR    # serve your own directory
//! cargo run --release --example static-site -- --check       # fetch and verify every page, then exit
//! ```
//!
//! The site is packed into FAT disk images on the fly (several if it is
//! large) and attached to a guest as disks served by blkback; the guest
//! (`xenpal_examples::site`, which knows nothing of the simulator) reads
//! them with blkfront and serves HTTP over netfront. dom0 runs netback, a
//! virtual switch and a gateway that forwards a TCP port on 127.0.0.1 into
//! the virtual network. The simulator runs free (real time, two threads),
//! so `curl` on the host talks to the guest as it runs.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use xenpal_examples::site::{self, SiteConfig};
use xenpal_sim::backends::blk::{Blkback, Disk, VbdOptions};
use xenpal_sim::backends::net::{NetBackend, add_vif};
use xenpal_sim::fatimg;
use xenpal_sim::hal::task::select;
use xenpal_sim::{DomainConfig, DomainStatus, Mode, Sim, SimConfig};

const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

struct Args {
    check: bool,
    site: PathBuf,
    port: u16,
    image_mib: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        check: false,
        site: Path::new(env!("CARGO_MANIFEST_DIR")).join("site"),
        port: 8080,
        image_mib: 64,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--check" => a.check = true,
            "--site" => a.site = PathBuf::from(value("--site")?),
            "--port" => {
                let v = value("--port")?;
                a.port = v
                    .parse()
                    .map_err(|_| format!("--port needs a port number, not {v:?}"))?;
            }
            "--image-mib" => {
                let v = value("--image-mib")?;
                a.image_mib = v
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or(format!("--image-mib needs a size in MiB, not {v:?}"))?;
            }
            "-h" | "--help" => {
                return Err(String::new());
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if !a.site.is_dir() {
        return Err(format!("--site {}: not a directory", a.site.display()));
    }
    Ok(a)
}

/// Every file of the site: (URL path, contents).
fn site_files(root: &Path) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            let ty = e
                .file_type()
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if ty.is_dir() {
                stack.push((path, format!("{prefix}/{name}")));
            } else if ty.is_file() {
                let data = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                out.push((format!("{prefix}/{name}"), data));
            }
        }
    }
    Ok(out)
}

/// Percent-encode a path for a request line.
fn encode(path: &str) -> String {
    let mut s = String::new();
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// `GET path` on the forwarded port: (status, body).
fn get(port: u16, path: &str) -> Result<(u16, Vec<u8>), String> {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        encode(path)
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers in the reply")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no status in the reply")?;
    let body = raw[split + 4..].to_vec();
    let length: Option<usize> = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .and_then(|v| v.parse().ok());
    if length.is_some_and(|n| n != body.len()) {
        return Err(format!(
            "Content-Length {length:?} but {} bytes of body",
            body.len()
        ));
    }
    Ok((status, body))
}

/// Fetch every page and compare it with the file; `/` and a missing page
/// too. Returns the failures.
fn check(port: u16, files: &[(String, Vec<u8>)]) -> Vec<String> {
    let mut failures = Vec::new();
    let mut expect = |path: &str, status: u16, body: Option<&[u8]>| match get(port, path) {
        Ok((s, b)) if s == status && body.is_none_or(|want| want == b.as_slice()) => {
            println!("check: ok   {status} {path} ({} bytes)", b.len());
        }
        Ok((s, b)) => {
            println!("check: FAIL {path}: status {s}, {} bytes", b.len());
            failures.push(path.to_string());
        }
        Err(e) => {
            println!("check: FAIL {path}: {e}");
            failures.push(path.to_string());
        }
    };
    for (path, data) in files {
        expect(path, 200, Some(data));
    }
    if let Some((_, index)) = files.iter().find(|(p, _)| p == "/index.html") {
        expect("/", 200, Some(index));
    }
    expect("/no/such/page.html", 404, None);
    failures
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("static-site: {e}");
            }
            eprintln!("usage: static-site [--check] [--site DIR] [--port N] [--image-mib N]");
            return ExitCode::from(2);
        }
    };
    let files = match site_files(&args.site) {
        Ok(f) if !f.is_empty() => f,
        Ok(_) => {
            eprintln!("static-site: {} has no files", args.site.display());
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("static-site: reading the site: {e}");
            return ExitCode::from(2);
        }
    };
    let images = match fatimg::split(
        files.iter().map(|(p, d)| (p.as_str(), d.clone())),
        args.image_mib << 20,
    )
    .and_then(|imgs| {
        imgs.iter()
            .map(|i| i.build())
            .collect::<Result<Vec<_>, _>>()
    }) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("static-site: packing the site into FAT images: {e}");
            return ExitCode::from(2);
        }
    };
    let total: usize = files.iter().map(|(_, d)| d.len()).sum();
    println!(
        "static-site: {} files ({} KiB) from {} packed into {} FAT image(s)",
        files.len(),
        total / 1024,
        args.site.display(),
        images.len()
    );

    let mut sim = Sim::new(SimConfig {
        mode: Mode::FreeRunning { threads: 2 },
        echo_console: true,
        ..SimConfig::default()
    });
    let mut net = NetBackend::new();
    net.gateway(GATEWAY_IP, 24);
    let port = match net.forward(if args.check { 0 } else { args.port }, GUEST_IP, 80) {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "static-site: cannot listen on 127.0.0.1:{}: {e} (try --port)",
                args.port
            );
            return ExitCode::FAILURE;
        }
    };
    let blk = Blkback::new();
    let cfg = DomainConfig::new("static-site").memory_pages(8192).paused();
    let guest = sim
        .spawn(cfg, |p| async move {
            let config = SiteConfig::default();
            if let Err(e) = site::run(&p, config).await {
                log::error!("site: {e}");
            }
        })
        .expect("build the guest");
    let setup = || -> Result<(), String> {
        sim.xenstore_write(
            &format!("/local/domain/{}/data/ip", guest.0),
            &format!("{GUEST_IP}/24"),
        )?;
        add_vif(&sim, guest, 0, [0x00, 0x16, 0x3e, 0x00, 0x00, 0x02])?;
        for (i, img) in images.into_iter().enumerate() {
            blk.add_vbd(
                &sim,
                guest,
                i as u32,
                Disk::memory(img),
                VbdOptions::default().read_only(),
            )?;
        }
        Ok(())
    };
    if let Err(e) = setup() {
        eprintln!("static-site: setting up the guest's devices: {e}");
        return ExitCode::FAILURE;
    }
    sim.spawn_dom0(move |p| async move {
        let n = core::pin::pin!(net.serve(&p));
        let b = core::pin::pin!(blk.serve(&p));
        let _ = select(n, b).await;
    })
    .expect("start dom0");
    sim.unpause(guest).expect("the guest exists");
    println!("static-site: serving http://127.0.0.1:{port}/ (Ctrl-C to stop)");

    // Wait for the site to answer.
    let start = Instant::now();
    loop {
        if let Some(DomainStatus::Exited(e)) = sim.status(guest) {
            eprintln!("static-site: the guest stopped: {e:?}");
            return ExitCode::FAILURE;
        }
        match get(port, "/") {
            Ok(_) => break,
            Err(_) if start.elapsed() < Duration::from_secs(60) => {
                std::thread::sleep(Duration::from_millis(200))
            }
            Err(e) => {
                eprintln!("static-site: the site did not answer within 60 s: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!(
        "static-site: up after {:.2} s",
        start.elapsed().as_secs_f64()
    );
    if args.check {
        let failures = check(port, &files);
        if failures.is_empty() {
            println!("static-site: all {} pages verified", files.len() + 2);
            ExitCode::SUCCESS
        } else {
            eprintln!(
                "static-site: {} page(s) failed: {}",
                failures.len(),
                failures.join(", ")
            );
            ExitCode::FAILURE
        }
    } else {
        loop {
            std::thread::sleep(Duration::from_secs(1));
            if let Some(DomainStatus::Exited(e)) = sim.status(guest) {
                eprintln!("static-site: the guest stopped: {e:?}");
                return ExitCode::FAILURE;
            }
        }
    }
}
