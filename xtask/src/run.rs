//! Running QEMU and judging what the guest prints: stream the serial output
//! to a log file, watch for the verdict line, stop QEMU, time out.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Console silence before a verdict that counts as a stalled boot. Under
/// emulation Xen and a Linux dom0 print steadily while they boot; the
/// longest quiet stretches seen in passing runs (unpacking dom0's
/// initramfs, a guest's 1 MiB exchange) are well under a minute.
pub const STALL: Duration = Duration::from_secs(90);

/// How a run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// The guest printed a verdict line: `true` for PASS.
    Verdict(bool),
    /// Xen reported the guest crashed, or panicked itself, or the rig's
    /// Linux dom0 failed (`dom0: FAILED ...`, a kernel panic), first: the
    /// line.
    Crashed(String),
    /// The guest said it powers off (`xenpal: exit: poweroff`, the line a
    /// `#[xenpal::main]` guest prints when `main` returns `Ok`), with no
    /// verdict before.
    PoweredOff,
    /// No verdict before the timeout.
    Timeout,
    /// No console output at all for [`STALL`] before a verdict (a boot
    /// that hung): the last line seen.
    Stalled(String),
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

/// Where the guest's lines appear on the serial console.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum GuestConsole {
    /// The guest is domain 1 (dom0less on Arm): `(d1) text` from
    /// console_io, `(XEN) DOM1: text` from the vpl011.
    Domain1,
    /// The guest is dom0 (x86 PV): Xen prints its console_io lines with no
    /// prefix, so every line after Xen's first that is not Xen's own
    /// (`(XEN) ...`) or QEMU's is the guest's. Firmware output before Xen
    /// starts is not.
    Dom0,
}

/// Tells guest lines from the rest of the serial console.
#[derive(Debug)]
pub struct Classifier {
    console: GuestConsole,
    xen_started: bool,
}

impl Classifier {
    /// A classifier for a run whose guest writes to `console`.
    pub fn new(console: GuestConsole) -> Self {
        Classifier {
            console,
            xen_started: false,
        }
    }

    /// The guest part of serial line `line`, if it is the guest's.
    pub fn guest_text<'a>(&mut self, line: &'a str) -> Option<&'a str> {
        let line = line.trim_end_matches('\r');
        match self.console {
            GuestConsole::Domain1 => line
                .strip_prefix("(d1) ")
                .or_else(|| line.strip_prefix("(XEN) DOM1: ")),
            GuestConsole::Dom0 => {
                if line.contains("(XEN)") {
                    self.xen_started = true;
                    None
                } else if self.xen_started && !line.is_empty() && !line.starts_with("qemu-system-")
                {
                    Some(line)
                } else {
                    None
                }
            }
        }
    }
}

