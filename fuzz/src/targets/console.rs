//! The guest's PV console (`xenpal_xen_pv::console::PvConsole`) against a
//! hostile console backend: the fuzz input plays the backend on the shared
//! page, producing input bytes, consuming output, and writing arbitrary
//! ring indices, while the guest reads, writes, logs lossily and asks
//! whether it may read or write. A bad index must disconnect the console
//! (`ConsoleError::Disconnected`), never panic or read outside the ring.

use crate::input::Input;
use crate::mock::events_with;
use core::fmt::Write as _;
use core::mem::offset_of;
use core::sync::atomic::Ordering;
use embedded_io::{ReadReady, WriteReady};
use xenpal_hal::EventPort;
use xenpal_hal::console::{Console, ConsoleError, Io};
use xenpal_hal::mem::{SharedMemory, WordMemory};
use xenpal_xen_pv::abi::io::XenconsInterface as Intf;
use xenpal_xen_pv::console::{IN_SIZE, OUT_SIZE, PvConsole};

const IN: usize = offset_of!(Intf, in_);
const IN_CONS: usize = offset_of!(Intf, in_cons);
const IN_PROD: usize = offset_of!(Intf, in_prod);
const OUT_CONS: usize = offset_of!(Intf, out_cons);
const OUT_PROD: usize = offset_of!(Intf, out_prod);

/// The operations of a script (the op byte modulo their number).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// The backend produces input: a short byte string, as far as it fits.
    Input = 0,
    /// Write ring index `u8 % 4` (in_cons, in_prod, out_cons, out_prod).
    Index = 1,
    /// The guest reads into a buffer of `u16 % 4096` bytes.
    Read = 2,
    /// The guest writes a short byte string.
    Write = 3,
    /// The backend consumes all output.
    Drain = 4,
    /// The guest asks `read_ready`, `write_ready` and `unsent`.
    Ready = 5,
    /// The guest logs a short byte string (`write_lossy`, `fmt::Write`).
    Log = 6,
}

/// How many operations there are.
pub const OPS: u8 = 7;

/// Run one input: a script of [`Op`]s.
pub fn run(data: &[u8]) {
    let mut i = Input::new(data);
    let port = EventPort(2);
    let page = WordMemory::new(4096);
    let con = PvConsole::new(events_with(port), page.clone(), port);
    let mut io = Io(con.clone());
    let mut steps = 0;
    while !i.is_empty() && steps < 4096 {
        steps += 1;
        match i.u8() % OPS {
            0 => {
                let bytes = i.short();
                let cons = page.load_u32(IN_CONS, Ordering::Acquire);
                let prod = page.load_u32(IN_PROD, Ordering::Relaxed);
                let room = IN_SIZE.saturating_sub(prod.wrapping_sub(cons)) as usize;
                let n = room.min(bytes.len());
                for (k, b) in bytes[..n].iter().enumerate() {
                    let at = (prod.wrapping_add(k as u32) % IN_SIZE) as usize;
                    page.write(IN + at, &[*b]);
                }
                page.store_u32(IN_PROD, prod.wrapping_add(n as u32), Ordering::Release);
            }
            1 => {
                let at = [IN_CONS, IN_PROD, OUT_CONS, OUT_PROD][i.u8() as usize % 4];
                page.store_u32(at, i.u32(), Ordering::Release);
            }
            2 => {
                let mut buf = vec![0u8; i.u16() as usize % 4096];
                match con.read(&mut buf) {
                    Ok(n) => assert!(n <= buf.len() && n <= IN_SIZE as usize, "read {n}"),
                    Err(ConsoleError::WouldBlock | ConsoleError::Disconnected) => {}
                    Err(e) => panic!("unexpected console error {e:?}"),
                }
            }
            3 => {
                let bytes = i.short();
                if let Ok(n) = con.write(bytes) {
                    assert!(n <= bytes.len(), "wrote {n} of {}", bytes.len());
                }
            }
            4 => {
                let prod = page.load_u32(OUT_PROD, Ordering::Acquire);
                page.store_u32(OUT_CONS, prod, Ordering::Release);
            }
            5 => {
                let _ = (con.read_ready(), con.write_ready());
                let _ = (io.read_ready(), io.write_ready());
                assert!(con.unsent() <= OUT_SIZE as usize);
            }
            _ => {
                let bytes = i.short();
                assert!(con.write_lossy(bytes) <= bytes.len());
                let _ = io.write_str(&String::from_utf8_lossy(bytes));
            }
        }
    }
}

/// Script writers for the seed corpus.
pub mod script {
    use super::Op;
    use crate::input::Script;

    /// The backend types `text`; the guest reads it.
    pub fn typed(s: &mut Script, text: &[u8]) {
        s.u8(Op::Input as u8)
            .short(text)
            .u8(Op::Read as u8)
            .u16(text.len() as u16);
    }

    /// The guest prints `text`; the backend takes it.
    pub fn printed(s: &mut Script, text: &[u8]) {
        s.u8(Op::Write as u8)
            .short(text)
            .u8(Op::Log as u8)
            .short(text)
            .u8(Op::Ready as u8)
            .u8(Op::Drain as u8);
    }
}
