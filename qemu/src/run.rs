//! Running QEMU and judging what the guest prints: stream the serial output
//! to a log file, watch for the verdict line, stop QEMU, time out.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// The guest printed a verdict line: `true` for PASS.
    Verdict(bool),
    /// Xen reported the guest crashed, or panicked itself, first: the line.
    Crashed(String),
    /// No verdict before the timeout.
    Timeout,
    /// QEMU exited before a verdict (its status).
    QemuExited(String),
}

/// What a run saw.
#[derive(Debug)]
pub struct Outcome {
    /// How it ended.
    pub ending: Ending,
    /// The guest's lines (the part after `(d1) `).
    pub guest_lines: Vec<String>,
    /// Every line of the serial console.
    pub all_lines: Vec<String>,
    /// Time from starting QEMU to the guest's first line.
    pub first_line: Option<Duration>,
    /// Time from starting QEMU to the verdict.
    pub elapsed: Duration,
}

/// The guest part of a Xen console line: `(d1) text` (console_io) or
/// `(XEN) DOM1: text` (vpl011).
pub fn guest_text(line: &str) -> Option<&str> {
    let line = line.trim_end_matches('\r');
    line.strip_prefix("(d1) ")
        .or_else(|| line.strip_prefix("(XEN) DOM1: "))
}

/// Whether a guest line reports that the guest is about to crash: a boot
/// failure, a panic, an unexpected exception.
pub fn is_fatal(text: &str) -> bool {
    text.starts_with("xenpal: boot failed")
        || text.starts_with("panic:")
        || text.starts_with("xenpal: unexpected exception")
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Run `cmd` (QEMU), logging every line to `log`, until the guest prints
/// `selftest verdict: PASS|FAIL`, Xen reports a crash, QEMU exits, or
/// `timeout` passes. QEMU is always stopped at the end.
///
/// Errors: a message if QEMU cannot be started or the log written.
pub fn run(mut cmd: Command, log: &Path, timeout: Duration) -> Result<Outcome, String> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start QEMU: {e}"))?;
    let (tx, rx) = mpsc::channel::<String>();
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let mut file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut out = Outcome {
        ending: Ending::Timeout,
        guest_lines: Vec::new(),
        all_lines: Vec::new(),
        first_line: None,
        elapsed: Duration::ZERO,
    };
    let deadline = start + timeout;
    let mut stop_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let limit = stop_at.unwrap_or(deadline);
        if now >= limit {
            break;
        }
        match rx.recv_timeout(limit - now) {
            Ok(line) => {
                let _ = writeln!(file, "{line}");
                out.all_lines.push(line.clone());
                if let Some(text) = guest_text(&line) {
                    out.first_line.get_or_insert_with(|| start.elapsed());
                    out.guest_lines.push(text.to_string());
                    if stop_at.is_none() && is_fatal(text) {
                        out.ending = Ending::Crashed(line.clone());
                        out.elapsed = start.elapsed();
                        stop_at = Some(Instant::now() + Duration::from_secs(1));
                    }
                    if stop_at.is_none()
                        && let Some(v) = text.strip_prefix("selftest verdict: ")
                    {
                        out.ending = Ending::Verdict(v.starts_with("PASS"));
                        out.elapsed = start.elapsed();
                        // Let the shutdown message through, then stop.
                        stop_at = Some(Instant::now() + Duration::from_secs(2));
                    }
                } else if stop_at.is_none()
                    && line.starts_with("(XEN)")
                    && (line.contains("crashed") || line.contains("Panic on CPU"))
                {
                    out.ending = Ending::Crashed(line.clone());
                    out.elapsed = start.elapsed();
                    stop_at = Some(Instant::now() + Duration::from_secs(1));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => break,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                if stop_at.is_none() {
                    let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                    out.ending = Ending::QemuExited(status);
                    out.elapsed = start.elapsed();
                }
                break;
            }
        }
    }
    if out.ending == Ending::Timeout {
        out.elapsed = start.elapsed();
    }
    kill(&mut child);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_lines_from_both_consoles() {
        assert_eq!(guest_text("(d1) hello"), Some("hello"));
        assert_eq!(guest_text("(XEN) DOM1: hi\r"), Some("hi"));
        assert_eq!(guest_text("(XEN) Freed 368kB init memory."), None);
    }

    #[test]
    fn a_verdict_stops_the_run_and_a_timeout_is_reported() {
        let dir = std::env::temp_dir().join(format!("xtask-run-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut pass = Command::new("sh");
        pass.args(["-c", "echo '(d1) selftest a: PASS (x)'; echo '(d1) selftest verdict: PASS (1 passed)'; sleep 30"]);
        let o = run(pass, &dir.join("pass.log"), Duration::from_secs(20)).unwrap();
        assert_eq!(o.ending, Ending::Verdict(true));
        assert!(o.elapsed < Duration::from_secs(20));
        let mut fail = Command::new("sh");
        fail.args([
            "-c",
            "echo '(d1) selftest verdict: FAIL (0 passed, 0 skipped, 1 failed)'",
        ]);
        assert_eq!(
            run(fail, &dir.join("fail.log"), Duration::from_secs(20))
                .unwrap()
                .ending,
            Ending::Verdict(false)
        );
        let mut quiet = Command::new("sh");
        quiet.args(["-c", "sleep 30"]);
        assert_eq!(
            run(quiet, &dir.join("t.log"), Duration::from_millis(300))
                .unwrap()
                .ending,
            Ending::Timeout
        );
        let mut crash = Command::new("sh");
        crash.args([
            "-c",
            "echo '(XEN) Domain 1 crashed: rebooting machine'; sleep 30",
        ]);
        assert!(matches!(
            run(crash, &dir.join("c.log"), Duration::from_secs(20))
                .unwrap()
                .ending,
            Ending::Crashed(_)
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
