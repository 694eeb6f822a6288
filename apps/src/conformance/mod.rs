//! The conformance suite: what Xen does at each interface a guest uses,
//! asked of whatever platform the guest runs on — the simulator, or real
//! Xen under QEMU or on a board — so that the simulator's beliefs about Xen
//! are checked against Xen itself.
//!
//! Each case is a named check (`evtchn.close.free-port`) with the outcome
//! Xen gives, taken from Xen's source (`xen/common/event_channel.c`,
//! `grant_table.c`, `sched/core.c`, ...; 4.17 and 4.20 agree on every case
//! here unless the case says otherwise). The guest prints one line per case
//! and a verdict:
//!
//! ```text
//! conformance evtchn.close.free-port: -EINVAL
//! conformance gnttab.map.readonly-grant-rw: GNTST_permission_denied (expected GNTST_general_error)
//! conformance xs.read.missing: n/a (no xenstore on this platform)
//! conformance verdict: FAIL (151 cases: 140 as expected, 10 n/a, 1 unexpected)
//! ```
//!
//! A line is `conformance NAME: OBSERVED`, then ` (expected X)` when the
//! observation is not what Xen does, or `n/a (why)` when the case cannot
//! run here; [`parse_line`] reads one back. `cargo xtask report` sets the
//! platforms' columns side by side; `docs/FIDELITY.md` explains each
//! difference it allows.
//!
//! Outcomes are written so that they compare across platforms: an errno
//! name (`-EINVAL`), a `GNTST_*` name, `ok`, or a short description that
//! names no port number or domain id.

mod evtchn;
mod gnttab;
mod misc;
mod pair;
mod xenstore;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::time::Duration;
use hal::time::{Clock, sleep};
use hal::{Console, ConsoleError, DomId};
use xen_pv::abi::{Errno, gntst};
use xenpal::Platform;

/// What a case observed on this platform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observed {
    /// The outcome, comparable across platforms.
    Value(String),
    /// The case cannot run here (why).
    NotApplicable(String),
}

/// One case: its name, what Xen does, and what this platform did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// `interface.operation.situation`, e.g. `evtchn.close.free-port`.
    pub name: String,
    /// Xen's outcome.
    pub expected: String,
    /// This platform's.
    pub observed: Observed,
}

impl Case {
    /// Whether the platform did what Xen does (or the case could not run).
    pub fn as_expected(&self) -> bool {
        match &self.observed {
            Observed::Value(v) => *v == self.expected,
            Observed::NotApplicable(_) => true,
        }
    }

    /// The console line for this case.
    pub fn line(&self) -> String {
        match &self.observed {
            Observed::Value(v) if *v == self.expected => format!("conformance {}: {v}", self.name),
            Observed::Value(v) => format!(
                "conformance {}: {v} (expected {})",
                self.name, self.expected
            ),
            Observed::NotApplicable(why) => format!("conformance {}: n/a ({why})", self.name),
        }
    }
}

/// A case as read back from a console line: name, observed value (`n/a`
/// for a case that could not run) and whether it was what Xen does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// The case's name.
    pub name: String,
    /// What was observed, or `n/a`.
    pub observed: String,
    /// Whether the guest judged it as Xen's outcome (or not applicable).
    pub as_expected: bool,
}

/// Read one `conformance NAME: ...` line (not the verdict); `None` for any
/// other line.
pub fn parse_line(line: &str) -> Option<Line> {
    let rest = line.strip_prefix("conformance ")?;
    let (name, value) = rest.split_once(": ")?;
    if name == "verdict" || name.contains(' ') {
        return None;
    }
    if value.starts_with("n/a") {
        return Some(Line {
            name: name.to_string(),
            observed: "n/a".into(),
            as_expected: true,
        });
    }
    Some(match value.split_once(" (expected ") {
        Some((v, _)) => Line {
            name: name.to_string(),
            observed: v.to_string(),
            as_expected: false,
        },
        None => Line {
            name: name.to_string(),
            observed: value.to_string(),
            as_expected: true,
        },
    })
}

/// Where the suite runs: facts about the domain that change what Xen
/// answers (not what the platform is called). A second guest for the
/// two-domain cases is found in xenstore instead (`data/peer-domid`,
/// written by the toolstack into both guests' homes).
#[derive(Clone, Debug)]
pub struct Setup {
    /// Another domain that exists and is not us (dom0 under a Linux dom0,
    /// a peer on the simulator); `None` where we are alone.
    pub other: Option<DomId>,
    /// Whether Xen enforces XSM SILO (guests may talk only to dom0): the
    /// default of Arm builds (Kconfig `XSM_SILO_DEFAULT`); x86 builds use
    /// the dummy policy, the simulator either (`SimConfig::xsm_silo`).
    pub xsm_silo: bool,
    /// Whether the guest may map its own grants: not on x86 HVM/PVH, where
    /// Xen takes the page from its first frame number (docs/PVH.md).
    pub self_map: bool,
}

