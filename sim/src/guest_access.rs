//! Reading a guest's hypercall arguments, as Xen does with
//! `copy_from_guest`/`copy_to_guest`: every structure read with a length
//! check (`EFAULT` if the buffer is missing, at the wrong argument or too
//! short), written back only into a buffer the guest passed for output.

use xen_pv::abi::Errno;
use xen_pv::hypercall::{ArgBuf, ArgData};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// A hypercall's outcome before encoding: a value or a Xen errno.
pub(crate) type HResult = Result<isize, Errno>;

/// A hypercall's arguments.
pub(crate) struct Args<'a> {
    pub raw: [u64; 5],
    buf: Option<ArgBuf<'a>>,
}

impl<'a> Args<'a> {
    pub(crate) fn new(raw: [u64; 5], buf: Option<ArgBuf<'a>>) -> Self {
        Args { raw, buf }
    }

    fn buf(&self, slot: usize) -> Result<&ArgBuf<'a>, Errno> {
        match &self.buf {
            Some(b) if b.slot == slot => Ok(b),
            _ => Err(Errno::EFAULT),
        }
    }

    /// The bytes passed at argument `slot`.
    pub(crate) fn bytes(&self, slot: usize) -> Result<&[u8], Errno> {
        Ok(self.buf(slot)?.data.bytes())
    }

    /// Read a `T` at byte `offset` of the buffer at `slot`.
    pub(crate) fn read_at<T: FromBytes>(&self, slot: usize, offset: usize) -> Result<T, Errno> {
        let bytes = self.bytes(slot)?;
        let tail = bytes.get(offset..).ok_or(Errno::EFAULT)?;
        T::read_from_prefix(tail)
            .map(|(v, _)| v)
            .map_err(|_| Errno::EFAULT)
    }

    /// Read a `T` at the start of the buffer at `slot`.
    pub(crate) fn read<T: FromBytes>(&self, slot: usize) -> Result<T, Errno> {
        self.read_at(slot, 0)
    }

    /// Write `v` back at byte `offset` of the buffer at `slot`.
    pub(crate) fn write_at<T: IntoBytes + Immutable>(
        &mut self,
        slot: usize,
        offset: usize,
        v: &T,
    ) -> Result<(), Errno> {
        match &mut self.buf {
            Some(ArgBuf {
                slot: s,
                data: ArgData::InOut(bytes),
                ..
            }) if *s == slot => {
                let src = v.as_bytes();
                let dst = bytes
                    .get_mut(offset..offset.checked_add(src.len()).ok_or(Errno::EFAULT)?)
                    .ok_or(Errno::EFAULT)?;
                dst.copy_from_slice(src);
                Ok(())
            }
            _ => Err(Errno::EFAULT),
        }
    }

    /// Write `v` back at the start of the buffer at `slot`.
    pub(crate) fn write<T: IntoBytes + Immutable>(
        &mut self,
        slot: usize,
        v: &T,
    ) -> Result<(), Errno> {
        self.write_at(slot, 0, v)
    }

    /// Where the guest handle stored at byte `at` of the buffer at `slot`
    /// points, as an offset into the same buffer.
    pub(crate) fn handle(&self, slot: usize, at: usize) -> Result<usize, Errno> {
        let b = self.buf(slot)?;
        b.handles
            .iter()
            .find(|h| h.at == at)
            .map(|h| h.target)
            .ok_or(Errno::EFAULT)
    }
}
