//! What the simulator-based harnesses share: a small deterministic
//! simulation, time helpers, and the first half of a backend's xenbus
//! handshake, written as a hostile dom0 backend would do it (connect
//! properly, as far as the script lets it, then misbehave).

use core::future::Future;
use std::time::Duration;
use xenpal_drivers::xenbus::{XenbusDevice, XenbusState};
use xenpal_sim::hal::{Clock, Instant};
use xenpal_sim::xen_pv::xenstore::TxId;
use xenpal_sim::{Sim, SimConfig, SimHypervisor, SimPlatform};

/// A deterministic simulation sized for one fuzz input: a fixed seed (the
/// input decides everything), few steps, a small dom0.
pub fn sim() -> Sim {
    let sim = Sim::new(SimConfig {
        max_steps: 400_000,
        dom0_memory_pages: 512,
        ..SimConfig::seeded(7)
    });
    // Informational records cost time on every input; warnings and errors
    // still format their messages (which must not panic either).
    log::set_max_level(if debug() {
        log::LevelFilter::Trace
    } else {
        log::LevelFilter::Warn
    });
    sim
}

/// `d` from now, on the guest's clock.
pub fn after(p: &SimPlatform, d: Duration) -> Instant {
    p.timer().now() + d
}

/// Run `fut` for at most `d` of virtual time; `None` if it did not finish.
pub async fn within<F: Future>(p: &SimPlatform, d: Duration, fut: F) -> Option<F::Output> {
    let fut = core::pin::pin!(fut);
    let deadline = after(p, d);
    xenpal_sim::hal::time::with_timeout(p.timer(), deadline, fut)
        .await
        .ok()
}

/// Sleep `us` microseconds of virtual time.
pub async fn sleep_us(p: &SimPlatform, us: u64) {
    xenpal_sim::hal::time::sleep(p.timer(), Duration::from_micros(us)).await;
}

/// A xenbus state from a script byte: mostly the real ones, sometimes one
/// no toolstack writes.
pub fn state_from(b: u8) -> Result<XenbusState, String> {
    match b % 10 {
        0 => Ok(XenbusState::InitWait),
        1 => Ok(XenbusState::Initialised),
        2 => Ok(XenbusState::Connected),
        3 => Ok(XenbusState::Closing),
        4 => Ok(XenbusState::Closed),
        5 => Ok(XenbusState::Initialising),
        6 => Ok(XenbusState::Reconfiguring),
        7 => Ok(XenbusState::Reconfigured),
        8 => Err(String::new()),
        _ => Err(format!("{}", b as i8)),
    }
}

/// Write our state: a real one, or (for `Err`) raw text in the `state`
/// node, which the peer must refuse without panicking.
pub async fn set_state(dev: &XenbusDevice<SimHypervisor>, s: Result<XenbusState, String>) {
    match s {
        Ok(s) => {
            let _ = dev.switch_state(s).await;
        }
        Err(raw) => {
            let _ = dev.write_own(TxId::NONE, "state", &raw).await;
        }
    }
}

/// Wait (at most `d`) for the peer to reach a state `want` accepts.
pub async fn wait_peer(
    p: &SimPlatform,
    dev: &XenbusDevice<SimHypervisor>,
    d: Duration,
    want: impl Fn(XenbusState) -> bool,
) -> Option<XenbusState> {
    within(p, d, dev.wait_peer(want, |_| false))
        .await
        .and_then(Result::ok)
}

/// A node value from the script: a flag byte picks the honest `good` value
/// (even), or text from the script (odd), which may be anything.
pub fn value(i: &mut crate::input::Input<'_>, good: &str) -> String {
    if i.u8() & 1 == 0 {
        good.to_string()
    } else {
        i.string()
    }
}

/// Whether `XENPAL_FUZZ_DEBUG` is set: harnesses then print what the
/// domains logged, to see how far an input gets.
pub fn debug() -> bool {
    static DEBUG: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("XENPAL_FUZZ_DEBUG").is_some())
}

/// With [`debug`], print the run's report and every domain's console.
pub fn show(sim: &Sim, report: &xenpal_sim::RunReport) {
    if !debug() {
        return;
    }
    eprintln!("{report:?}");
    for d in 0..4 {
        let out = sim.console_output(xenpal_sim::hal::DomId(d));
        if !out.is_empty() {
            eprintln!("--- d{d}\n{out}");
        }
    }
}
