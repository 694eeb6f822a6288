//! `cargo xtask bench [--quick]`: the static-site demo on the simulator,
//! timed from outside against `python3 -m http.server` serving the same
//! directory, in the same run, interleaved (ours, baseline, ours, ...),
//! median of 5 rounds. One line per measure, in the form the performance
//! issue fixes:
//!
//! `bench: NAME ours=VALUE UNIT baseline=VALUE UNIT ratio=R goal=G`
//!
//! and the same rows in `target/bench/results.json`. `--quick` uses a
//! smaller file and fewer requests (for `.ci/run`); the rounds stay 5.
//!
//! Rows so far: `site-download` (a large file with `curl`), `site-small-c1`
//! and `site-small-c50` (a 1 KB page with `ab`, 1 and 50 clients; the
//! latter must see no failed request). The ratio is ours/baseline: bigger
//! is better for all three.

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
    goal: f64,
}

impl Row {
    fn ratio(&self) -> f64 {
        if self.baseline > 0.0 {
            self.ours / self.baseline
        } else {
            0.0
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
            self.goal
        )
    }

    fn json(&self) -> String {
        format!(
            "{{\"name\":\"{}\",\"ours\":{:.3},\"baseline\":{:.3},\"unit\":\"{}\",\"ratio\":{:.4},\"goal\":{},\"met\":{}}}",
            self.name,
            self.ours,
            self.baseline,
            self.unit,
            self.ratio(),
            self.goal,
            self.ratio() >= self.goal
        )
    }
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

/// `cargo xtask bench [--quick]`. Returns whether every measure ran and
/// ours had no failed request where none is allowed (goals missed are
/// reported, not failed).
///
/// Errors: a message if a tool is missing, the demo cannot be built or
/// started, or a download comes back short.
pub fn run(args: &[String], root: &Path) -> Result<bool, String> {
    let quick = match args {
        [] => false,
        [q] if q == "--quick" => true,
        _ => {
            return Err(format!(
                "unknown arguments {args:?}: cargo xtask bench [--quick]"
            ));
        }
    };
    let (file_bytes, n_c1, n_c50) = if quick {
        (20_000_000, 500, 2_000)
    } else {
        (100_000_000, 3_000, 5_000)
    };
    let out_dir = root.join("target/bench");
    let site = out_dir.join("site");
    let _ = std::fs::remove_dir_all(&site);
    std::fs::create_dir_all(&site).map_err(|e| format!("{}: {e}", site.display()))?;
    let write = |name: &str, data: &[u8]| {
        std::fs::write(site.join(name), data).map_err(|e| format!("{name}: {e}"))
    };
    write("big.bin", &crate::fullstack::noise(file_bytes))?;
    let mut page = b"<!doctype html><title>bench</title><p>".to_vec();
    page.resize(1024 - 5, b'x');
    page.extend_from_slice(b"</p>\n");
    write("page.html", &page)?;

    println!("== bench: building the demo (release)");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    output(Command::new(&cargo).current_dir(root).args([
        "build",
        "-q",
        "--release",
        "--example",
        "static-site",
    ]))?;
    let demo: PathBuf = root.join("target/release/examples/static-site");
    let (ours_port, base_port) = (free_port()?, free_port()?);
    if ours_port == base_port {
        return Err("the kernel gave the same free port twice".into());
    }
    let image_mib = (file_bytes >> 20) as u64 + 16;
    let mut child = Command::new(&demo)
        .args(["--site"])
        .arg(&site)
        .args(["--image-mib", &image_mib.to_string()])
        .args(["--port", &ours_port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", demo.display()))?;
    // Drain the demo's console so it never blocks on a full pipe.
    if let Some(stdout) = child.stdout.take() {
        std::thread::spawn(move || for _ in BufReader::new(stdout).lines() {});
    }
    let _ours = Server(child);
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
    wait_for_port(ours_port, "the demo")?;
    wait_for_port(base_port, "python3 -m http.server")?;
    // The demo listens on the host at once; let the guest come up.
    let warm = format!("http://127.0.0.1:{ours_port}/page.html");
    let start = Instant::now();
    while output(Command::new("curl").args(["-s", "-f", "-o", "/dev/null", &warm])).is_err() {
        if start.elapsed() > Duration::from_secs(60) {
            return Err("the demo's guest does not answer".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    let url = |port: u16, path: &str| format!("http://127.0.0.1:{port}/{path}");
    let mut rows = Vec::new();
    let mut ok = true;

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
    });

    for (name, n, c) in [("site-small-c1", n_c1, 1), ("site-small-c50", n_c50, 50)] {
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
        });
    }

    for r in &rows {
        println!("{}", r.line());
    }
    let json = format!(
        "[\n  {}\n]\n",
        rows.iter().map(Row::json).collect::<Vec<_>>().join(",\n  ")
    );
    let path = out_dir.join("results.json");
    std::fs::write(&path, json).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("== bench: rows written to {}", path.display());
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
        };
        assert_eq!(
            r.line(),
            "bench: site-download ours=98.1 MB/s baseline=1182.1 MB/s ratio=0.083 goal=0.25"
        );
        assert!(r.json().contains("\"met\":false"));
        assert_eq!(median(vec![3.0, 1.0, 2.0, 9.0, 4.0]), 3.0);
    }
}
