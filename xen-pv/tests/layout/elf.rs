//! An object file's symbol table, read with the `object` crate: the machine
//! it was compiled for and the size of every symbol.

use object::LittleEndian as LE;
use object::elf::ELFMAG;
use object::read::elf::{ElfFile, FileHeader};
use object::{Object, ObjectSymbol, ObjectSymbolTable};
use std::collections::HashMap;

/// `e_machine` of x86_64 objects.
pub const EM_X86_64: u16 = object::elf::EM_X86_64;
/// `e_machine` of AArch64 objects.
pub const EM_AARCH64: u16 = object::elf::EM_AARCH64;
/// `e_machine` of 32-bit Arm objects.
pub const EM_ARM: u16 = object::elf::EM_ARM;

/// What we read from an object file.
pub struct ObjectSymbols {
    /// `e_machine`.
    pub machine: u16,
    /// Symbol name to `st_size`.
    pub sizes: HashMap<String, u64>,
}

/// Reads the symbol table of a relocatable little-endian ELF object, 64-bit
/// or (Arm32) 32-bit.
pub fn read_symbols(data: &[u8]) -> Result<ObjectSymbols, String> {
    if !data.starts_with(&ELFMAG) {
        return Err("not an ELF file".into());
    }
    match data.get(4) {
        Some(&object::elf::ELFCLASS64) => symbols(
            &ElfFile::<object::elf::FileHeader64<LE>>::parse(data)
                .map_err(|e| format!("not a little-endian ELF64 file: {e}"))?,
        ),
        Some(&object::elf::ELFCLASS32) => symbols(
            &ElfFile::<object::elf::FileHeader32<LE>>::parse(data)
                .map_err(|e| format!("not a little-endian ELF32 file: {e}"))?,
        ),
        _ => Err("ELF: unknown class".into()),
    }
}

fn symbols<H: FileHeader<Endian = LE>>(file: &ElfFile<'_, H>) -> Result<ObjectSymbols, String> {
    let table = file.symbol_table().ok_or("ELF: no symbol table")?;
    let mut sizes = HashMap::new();
    for symbol in table.symbols() {
        let name = symbol
            .name()
            .map_err(|e| format!("ELF: symbol {}: {e}", symbol.index().0))?;
        if !name.is_empty() {
            sizes.insert(name.to_owned(), symbol.size());
        }
    }
    Ok(ObjectSymbols {
        machine: file.elf_header().e_machine(LE),
        sizes,
    })
}
