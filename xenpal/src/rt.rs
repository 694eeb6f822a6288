//! The runtime behind `#[xenpal::main]`: what happens before the guest's
//! `main` runs and after it ends.
//!
//! On Xen ([`bare_metal_main`]): the arch crate boots the platform (device
//! tree or `start_info`, MMU, interrupts, Xen's pages, the heap), the logger
//! is attached to the PV console, `main` runs, and its result decides the
//! shutdown. The last line the guest prints says how it ended, in a fixed
//! form the runner (`cargo xtask run`) reads: [`EXIT_POWEROFF`],
//! [`EXIT_REBOOT`], or a line starting with [`EXIT_CRASH`] (or `panic:`).
//!
//! Meanwhile the guest answers the toolstack: `xl shutdown` and `xl reboot`
//! (see [`crate::control`]) end `main` early with a poweroff or a reboot.
//!
//! On the host ([`host_main`]): the same `main` runs in a domain of the
//! simulator, with the devices the domain config gives it, and the process
//! exits with the domain's status.

use alloc::string::{String, ToString};
use core::fmt::Display;

/// The line a guest prints when `main` returned `()` or `Ok`, just before
/// it powers off.
pub const EXIT_POWEROFF: &str = "xenpal: exit: poweroff";
/// The line a guest prints before it reboots, when the toolstack asked it
/// to (`xl reboot`).
pub const EXIT_REBOOT: &str = "xenpal: exit: reboot";
/// How the line starts that a guest prints when `main` returned `Err`,
/// before the domain crashes; the error follows.
pub const EXIT_CRASH: &str = "xenpal: exit: crash";

/// Why a guest's `main` failed: the `Display` of the error it returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MainError(pub String);

impl Display for MainError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

impl core::error::Error for MainError {}

/// What a guest's `main` may return: `()`, or `Result<(), E>` for any
/// `E: Display`.
pub trait MainResult {
    /// `Ok` to power off, `Err` to crash with the error's text.
    ///
    /// Errors: [`MainError`] carrying the returned error's text.
    fn into_outcome(self) -> Result<(), MainError>;
}

impl MainResult for () {
    fn into_outcome(self) -> Result<(), MainError> {
        Ok(())
    }
}

impl<E: Display> MainResult for Result<(), E> {
    fn into_outcome(self) -> Result<(), MainError> {
        self.map_err(|e| MainError(e.to_string()))
    }
}

/// The exit line for an outcome (see [`EXIT_POWEROFF`], [`EXIT_CRASH`]).
pub fn exit_line(outcome: &Result<(), MainError>) -> String {
    match outcome {
        Ok(()) => EXIT_POWEROFF.to_string(),
        Err(e) => alloc::format!("{EXIT_CRASH}: main returned an error: {e}"),
    }
}

/// Run `main` on `p` until it returns or the toolstack asks for a shutdown
/// or a reboot (`control/shutdown`), whichever comes first. Returns the
/// `SHUTDOWN_*` reason to give Xen and the exit line to print (see
/// [`EXIT_POWEROFF`]); `main` is dropped unfinished if the toolstack asked.
pub async fn run_main<F, Fut>(p: crate::Platform, main: F) -> (u32, String)
where
    F: FnOnce(crate::Platform) -> Fut,
    Fut: core::future::Future,
    Fut::Output: MainResult,
{
    use core::pin::pin;
    use hal::task::{Either, select};
    use xen_pv::abi::shutdown;

    let xs = p.xenstore().cloned();
    let watch = async move {
        if let Some(xs) = xs {
            match crate::control::shutdown_request(&xs).await {
                Ok(req) => return req,
                Err(e) => log::warn!("xenpal: not watching control/shutdown: {e}"),
            }
        }
        core::future::pending().await
    };
    match select(pin!(main(p)), pin!(watch)).await {
        Either::First(out) => {
            let outcome = out.into_outcome();
            let reason = if outcome.is_ok() {
                shutdown::POWEROFF
            } else {
                shutdown::CRASH
            };
            (reason, exit_line(&outcome))
        }
        Either::Second(req) => {
            log::info!("xenpal: the toolstack asked for {req}");
            let line = match req {
                crate::control::ShutdownRequest::Poweroff => EXIT_POWEROFF,
                crate::control::ShutdownRequest::Reboot => EXIT_REBOOT,
            };
            (req.reason(), line.to_string())
        }
    }
}