/// The context every case gets.
pub(crate) struct Ctx<'p> {
    pub p: &'p Platform,
    /// Our domain id.
    pub me: DomId,
    /// Whether we are the control domain (dom0): Xen's XSM lets it act on
    /// other domains.
    pub privileged: bool,
    /// Xen's version, `(major, minor)`: a few answers changed between
    /// releases (each case that depends on it says which commit).
    pub version: (u16, u16),
    pub setup: Setup,
    cases: Vec<Case>,
    /// Lines not yet on the console (see [`Ctx::flush`]).
    out: Vec<u8>,
}

impl Ctx<'_> {
    /// Record a case.
    pub fn check(&mut self, name: &str, expected: &str, observed: impl Into<String>) {
        self.push(Case {
            name: name.to_string(),
            expected: expected.to_string(),
            observed: Observed::Value(observed.into()),
        });
    }

    /// Record a case that cannot run here.
    pub fn not_applicable(&mut self, name: &str, expected: &str, why: &str) {
        self.push(Case {
            name: name.to_string(),
            expected: expected.to_string(),
            observed: Observed::NotApplicable(why.to_string()),
        });
    }

    fn push(&mut self, c: Case) {
        self.out.extend_from_slice(c.line().as_bytes());
        self.out.push(b'\n');
        self.cases.push(c);
    }

    /// Put the lines recorded so far on the console, waiting for the
    /// backend to make room (the suite prints more than a console ring
    /// holds, and a dropped line is a case the report never sees). Gives
    /// up after 30 s of no room, or if the console is gone.
    pub async fn flush(&mut self) {
        let t = self.p.timer();
        let mut stuck_since = t.now();
        while !self.out.is_empty() {
            match self.p.console().write(&self.out) {
                Ok(n) => {
                    self.out.drain(..n);
                    stuck_since = t.now();
                }
                Err(ConsoleError::WouldBlock)
                    if t.now() - stuck_since < Duration::from_secs(30) =>
                {
                    sleep(t, Duration::from_millis(1)).await;
                }
                Err(_) => return,
            }
        }
    }
}

/// An errno result as the suite writes it: `ok` or `-ENAME`.
pub(crate) fn errno<T>(r: Result<T, Errno>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("-{}", e.name()),
    }
}

/// A `GNTST_*` status as Xen names it.
#[doc(alias = "GNTST_okay")]
pub(crate) fn gntst_name(s: i16) -> String {
    match s {
        gntst::OKAY => "GNTST_okay".into(),
        gntst::GENERAL_ERROR => "GNTST_general_error".into(),
        gntst::BAD_DOMAIN => "GNTST_bad_domain".into(),
        gntst::BAD_GNTREF => "GNTST_bad_gntref".into(),
        gntst::BAD_HANDLE => "GNTST_bad_handle".into(),
        gntst::BAD_VIRT_ADDR => "GNTST_bad_virt_addr".into(),
        gntst::BAD_DEV_ADDR => "GNTST_bad_dev_addr".into(),
        gntst::NO_DEVICE_SPACE => "GNTST_no_device_space".into(),
        gntst::PERMISSION_DENIED => "GNTST_permission_denied".into(),
        gntst::BAD_PAGE => "GNTST_bad_page".into(),
        gntst::BAD_COPY_ARG => "GNTST_bad_copy_arg".into(),
        gntst::ADDRESS_TOO_BIG => "GNTST_address_too_big".into(),
        gntst::EAGAIN => "GNTST_eagain".into(),
        gntst::NO_SPACE => "GNTST_no_space".into(),
        n => format!("GNTST({n})"),
    }
}

/// The suite's results.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Every case, in order.
    pub cases: Vec<Case>,
    /// This guest only helped a peer run the two-domain cases (which the
    /// peer reports).
    pub follower: bool,
}

