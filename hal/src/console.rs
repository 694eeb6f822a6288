//! Consoles: the emergency console (a hypercall), the PV console ring, a UART.

use core::fmt;

/// Why a console operation failed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ConsoleError {
    /// The output buffer is full (or the input empty) right now; try again
    /// after the backend has run.
    WouldBlock,
    /// The console is not connected or its backend misbehaved; it will not
    /// recover without being set up again.
    Disconnected,
    /// The hypervisor refused the operation (negative Xen errno).
    Hypervisor(i32),
}

impl fmt::Display for ConsoleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConsoleError::WouldBlock => f.write_str("console would block"),
            ConsoleError::Disconnected => f.write_str("console disconnected"),
            ConsoleError::Hypervisor(e) => write!(f, "hypervisor error {e}"),
        }
    }
}

impl core::error::Error for ConsoleError {}

impl embedded_io::Error for ConsoleError {
    fn kind(&self) -> embedded_io::ErrorKind {
        match self {
            ConsoleError::WouldBlock => embedded_io::ErrorKind::Interrupted,
            ConsoleError::Disconnected => embedded_io::ErrorKind::NotConnected,
            ConsoleError::Hypervisor(_) => embedded_io::ErrorKind::Other,
        }
    }
}

/// A byte-stream console. Non-blocking: a cooperative guest cannot wait for
/// its backend inside a call, so methods do what is possible now.
pub trait Console {
    /// Write as much of `buf` as fits now; returns the number of bytes taken
    /// (`0` only if `buf` is empty).
    ///
    /// Errors: [`ConsoleError::WouldBlock`] if nothing fits now;
    /// [`ConsoleError::Disconnected`]; [`ConsoleError::Hypervisor`].
    fn write(&self, buf: &[u8]) -> Result<usize, ConsoleError>;

    /// Read what is available now into `buf`; returns the number of bytes
    /// (`0` only if `buf` is empty).
    ///
    /// Errors: [`ConsoleError::WouldBlock`] if no input is available;
    /// [`ConsoleError::Disconnected`]; [`ConsoleError::Hypervisor`]. A
    /// console without input always returns `WouldBlock`.
    fn read(&self, buf: &mut [u8]) -> Result<usize, ConsoleError>;

    /// Whether [`read`](Self::read) would return data now.
    fn read_ready(&self) -> bool;

    /// Whether [`write`](Self::write) would take at least one byte now.
    fn write_ready(&self) -> bool;

    /// Write all of `buf`, dropping what does not fit. Returns the number of
    /// bytes dropped. For logging, which must never block.
    fn write_lossy(&self, buf: &[u8]) -> usize {
        let mut done = 0;
        while done < buf.len() {
            match self.write(&buf[done..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => done += n,
            }
        }
        buf.len() - done
    }
}

impl<C: Console + ?Sized> Console for &C {
    fn write(&self, buf: &[u8]) -> Result<usize, ConsoleError> {
        (**self).write(buf)
    }
    fn read(&self, buf: &mut [u8]) -> Result<usize, ConsoleError> {
        (**self).read(buf)
    }
    fn read_ready(&self) -> bool {
        (**self).read_ready()
    }
    fn write_ready(&self) -> bool {
        (**self).write_ready()
    }
}

/// A [`Console`] as [`embedded_io`] traits, for code written against the
/// ecosystem's I/O traits.
///
/// `embedded_io` reads and writes block. This adapter spins while the console
/// would block, which is right on real Xen (the backend runs elsewhere) but
/// would never end in the simulator's deterministic mode, where the backend
/// runs only when this guest yields. Code that runs in the simulator should
/// check [`ReadReady`](embedded_io::ReadReady) /
/// [`WriteReady`](embedded_io::WriteReady) first, or use
/// [`Console::write_lossy`].
#[derive(Debug, Clone)]
pub struct Io<C>(pub C);

impl<C: Console> embedded_io::ErrorType for Io<C> {
    type Error = ConsoleError;
}

impl<C: Console> embedded_io::Write for Io<C> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, ConsoleError> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.0.write(buf) {
                Err(ConsoleError::WouldBlock) => core::hint::spin_loop(),
                other => return other,
            }
        }
    }
    fn flush(&mut self) -> Result<(), ConsoleError> {
        Ok(())
    }
}

impl<C: Console> embedded_io::Read for Io<C> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ConsoleError> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.0.read(buf) {
                Err(ConsoleError::WouldBlock) => core::hint::spin_loop(),
                other => return other,
            }
        }
    }
}

impl<C: Console> embedded_io::ReadReady for Io<C> {
    fn read_ready(&mut self) -> Result<bool, ConsoleError> {
        Ok(self.0.read_ready())
    }
}

impl<C: Console> embedded_io::WriteReady for Io<C> {
    fn write_ready(&mut self) -> Result<bool, ConsoleError> {
        Ok(self.0.write_ready())
    }
}

impl<C: Console> fmt::Write for Io<C> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.write_lossy(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::RefCell;
    use embedded_io::{Read, ReadReady, Write};
    use std::vec::Vec;

    /// Takes at most 3 bytes per call; reads back what was written.
    struct Small(RefCell<Vec<u8>>);
    impl Console for Small {
        fn write(&self, buf: &[u8]) -> Result<usize, ConsoleError> {
            let n = buf.len().min(3);
            self.0.borrow_mut().extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn read(&self, buf: &mut [u8]) -> Result<usize, ConsoleError> {
            let mut v = self.0.borrow_mut();
            if v.is_empty() {
                return Err(ConsoleError::WouldBlock);
            }
            let n = buf.len().min(v.len());
            buf[..n].copy_from_slice(&v[..n]);
            v.drain(..n);
            Ok(n)
        }
        fn read_ready(&self) -> bool {
            !self.0.borrow().is_empty()
        }
        fn write_ready(&self) -> bool {
            true
        }
    }

    #[test]
    fn embedded_io_write_all_and_read_back() {
        let mut io = Io(Small(RefCell::new(Vec::new())));
        io.write_all(b"hello, xen").unwrap();
        assert!(io.read_ready().unwrap());
        let mut buf = [0u8; 32];
        let n = io.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello, xen");
        assert!(!io.read_ready().unwrap());
    }
}
