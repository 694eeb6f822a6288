//! The classic libpcap file format (what `tcpdump -w` writes and Wireshark
//! and `tshark -r` read): a 24-byte global header, then per packet a 16-byte
//! record header and the bytes. Microsecond timestamps, native byte order
//! (readers detect it from the magic number), link type Ethernet.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The magic number of microsecond-resolution pcap files.
#[doc(alias = "TCPDUMP_MAGIC")]
pub const MAGIC_MICROS: u32 = 0xa1b2_c3d4;
/// `LINKTYPE_ETHERNET`.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// Largest number of bytes kept per packet (`snaplen`); vifs carry at most
/// 65535-byte frames, so nothing is cut.
pub const SNAPLEN: u32 = 262_144;

/// Writes packets to a pcap file as they are captured. Each packet is one
/// `write` of header and bytes, so the file is complete after every packet
/// (a test may read it while the simulator still runs).
#[derive(Debug)]
pub struct PcapWriter {
    file: File,
    path: PathBuf,
    packets: u64,
    buf: Vec<u8>,
}

impl PcapWriter {
    /// Create (or truncate) `path` and write the global header.
    ///
    /// Errors: the file system's.
    pub fn create(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut file = File::create(&path)?;
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&MAGIC_MICROS.to_ne_bytes());
        h.extend_from_slice(&2u16.to_ne_bytes()); // version 2.4
        h.extend_from_slice(&4u16.to_ne_bytes());
        h.extend_from_slice(&0i32.to_ne_bytes()); // thiszone: UTC
        h.extend_from_slice(&0u32.to_ne_bytes()); // sigfigs
        h.extend_from_slice(&SNAPLEN.to_ne_bytes());
        h.extend_from_slice(&LINKTYPE_ETHERNET.to_ne_bytes());
        file.write_all(&h)?;
        Ok(PcapWriter {
            file,
            path,
            packets: 0,
            buf: Vec::new(),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Packets written so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Append one packet captured at `nanos` nanoseconds (simulated time).
    ///
    /// Errors: the file system's.
    pub fn write_packet(&mut self, nanos: u64, data: &[u8]) -> io::Result<()> {
        let caplen = data.len().min(SNAPLEN as usize);
        self.buf.clear();
        self.buf
            .extend_from_slice(&((nanos / 1_000_000_000) as u32).to_ne_bytes());
        self.buf
            .extend_from_slice(&(((nanos / 1000) % 1_000_000) as u32).to_ne_bytes());
        self.buf.extend_from_slice(&(caplen as u32).to_ne_bytes());
        self.buf
            .extend_from_slice(&(data.len() as u32).to_ne_bytes());
        self.buf.extend_from_slice(&data[..caplen]);
        self.file.write_all(&self.buf)?;
        self.packets += 1;
        Ok(())
    }
}

/// One packet read back from a pcap file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcapPacket {
    /// Timestamp in nanoseconds (microsecond resolution).
    pub nanos: u64,
    /// Length of the packet on the wire.
    pub orig_len: u32,
    /// The captured bytes.
    pub data: Vec<u8>,
}

/// Why a pcap file could not be read.
#[derive(Debug)]
pub enum PcapError {
    /// Reading failed.
    Io(io::Error),
    /// Not a microsecond pcap file of either byte order.
    BadMagic(u32),
    /// The header says another version or link type (the value).
    Unsupported(&'static str, u32),
    /// A record runs past the end of the file, or claims more than
    /// `snaplen` bytes.
    Truncated {
        /// Index of the bad record.
        record: usize,
    },
}

impl std::fmt::Display for PcapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PcapError::Io(e) => write!(f, "reading pcap: {e}"),
            PcapError::BadMagic(m) => write!(f, "not a pcap file (magic {m:#x})"),
            PcapError::Unsupported(what, v) => write!(f, "unsupported pcap {what} {v}"),
            PcapError::Truncated { record } => write!(f, "pcap record {record} is truncated"),
        }
    }
}

impl std::error::Error for PcapError {}

/// Read a whole pcap file written by [`PcapWriter`] (or any
/// microsecond-resolution Ethernet pcap), checking every header.
///
/// Errors: [`PcapError`].
pub fn read_pcap(path: impl AsRef<Path>) -> Result<Vec<PcapPacket>, PcapError> {
    let bytes = std::fs::read(path).map_err(PcapError::Io)?;
    parse_pcap(&bytes)
}

/// [`read_pcap`] on bytes in memory.
///
/// Errors: [`PcapError`].
pub fn parse_pcap(bytes: &[u8]) -> Result<Vec<PcapPacket>, PcapError> {
    if bytes.len() < 24 {
        return Err(PcapError::Truncated { record: 0 });
    }
    let magic = u32::from_le_bytes(bytes[0..4].try_into().unwrap_or_default());
    let le = match magic {
        MAGIC_MICROS => true,
        m if m.swap_bytes() == MAGIC_MICROS => false,
        m => return Err(PcapError::BadMagic(m)),
    };
    let u16_at = |o: usize| {
        let b = [bytes[o], bytes[o + 1]];
        if le {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        }
    };
    let u32_at = |o: usize| {
        let b = [bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]];
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    if (u16_at(4), u16_at(6)) != (2, 4) {
        return Err(PcapError::Unsupported("version", u32::from(u16_at(4))));
    }
    let snaplen = u32_at(16);
    if u32_at(20) != LINKTYPE_ETHERNET {
        return Err(PcapError::Unsupported("link type", u32_at(20)));
    }
    let mut out = Vec::new();
    let mut at = 24;
    while at < bytes.len() {
        let record = out.len();
        if at + 16 > bytes.len() {
            return Err(PcapError::Truncated { record });
        }
        let (sec, usec, incl, orig) = (u32_at(at), u32_at(at + 4), u32_at(at + 8), u32_at(at + 12));
        let incl_len = incl as usize;
        if incl > snaplen || incl > orig || usec >= 1_000_000 || at + 16 + incl_len > bytes.len() {
            return Err(PcapError::Truncated { record });
        }
        out.push(PcapPacket {
            nanos: u64::from(sec) * 1_000_000_000 + u64::from(usec) * 1000,
            orig_len: orig,
            data: bytes[at + 16..at + 16 + incl_len].to_vec(),
        });
        at += 16 + incl_len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_back() {
        let dir = std::env::temp_dir().join(format!("xenpal-pcap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.pcap");
        let mut w = PcapWriter::create(&path).unwrap();
        w.write_packet(1_500_000_000, &[1, 2, 3]).unwrap();
        w.write_packet(2_000_001_000, &[9; 100]).unwrap();
        let pkts = read_pcap(&path).unwrap();
        assert_eq!(pkts.len(), 2);
        assert_eq!(pkts[0].nanos, 1_500_000_000);
        assert_eq!(pkts[0].data, [1, 2, 3]);
        assert_eq!(pkts[1].nanos, 2_000_001_000);
        assert_eq!(pkts[1].orig_len, 100);
        let bytes = std::fs::read(&path).unwrap();
        assert!(parse_pcap(&bytes[..bytes.len() - 1]).is_err());
        assert!(parse_pcap(&[0; 24]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
