//! ELF64 executable → flat binary image (what `objcopy -O binary` does): the
//! bytes of every loadable segment, at their addresses relative to the
//! lowest one. `.bss` is not in the file; the Image header's `image_size`
//! tells the loader how much to reserve.

/// Convert an ELF64 little-endian executable to a flat image.
///
/// Errors: a message if the file is not such an executable or a segment
/// lies outside it.
pub fn to_flat(elf: &[u8]) -> Result<Vec<u8>, String> {
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
        if u32_at(p).ok_or("truncated program header")? != 1 {
            continue; // not PT_LOAD
        }
        let offset = u64_at(p + 8).ok_or("truncated program header")? as usize;
        let paddr = u64_at(p + 0x18).ok_or("truncated program header")?;
        let filesz = u64_at(p + 0x20).ok_or("truncated program header")? as usize;
        if filesz == 0 {
            continue;
        }
        let bytes = elf
            .get(offset..offset + filesz)
            .ok_or("segment lies outside the file")?;
        segs.push((paddr, bytes));
    }
    let base = segs
        .iter()
        .map(|s| s.0)
        .min()
        .ok_or("no loadable segment")?;
    let end = segs
        .iter()
        .map(|s| s.0 + s.1.len() as u64)
        .max()
        .unwrap_or(base);
    let mut out = vec![0u8; (end - base) as usize];
    for (paddr, bytes) in segs {
        let at = (paddr - base) as usize;
        out[at..at + bytes.len()].copy_from_slice(bytes);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_elf() {
        assert!(to_flat(b"MZ\0\0").is_err());
        assert!(to_flat(&[]).is_err());
    }
}
