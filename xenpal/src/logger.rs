//! The guest's logger on Xen: `log` records go to the PV console once the
//! platform is up, and to Xen's emergency console before that (or when the
//! toolstack gave no PV console).

use alloc::boxed::Box;
use core::cell::RefCell;
use hal::Console;
use xen_pv::console::EmergencyConsole;
use xenpal_drivers::console::ConsoleLogger;

/// The hypervisor handle, for the emergency console.
#[cfg(any(target_arch = "aarch64", target_arch = "arm"))]
const HYP: crate::Hypervisor = crate::arch::ArmHypervisor;
#[cfg(target_arch = "x86_64")]
const HYP: crate::Hypervisor = crate::arch::PvHypervisor;

type Sink = Box<dyn Fn(&[u8])>;

/// Where records go once the platform is up.
struct SinkCell(RefCell<Option<Sink>>);

// SAFETY: a xenpal guest has one vCPU and no threads, and its interrupt
// handlers (the GIC's, the x86 event callback) only count and acknowledge:
// they never log and never touch this cell. So the cell is only ever used
// from the one flow of control, as a `RefCell` requires.
#[allow(unsafe_code)]
unsafe impl Sync for SinkCell {}

static SINK: SinkCell = SinkCell(RefCell::new(None));

static LOGGER: ConsoleLogger = ConsoleLogger::new(write, level());

/// The level: `XENPAL_LOG` at build time (`error` … `trace`, `off`), else
/// `info`. (Release builds of this repository's guests compile debug and
/// trace records out: build them without the default `small-log` feature
/// to see those.)
const fn level() -> log::LevelFilter {
    match option_env!("XENPAL_LOG") {
        Some(v) => match v.as_bytes() {
            b"off" => log::LevelFilter::Off,
            b"error" => log::LevelFilter::Error,
            b"warn" => log::LevelFilter::Warn,
            b"debug" => log::LevelFilter::Debug,
            b"trace" => log::LevelFilter::Trace,
            _ => log::LevelFilter::Info,
        },
        None => log::LevelFilter::Info,
    }
}

/// Write `bytes` to the guest's console: the PV console once attached (a
/// full ring drops what does not fit rather than block), else Xen's
/// emergency console. A write from inside a write (a console that logs)
/// goes to the emergency console.
pub(crate) fn write(bytes: &[u8]) {
    if let Ok(sink) = SINK.0.try_borrow()
        && let Some(f) = sink.as_ref()
    {
        f(bytes);
        return;
    }
    EmergencyConsole(HYP).write_lossy(bytes);
}

/// Send records to `p`'s console from now on, and install the logger (on
/// the first call).
pub(crate) fn attach(p: &crate::Platform) {
    let console = p.console().clone();
    if let Ok(mut sink) = SINK.0.try_borrow_mut() {
        *sink = Some(Box::new(move |b: &[u8]| {
            console.write_lossy(b);
        }));
    }
    let _ = LOGGER.install();
}

/// Report a panic on both consoles, without allocating (the heap may be
/// what failed).
pub(crate) fn panic_report(info: &core::panic::PanicInfo<'_>) {
    struct Out<F: Fn(&[u8])>(F);
    impl<F: Fn(&[u8])> core::fmt::Write for Out<F> {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            (self.0)(s.as_bytes());
            Ok(())
        }
    }
    let emergency = |b: &[u8]| {
        EmergencyConsole(HYP).write_lossy(b);
    };
    let _ = core::fmt::Write::write_fmt(&mut Out(emergency), format_args!("panic: {info}\n"));
    if let Ok(sink) = SINK.0.try_borrow()
        && let Some(f) = sink.as_ref()
    {
        let _ =
            core::fmt::Write::write_fmt(&mut Out(|b: &[u8]| f(b)), format_args!("panic: {info}\n"));
    }
}