impl Report {
    /// Cases as expected (run), not applicable, and unexpected.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for case in &self.cases {
            match &case.observed {
                Observed::NotApplicable(_) => c.1 += 1,
                Observed::Value(_) if case.as_expected() => c.0 += 1,
                Observed::Value(_) => c.2 += 1,
            }
        }
        c
    }

    /// Whether every case that ran did what Xen does.
    pub fn passed(&self) -> bool {
        let (ok, _, bad) = self.counts();
        self.follower || (bad == 0 && ok > 0)
    }

    /// The verdict line.
    pub fn verdict(&self) -> String {
        if self.follower {
            return "conformance verdict: PASS (the second guest of the pair: the first reports its outcomes)".into();
        }
        let (ok, na, bad) = self.counts();
        format!(
            "conformance verdict: {} ({} cases: {ok} as expected, {na} n/a, {bad} unexpected)",
            if self.passed() { "PASS" } else { "FAIL" },
            self.cases.len()
        )
    }
}

/// Run every case, printing each line as it completes and the verdict last.
pub async fn run(p: &Platform, setup: Setup) -> Report {
    let me = crate::selftest::discover_domid(p).unwrap_or(p.domid());
    let mut cx = Ctx {
        p,
        me,
        privileged: me == DomId(0),
        version: xen_pv::hypercall::xen_version(p.hypervisor()).unwrap_or((0, 0)),
        setup,
        cases: Vec::new(),
        out: Vec::new(),
    };
    // Two guests first: the peer waits only so long.
    let pair = pair::find(&cx, Duration::from_secs(30)).await;
    match pair {
        Some(pair::Pair {
            peer,
            leader: false,
        }) => {
            pair::follow(&cx, peer).await;
            let report = Report {
                cases: Vec::new(),
                follower: true,
            };
            cx.out.extend_from_slice(report.verdict().as_bytes());
            cx.out.push(b'\n');
            cx.flush().await;
            return report;
        }
        Some(pair::Pair { peer, leader: true }) => pair::lead(&mut cx, peer).await,
        None => pair::not_applicable(
            &mut cx,
            "no second guest (a toolstack writes data/peer-domid)",
        ),
    }
    cx.flush().await;
    evtchn::run(&mut cx);
    cx.flush().await;
    gnttab::run(&mut cx);
    cx.flush().await;
    misc::run(&mut cx).await;
    cx.flush().await;
    xenstore::run(&mut cx).await;
    let report = Report {
        cases: core::mem::take(&mut cx.cases),
        follower: false,
    };
    cx.out.extend_from_slice(report.verdict().as_bytes());
    cx.out.push(b'\n');
    cx.flush().await;
    report
}

#[cfg(not(target_os = "none"))]
/// Run the suite in two domains told of each other, as a toolstack does
/// (`data/peer-domid`): the first leads and reports everything, the second
/// helps with the two-domain cases; `xsm_silo` turns on the simulator's
/// XSM SILO (and tells the suite to expect it). Returns the first's report and
/// console.
///
/// # Panics
///
/// If a guest panics, or either never finishes.
pub fn on_simulator(seed: u64, xsm_silo: bool) -> (Report, String) {
    use std::sync::{Arc, Mutex};
    use xenpal::sim::{DomainConfig, Sim, SimConfig};
    let mut sim = Sim::new(SimConfig {
        xsm_silo,
        ..SimConfig::seeded(seed)
    });
    let out: Arc<Mutex<Vec<Report>>> = Arc::default();
    let mut ids = Vec::new();
    for name in ["conformance", "conformance-peer"] {
        let o = out.clone();
        let other = Arc::new(Mutex::new(None));
        let theirs = other.clone();
        let d = sim
            .spawn(DomainConfig::new(name), move |p| async move {
                let other = *theirs.lock().unwrap();
                let r = run(
                    &p,
                    Setup {
                        other,
                        xsm_silo,
                        self_map: true,
                    },
                )
                .await;
                o.lock().unwrap().push(r);
            })
            .unwrap();
        ids.push((d, other));
    }
    let (a, b) = (ids[0].0, ids[1].0);
    *ids[0].1.lock().unwrap() = Some(b);
    *ids[1].1.lock().unwrap() = Some(a);
    sim.xenstore_write(
        &format!("/local/domain/{}/data/peer-domid", a.0),
        &b.0.to_string(),
    )
    .expect("toolstack write");
    sim.xenstore_write(
        &format!("/local/domain/{}/data/peer-domid", b.0),
        &a.0.to_string(),
    )
    .unwrap();
    let report = sim.run();
    let console = sim.console_output(a);
    assert!(report.all_clean(), "{report:?}\n{console}");
    let mut reports = out.lock().unwrap().clone();
    assert_eq!(reports.len(), 2, "both guests finished");
    reports.sort_by_key(|r| r.follower);
    assert!(reports[1].follower && reports[1].passed());
    (reports.swap_remove(0), console)
}