/// Whether a guest line reports that the guest is about to crash: a boot
/// failure, a panic, an unexpected exception.
pub fn is_fatal(text: &str) -> bool {
    text.starts_with("xenpal: boot failed")
        || text.starts_with("xenpal: exit: crash")
        || text.starts_with("panic:")
        || text.starts_with("xenpal: unexpected exception")
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Start `cmd` (QEMU) with its stdout and stderr piped; every line of
/// either arrives on the returned channel, which closes when both end.
///
/// Errors: a message if the command cannot be started.
pub fn spawn_lines(cmd: &mut Command) -> Result<(Child, mpsc::Receiver<String>), String> {
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
    Ok((child, rx))
}

/// Run `cmd` (QEMU), logging every line to `log`, until the guest prints
/// `selftest verdict: PASS|FAIL` (or `conformance verdict:`), Xen reports a crash, QEMU exits, or
/// `timeout` passes. The guest's lines are picked out as `console` says.
/// With an `end_marker`, a verdict does not end the run: it goes on (up to
/// 90 s more) until a line starting with the marker, so a dom0 can finish
/// its own checks. A guest's `xenpal: exit: poweroff` line ends the run
/// like a verdict does ([`Ending::PoweredOff`]), unless a verdict came
/// first. With `echo`, each guest line is also printed as it arrives (for
/// `cargo xtask run`, whose user watches the console). No output at all
/// for [`STALL`] before a verdict ends the run as [`Ending::Stalled`]. QEMU
/// is always stopped at the end.
///
/// Errors: a message if QEMU cannot be started or the log written.
pub fn run(
    mut cmd: Command,
    log: &Path,
    timeout: Duration,
    console: GuestConsole,
    end_marker: Option<&str>,
    echo: bool,
    stall: Duration,
) -> Result<Outcome, String> {
    let mut classify = Classifier::new(console);
    let start = Instant::now();
    let (mut child, rx) = spawn_lines(&mut cmd)?;
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
    let mut last_output = start;
    loop {
        let now = Instant::now();
        let limit = stop_at.unwrap_or(deadline);
        if now >= limit {
            break;
        }
        let stall_at = last_output + stall;
        if stop_at.is_none() && now >= stall_at {
            out.ending = Ending::Stalled(out.all_lines.last().cloned().unwrap_or_default());
            out.elapsed = start.elapsed();
            break;
        }
        let wait = if stop_at.is_none() {
            limit.min(stall_at) - now
        } else {
            limit - now
        };
        match rx.recv_timeout(wait) {
            Ok(line) => {
                last_output = Instant::now();
                let _ = writeln!(file, "{line}");
                out.all_lines.push(line.clone());
                if let Some(text) = classify.guest_text(&line) {
                    out.first_line.get_or_insert_with(|| start.elapsed());
                    out.guest_lines.push(text.to_string());
                    if echo {
                        println!("{text}");
                    }
                    if stop_at.is_none() && text == "xenpal: exit: poweroff" {
                        out.ending = Ending::PoweredOff;
                        out.elapsed = start.elapsed();
                        let linger = if end_marker.is_some() { 90 } else { 1 };
                        stop_at = Some(Instant::now() + Duration::from_secs(linger));
                    }
                    if stop_at.is_none() && is_fatal(text) {
                        out.ending = Ending::Crashed(line.clone());
                        out.elapsed = start.elapsed();
                        stop_at = Some(Instant::now() + Duration::from_secs(1));
                    }
                    if stop_at.is_none()
                        && let Some(v) = text
                            .strip_prefix("selftest verdict: ")
                            .or_else(|| text.strip_prefix("conformance verdict: "))
                    {
                        out.ending = Ending::Verdict(v.starts_with("PASS"));
                        out.elapsed = start.elapsed();
                        // Let the shutdown message (or the rest of dom0's
                        // checks) through, then stop.
                        let linger = if end_marker.is_some() { 90 } else { 2 };
                        stop_at = Some(Instant::now() + Duration::from_secs(linger));
                    }
                } else if let (Some(m), Some(_), Ending::Verdict(_) | Ending::PoweredOff) =
                    (end_marker, stop_at, &out.ending)
                    && line.starts_with(m)
                {
                    stop_at = Some(Instant::now() + Duration::from_secs(1));
                } else if let (Some(_), Some(_), Ending::Verdict(true) | Ending::PoweredOff) =
                    (end_marker, stop_at, &out.ending)
                    && line.starts_with("dom0: FAILED")
                {
                    // dom0's checks after the guest ended can still fail
                    // the run.
                    out.ending = Ending::Crashed(line.clone());
                    stop_at = Some(Instant::now() + Duration::from_secs(1));
                } else if stop_at.is_none()
                    && (line.starts_with("(XEN)")
                        && (line.contains("crashed") || line.contains("Panic on CPU"))
                        || line.starts_with("dom0: FAILED")
                        || line.contains("Kernel panic - not syncing"))
                {
                    out.ending = Ending::Crashed(line.clone());
                    out.elapsed = start.elapsed();
                    stop_at = Some(Instant::now() + Duration::from_secs(1));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
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
        let mut c = Classifier::new(GuestConsole::Domain1);
        assert_eq!(c.guest_text("(d1) hello"), Some("hello"));
        assert_eq!(c.guest_text("(XEN) DOM1: hi\r"), Some("hi"));
        assert_eq!(c.guest_text("(XEN) Freed 368kB init memory."), None);
        assert_eq!(c.guest_text("hello"), None);
    }

    #[test]
    fn dom0_lines_are_the_unprefixed_ones_after_xen_starts() {
        let mut c = Classifier::new(GuestConsole::Dom0);
        assert_eq!(c.guest_text("SeaBIOS (version 1.16.2)"), None);
        assert_eq!(
            c.guest_text("Booting from ROM..\x1b[2J(XEN) Xen version 4.20"),
            None
        );
        assert_eq!(c.guest_text("(XEN) Freed 656kB init memory"), None);
        assert_eq!(
            c.guest_text("selftest alarm: PASS (x)\r"),
            Some("selftest alarm: PASS (x)")
        );
        assert_eq!(c.guest_text(""), None);
        assert_eq!(
            c.guest_text("qemu-system-x86_64: terminating on signal 15"),
            None
        );
    }

    #[test]
    fn a_verdict_stops_the_run_and_a_timeout_is_reported() {
        let dir = std::env::temp_dir().join(format!("xtask-run-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut pass = Command::new("sh");
        pass.args(["-c", "echo '(d1) selftest a: PASS (x)'; echo '(d1) selftest verdict: PASS (1 passed)'; sleep 30"]);
        let d1 = GuestConsole::Domain1;
        let o = run(
            pass,
            &dir.join("pass.log"),
            Duration::from_secs(20),
            d1,
            None,
            false,
            STALL,
        )
        .unwrap();
        assert_eq!(o.ending, Ending::Verdict(true));
        assert!(o.elapsed < Duration::from_secs(20));
        let mut fail = Command::new("sh");
        fail.args([
            "-c",
            "echo '(d1) selftest verdict: FAIL (0 passed, 0 skipped, 1 failed)'",
        ]);
        assert_eq!(
            run(
                fail,
                &dir.join("fail.log"),
                Duration::from_secs(20),
                d1,
                None,
                false,
                STALL,
            )
            .unwrap()
            .ending,
            Ending::Verdict(false)
        );
        let mut quiet = Command::new("sh");
        quiet.args(["-c", "sleep 30"]);
        assert_eq!(
            run(
                quiet,
                &dir.join("t.log"),
                Duration::from_millis(300),
                d1,
                None,
                false,
                STALL,
            )
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
            run(
                crash,
                &dir.join("c.log"),
                Duration::from_secs(20),
                d1,
                None,
                false,
                STALL,
            )
            .unwrap()
            .ending,
            Ending::Crashed(_)
        ));
        // dom0 on x86: Xen's own line first, then the guest's, unprefixed.
        let mut dom0 = Command::new("sh");
        dom0.args([
            "-c",
            "echo 'SeaBIOS'; echo '(XEN) Xen version 4.20'; echo 'hi'; \
             echo 'selftest verdict: FAIL (1 failed)'; echo '(XEN) Hardware Dom0 crashed'; sleep 30",
        ]);
        let o = run(
            dom0,
            &dir.join("x.log"),
            Duration::from_secs(20),
            GuestConsole::Dom0,
            None,
            false,
            STALL,
        )
        .unwrap();
        assert_eq!(o.ending, Ending::Verdict(false));
        assert_eq!(o.guest_lines[0], "hi");
        // With an end marker the run goes on after the verdict until the
        // marker (a Linux dom0's last checks), and no longer.
        let mut linux = Command::new("sh");
        linux.args([
            "-c",
            "echo '(d1) selftest verdict: PASS (1 passed)'; sleep 1; echo 'dom0: net: ok'; \
             echo 'dom0: done'; sleep 30",
        ]);
        let t = Instant::now();
        let o = run(
            linux,
            &dir.join("l.log"),
            Duration::from_secs(20),
            GuestConsole::Domain1,
            Some("dom0: done"),
            false,
            STALL,
        )
        .unwrap();
        assert_eq!(o.ending, Ending::Verdict(true));
        assert!(o.all_lines.iter().any(|l| l == "dom0: net: ok"));
        assert!(t.elapsed() < Duration::from_secs(10));
        // ... and a check of dom0's that fails after the guest's verdict
        // fails the run.
        let mut late = Command::new("sh");
        late.args([
            "-c",
            "echo '(d1) xenpal: exit: poweroff'; sleep 1; \
             echo 'dom0: FAILED: the guest did not clear control/shutdown'; sleep 30",
        ]);
        let o = run(
            late,
            &dir.join("f.log"),
            Duration::from_secs(20),
            GuestConsole::Domain1,
            Some("dom0: done"),
            false,
            STALL,
        )
        .unwrap();
        assert!(
            matches!(&o.ending, Ending::Crashed(l) if l.contains("control/shutdown")),
            "{:?}",
            o.ending
        );
        // A xenpal guest's exit lines: poweroff ends the run cleanly; an
        // error returned from main is a crash.
        let mut off = Command::new("sh");
        off.args([
            "-c",
            "echo '(d1) hi'; echo '(d1) xenpal: exit: poweroff'; sleep 30",
        ]);
        let o = run(
            off,
            &dir.join("o.log"),
            Duration::from_secs(20),
            d1,
            None,
            false,
            STALL,
        )
        .unwrap();
        assert_eq!(o.ending, Ending::PoweredOff);
        assert!(o.elapsed < Duration::from_secs(20));
        let mut err = Command::new("sh");
        err.args([
            "-c",
            "echo '(d1) xenpal: exit: crash: main returned an error: no vif'; sleep 30",
        ]);
        let o = run(
            err,
            &dir.join("e.log"),
            Duration::from_secs(20),
            d1,
            None,
            false,
            STALL,
        )
        .unwrap();
        assert!(matches!(o.ending, Ending::Crashed(_)));
        // A boot that prints, then falls silent, is a stall (not a
        // timeout), with the last line; once a verdict is in, silence is
        // not a stall.
        let mut hang = Command::new("sh");
        hang.args(["-c", "echo 'about to get started...'; sleep 30"]);
        let o = run(
            hang,
            &dir.join("h.log"),
            Duration::from_secs(20),
            d1,
            None,
            false,
            Duration::from_millis(500),
        )
        .unwrap();
        assert_eq!(o.ending, Ending::Stalled("about to get started...".into()));
        assert!(o.elapsed < Duration::from_secs(5));
        let mut done = Command::new("sh");
        done.args([
            "-c",
            "echo '(d1) selftest verdict: PASS (1 passed)'; sleep 2",
        ]);
        let o = run(
            done,
            &dir.join("d.log"),
            Duration::from_secs(20),
            d1,
            Some("dom0: done"),
            false,
            Duration::from_millis(300),
        )
        .unwrap();
        assert_eq!(o.ending, Ending::Verdict(true));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
