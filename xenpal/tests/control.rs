//! `xl shutdown` and `xl reboot` on the simulator: the toolstack writes
//! `control/shutdown` as xl does, and a guest run by `xenpal::rt::run_main`
//! acknowledges the request and shuts down with the matching reason, while
//! a request it does not honour changes nothing.

use std::time::Duration;
use xenpal::hal::DomId;
use xenpal::sim::toolstack::{Running, Toolstack};
use xenpal::sim::xl::DomainSpec;
use xenpal::sim::{DomainStatus, Exit, SimConfig};
use xenpal::xen_pv::abi::shutdown;

/// A guest whose `main` never ends by itself, run the way
/// `#[xenpal::main]` runs it; it shuts down with what `run_main` returns.
fn start_idle_guest() -> (Running, DomId) {
    let mut ts = Toolstack::new(SimConfig::seeded(7));
    let dom = ts
        .create(&DomainSpec::new("idle"), |p| async move {
            let h = p.hypervisor().clone();
            let (reason, _line) = xenpal::rt::run_main(p, |_p| core::future::pending::<()>()).await;
            let _ = xenpal::xen_pv::hypercall::sched_shutdown(&h, reason);
        })
        .expect("create");
    let mut running = ts.start().expect("start");
    // Let it boot and set its watch.
    running.sim_mut().run_for(Duration::from_secs(1));
    (running, dom)
}

fn control_shutdown_path(dom: DomId) -> String {
    format!("/local/domain/{}/control/shutdown", dom.0)
}

/// Write `word` into the guest's `control/shutdown`, as xl does.
fn request(running: &Running, dom: DomId, word: &str) {
    running
        .sim()
        .xenstore_write(&control_shutdown_path(dom), word)
        .expect("the toolstack writes control/shutdown");
}

fn control_shutdown(running: &Running, dom: DomId) -> Vec<u8> {
    running
        .sim()
        .xenstore_read(&control_shutdown_path(dom))
        .expect("control/shutdown exists")
}

fn still_up(running: &Running, dom: DomId) -> bool {
    matches!(
        running.status(dom),
        Some(DomainStatus::Blocked | DomainStatus::Running)
    )
}

#[test]
fn xl_shutdown_powers_the_guest_off() {
    let (mut running, dom) = start_idle_guest();
    assert!(still_up(&running, dom), "{:?}", running.status(dom));
    request(&running, dom, "poweroff");
    running.sim_mut().run_for(Duration::from_secs(1));
    assert_eq!(
        running.status(dom),
        Some(DomainStatus::Exited(Exit::Shutdown(shutdown::POWEROFF)))
    );
    // (Its xenstore home went with it; the acknowledgement is checked in
    // `an_unknown_request_is_acknowledged_and_ignored`.)
    assert_eq!(control_shutdown_after_exit(&running, dom), None);
}

fn control_shutdown_after_exit(running: &Running, dom: DomId) -> Option<Vec<u8>> {
    running.sim().xenstore_read(&control_shutdown_path(dom))
}

#[test]
fn xl_reboot_reboots_the_guest() {
    let (mut running, dom) = start_idle_guest();
    request(&running, dom, "reboot");
    running.sim_mut().run_for(Duration::from_secs(1));
    assert_eq!(
        running.status(dom),
        Some(DomainStatus::Exited(Exit::Shutdown(shutdown::REBOOT)))
    );
}

#[test]
fn an_unknown_request_is_acknowledged_and_ignored() {
    let (mut running, dom) = start_idle_guest();
    request(&running, dom, "suspend");
    running.sim_mut().run_for(Duration::from_secs(1));
    assert!(still_up(&running, dom), "{:?}", running.status(dom));
    assert_eq!(control_shutdown(&running, dom), b"");
    // It still listens.
    request(&running, dom, "halt");
    running.sim_mut().run_for(Duration::from_secs(1));
    assert_eq!(
        running.status(dom),
        Some(DomainStatus::Exited(Exit::Shutdown(shutdown::POWEROFF)))
    );
}

#[test]
fn main_returning_an_error_crashes_the_domain() {
    let mut ts = Toolstack::new(SimConfig::seeded(7));
    let dom = ts
        .create(&DomainSpec::new("failing"), |p| async move {
            let h = p.hypervisor().clone();
            let (reason, line) =
                xenpal::rt::run_main(p, |_p| async { Err::<(), _>("no disk") }).await;
            assert_eq!(line, "xenpal: exit: crash: main returned an error: no disk");
            let _ = xenpal::xen_pv::hypercall::sched_shutdown(&h, reason);
        })
        .expect("create");
    let mut running = ts.start().expect("start");
    running.sim_mut().run_for(Duration::from_secs(1));
    assert_eq!(
        running.status(dom),
        Some(DomainStatus::Exited(Exit::Shutdown(shutdown::CRASH)))
    );
}
