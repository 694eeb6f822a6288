//! ELF64 executables for the runner, read with the `object` crate: the
//! architecture a guest was built for, a flat binary image for Arm (what
//! `objcopy -O binary` does) and a stripped ELF for x86 PV (what `strip`
//! does, minus the section table Xen does not need).

use object::LittleEndian as LE;
use object::elf::{
    ELFCLASS32, ELFMAG, EM_AARCH64, EM_ARM, EM_X86_64, FileHeader32, FileHeader64, PT_LOAD,
};
use object::read::elf::{FileHeader, ProgramHeader};
use object::{U16, U64};

type Header = FileHeader64<LE>;

/// One program header, checked to lie inside the file: type, physical
/// address, memory size, and its bytes in the file with their offset.
struct Segment<'a> {
    kind: u32,
    addr: u64,
    memsz: u64,
    offset: u64,
    data: &'a [u8],
}

/// The header of a 64-bit little-endian ELF file.
fn header(elf: &[u8]) -> Result<&Header, String> {
    if !elf.starts_with(&ELFMAG) {
        return Err("not an ELF file".into());
    }
    Header::parse(elf).map_err(|_| "not a 64-bit little-endian ELF file".into())
}

/// The header and program headers of a 64-bit little-endian ELF file,
/// each segment checked to lie inside the file.
fn segments(elf: &[u8]) -> Result<(&Header, Vec<Segment<'_>>), String> {
    let header = header(elf)?;
    let phdrs = header
        .program_headers(LE, elf)
        .map_err(|e| format!("program headers: {e}"))?;
    let segs = phdrs
        .iter()
        .map(|p| {
            Ok(Segment {
                kind: p.p_type(LE),
                addr: p.p_paddr(LE),
                memsz: p.p_memsz(LE),
                offset: p.p_offset(LE),
                data: p
                    .data(LE, elf)
                    .map_err(|()| "segment lies outside the file")?,
            })
        })
        .collect::<Result<_, String>>()?;
    Ok((header, segs))
}

/// The architecture of an ELF file, from its header: `aarch64` or
/// `x86_64`.
///
/// Errors: a message if it is not a 64-bit little-endian ELF of either.
pub fn arch(elf: &[u8]) -> Result<&'static str, String> {
    if elf.starts_with(&ELFMAG) && elf.get(4) == Some(&ELFCLASS32) {
        let h = FileHeader32::<LE>::parse(elf)
            .map_err(|_| "not a 32-bit little-endian ELF file".to_string())?;
        return match h.e_machine(LE) {
            EM_ARM => Ok("arm32"),
            m => Err(format!(
                "a 32-bit ELF file for machine {m}, not arm32 ({EM_ARM})"
            )),
        };
    }
    match header(elf)?.e_machine(LE) {
        EM_AARCH64 => Ok("aarch64"),
        EM_X86_64 => Ok("x86_64"),
        m => Err(format!(
            "an ELF file for machine {m}, not aarch64 ({EM_AARCH64}) or x86_64 ({EM_X86_64})"
        )),
    }
}

/// A 32-bit little-endian ELF executable (32-bit Arm) as a flat image, as
/// [`to_flat`] makes one of a 64-bit one: for a zImage, whose header the
/// image carries in its first bytes.
///
/// Errors: a message if the file is not such an executable or a segment
/// lies outside it.
pub fn to_flat32(elf: &[u8]) -> Result<Vec<u8>, String> {
    let h = FileHeader32::<LE>::parse(elf)
        .map_err(|_| "not a 32-bit little-endian ELF file".to_string())?;
    let phdrs = h
        .program_headers(LE, elf)
        .map_err(|e| format!("program headers: {e}"))?;
    let mut segs = Vec::new();
    for p in phdrs.iter().filter(|p| p.p_type(LE) == PT_LOAD) {
        let data = p
            .data(LE, elf)
            .map_err(|()| "segment lies outside the file".to_string())?;
        if !data.is_empty() {
            segs.push((u64::from(p.p_paddr(LE)), data));
        }
    }
    let base = segs
        .iter()
        .map(|s| s.0)
        .min()
        .ok_or("no loadable segment")?;
    let top = segs
        .iter()
        .map(|(a, d)| a + d.len() as u64)
        .max()
        .unwrap_or(base);
    let mut out = vec![0u8; usize::try_from(top - base).map_err(|_| "image too large")?];
    for (a, d) in segs {
        let at = (a - base) as usize;
        out[at..at + d.len()].copy_from_slice(d);
    }
    Ok(out)
}

/// The end address of a segment's bytes (`file` true) or of its memory.
fn end(s: &Segment<'_>, file: bool) -> Result<u64, String> {
    let len = if file { s.data.len() as u64 } else { s.memsz };
    s.addr
        .checked_add(len)
        .ok_or_else(|| "segment address overflows".into())
}

