//! The guest self-test: the same checks on the simulator, under
//! QEMU-emulated Xen on Arm and on x86, and on a board. Each test prints one
//! line; the last line is the verdict the QEMU runner looks for:
//!
//! ```text
//! selftest console: PASS (this line came through the platform console)
//! ...
//! selftest verdict: PASS (7 passed, 1 skipped, 0 failed)
//! ```
//!
//! The tests use only the platform (`xenpal::Platform`, whatever the
//! target) plus checks the platform adds itself ([`Extra`]): interrupt
//! counts on Arm, a device-tree error path, and so on.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::time::Duration;
use hal::event::wait_event;
use hal::mem::{PageAlloc, Pages};
use hal::time::{Clock, sleep, sleep_until, with_timeout};
use hal::{Access, Console, DomId, EventChannel, GrantTable, SharedMemory};
use xen_pv::abi::evtchnstat;
use xen_pv::hypercall;
use xenpal::Platform;

/// The outcome of one test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It worked (with a detail worth printing).
    Pass(String),
    /// It did not (why).
    Fail(String),
    /// It cannot run on this platform (why).
    Skip(String),
}

impl Outcome {
    fn word(&self) -> &'static str {
        match self {
            Outcome::Pass(_) => "PASS",
            Outcome::Fail(_) => "FAIL",
            Outcome::Skip(_) => "SKIP",
        }
    }

    fn detail(&self) -> &str {
        match self {
            Outcome::Pass(s) | Outcome::Fail(s) | Outcome::Skip(s) => s,
        }
    }
}

/// A platform-specific check: its name and a function run after the
/// generic tests.
pub type Extra = (&'static str, fn() -> Outcome);

/// How long the tests allow for timing slop: QEMU without KVM is slow and
/// jittery, the simulator exact.
#[derive(Copy, Clone, Debug)]
pub struct Tolerances {
    /// Largest acceptable lateness of an alarm.
    pub alarm_late: Duration,
    /// Largest acceptable relative difference between our clock and Xen's
    /// runstate clock over the rate test (e.g. 0.05 for 5%).
    pub rate: f64,
}

impl Default for Tolerances {
    fn default() -> Self {
        Tolerances {
            // Under TCG on a shared two-core host a vCPU waits for the
            // host's scheduler: alarms are mostly under 5 ms late, but one
            // CI run saw 25 ms. A lost alarm would be seconds late (or
            // never fire, which the runner's timeout catches).
            alarm_late: Duration::from_millis(50),
            rate: 0.05,
        }
    }
}

/// All results, in order.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// `(test name, outcome)`.
    pub results: Vec<(&'static str, Outcome)>,
}

impl Report {
    /// Number of passed, skipped and failed tests.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for (_, o) in &self.results {
            match o {
                Outcome::Pass(_) => c.0 += 1,
                Outcome::Skip(_) => c.1 += 1,
                Outcome::Fail(_) => c.2 += 1,
            }
        }
        c
    }

    /// Whether nothing failed and something passed.
    pub fn passed(&self) -> bool {
        let (p, _, f) = self.counts();
        f == 0 && p > 0
    }

    /// The line for test `i`.
    pub fn line(&self, i: usize) -> String {
        let (name, o) = &self.results[i];
        format!("selftest {name}: {} ({})", o.word(), o.detail())
    }

    /// The verdict line.
    pub fn verdict(&self) -> String {
        let (p, s, f) = self.counts();
        let word = if self.passed() { "PASS" } else { "FAIL" };
        format!("selftest verdict: {word} ({p} passed, {s} skipped, {f} failed)")
    }
}

fn say(p: &Platform, line: &str) {
    p.console().write_lossy(line.as_bytes());
    p.console().write_lossy(b"\n");
}

/// Our domain id, learnt the way a guest without xenstore can: allocate an
/// unbound port for `DOMID_SELF` (Xen records our real id as the remote)
/// and ask for its status.
pub fn discover_domid(p: &Platform) -> Option<DomId> {
    let port = p.events().alloc_unbound(DomId::SELF).ok()?;
    let st = hypercall::evtchn_status(p.hypervisor(), port).ok();
    let _ = p.events().close(port);
    let st = st?;
    (st.status == evtchnstat::UNBOUND).then_some(DomId(st.u[0] as u16))
}

async fn clock_monotonic(p: &Platform) -> Outcome {
    let t = p.timer();
    let mut last = t.now();
    for _ in 0..10_000 {
        let now = t.now();
        if now < last {
            return Outcome::Fail(format!("went back from {last} to {now}"));
        }
        last = now;
    }
    let before = t.now();
    sleep(t, Duration::from_millis(5)).await;
    let after = t.now();
    if after <= before {
        return Outcome::Fail(format!(
            "did not advance over a 5 ms sleep ({before} -> {after})"
        ));
    }
    Outcome::Pass(format!(
        "10000 reads non-decreasing, advanced {:?} over a 5 ms sleep",
        after - before
    ))
}