/// Boot the platform from the boot information Xen passed (`boot`: the
/// device tree's address on Arm, `start_info`'s on x86), run `main` (with
/// [`run_main`]), and shut down: poweroff if it returned `()` or `Ok`, crash
/// if `Err`, or what the toolstack asked for. Called by the entry point
/// `#[xenpal::main]` generates.
#[cfg(target_os = "none")]
pub fn bare_metal_main<F, Fut>(boot: usize, main: F) -> !
where
    F: FnOnce(crate::Platform) -> Fut,
    Fut: core::future::Future,
    Fut::Output: MainResult,
{
    crate::arch::platform::run(boot, move |b| async move {
        crate::logger::attach(&b.platform);
        let (reason, mut line) = run_main(b.platform, main).await;
        line.push('\n');
        crate::logger::write(line.as_bytes());
        reason
    })
}

/// The panic handler of every xenpal guest: print the panic (with its
/// location) on the PV console and Xen's emergency console, then crash the
/// domain.
#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    crate::logger::panic_report(info);
    crate::arch::platform::crash()
}

#[cfg(not(target_os = "none"))]
pub use host::host_main;

#[cfg(not(target_os = "none"))]
mod host {
    use super::MainResult;
    use std::path::PathBuf;
    use std::process::ExitCode;
    use std::time::Duration;
    use xenpal_sim::toolstack::Toolstack;
    use xenpal_sim::xl::DomainSpec;
    use xenpal_sim::{DomainStatus, Exit, Mode, SimConfig};

    /// Where the domain config comes from: `XENPAL_CONFIG`, else
    /// `xenpal.cfg` in `crate_dir` (the guest crate's folder), else none.
    fn config_path(crate_dir: &str) -> Option<PathBuf> {
        if let Some(p) = std::env::var_os("XENPAL_CONFIG") {
            return Some(PathBuf::from(p));
        }
        let p = PathBuf::from(crate_dir).join("xenpal.cfg");
        p.is_file().then_some(p)
    }

    /// Run `main` as a guest of the simulator, free-running (real time, so
    /// the host can talk to it through forwarded ports), with the devices
    /// the domain config describes (an `xl` config: see
    /// `xenpal_sim::xl`: `XENPAL_CONFIG`, else `xenpal.cfg` in
    /// `crate_dir`), and return the guest's status: success if it powered
    /// off, failure if it crashed, panicked or its config is bad. `name`
    /// names the domain when there is no config. Called by the `main`
    /// `#[xenpal::main]` generates on the host.
    pub fn host_main<F, Fut>(name: &str, crate_dir: &str, main: F) -> ExitCode
    where
        F: FnOnce(crate::Platform) -> Fut + Send + 'static,
        Fut: core::future::Future + 'static,
        Fut::Output: MainResult,
    {
        let spec = match config_path(crate_dir) {
            Some(path) => match DomainSpec::from_file(&path) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("xenpal: {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            },
            None => DomainSpec::new(name),
        };
        let mut ts = Toolstack::new(SimConfig {
            mode: Mode::FreeRunning { threads: 2 },
            echo_console: true,
            seed: xenpal_sim::seed_from_env().unwrap_or(0),
            ..SimConfig::default()
        });
        let dom = match ts.create(&spec, move |p| async move {
            let h = p.hypervisor().clone();
            let (reason, line) = super::run_main(p, main).await;
            if reason == xen_pv::abi::shutdown::CRASH {
                log::error!("{line}");
            } else {
                log::info!("{line}");
            }
            let _ = xen_pv::hypercall::sched_shutdown(&h, reason);
        }) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("xenpal: creating domain {:?}: {e}", spec.name);
                return ExitCode::FAILURE;
            }
        };
        let running = match ts.start() {
            Ok(r) => r,
            Err(e) => {
                eprintln!("xenpal: starting domain {:?}: {e}", spec.name);
                return ExitCode::FAILURE;
            }
        };
        for f in &spec.forwards {
            if let Some(port) = running.forwarded_port(dom, f.guest_port) {
                eprintln!(
                    "xenpal: 127.0.0.1:{port} on the host reaches {}:{} (Ctrl-C to stop)",
                    spec.name, f.guest_port
                );
            }
        }
        loop {
            if let Some(DomainStatus::Exited(e)) = running.status(dom) {
                return match e {
                    Exit::Shutdown(r) if r == xen_pv::abi::shutdown::POWEROFF => ExitCode::SUCCESS,
                    // The simulator's runner does not restart a domain.
                    Exit::Shutdown(r) if r == xen_pv::abi::shutdown::REBOOT => {
                        eprintln!(
                            "xenpal: domain {:?} asked to reboot; not restarted",
                            spec.name
                        );
                        ExitCode::SUCCESS
                    }
                    other => {
                        eprintln!("xenpal: domain {:?} ended: {other:?}", spec.name);
                        ExitCode::FAILURE
                    }
                };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
