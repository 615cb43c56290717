//! Just enough of ELF32 (little-endian, as the thumb targets write it) to
//! size a firmware image: section headers and the symbol table.
//!
//! Layout used (System V ABI): the file header has `e_shoff` at 0x20 (u32),
//! `e_shentsize` at 0x2E, `e_shnum` at 0x30 and `e_shstrndx` at 0x32 (u16);
//! a section header (40 bytes) has `sh_name`, `sh_type`, `sh_flags`,
//! `sh_addr`, `sh_offset`, `sh_size`, `sh_link`, ... as u32s; a symbol
//! (16 bytes) has `st_name`, `st_value`, `st_size` (u32), `st_info` (u8),
//! `st_other` (u8), `st_shndx` (u16).

/// A section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Name (`.text`, ...).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Occupies memory at run time (`SHF_ALLOC`).
    pub alloc: bool,
}

/// A symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbol {
    /// Name, mangled.
    pub name: String,
    /// Address (functions: with the Thumb bit).
    pub value: u64,
    /// Size in bytes.
    pub size: u64,
    /// `STT_FUNC`.
    pub func: bool,
}

/// Sections and symbols of an ELF file.
#[derive(Debug, Clone, Default)]
pub struct Elf {
    /// Sections, in file order.
    pub sections: Vec<Section>,
    /// Symbols of `.symtab`.
    pub symbols: Vec<Symbol>,
}

const SHF_ALLOC: u32 = 2;
const SHT_SYMTAB: u32 = 2;
const STT_FUNC: u8 = 2;

fn u16_at(b: &[u8], at: usize) -> Result<u32, String> {
    b.get(at..at + 2)
        .map(|s| u32::from(u16::from_le_bytes([s[0], s[1]])))
        .ok_or_else(|| format!("ELF truncated at {at}"))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, String> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| format!("ELF truncated at {at}"))
}

/// The NUL-terminated string at `at` of string table `table`.
fn string(table: &[u8], at: usize) -> String {
    let tail = table.get(at..).unwrap_or(&[]);
    let end = tail.iter().position(|&c| c == 0).unwrap_or(tail.len());
    String::from_utf8_lossy(&tail[..end]).into_owned()
}

impl Elf {
    /// Parse `b`, which must be a 32-bit little-endian ELF.
    pub fn parse(b: &[u8]) -> Result<Elf, String> {
        if b.get(..4) != Some(b"\x7fELF".as_slice()) || b.get(4) != Some(&1) || b.get(5) != Some(&1)
        {
            return Err("not a 32-bit little-endian ELF file".into());
        }
        let shoff = u32_at(b, 0x20)? as usize;
        let shentsize = u16_at(b, 0x2E)? as usize;
        let shnum = u16_at(b, 0x30)? as usize;
        let shstrndx = u16_at(b, 0x32)? as usize;
        if shentsize < 40 {
            return Err(format!("section header size {shentsize}"));
        }
        // (name offset, type, flags, offset, size, link, entsize)
        let mut raw = Vec::with_capacity(shnum);
        for i in 0..shnum {
            let h = shoff + i * shentsize;
            raw.push((
                u32_at(b, h)? as usize,
                u32_at(b, h + 4)?,
                u32_at(b, h + 8)?,
                u32_at(b, h + 16)? as usize,
                u32_at(b, h + 20)? as usize,
                u32_at(b, h + 24)? as usize,
                u32_at(b, h + 36)? as usize,
            ));
        }
        let table = |i: usize| -> &[u8] {
            raw.get(i)
                .and_then(|&(_, _, _, off, size, _, _)| b.get(off..off + size))
                .unwrap_or(&[])
        };
        let names = table(shstrndx);
        let mut elf = Elf::default();
        for &(name, kind, flags, off, size, link, entsize) in &raw {
            elf.sections.push(Section {
                name: string(names, name),
                size: size as u64,
                alloc: flags & SHF_ALLOC != 0,
            });
            if kind == SHT_SYMTAB {
                let strings = table(link);
                let entsize = entsize.max(16);
                let data = b.get(off..off + size).ok_or("symbol table out of bounds")?;
                for s in data.chunks_exact(entsize) {
                    elf.symbols.push(Symbol {
                        name: string(strings, u32_at(s, 0)? as usize),
                        value: u64::from(u32_at(s, 4)?),
                        size: u64::from(u32_at(s, 8)?),
                        func: s[12] & 0xF == STT_FUNC,
                    });
                }
            }
        }
        Ok(elf)
    }

    /// Size of the section called `name` (0 if absent).
    pub fn section(&self, name: &str) -> u64 {
        self.sections
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.size)
            .sum()
    }

    /// Total size of the symbols `pred` accepts, each address counted once
    /// (aliases share one).
    pub fn symbols_sized(&self, pred: impl Fn(&Symbol) -> bool) -> u64 {
        let mut seen = std::collections::BTreeSet::new();
        self.symbols
            .iter()
            .filter(|s| pred(s) && seen.insert((s.value, s.size)))
            .map(|s| s.size)
            .sum()
    }
}