/// Xen's system time at the last context switch, read from a runstate area
/// Xen keeps up to date (retrying while Xen marks it mid-update).
fn runstate_time<M: SharedMemory>(area: &M) -> u64 {
    for _ in 0..1000 {
        let t = area.load_u64(8, core::sync::atomic::Ordering::Acquire);
        if t & xen_pv::abi::XEN_RUNSTATE_UPDATE == 0 {
            return t;
        }
        core::hint::spin_loop();
    }
    0
}

async fn clock_rate(p: &Platform, tol: Tolerances) -> Outcome {
    let h = p.hypervisor();
    let t = p.timer();
    let page = match p.pages().alloc(1) {
        Ok(pg) => pg,
        Err(e) => return Outcome::Fail(format!("page allocation: {e}")),
    };
    let result = async {
        hypercall::register_runstate_area(h, Some((page.gfn(0), 0)))
            .map_err(|e| format!("VCPUOP_register_runstate_memory_area: {e}"))?;
        // A fresh context switch right before each reading: a short sleep
        // ends with the vCPU entering `running`, which Xen stamps with its
        // clock in the area.
        sleep(t, Duration::from_millis(1)).await;
        let (x1, c1) = (runstate_time(&page), t.now());
        sleep(t, Duration::from_millis(200)).await;
        let (x2, c2) = (runstate_time(&page), t.now());
        hypercall::register_runstate_area(h, None).map_err(|e| format!("unregistering: {e}"))?;
        let xen = x2.saturating_sub(x1);
        let ours = (c2 - c1).as_nanos() as u64;
        if xen == 0 {
            return Err("Xen's runstate clock did not move".to_string());
        }
        let ratio = ours as f64 / xen as f64;
        let detail =
            format!("our clock {ours} ns vs Xen's {xen} ns over a 200 ms sleep (ratio {ratio:.4})");
        if (ratio - 1.0).abs() <= tol.rate {
            Ok(detail)
        } else {
            Err(detail)
        }
    }
    .await;
    p.pages().free(page);
    match result {
        Ok(d) => Outcome::Pass(d),
        Err(d) => Outcome::Fail(d),
    }
}

async fn alarm(p: &Platform, tol: Tolerances) -> Outcome {
    let t = p.timer();
    let mut worst = Duration::ZERO;
    for ms in [3u64, 10, 25] {
        let deadline = t.now() + Duration::from_millis(ms);
        sleep_until(t, deadline).await;
        let now = t.now();
        if now < deadline {
            return Outcome::Fail(format!("woke {:?} early", deadline - now));
        }
        worst = worst.max(now - deadline);
    }
    if worst <= tol.alarm_late {
        Outcome::Pass(format!("3 alarms, latest {worst:?} after its deadline"))
    } else {
        Outcome::Fail(format!(
            "an alarm fired {worst:?} late (tolerance {:?})",
            tol.alarm_late
        ))
    }
}

async fn event_loopback(p: &Platform) -> Outcome {
    let ev = p.events();
    let t = p.timer();
    let a = match ev.alloc_unbound(DomId::SELF) {
        Ok(a) => a,
        Err(e) => return Outcome::Fail(format!("alloc_unbound: {e}")),
    };
    let b = match ev.bind_interdomain(DomId::SELF, a) {
        Ok(b) => b,
        Err(e) => return Outcome::Fail(format!("bind_interdomain: {e}")),
    };
    // Binding marks the new port pending (Xen's lost-notification fix-up).
    let deadline = t.now() + Duration::from_secs(2);
    if with_timeout(t, deadline, core::pin::pin!(wait_event(ev, b)))
        .await
        .is_err()
    {
        return Outcome::Fail("the bind's notification never arrived".into());
    }
    let mut rounds = 0;
    for _ in 0..10 {
        if let Err(e) = ev.notify(a) {
            return Outcome::Fail(format!("notify: {e}"));
        }
        let deadline = t.now() + Duration::from_secs(2);
        if with_timeout(t, deadline, core::pin::pin!(wait_event(ev, b)))
            .await
            .is_err()
        {
            return Outcome::Fail(format!("event {rounds} not delivered within 2 s"));
        }
        rounds += 1;
    }
    let _ = ev.close(b);
    let _ = ev.close(a);
    Outcome::Pass(format!("{a} -> {b}: {rounds} events delivered"))
}