/// Convert an ELF64 little-endian executable to a flat image: the bytes of
/// every loadable segment, at their addresses relative to the lowest one.
/// `.bss` is not in the file; the Image header's `image_size` tells the
/// loader how much to reserve.
///
/// Errors: a message if the file is not such an executable or a segment
/// lies outside it.
pub fn to_flat(elf: &[u8]) -> Result<Vec<u8>, String> {
    let (_, segs) = segments(elf)?;
    let segs: Vec<Segment<'_>> = segs
        .into_iter()
        .filter(|s| s.kind == PT_LOAD && !s.data.is_empty())
        .collect();
    let base = segs
        .iter()
        .map(|s| s.addr)
        .min()
        .ok_or("no loadable segment")?;
    let mut top = base;
    for s in &segs {
        top = top.max(end(s, true)?);
    }
    let len = usize::try_from(top - base).map_err(|_| "image too large")?;
    let mut out = vec![0u8; len];
    for s in segs {
        let at = (s.addr - base) as usize;
        out[at..at + s.data.len()].copy_from_slice(s.data);
    }
    Ok(out)
}

/// Strip an ELF64 executable down to what a loader reads: the header, the
/// program headers and the segments' bytes (debug info, symbols and the
/// section table go). Returns the stripped file and the memory the loaded
/// segments span (with `.bss`).
///
/// Errors: a message if the file is not such an executable, a segment lies
/// outside it, or it has no loadable segment.
pub fn strip(elf: &[u8]) -> Result<(Vec<u8>, u64), String> {
    let (header, segs) = segments(elf)?;
    let loads = || segs.iter().filter(|s| s.kind == PT_LOAD);
    let lo = loads().map(|s| s.addr).min().ok_or("no loadable segment")?;
    let mut hi = lo;
    for s in loads() {
        hi = hi.max(end(s, false)?);
    }
    // `segments` checked that the program headers lie inside the file.
    let headers_end = header.e_phoff(LE) + u64::from(header.e_phentsize(LE)) * segs.len() as u64;
    let end = segs
        .iter()
        .map(|s| s.offset + s.data.len() as u64)
        .chain([headers_end, size_of::<Header>() as u64])
        .max()
        .unwrap_or(0);
    let mut out = usize::try_from(end)
        .ok()
        .and_then(|end| elf.get(..end))
        .ok_or("program headers lie outside the file")?
        .to_vec();
    let mut stripped = *header;
    stripped.e_shoff = U64::new(LE, 0);
    stripped.e_shentsize = U16::new(LE, 0);
    stripped.e_shnum = U16::new(LE, 0);
    stripped.e_shstrndx = U16::new(LE, 0);
    out[..size_of::<Header>()].copy_from_slice(object::bytes_of(&stripped));
    Ok((out, hi - lo))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_elf() {
        assert!(to_flat(b"MZ\0\0").is_err());
        assert!(to_flat(&[]).is_err());
        assert!(strip(&[]).is_err());
    }

    /// A tiny ELF: one PT_LOAD (16 bytes at 0x1000, 0x2000 in memory) and a
    /// PT_NOTE, followed by 100 bytes of "debug info".
    fn sample() -> Vec<u8> {
        let mut e = vec![0u8; 0x40 + 2 * 56];
        e[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
        e[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        e[0x28..0x30].copy_from_slice(&0x1234u64.to_le_bytes());
        e[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        e[0x38..0x3a].copy_from_slice(&2u16.to_le_bytes());
        e[0x3c..0x3e].copy_from_slice(&9u16.to_le_bytes());
        let ph = |e: &mut Vec<u8>, i: usize, kind: u32, off: u64, filesz: u64, memsz: u64| {
            let p = 0x40 + i * 56;
            e[p..p + 4].copy_from_slice(&kind.to_le_bytes());
            e[p + 8..p + 16].copy_from_slice(&off.to_le_bytes());
            e[p + 0x10..p + 0x18].copy_from_slice(&0x1000u64.to_le_bytes());
            e[p + 0x18..p + 0x20].copy_from_slice(&0x1000u64.to_le_bytes());
            e[p + 0x20..p + 0x28].copy_from_slice(&filesz.to_le_bytes());
            e[p + 0x28..p + 0x30].copy_from_slice(&memsz.to_le_bytes());
        };
        let at = e.len() as u64;
        ph(&mut e, 0, PT_LOAD, at, 16, 0x2000);
        ph(&mut e, 1, 4, at + 8, 8, 8);
        e.extend((0..16).map(|i| i as u8));
        e.extend([0xdd; 100]);
        e
    }

    #[test]
    fn strip_keeps_segments_and_drops_the_rest() {
        let e = sample();
        let (s, mem) = strip(&e).unwrap();
        assert_eq!(s.len(), e.len() - 100);
        assert_eq!(mem, 0x2000);
        assert_eq!(&s[..0x28], &e[..0x28]);
        assert_eq!(&s[0x28..0x30], &[0; 8], "no section table");
        assert_eq!(&s[0x3a..0x40], &[0; 6]);
        assert_eq!(to_flat(&s).unwrap(), (0..16).collect::<Vec<u8>>());
        // A segment running past the end of the file is an error.
        let mut bad = e.clone();
        bad[0x40 + 0x20..0x40 + 0x28].copy_from_slice(&10_000u64.to_le_bytes());
        assert!(strip(&bad).is_err());
        assert!(to_flat(&bad).is_err());
    }
}
