//! The `log` crate's records from guest code go to the console of the guest
//! that emitted them, as a logger writing to its console would on Xen.
//!
//! `log` has one global logger per process, but a simulator process runs
//! many guests. The simulator's logger finds the guest that is running on
//! the current thread (the innermost, if waits are nested) and writes to its
//! console. Records from outside any guest go to standard error.

use crate::domain::Domain;
use hal::DomId;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

type Sink = Rc<dyn Fn(&[u8])>;

thread_local! {
    static SINKS: RefCell<BTreeMap<DomId, Sink>> = RefCell::new(BTreeMap::new());
    static CURRENT: RefCell<Vec<DomId>> = const { RefCell::new(Vec::new()) };
}

/// While alive, `dom` is the running guest on this thread.
pub(crate) struct Entered;

impl Drop for Entered {
    fn drop(&mut self) {
        CURRENT.with(|c| c.borrow_mut().pop());
    }
}

pub(crate) fn enter(dom: &Domain) -> Entered {
    CURRENT.with(|c| c.borrow_mut().push(dom.id));
    Entered
}

/// Route `dom`'s records to `sink` (its platform's console).
pub(crate) fn attach(dom: &Domain, sink: impl Fn(&[u8]) + 'static) {
    let sink: Sink = Rc::new(sink);
    SINKS.with(|s| s.borrow_mut().insert(dom.id, sink));
}

/// Stop routing `dom`'s records (it is gone).
pub(crate) fn detach(dom: &Domain) {
    SINKS.with(|s| s.borrow_mut().remove(&dom.id));
}

struct SimLogger;

impl log::Log for SimLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format!(
            "{:<5} {}: {}\n",
            record.level(),
            record.target(),
            record.args()
        );
        let sink = CURRENT
            .with(|c| c.borrow().last().copied())
            .and_then(|d| SINKS.with(|s| s.borrow().get(&d).cloned()));
        match sink {
            Some(sink) => sink(line.as_bytes()),
            None => eprint!("xenpal-sim: {line}"),
        }
    }

    fn flush(&self) {}
}

static LOGGER: SimLogger = SimLogger;

/// Install the simulator's logger, unless the program installed its own.
/// The level comes from `XENPAL_LOG` (`error`, `warn`, `info`, `debug`,
/// `trace`; default `info`).
pub(crate) fn install() {
    if log::set_logger(&LOGGER).is_ok() {
        let level = std::env::var("XENPAL_LOG")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(log::LevelFilter::Info);
        log::set_max_level(level);
    }
}
