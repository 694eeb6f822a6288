//! `cargo xtask bench [--quick] [--only NAME,...]`: the static-site demo
//! on the simulator, timed from outside against `python3 -m http.server`
//! serving the same directory, and the other measures below, each against
//! its baseline in the same run, interleaved (ours, baseline, ours, ...),
//! median of 5 rounds. One line per measure, in the form the performance
//! issue fixes:
//!
//! `bench: NAME ours=VALUE UNIT baseline=VALUE UNIT ratio=R goal=G`
//!
//! and the same rows in `target/bench/results.json`. `--quick` uses a
//! smaller file, fewer requests and shorter ring measurements (for
//! `.ci/run`), fewer guests and less data for the simulator's rows; the
//! rounds stay 5. (Image sizes do not vary: no rounds.)
//!
//! Rows: `site-download` (a large file with `curl`), `site-small-c1`
//! and `site-small-c50` (a 1 KB page with `ab`, 1 and 50 clients; the
//! latter must see no failed request); `ring-rtt` and `ring-stream` (our
//! shared ring between two threads, against a cache-line ping-pong and
//! `rtrb` queues: see [`rings`]); `site-memory` (the demo's peak RSS
//! serving a 1 GiB site, against the site's size: see [`memory`]);
//! `image-size-*` (the guest images users load, against Mirage's 172 KB
//! web appliance: see [`image`]); `sim-tcp` (a TCP stream between two
//! simulated guests, against smoltcp over its own loopback), `sim-blk-read`
//! (a guest reading a file through blkfront and FAT, against host `pread`)
//! and `sim-density-memory` and `sim-density-create` (memory and creation
//! time per guest with 100,000 guests, against the goals as constants: see
//! [`sim`]).
//!
//! The ratio is always ours/baseline. For most rows bigger is better and
//! the goal is a floor (`goal=0.25`); for the rows where smaller is better
//! (`ring-rtt`, `site-memory`, `image-size-*`, `sim-density-*`) the goal is a ceiling and printed as such
//! (`goal=<=2`). `met` in the JSON compares the ratio the right way.
//!
//! `--xen` runs the rows on emulated Xen instead (`xen-boot-to-serve`,
//! `xen-download`, `xen-density-*`: the site guest against a Linux domU
//! in the x86_64 Linux dom0 rig; see [`xen`]); with `--quick`, 10 density
//! guests instead of 100.
//!
//! `--only NAME,NAME` runs only the named measures: `site-download`,
//! `site-small-c1`, `site-small-c50`, `site-memory`, `ring-rtt`, `ring-stream`,
//! `image-size` (all the `image-size-*` rows), `sim-tcp`, `sim-blk-read`,
//! `sim-density` (both `sim-density-*` rows). The site (demo and python)
//! is started only if a site row is asked for. `results.json` holds the
//! rows of the run that wrote it.

mod image;
mod memory;
mod rings;
mod sim;
pub mod xen;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Rounds per measure, ours and baseline interleaved.
const ROUNDS: usize = 5;

/// One measure's result.
#[derive(Debug)]
struct Row {
    name: &'static str,
    unit: &'static str,
    ours: f64,
    baseline: f64,
    /// A floor for the ratio, or a ceiling if `smaller_is_better`.
    goal: f64,
    /// Whether a smaller value is better (a time, a size).
    smaller_is_better: bool,
}

impl Row {
    fn ratio(&self) -> f64 {
        if self.baseline > 0.0 {
            self.ours / self.baseline
        } else {
            0.0
        }
    }

    /// Whether the ratio meets the goal. A row with no baseline never does.
    fn met(&self) -> bool {
        if self.baseline <= 0.0 {
            false
        } else if self.smaller_is_better {
            self.ratio() <= self.goal
        } else {
            self.ratio() >= self.goal
        }
    }

    /// The goal as printed: `0.25` (a floor) or `<=2` (a ceiling), with at
    /// most 4 decimals.
    fn goal_text(&self) -> String {
        let g = format!("{:.4}", self.goal);
        let g = g.trim_end_matches('0').trim_end_matches('.');
        if self.smaller_is_better {
            format!("<={g}")
        } else {
            g.to_string()
        }
    }