/// The path components of a legacy-mangled Rust symbol
/// (`_ZN8normcore6engine3run17h0123456789abcdefE` → `normcore`, `engine`,
/// `run`, `h0123456789abcdef`); empty for other symbols.
pub fn path_of(mangled: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let Some(mut rest) = mangled.strip_prefix("_ZN") else {
        return out;
    };
    loop {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let Ok(len) = rest[..digits].parse::<usize>() else {
            break;
        };
        let Some(part) = rest.get(digits..digits + len) else {
            break;
        };
        out.push(part);
        rest = &rest[digits + len..];
    }
    out
}

/// The parts of normcore's code in an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// `normcore::model`: `Model::parse`, the layer decoder, the CRC.
    Parser,
    /// `normcore::engine`: the dispatch and the arena plan.
    Engine,
    /// Every other module: the kernels and the layer math they use.
    Kernels,
    /// `normcore::adapt`: on-device adaptation (the overlay, refolds,
    /// re-estimation, statistics, the flash store); only `finetune` has it.
    Adapt,
    /// `defmt::Format` impls of normcore's types (its errors, for logs).
    Defmt,
}

/// Which part of normcore the function `mangled` is, if it is normcore's:
/// a path in the crate by its module (`model`, `engine`, `adapt`, the rest), a
/// trait impl on one of its types (`<normcore::model::ModelError as
/// defmt::Format>::_format_data`, mangled `_$LT$normcore..model..` ...) as
/// [`Part::Defmt`] for defmt's trait, else by the type's module.
pub fn normcore_part(mangled: &str) -> Option<Part> {
    let path = path_of(mangled);
    let first = *path.first()?;
    let module = if first == "normcore" {
        *path.get(1)?
    } else {
        let ty = first.strip_prefix("_$LT$normcore..")?;
        if first.contains("$u20$as$u20$defmt..") {
            return Some(Part::Defmt);
        }
        ty.split("..").next()?
    };
    Some(match module {
        "model" => Part::Parser,
        "engine" => Part::Engine,
        "adapt" => Part::Adapt,
        _ => Part::Kernels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_legacy_symbols() {
        assert_eq!(
            path_of("_ZN8normcore6engine6Engine3run17h0123456789abcdefE"),
            ["normcore", "engine", "Engine", "run", "h0123456789abcdef"]
        );
        assert!(path_of("main").is_empty());
    }

    #[test]
    fn normcore_parts() {
        let part = |s: &str| normcore_part(s);
        assert_eq!(
            part("_ZN8normcore5model5parse40_$LT$impl$u20$normcore..model..Model$GT$12decode_layer17hc228e244c719496dE"),
            Some(Part::Parser)
        );
        assert_eq!(
            part("_ZN8normcore6engine6run_i817hf7fc5b67bb533f7bE"),
            Some(Part::Engine)
        );
        assert_eq!(
            part("_ZN8normcore7kernels4int811conv_blocks17haedbe6fae5ab00a4E"),
            Some(Part::Kernels)
        );
        assert_eq!(
            part("_ZN76_$LT$normcore..model..error..ModelError$u20$as$u20$defmt..traits..Format$GT$12_format_data17h6e278279882f7b3bE"),
            Some(Part::Defmt)
        );
        assert_eq!(
            part("_ZN68_$LT$normcore..engine..Event$u20$as$u20$core..fmt..Debug$GT$3fmt17h0123456789abcdefE"),
            Some(Part::Engine)
        );
        assert_eq!(
            part("_ZN8normcore5adapt6restat6Restat7observe17h0123456789abcdefE"),
            Some(Part::Adapt)
        );
        assert_eq!(
            part("_ZN8normcore5adapt5store16Store$LT$F$GT$4save17h0123456789abcdefE"),
            Some(Part::Adapt)
        );
        assert_eq!(
            part("_ZN17normcore_firmware4cost4ticks17h0123456789abcdefE"),
            None
        );
        assert_eq!(part("_ZN4core3fmt5write17h0123456789abcdefE"), None);
        assert_eq!(part("memcpy"), None);
    }

    #[test]
    fn rejects_non_elf() {
        assert!(Elf::parse(b"not an elf file at all").is_err());
    }

    #[test]
    fn parses_a_minimal_elf32() {
        // A minimal ELF32 with one section header (the null one) and no
        // symbols: 52-byte header, section headers right after it.
        let mut b = vec![0u8; 52 + 40];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 1;
        b[5] = 1;
        b[0x20..0x24].copy_from_slice(&52u32.to_le_bytes());
        b[0x2E..0x30].copy_from_slice(&40u16.to_le_bytes());
        b[0x30..0x32].copy_from_slice(&1u16.to_le_bytes());
        let elf = Elf::parse(&b).unwrap();
        assert_eq!(elf.sections.len(), 1);
        assert!(elf.symbols.is_empty());
        assert_eq!(elf.section(".text"), 0);
    }
}
