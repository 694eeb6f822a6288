//! Consoles: the PV console ring (`xencons_interface`) and the emergency
//! console (the `console_io` hypercall).

use crate::abi::io::XenconsInterface;
use crate::event::Events;
use crate::hypercall::{self, Hypervisor};
use core::mem::{offset_of, size_of_val};
use core::sync::atomic::Ordering;
use hal::console::{Console, ConsoleError};
use hal::mem::SharedMemory;
use hal::{EventChannel, EventPort};

const IN: usize = offset_of!(XenconsInterface, in_);
const OUT: usize = offset_of!(XenconsInterface, out);
const IN_CONS: usize = offset_of!(XenconsInterface, in_cons);
const IN_PROD: usize = offset_of!(XenconsInterface, in_prod);
const OUT_CONS: usize = offset_of!(XenconsInterface, out_cons);
const OUT_PROD: usize = offset_of!(XenconsInterface, out_prod);

/// Size of the output ring.
pub const OUT_SIZE: u32 = 2048;
/// Size of the input ring.
pub const IN_SIZE: u32 = 1024;

// The ring sizes above must match the ABI structure.
const _: () = {
    let c: XenconsInterface = XenconsInterface {
        in_: [0; 1024],
        out: [0; 2048],
        in_cons: 0,
        in_prod: 0,
        out_cons: 0,
        out_prod: 0,
    };
    assert!(size_of_val(&c.in_) == IN_SIZE as usize);
    assert!(size_of_val(&c.out) == OUT_SIZE as usize);
};

/// The PV console frontend: a byte ring each way on a page shared with the
/// console backend, and an event channel.
///
/// The backend writes `out_cons` and `in_prod`; both are checked (`prod -
/// cons` within the ring) and a violation disconnects the console for good.
pub struct PvConsole<H: Hypervisor> {
    events: Events<H>,
    ring: H::Mem,
    port: EventPort,
    broken: alloc::rc::Rc<core::cell::Cell<bool>>,
}

impl<H: Hypervisor> Clone for PvConsole<H> {
    /// Another handle to the same console (sharing its state).
    fn clone(&self) -> Self {
        PvConsole {
            events: self.events.clone(),
            ring: self.ring.clone(),
            port: self.port,
            broken: self.broken.clone(),
        }
    }
}

impl<H: Hypervisor> PvConsole<H> {
    /// A console over the mapped console page `ring` and bound `port`.
    pub fn new(events: Events<H>, ring: H::Mem, port: EventPort) -> Self {
        PvConsole {
            events,
            ring,
            port,
            broken: alloc::rc::Rc::new(core::cell::Cell::new(false)),
        }
    }

    /// The event channel.
    pub fn port(&self) -> EventPort {
        self.port
    }

    /// Bytes written but not yet taken by the backend (0 if the ring is
    /// broken: nothing more will be taken).
    pub fn unsent(&self) -> usize {
        self.out_used().map_or(0, |n| n as usize)
    }

    fn out_used(&self) -> Result<u32, ConsoleError> {
        if self.broken.get() {
            return Err(ConsoleError::Disconnected);
        }
        let cons = self.ring.load_u32(OUT_CONS, Ordering::Acquire);
        let prod = self.ring.load_u32(OUT_PROD, Ordering::Relaxed);
        let used = prod.wrapping_sub(cons);
        if used > OUT_SIZE {
            self.broken.set(true);
            return Err(ConsoleError::Disconnected);
        }
        Ok(used)
    }

    fn in_avail(&self) -> Result<u32, ConsoleError> {
        if self.broken.get() {
            return Err(ConsoleError::Disconnected);
        }
        let prod = self.ring.load_u32(IN_PROD, Ordering::Acquire);
        let cons = self.ring.load_u32(IN_CONS, Ordering::Relaxed);
        let avail = prod.wrapping_sub(cons);
        if avail > IN_SIZE {
            self.broken.set(true);
            return Err(ConsoleError::Disconnected);
        }
        Ok(avail)
    }
}

impl<H: Hypervisor> Console for PvConsole<H> {
    fn write(&self, buf: &[u8]) -> Result<usize, ConsoleError> {
        if buf.is_empty() {
            return Ok(0);
        }
        let used = self.out_used()?;
        let n = ((OUT_SIZE - used) as usize).min(buf.len());
        if n == 0 {
            return Err(ConsoleError::WouldBlock);
        }
        let prod = self.ring.load_u32(OUT_PROD, Ordering::Relaxed);
        let at = (prod % OUT_SIZE) as usize;
        let first = (OUT_SIZE as usize - at).min(n);
        self.ring.write(OUT + at, &buf[..first]);
        self.ring.write(OUT, &buf[first..n]);
        self.ring
            .store_u32(OUT_PROD, prod.wrapping_add(n as u32), Ordering::Release);
        self.events
            .notify(self.port)
            .map_err(|_| ConsoleError::Disconnected)?;
        Ok(n)
    }

    fn read(&self, buf: &mut [u8]) -> Result<usize, ConsoleError> {
        if buf.is_empty() {
            return Ok(0);
        }
        let avail = self.in_avail()?;
        let n = (avail as usize).min(buf.len());
        if n == 0 {
            return Err(ConsoleError::WouldBlock);
        }
        let cons = self.ring.load_u32(IN_CONS, Ordering::Relaxed);
        let at = (cons % IN_SIZE) as usize;
        let first = (IN_SIZE as usize - at).min(n);
        self.ring.read(IN + at, &mut buf[..first]);
        self.ring.read(IN, &mut buf[first..n]);
        self.ring
            .store_u32(IN_CONS, cons.wrapping_add(n as u32), Ordering::Release);
        self.events
            .notify(self.port)
            .map_err(|_| ConsoleError::Disconnected)?;
        Ok(n)
    }

    fn read_ready(&self) -> bool {
        self.in_avail().is_ok_and(|n| n > 0)
    }

    fn write_ready(&self) -> bool {
        self.out_used().is_ok_and(|n| n < OUT_SIZE)
    }
}

/// Xen's emergency console: `console_io` writes, which Xen prints on its own
/// console (for a domU, only with `guest_loglvl` allowing it). Always
/// available, never blocks; input (`CONSOLEIO_read`) is for dom0 only.
#[derive(Clone, Debug)]
pub struct EmergencyConsole<H>(pub H);

impl<H: Hypervisor> Console for EmergencyConsole<H> {
    fn write(&self, buf: &[u8]) -> Result<usize, ConsoleError> {
        if buf.is_empty() {
            return Ok(0);
        }
        hypercall::console_write(&self.0, buf)
            .map(|_| buf.len())
            .map_err(|e| ConsoleError::Hypervisor(-e.0))
    }

    fn read(&self, buf: &mut [u8]) -> Result<usize, ConsoleError> {
        if buf.is_empty() {
            return Ok(0);
        }
        Err(ConsoleError::WouldBlock)
    }

    fn read_ready(&self) -> bool {
        false
    }

    fn write_ready(&self) -> bool {
        true
    }
}