    fn line(&self) -> String {
        format!(
            "bench: {} ours={:.1} {} baseline={:.1} {} ratio={:.3} goal={}",
            self.name,
            self.ours,
            self.unit,
            self.baseline,
            self.unit,
            self.ratio(),
            self.goal_text()
        )
    }

    fn json(&self) -> String {
        format!(
            "{{\"name\":\"{}\",\"ours\":{:.3},\"baseline\":{:.3},\"unit\":\"{}\",\"ratio\":{:.4},\"goal\":{},\"smaller_is_better\":{},\"met\":{}}}",
            self.name,
            self.ours,
            self.baseline,
            self.unit,
            self.ratio(),
            self.goal,
            self.smaller_is_better,
            self.met()
        )
    }
}

/// The 1 KB page the small-request rows ask for.
fn small_page() -> Vec<u8> {
    let mut page = b"<!doctype html><title>bench</title><p>".to_vec();
    page.resize(1024 - 5, b'x');
    page.extend_from_slice(b"</p>\n");
    page
}

/// A server for the length of the run; killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A port nothing listens on now (the kernel's pick), so a server left
/// over from an earlier run cannot answer in ours' place.
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port: {e}"))
}

/// Wait until something accepts connections on `port`.
fn wait_for_port(port: u16, what: &str) -> Result<(), String> {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > Duration::from_secs(120) {
            return Err(format!("{what} did not start listening on port {port}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Run `cmd`, returning its standard output.
fn output(cmd: &mut Command) -> Result<String, String> {
    let o = cmd
        .output()
        .map_err(|e| format!("{:?}: {e}", cmd.get_program()))?;
    if !o.status.success() {
        return Err(format!(
            "{:?} {:?}: {}\n{}",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>(),
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Bytes per second of one `curl` download of `url`, checking the size.
fn download(url: &str, size: usize) -> Result<f64, String> {
    let out = output(Command::new("curl").args([
        "-s",
        "-f",
        "-o",
        "/dev/null",
        "-w",
        "%{speed_download} %{size_download}",
        url,
    ]))?;
    let mut it = out.split_whitespace();
    let speed: f64 = it.next().and_then(|s| s.parse().ok()).ok_or(out.clone())?;
    let got: usize = it.next().and_then(|s| s.parse().ok()).ok_or(out.clone())?;
    if got != size {
        return Err(format!("{url}: {got} bytes, want {size}"));
    }
    Ok(speed)
}

/// Requests per second and failed requests of one `ab` run.
fn ab(url: &str, n: usize, c: usize) -> Result<(f64, u64), String> {
    // -r: a socket error is a failed request, not the end of the run;
    // -s 60: python's server can leave a connection waiting for a SYN
    // retransmission for a while.
    let out = output(Command::new("ab").args([
        "-q",
        "-r",
        "-s",
        "60",
        "-n",
        &n.to_string(),
        "-c",
        &c.to_string(),
        url,
    ]))?;
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .map(str::to_string)
            .ok_or(format!("ab printed no {name:?}:\n{out}"))
    };
    let rate: f64 = field("Requests per second:")?
        .parse()
        .map_err(|e| format!("{e}"))?;
    let failed: u64 = field("Failed requests:")?
        .parse()
        .map_err(|e| format!("{e}"))?;
    let non2xx: u64 = field("Non-2xx responses:")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok((rate, failed + non2xx))
}

/// The measures `--only` can name, in the order they run.
const MEASURES: [&str; 10] = [
    "site-download",
    "site-small-c1",
    "site-small-c50",
    "site-memory",
    "ring-rtt",
    "ring-stream",
    "image-size",
    "sim-tcp",
    "sim-blk-read",
    "sim-density",
];

/// `cargo xtask bench [--quick] [--only NAME,...]`. Returns whether every
/// measure ran and ours had no failed request where none is allowed (goals
/// missed are reported, not failed).
///
/// Errors: a message if the arguments are wrong, a tool is missing, the
/// demo, the ring or simulator benchmark or a guest cannot be built or
/// started, or a download comes back short.
pub fn run(args: &[String], root: &Path) -> Result<bool, String> {
    let usage = || {
        format!(
            "unknown arguments {args:?}: cargo xtask bench [--quick] [--only NAME,...] | --xen [--quick] (NAME: {})",
            MEASURES.join(", ")
        )
    };
    let (mut quick, mut only, mut on_xen) = (false, None, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--xen" => on_xen = true,
            "--only" => {
                let list: Vec<String> = it
                    .next()
                    .ok_or_else(usage)?
                    .split(',')
                    .map(str::to_string)
                    .collect();
                if let Some(bad) = list.iter().find(|n| !MEASURES.contains(&n.as_str())) {
                    return Err(format!(
                        "--only: no measure {bad:?} (measures: {})",
                        MEASURES.join(", ")
                    ));
                }
                only = Some(list);
            }
            _ => return Err(usage()),
        }
    }
    if on_xen && only.is_some() {
        return Err("--xen runs the Xen rows only: no --only with it".into());
    }
    let wanted = |name: &str| !on_xen && only.as_ref().is_none_or(|o| o.iter().any(|n| n == name));
    let out_dir = root.join("target/bench");
    let mut rows = Vec::new();
    let mut ok = true;
    if on_xen {
        rows.extend(xen::rows(root, quick)?);
    }
    if MEASURES[..3].iter().any(|m| wanted(m)) {
        ok &= site_rows(root, &out_dir, quick, &wanted, &mut rows)?;
    }
    if wanted("site-memory") {
        rows.push(memory::row(root, &out_dir, quick)?);
    }
    let ring_rows: Vec<&str> = MEASURES[4..6]
        .iter()
        .copied()
        .filter(|m| wanted(m))
        .collect();
    if !ring_rows.is_empty() {
        rows.extend(rings::rows(root, quick, &ring_rows)?);
    }
    if wanted("image-size") {
        rows.extend(image::rows(root)?);
    }
    let sim_rows: Vec<&str> = MEASURES[7..]
        .iter()
        .copied()
        .filter(|m| wanted(m))
        .collect();
    if !sim_rows.is_empty() {
        rows.extend(sim::rows(root, quick, &sim_rows)?);
    }

    for r in &rows {
        println!("{}", r.line());
    }
    let json = format!(
        "[\n  {}\n]\n",
        rows.iter().map(Row::json).collect::<Vec<_>>().join(",\n  ")
    );
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let path = out_dir.join("results.json");
    std::fs::write(&path, json).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("== bench: rows written to {}", path.display());
    Ok(ok)
}

/// Build the demo (release); returns its path.
fn build_demo(root: &Path) -> Result<PathBuf, String> {
    println!("== bench: building the demo (release)");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    output(Command::new(&cargo).current_dir(root).args([
        "build",
        "-q",
        "--release",
        "--example",
        "static-site",
    ]))?;
    Ok(root.join("target/release/examples/static-site"))
}

/// Start the demo serving `site` on host port `port`, with its default
/// options (image size included).
fn start_demo(demo: &Path, site: &Path, port: u16) -> Result<Server, String> {
    let mut child = Command::new(demo)
        .args(["--site"])
        .arg(site)
        .args(["--port", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", demo.display()))?;
    // Drain the demo's console so it never blocks on a full pipe.
    if let Some(stdout) = child.stdout.take() {
        std::thread::spawn(move || for _ in BufReader::new(stdout).lines() {});
    }
    Ok(Server(child))
}

/// Wait until the demo on `port` serves `page`: it listens on the host at
/// once, and its guest comes up after.
fn wait_for_guest(port: u16, page: &str) -> Result<(), String> {
    wait_for_port(port, "the demo")?;
    let warm = format!("http://127.0.0.1:{port}/{page}");
    let start = Instant::now();
    while output(Command::new("curl").args(["-s", "-f", "-o", "/dev/null", &warm])).is_err() {
        if start.elapsed() > Duration::from_secs(60) {
            return Err("the demo's guest does not answer".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// The site rows `wanted` names, pushed to `rows`: the demo and python's
/// server started, timed, and stopped. Returns whether ours failed no
/// request.
fn site_rows(
    root: &Path,
    out_dir: &Path,
    quick: bool,
    wanted: &dyn Fn(&str) -> bool,
    rows: &mut Vec<Row>,
) -> Result<bool, String> {
    let (file_bytes, n_c1, n_c50) = if quick {
        (20_000_000, 500, 2_000)
    } else {
        (100_000_000, 3_000, 5_000)
    };
    let site = out_dir.join("site");
    let _ = std::fs::remove_dir_all(&site);
    std::fs::create_dir_all(&site).map_err(|e| format!("{}: {e}", site.display()))?;
    let write = |name: &str, data: &[u8]| {
        std::fs::write(site.join(name), data).map_err(|e| format!("{name}: {e}"))
    };
    write("big.bin", &crate::fullstack::noise(file_bytes))?;
    write("page.html", &small_page())?;

    let demo = build_demo(root)?;
    let (ours_port, base_port) = (free_port()?, free_port()?);
    if ours_port == base_port {
        return Err("the kernel gave the same free port twice".into());
    }
    let _ours = start_demo(&demo, &site, ours_port)?;
    let base = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &base_port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .arg("--directory")
        .arg(&site)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("python3: {e}"))?;
    let _base = Server(base);
    wait_for_port(base_port, "python3 -m http.server")?;
    wait_for_guest(ours_port, "page.html")?;

    let url = |port: u16, path: &str| format!("http://127.0.0.1:{port}/{path}");
    let mut ok = true;

    if wanted("site-download") {
        println!("== bench: site-download ({file_bytes} bytes, {ROUNDS} rounds)");
        let (mut o, mut b) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            o.push(download(&url(ours_port, "big.bin"), file_bytes)? / 1e6);
            b.push(download(&url(base_port, "big.bin"), file_bytes)? / 1e6);
        }
        rows.push(Row {
            name: "site-download",
            unit: "MB/s",
            ours: median(o),
            baseline: median(b),
            goal: 0.25,
            smaller_is_better: false,
        });
    }

    for (name, n, c) in [("site-small-c1", n_c1, 1), ("site-small-c50", n_c50, 50)] {
        if !wanted(name) {
            continue;
        }
        println!("== bench: {name} ({n} requests, {c} at a time, {ROUNDS} rounds)");
        let (mut o, mut b) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let (rate, failed) = ab(&url(ours_port, "page.html"), n, c)?;
            if failed > 0 {
                println!("   ours: {failed} of {n} requests failed");
                ok = false;
            }
            o.push(rate);
            let (rate, failed) = ab(&url(base_port, "page.html"), n, c)?;
            if failed > 0 {
                println!("   baseline: {failed} of {n} requests failed");
            }
            b.push(rate);
        }
        rows.push(Row {
            name,
            unit: "req/s",
            ours: median(o),
            baseline: median(b),
            goal: 1.0,
            smaller_is_better: false,
        });
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_print_in_the_fixed_form() {
        let r = Row {
            name: "site-download",
            unit: "MB/s",
            ours: 98.07,
            baseline: 1182.13,
            goal: 0.25,
            smaller_is_better: false,
        };
        assert_eq!(
            r.line(),
            "bench: site-download ours=98.1 MB/s baseline=1182.1 MB/s ratio=0.083 goal=0.25"
        );
        assert!(r.json().contains("\"met\":false"));
        assert_eq!(median(vec![3.0, 1.0, 2.0, 9.0, 4.0]), 3.0);
    }

    #[test]
    fn smaller_is_better_rows_meet_a_ceiling() {
        let mut r = Row {
            name: "ring-rtt",
            unit: "ns/rtt",
            ours: 300.0,
            baseline: 200.0,
            goal: 2.0,
            smaller_is_better: true,
        };
        // The ratio stays ours/baseline; the goal is a ceiling.
        assert_eq!(
            r.line(),
            "bench: ring-rtt ours=300.0 ns/rtt baseline=200.0 ns/rtt ratio=1.500 goal=<=2"
        );
        assert!(r.met());
        assert!(r.json().contains("\"smaller_is_better\":true,\"met\":true"));
        r.ours = 400.0;
        assert!(r.met(), "exactly at the ceiling");
        r.ours = 401.0;
        assert!(!r.met());
        assert!(r.json().contains("\"met\":false"));
        // The same ratio on a bigger-is-better row: a floor.
        r.smaller_is_better = false;
        assert!(r.met());
        r.baseline = 0.0;
        assert!(!r.met(), "no baseline, no goal met");
        // A goal that is no round number prints with 4 decimals at most.
        let hello = Row {
            name: "image-size-hello-x86_64",
            unit: "KB",
            ours: 20.0,
            baseline: 172.0,
            goal: 16384.0 / 172_000.0,
            smaller_is_better: true,
        };
        assert!(hello.line().ends_with("ratio=0.116 goal=<=0.0953"));
        assert!(!hello.met());
    }
}
