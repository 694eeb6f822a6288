//! Just enough of ELF64 (little-endian) to read an object file's symbol
//! table: the machine it was compiled for and the size of every symbol.

use std::collections::HashMap;

/// `e_machine` of x86_64 objects.
pub const EM_X86_64: u16 = 62;
/// `e_machine` of AArch64 objects.
pub const EM_AARCH64: u16 = 183;

const SHT_SYMTAB: u32 = 2;
const SHDR_SIZE: usize = 64;
const SYM_SIZE: usize = 24;

/// What we read from an object file.
pub struct ObjectSymbols {
    /// `e_machine`.
    pub machine: u16,
    /// Symbol name to `st_size`.
    pub sizes: HashMap<String, u64>,
}

fn bytes<const N: usize>(data: &[u8], at: usize) -> Result<[u8; N], String> {
    at.checked_add(N)
        .and_then(|end| data.get(at..end))
        .map(|s| s.try_into().expect("slice of length N"))
        .ok_or_else(|| format!("ELF: read of {N} bytes at {at:#x} is out of bounds"))
}

fn u16_at(data: &[u8], at: usize) -> Result<u16, String> {
    bytes(data, at).map(u16::from_le_bytes)
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, String> {
    bytes(data, at).map(u32::from_le_bytes)
}

fn u64_at(data: &[u8], at: usize) -> Result<usize, String> {
    let v = bytes(data, at).map(u64::from_le_bytes)?;
    usize::try_from(v).map_err(|_| format!("ELF: value {v:#x} at {at:#x} too large"))
}

struct Section {
    kind: u32,
    offset: usize,
    size: usize,
    link: usize,
}

fn section(data: &[u8], shoff: usize, index: usize) -> Result<Section, String> {
    let at = index
        .checked_mul(SHDR_SIZE)
        .and_then(|o| o.checked_add(shoff))
        .ok_or("ELF: section header offset overflows")?;
    Ok(Section {
        kind: u32_at(data, at + 4)?,
        offset: u64_at(data, at + 24)?,
        size: u64_at(data, at + 32)?,
        link: u32_at(data, at + 40)? as usize,
    })
}

fn c_string(data: &[u8], at: usize) -> Result<&str, String> {
    let tail = data
        .get(at..)
        .ok_or_else(|| format!("ELF: string at {at:#x} out of bounds"))?;
    let len = tail
        .iter()
        .position(|&b| b == 0)
        .ok_or("ELF: unterminated string")?;
    std::str::from_utf8(&tail[..len]).map_err(|e| format!("ELF: symbol name: {e}"))
}

/// Reads the symbol table of a relocatable ELF64 little-endian object.
pub fn read_symbols(data: &[u8]) -> Result<ObjectSymbols, String> {
    if data.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err("not an ELF file".into());
    }
    if data.get(4) != Some(&2) || data.get(5) != Some(&1) {
        return Err("not a little-endian ELF64 file".into());
    }
    let machine = u16_at(data, 18)?;
    let shoff = u64_at(data, 0x28)?;
    let shentsize = usize::from(u16_at(data, 0x3a)?);
    let shnum = usize::from(u16_at(data, 0x3c)?);
    if shentsize != SHDR_SIZE || shnum == 0 {
        return Err(format!(
            "ELF: unexpected section headers (entsize {shentsize}, count {shnum})"
        ));
    }
    let mut sizes = HashMap::new();
    let mut found = false;
    for index in 0..shnum {
        let symtab = section(data, shoff, index)?;
        if symtab.kind != SHT_SYMTAB {
            continue;
        }
        found = true;
        let strtab = section(data, shoff, symtab.link)?;
        let names = data
            .get(strtab.offset..strtab.offset.saturating_add(strtab.size))
            .ok_or("ELF: string table out of bounds")?;
        for sym in 0..symtab.size / SYM_SIZE {
            let at = symtab.offset + sym * SYM_SIZE;
            let name = c_string(names, u32_at(data, at)? as usize)?;
            if !name.is_empty() {
                sizes.insert(name.to_owned(), u64_at(data, at + 16)? as u64);
            }
        }
    }
    if !found {
        return Err("ELF: no symbol table".into());
    }
    Ok(ObjectSymbols { machine, sizes })
}