/// Grant a page to ourselves and copy through the grant both ways: for a
/// platform where mapping one's own grant is destructive (see
/// [`run_with`]).
fn grant_self_copy(p: &Platform, me: DomId) -> Outcome {
    use hal::grant::{CopyPtr, GrantCopy};
    let (Ok(page), Ok(other)) = (p.pages().alloc(1), p.pages().alloc(1)) else {
        return Outcome::Fail("page allocation failed".into());
    };
    page.write(0, b"granted to myself");
    let result = (|| {
        let gref = p
            .grants()
            .grant_access(me, page.gfn(0), Access::ReadWrite)
            .map_err(|e| format!("grant_access: {e}"))?;
        let ops = [
            GrantCopy {
                src: CopyPtr::Foreign {
                    domid: me,
                    gref,
                    offset: 0,
                },
                dst: CopyPtr::Local {
                    gfn: other.gfn(0),
                    offset: 0,
                },
                len: 17,
            },
            GrantCopy {
                src: CopyPtr::Local {
                    gfn: other.gfn(0),
                    offset: 0,
                },
                dst: CopyPtr::Foreign {
                    domid: me,
                    gref,
                    offset: 100,
                },
                len: 17,
            },
        ];
        let mut status = [Ok(()), Ok(())];
        p.grants()
            .copy(&ops, &mut status)
            .map_err(|e| format!("copy: {e}"))?;
        let ended = p.grants().end_access(gref);
        if let Some(Err(e)) = status.iter().find(|s| s.is_err()) {
            return Err(format!("copy: {e}"));
        }
        ended.map_err(|e| format!("end_access: {e}"))?;
        let (mut there, mut back) = ([0u8; 17], [0u8; 17]);
        other.read(0, &mut there);
        page.read(100, &mut back);
        if &there != b"granted to myself" || &back != b"granted to myself" {
            return Err("the copies did not carry the page's contents".to_string());
        }
        Ok(format!(
            "{me} granted {gref} to itself and copied through it both ways (not mapped: on x86 HVM/PVH, mapping one's own frame moves it out of its frame number)"
        ))
    })();
    p.pages().free(page);
    p.pages().free(other);
    match result {
        Ok(s) => Outcome::Pass(s),
        Err(s) => Outcome::Fail(s),
    }
}

async fn grant_self(p: &Platform, self_map: bool) -> Outcome {
    if p.grants().capacity() == 0 {
        return Outcome::Skip(
            "no grant table (no /hypervisor region; Xen 4.17 dom0less without xen,enhanced)".into(),
        );
    }
    let Some(me) = discover_domid(p) else {
        return Outcome::Fail("could not learn our domain id".into());
    };
    if !self_map {
        return grant_self_copy(p, me);
    }
    let page = match p.pages().alloc(1) {
        Ok(pg) => pg,
        Err(e) => return Outcome::Fail(format!("page allocation: {e}")),
    };
    page.write(0, b"granted to myself");
    let result = (|| {
        let gref = p
            .grants()
            .grant_access(me, page.gfn(0), Access::ReadWrite)
            .map_err(|e| format!("grant_access: {e}"))?;
        let mapped = p
            .grants()
            .map(me, gref, Access::ReadWrite)
            .map_err(|e| format!("map: {e}"))?;
        let mut buf = [0u8; 17];
        mapped.read(0, &mut buf);
        mapped.write(100, b"written through the mapping");
        let in_use = p.grants().end_access(gref);
        p.grants()
            .unmap(mapped)
            .map_err(|(_, e)| format!("unmap: {e}"))?;
        p.grants()
            .end_access(gref)
            .map_err(|e| format!("end_access: {e}"))?;
        let mut back = [0u8; 27];
        page.read(100, &mut back);
        if &buf != b"granted to myself" || &back != b"written through the mapping" {
            return Err("the mapping did not show the page's contents".to_string());
        }
        if in_use != Err(hal::GrantError::InUse) {
            return Err(format!(
                "end_access while mapped gave {in_use:?}, not InUse"
            ));
        }
        Ok(format!(
            "{me} granted {gref} to itself, mapped it, read and wrote through it; end_access refused while mapped"
        ))
    })();
    p.pages().free(page);
    match result {
        Ok(s) => Outcome::Pass(s),
        Err(s) => Outcome::Fail(s),
    }
}

/// Run every test, printing each line on the console as it completes and the
/// verdict last. `extra` adds platform-specific checks.
pub async fn run(p: &Platform, tol: Tolerances, extra: &[Extra]) -> Report {
    run_with(p, tol, extra, true).await
}

/// [`run`], saying whether the guest may map its own grants: not on x86
/// HVM/PVH, where Xen's p2m treats the second frame number as an alias and
/// takes the page from the first (`guest_physmap_add_entry`), so the
/// grant test copies through the grant instead.
pub async fn run_with(p: &Platform, tol: Tolerances, extra: &[Extra], self_map: bool) -> Report {
    let mut report = Report::default();
    let record = |name: &'static str, o: Outcome, report: &mut Report| {
        report.results.push((name, o));
        let line = report.line(report.results.len() - 1);
        say(p, &line);
    };
    record(
        "console",
        Outcome::Pass("this line came through the platform console".into()),
        &mut report,
    );
    record("clock-monotonic", clock_monotonic(p).await, &mut report);
    record("clock-rate", clock_rate(p, tol).await, &mut report);
    record("alarm", alarm(p, tol).await, &mut report);
    record("event-loopback", event_loopback(p).await, &mut report);
    record("grant-self", grant_self(p, self_map).await, &mut report);
    for (name, f) in extra {
        record(name, f(), &mut report);
    }
    say(p, &report.verdict());
    report
}
