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

/// A PL011 UART (Xen's `vpl011`): early output before the emergency console
/// is wanted, or for boards where only the UART is visible.
#[derive(Copy, Clone, Debug)]
pub struct Pl011 {
    #[cfg_attr(
        not(all(target_arch = "aarch64", target_os = "none")),
        allow(dead_code)
    )]
    base: u64,
}

impl Pl011 {
    /// A PL011 at `base` (from the device tree; identity-mapped as Device
    /// memory by the platform).
    pub fn new(base: u64) -> Self {
        Pl011 { base }
    }
}

impl Console for Pl011 {
    fn write(&self, buf: &[u8]) -> Result<usize, hal::ConsoleError> {
        let mut n = 0;
        for &b in buf {
            if !self.write_ready() {
                break;
            }
            #[cfg(all(target_arch = "aarch64", target_os = "none"))]
            // SAFETY: UARTDR of the PL011 the device tree named, mapped as
            // Device memory.
            unsafe {
                core::ptr::write_volatile(self.base as *mut u32, u32::from(b))
            };
            #[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
            let _ = b;
            n += 1;
        }
        if n == 0 && !buf.is_empty() {
            return Err(hal::ConsoleError::WouldBlock);
        }
        Ok(n)
    }

    fn read(&self, buf: &mut [u8]) -> Result<usize, hal::ConsoleError> {
        if buf.is_empty() {
            Ok(0)
        } else {
            Err(hal::ConsoleError::WouldBlock)
        }
    }

    fn read_ready(&self) -> bool {
        false
    }

    fn write_ready(&self) -> bool {
        #[cfg(all(target_arch = "aarch64", target_os = "none"))]
        {
            // SAFETY: UARTFR of the same PL011.
            let fr = unsafe { core::ptr::read_volatile((self.base + 0x18) as *const u32) };
            fr & (1 << 5) == 0
        }
        #[cfg(not(all(target_arch = "aarch64", target_os = "none")))]
        false
    }
}
