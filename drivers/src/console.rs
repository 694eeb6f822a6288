//! The console frontend is `xen_pv::console::PvConsole`; this module sends
//! the `log` crate's records to a console.

use alloc::string::String;
use core::fmt::Write;

/// A [`log::Log`] that formats each record as one line and hands it to a
/// write function: on real Xen, the arch crate's function that writes its
/// PV console (or emergency console before xenstore is up). Writing must not
/// block: a full console drops the line (see `Console::write_lossy`).
///
/// The write function is a plain `fn` so the logger is `Sync`, as `log`
/// requires, without any shared mutable state here.
#[derive(Debug)]
pub struct ConsoleLogger {
    write: fn(&[u8]),
    level: log::LevelFilter,
}

impl ConsoleLogger {
    /// A logger writing records at `level` or more severe through `write`.
    pub const fn new(write: fn(&[u8]), level: log::LevelFilter) -> Self {
        ConsoleLogger { write, level }
    }

    /// Install as the global logger (once per program).
    ///
    /// Errors: `log::SetLoggerError` if a logger is already installed.
    pub fn install(&'static self) -> Result<(), log::SetLoggerError> {
        log::set_logger(self)?;
        log::set_max_level(self.level);
        Ok(())
    }
}

impl log::Log for ConsoleLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut line = String::new();
        let _ = writeln!(
            line,
            "{:<5} {}: {}",
            record.level(),
            record.target(),
            record.args()
        );
        (self.write)(line.as_bytes());
    }

    fn flush(&self) {}
}
