//! ELF64 executables for the runner: a flat binary image for Arm (what
//! `objcopy -O binary` does) and a stripped ELF for x86 PV (what `strip`
//! does, minus the section table Xen does not need).

/// One program header: type, file offset, physical address, file and
/// memory size.
#[derive(Copy, Clone, Debug)]
struct Segment {
    kind: u32,
    offset: usize,
    addr: u64,
    filesz: usize,
    memsz: u64,
}

const PT_LOAD: u32 = 1;

/// The program headers of a 64-bit little-endian ELF file, each checked to
/// lie inside the file.
fn segments(elf: &[u8]) -> Result<Vec<Segment>, String> {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    };
    if elf.get(..4) != Some(b"\x7fELF") || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let phoff = u64_at(0x20).ok_or("truncated header")? as usize;
    let phentsize = usize::from(u16_at(0x36).ok_or("truncated header")?);
    let phnum = usize::from(u16_at(0x38).ok_or("truncated header")?);
    let mut segs = Vec::new();
    for i in 0..phnum {
        let p = phoff + i * phentsize;
        let field = |o: usize| u64_at(p + o).ok_or("truncated program header");
        let s = Segment {
            kind: u32_at(p).ok_or("truncated program header")?,
            offset: field(8)? as usize,
            addr: field(0x18)?,
            filesz: field(0x20)? as usize,
            memsz: field(0x28)?,
        };
        if s.offset
            .checked_add(s.filesz)
            .is_none_or(|end| end > elf.len())
        {
            return Err("segment lies outside the file".into());
        }
        segs.push(s);
    }
    Ok(segs)
}

/// Convert an ELF64 little-endian executable to a flat image: the bytes of
/// every loadable segment, at their addresses relative to the lowest one.
/// `.bss` is not in the file; the Image header's `image_size` tells the
/// loader how much to reserve.
///
/// Errors: a message if the file is not such an executable or a segment
/// lies outside it.
pub fn to_flat(elf: &[u8]) -> Result<Vec<u8>, String> {
    let segs: Vec<Segment> = segments(elf)?
        .into_iter()
        .filter(|s| s.kind == PT_LOAD && s.filesz > 0)
        .collect();
    let base = segs
        .iter()
        .map(|s| s.addr)
        .min()
        .ok_or("no loadable segment")?;
    let end = segs
        .iter()
        .map(|s| s.addr + s.filesz as u64)
        .max()
        .unwrap_or(base);
    let mut out = vec![0u8; (end - base) as usize];
    for s in segs {
        let at = (s.addr - base) as usize;
        out[at..at + s.filesz].copy_from_slice(&elf[s.offset..s.offset + s.filesz]);
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
    let segs = segments(elf)?;
    let loads = || segs.iter().filter(|s| s.kind == PT_LOAD);
    let lo = loads().map(|s| s.addr).min().ok_or("no loadable segment")?;
    let hi = loads().map(|s| s.addr + s.memsz).max().unwrap_or(lo);
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let phentsize = usize::from(u16::from_le_bytes([elf[0x36], elf[0x37]]));
    let headers_end = phoff + phentsize * segs.len();
    let end = segs
        .iter()
        .map(|s| s.offset + s.filesz)
        .chain([headers_end, 0x40])
        .max()
        .unwrap_or(0);
    let mut out = elf
        .get(..end)
        .ok_or("program headers lie outside the file")?
        .to_vec();
    out[0x28..0x30].fill(0); // e_shoff
    out[0x3a..0x40].fill(0); // e_shentsize, e_shnum, e_shstrndx
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
        e[..6].copy_from_slice(b"\x7fELF\x02\x01");
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
