//! The demo: a static website served by a unikernel in the simulator,
//! reachable from the host.
//!
//! ```text
//! cargo run --release --example static-site                  # serve the demo site
//! cargo run --release --example static-site -- --site DIR    # serve your own directory
//! cargo run --release --example static-site -- --config FILE # the guest an xl config describes
//! cargo run --release --example static-site -- --check       # fetch and verify every page, then exit
//! ```
//!
//! The launcher is a thin user of the simulator's toolstack
//! (`xenpal_sim::toolstack`): it describes the guest as xl's domain config
//! does (`xenpal_sim::xl::DomainSpec`: a vif at 10.0.0.2/24, the site's
//! directory as disk `xvda`, host port `--port` forwarded to the guest's
//! port 80), or reads that description from an xl config file
//! (`apps/site.cfg` is the demo's), and lets the toolstack build it. The
//! site is packed into FAT disk images on the fly (several if it is large)
//! and attached as disks served by blkback; the guest
//! (`xenpal_apps::site`, which knows nothing of the simulator) reads
//! them with blkfront and serves HTTP over netfront. dom0 runs netback, a
//! virtual switch and a gateway that forwards a TCP port on 127.0.0.1 into
//! the virtual network. The simulator runs free (real time, two threads),
//! so `curl` on the host talks to the guest as it runs.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use xenpal_apps::site::{self, SiteConfig};
use xenpal_apps::site_client::{SiteFile, check, get, site_files};
use xenpal_sim::toolstack::{Toolstack, ToolstackError};
use xenpal_sim::xl::{DiskSpec, DomainSpec, VifSpec};
use xenpal_sim::{DomainStatus, Mode, SimConfig};

const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const GUEST_MAC: [u8; 6] = [0x00, 0x16, 0x3e, 0x00, 0x00, 0x02];
/// The guest's HTTP port.
const HTTP: u16 = 80;

struct Args {
    check: bool,
    site: Option<PathBuf>,
    port: Option<u16>,
    image_mib: u64,
    config: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        check: false,
        site: None,
        port: None,
        image_mib: 64,
        config: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--check" => a.check = true,
            "--site" => a.site = Some(PathBuf::from(value("--site")?)),
            "--config" => a.config = Some(PathBuf::from(value("--config")?)),
            "--port" => {
                let v = value("--port")?;
                a.port = Some(
                    v.parse()
                        .map_err(|_| format!("--port needs a port number, not {v:?}"))?,
                );
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
    if a.config.is_some() && a.site.is_some() {
        return Err("--site and --config: the config names the site's disks".into());
    }
    if let Some(site) = &a.site
        && !site.is_dir()
    {
        return Err(format!("--site {}: not a directory", site.display()));
    }
    Ok(a)
}

/// The guest's description: from `--config`, else the demo's (what
/// `apps/site.cfg` says, with `--site` and `--port`). `--check` takes
/// any free host port, so it never clashes with a server already running;
/// `--port` overrides the config's.
fn domain_spec(args: &Args) -> Result<DomainSpec, String> {
    let mut spec = match &args.config {
        Some(path) => {
            DomainSpec::from_file(path).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => {
            let site = args
                .site
                .clone()
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("site"));
            DomainSpec::new("static-site")
                .memory_mib(32)
                .vif(VifSpec::new().ip(GUEST_IP, 24).mac(GUEST_MAC))
                .disk(DiskSpec::new(site, "xvda").read_only())
                .forward(args.port.unwrap_or(8080), HTTP)
        }
    };
    if !spec.forwards.iter().any(|f| f.guest_port == HTTP) {
        return Err(format!(
            "the config forwards no host port to the guest's port {HTTP} \
             (add xenpal_forward = [ '8080:{HTTP}' ])"
        ));
    }
    for f in spec.forwards.iter_mut().filter(|f| f.guest_port == HTTP) {
        if args.check {
            f.host_port = 0;
        } else if let Some(p) = args.port {
            f.host_port = p;
        }
    }
    Ok(spec)
}

/// Whether a toolstack error is the user's input (exit status 2) rather
/// than a failure to run.
fn is_input_error(e: &ToolstackError) -> bool {
    !matches!(
        e,
        ToolstackError::Forward { .. }
            | ToolstackError::Spawn(_)
            | ToolstackError::Xenstore { .. }
            | ToolstackError::AddVif { .. }
            | ToolstackError::AddVbd { .. }
            | ToolstackError::Dom0(_)
            | ToolstackError::Unpause { .. }
    )
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("static-site: {e}");
            }
            eprintln!(
                "usage: static-site [--check] [--site DIR | --config FILE] [--port N] [--image-mib N]"
            );
            return ExitCode::from(2);
        }
    };
    let spec = match domain_spec(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("static-site: {e}");
            return ExitCode::from(2);
        }
    };

    // Two workers: dom0 and the guest in parallel. One worker was tried:
    // a single download went faster (no sleeping thread to wake at each
    // hand-over), but 200 clients at once got half the requests through.
    // Workers now spin briefly for an answer after handing work over (the
    // simulator's scheduler), which gave the download most of that back.
    let mut ts = Toolstack::new(SimConfig {
        mode: Mode::FreeRunning { threads: 2 },
        echo_console: true,
        ..SimConfig::default()
    });
    ts.fat_image_max_bytes(args.image_mib << 20);
    let guest = match ts.create(&spec, |p| async move {
        let config = SiteConfig::default();
        if let Err(e) = site::run(&p, config).await {
            log::error!("site: {e}");
        }
    }) {
        Ok(d) => d,
        Err(e @ ToolstackError::Forward { .. }) => {
            eprintln!("static-site: {e} (try --port)");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("static-site: creating the guest: {e}");
            return if is_input_error(&e) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            };
        }
    };

    // The site's files, as the guest indexes them (the first disk wins),
    // for the summary and for --check: listed, not read.
    let mut files = BTreeMap::new();
    let mut packed: BTreeMap<PathBuf, (usize, u64, u64)> = BTreeMap::new();
    for d in ts
        .domain(guest)
        .map(|i| i.disks.as_slice())
        .unwrap_or_default()
    {
        if let Some(p) = d.packed {
            let e = packed.entry(d.target.clone()).or_default();
            *e = (p.count, e.1 + p.files, e.2 + p.payload_bytes);
        }
    }
    for (dir, (images, count, bytes)) in &packed {
        let here = match site_files(dir) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("static-site: reading the site: {e}");
                return ExitCode::from(2);
            }
        };
        println!(
            "static-site: {count} files ({} KiB) from {} packed into {images} FAT image(s)",
            bytes / 1024,
            dir.display(),
        );
        for f in here {
            files.entry(f.path.clone()).or_insert(f);
        }
    }
    let files: Vec<SiteFile> = files.into_values().collect();

    let running = match ts.start() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("static-site: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(port) = running.forwarded_port(guest, HTTP) else {
        eprintln!("static-site: no host port forwarded to the guest's port {HTTP}");
        return ExitCode::FAILURE;
    };
    println!("static-site: serving http://127.0.0.1:{port}/ (Ctrl-C to stop)");

    // Wait for the site to answer.
    let start = Instant::now();
    loop {
        if let Some(DomainStatus::Exited(e)) = running.status(guest) {
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
            let index = files.iter().any(|f| f.path == "/index.html");
            println!(
                "static-site: all {} pages verified",
                files.len() + 1 + usize::from(index)
            );
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
            if let Some(DomainStatus::Exited(e)) = running.status(guest) {
                eprintln!("static-site: the guest stopped: {e:?}");
                return ExitCode::FAILURE;
            }
        }
    }
}
