//! The guest's side of a transfer: the caller's buffer, copied to and from
//! the connection's data pages, and the operations ("jobs") split into ring
//! requests.

use super::conn::{Conn, Page};
use crate::block_device::{BlockError, Operation};
use embedded_sdmmc::Block;
use hal::mem::{PAGE_SIZE, SharedMemory};
use xen_pv::Hypervisor;
use xen_pv::abi::io::{blkif_op, blkif_rsp};

/// A caller's buffer: bytes or `embedded_sdmmc` blocks, to read from (a
/// write's data) or to fill (a read's data). Its address needs no
/// alignment: data is copied.
pub(super) enum Buffer<'a> {
    /// A write's data.
    Bytes(&'a [u8]),
    /// A read's destination.
    BytesMut(&'a mut [u8]),
    /// A write's data, in 512-byte blocks.
    Blocks(&'a [Block]),
    /// A read's destination, in 512-byte blocks.
    BlocksMut(&'a mut [Block]),
}

impl Buffer<'_> {
    pub fn len(&self) -> usize {
        match self {
            Buffer::Bytes(b) => b.len(),
            Buffer::BytesMut(b) => b.len(),
            Buffer::Blocks(b) => b.len() * Block::LEN,
            Buffer::BlocksMut(b) => b.len() * Block::LEN,
        }
    }

    /// Copy `len` bytes at offset `at` into `page` from its start. For block
    /// buffers `at` and `len` are multiples of 512. Read destinations have
    /// nothing to give and copy nothing.
    fn copy_to_page<M: SharedMemory>(&self, at: usize, page: &M, len: usize) {
        match self {
            Buffer::Bytes(b) => page.write(0, &b[at..at + len]),
            Buffer::Blocks(b) => {
                for (k, block) in b[at / Block::LEN..(at + len) / Block::LEN]
                    .iter()
                    .enumerate()
                {
                    page.write(k * Block::LEN, &block.contents);
                }
            }
            Buffer::BytesMut(_) | Buffer::BlocksMut(_) => {}
        }
    }

    /// Copy `len` bytes from the start of `page` to offset `at`. Write
    /// sources are not written.
    fn copy_from_page<M: SharedMemory>(&mut self, at: usize, page: &M, len: usize) {
        match self {
            Buffer::BytesMut(b) => page.read(0, &mut b[at..at + len]),
            Buffer::BlocksMut(b) => {
                for (k, block) in b[at / Block::LEN..(at + len) / Block::LEN]
                    .iter_mut()
                    .enumerate()
                {
                    page.read(k * Block::LEN, &mut block.contents);
                }
            }
            Buffer::Bytes(_) | Buffer::Blocks(_) => {}
        }
    }
}

/// One ring request of a job: its id and the bytes of the job it covers.
pub(super) struct Part {
    pub id: u32,
    pub at: usize,
    pub len: usize,
}

/// An operation, split into ring requests as room allows.
pub(super) trait Job<H: Hypervisor> {
    /// Stage the next request if there is room and something left.
    fn next(&mut self, conn: &mut Conn<H>) -> Option<Part>;
    /// Whether every request has been staged.
    fn all_staged(&self) -> bool;
    /// Whether `conn` has room for this job's next request.
    fn has_room(&self, conn: &Conn<H>) -> bool;
    /// `part` finished with `status`: copy a read's data out.
    ///
    /// Errors: the status as a [`BlockError`].
    fn finish(&mut self, conn: &Conn<H>, part: &Part, status: i16) -> Result<(), BlockError>;
}

fn status_error(status: i16, what: Operation) -> Result<(), BlockError> {
    match status {
        blkif_rsp::OKAY => Ok(()),
        blkif_rsp::EOPNOTSUPP => Err(BlockError::Unsupported(what)),
        _ => Err(BlockError::Io(what)),
    }
}

/// A read or write of a whole buffer at a 512-byte sector.
pub(super) struct Transfer<'a> {
    op: u8,
    sector: u64,
    buf: Buffer<'a>,
    next: usize,
}

impl<'a> Transfer<'a> {
    /// A read into `buf` (a `BytesMut` or `BlocksMut` buffer) or a write
    /// from it, at 512-byte sector `sector`. The length is a multiple of
    /// the disk's sector size, checked by the caller.
    pub fn new(sector: u64, buf: Buffer<'a>) -> Self {
        let op = match buf {
            Buffer::Bytes(_) | Buffer::Blocks(_) => blkif_op::WRITE,
            Buffer::BytesMut(_) | Buffer::BlocksMut(_) => blkif_op::READ,
        };
        Transfer {
            op,
            sector,
            buf,
            next: 0,
        }
    }

    fn what(&self) -> Operation {
        if self.op == blkif_op::READ {
            Operation::Read
        } else {
            Operation::Write
        }
    }
}

impl<H: Hypervisor> Job<H> for Transfer<'_> {
    fn next(&mut self, conn: &mut Conn<H>) -> Option<Part> {
        let total = self.buf.len();
        if self.next >= total {
            return None;
        }
        let room = conn.room_for_pages();
        if room == 0 {
            return None;
        }
        let at = self.next;
        let len = (total - at).min(room * PAGE_SIZE);
        let buf = &self.buf;
        let id = conn.stage_rw(
            self.op,
            self.sector + (at / 512) as u64,
            len,
            |page: &Page<H>, i, bytes| buf.copy_to_page(at + i * PAGE_SIZE, page, bytes),
        )?;
        self.next += len;
        Some(Part { id, at, len })
    }

    fn all_staged(&self) -> bool {
        self.next >= self.buf.len()
    }

    fn has_room(&self, conn: &Conn<H>) -> bool {
        conn.room_for_pages() > 0
    }

    fn finish(&mut self, conn: &Conn<H>, part: &Part, status: i16) -> Result<(), BlockError> {
        status_error(status, self.what())?;
        if self.op == blkif_op::READ {
            for (i, page) in conn.pages_of(part.id).enumerate() {
                let len = (part.len - i * PAGE_SIZE).min(PAGE_SIZE);
                self.buf.copy_from_page(part.at + i * PAGE_SIZE, page, len);
            }
        }
        Ok(())
    }
}

/// A request without data: a cache flush, an empty barrier, a discard.
pub(super) enum Single {
    /// `BLKIF_OP_FLUSH_DISKCACHE` or `BLKIF_OP_WRITE_BARRIER`, no segments.
    Empty(u8),
    /// Discard 512-byte sectors: `(first, count)`.
    Discard(u64, u64),
}

/// A job of one request without data.
pub(super) struct SingleJob {
    what: Single,
    staged: bool,
}

impl SingleJob {
    pub fn new(what: Single) -> Self {
        SingleJob {
            what,
            staged: false,
        }
    }
}

impl<H: Hypervisor> Job<H> for SingleJob {
    fn next(&mut self, conn: &mut Conn<H>) -> Option<Part> {
        if self.staged || !conn.room_for_request() {
            return None;
        }
        let id = match self.what {
            Single::Empty(op) => conn.stage_empty(op)?,
            Single::Discard(sector, count) => conn.stage_discard(sector, count)?,
        };
        self.staged = true;
        Some(Part { id, at: 0, len: 0 })
    }

    fn all_staged(&self) -> bool {
        self.staged
    }

    fn has_room(&self, conn: &Conn<H>) -> bool {
        conn.room_for_request()
    }

    fn finish(&mut self, _: &Conn<H>, _: &Part, status: i16) -> Result<(), BlockError> {
        let what = match self.what {
            Single::Empty(_) => Operation::Flush,
            Single::Discard(..) => Operation::Discard,
        };
        status_error(status, what)
    }
}
