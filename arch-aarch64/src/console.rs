//! Early output: Xen's emergency console (`console_io`), and the emulated
//! PL011 (`vpl011`) when the device tree has one.

use crate::hypercall::ArmHypervisor;
use core::fmt;
use hal::Console;
use xen_pv::console::EmergencyConsole;

/// Write `s` on the emergency console. Never fails, never blocks.
pub fn emergency_write(s: &[u8]) {
    EmergencyConsole(ArmHypervisor).write_lossy(s);
}

/// `fmt::Write` to the emergency console.
#[derive(Debug, Default, Clone, Copy)]
pub struct Emergency;

impl fmt::Write for Emergency {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        emergency_write(s.as_bytes());
        Ok(())
    }
}

/// Print to the emergency console, like `print!`.
#[macro_export]
macro_rules! eprint {
    ($($arg:tt)*) => {{
        let _ = core::fmt::Write::write_fmt(&mut $crate::console::Emergency, format_args!($($arg)*));
    }};
}

/// Print a line to the emergency console, like `println!`.
#[macro_export]
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        $crate::eprint!($($arg)*);
        $crate::console::emergency_write(b"\n");
    }};
}
