//! The load plan of a static x86-64 Linux executable: which bytes go to which user addresses with
//! which protection, where execution starts and where the program headers land (for `AT_PHDR`).
//!
//! Two kinds are accepted, as Linux's `load_elf_binary` runs them without an interpreter:
//! - `ET_EXEC`: linked at fixed addresses, loaded where it says (load bias 0);
//! - static-PIE: `ET_DYN` without `PT_INTERP`, moved as a whole by a load bias so its lowest page
//!   lands at the caller's chosen base; the program relocates itself (musl's `rcrt1.o`, glibc's
//!   `_dl_relocate_static_pie`).
//!
//! Parsing uses the `object` crate's ELF reader: every field access is bounds-checked, it reads in
//! place without copying, it is fuzzed upstream and it is the reader the standard library's own
//! backtraces use; `goblin` and `xmas-elf` would also do, but `object` is the best kept of the three.
//! This module adds what a loader must refuse on top of a well-formed file: a dynamic interpreter,
//! another machine, overlapping segments, addresses outside the user half, absurd sizes. Every refusal
//! is an [`ElfError`]; nothing here panics on any input (the property tests feed it mutated files).
//!
//! Neighbour: [`crate::stack`] takes the plan's entry and program-header address for the auxv.

use alloc::vec::Vec;

use object::{
    LittleEndian as LE,
    elf,
    read::elf::{FileHeader, ProgramHeader},
};

use crate::{PAGE_SIZE, USER_TOP};

/// Lowest address a segment may occupy: Linux's default `vm.mmap_min_addr` (64 KiB), so a null
/// pointer dereference in user space always faults.
pub const MIN_USER_ADDR: u64 = 0x1_0000;

/// Most bytes an image may span (lowest to highest page of its segments): 1 GiB, far above any static
/// program, low enough that a forged header cannot make the loader reserve the whole address space.
pub const MAX_IMAGE_SPAN: u64 = 1 << 30;

/// Most `PT_LOAD` segments accepted (Linux programs have 2 to 5).
pub const MAX_LOAD_SEGMENTS: usize = 16;

/// Why an image cannot be loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// Not an ELF file, or its header or program headers lie outside the file (which, in words).
    Malformed(&'static str),
    /// Not a 64-bit little-endian file.
    WrongClass,
    /// Built for another machine than x86-64.
    WrongMachine(u16),
    /// Neither `ET_EXEC` nor `ET_DYN` (a relocatable object or a core file).
    NotExecutable(u16),
    /// Asks for a dynamic linker (`PT_INTERP`): only static programs run here.
    NeedsInterpreter,
    /// No `PT_LOAD` segment, or more than [`MAX_LOAD_SEGMENTS`].
    BadSegmentCount(usize),
    /// A segment's file part is larger than its memory part, or lies beyond the end of the file.
    BadSegment { index: usize },
    /// A segment's file offset and address disagree modulo the page size, so it could not be mapped
    /// from the file (Linux refuses these too).
    Misaligned { index: usize },
    /// Two segments cover the same bytes.
    Overlap { first: usize, second: usize },
    /// A segment (after the load bias) reaches below [`MIN_USER_ADDR`] or above [`USER_TOP`].
    OutsideUser { index: usize },
    /// The segments span more than [`MAX_IMAGE_SPAN`].
    TooLarge,
    /// The entry point is not inside an executable segment.
    BadEntry(u64),
    /// The program headers are not inside any segment, so `AT_PHDR` would point at nothing.
    PhdrNotLoaded,
}

/// Access rights of a segment, as `PF_R`/`PF_W`/`PF_X` give them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentProt {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
}

/// One `PT_LOAD` segment, at its final (biased) address.
///
/// The loader maps `[vaddr, vaddr + mem_size)` (page-rounded outwards), copies `file_size` bytes from
/// `file_offset` to `vaddr` and leaves the rest zero. Two segments may share a boundary page (their
/// bytes never overlap); that page then gets both segments' rights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub vaddr: u64,
    pub mem_size: u64,
    pub file_offset: u64,
    pub file_size: u64,
    pub prot: SegmentProt,
}

impl Segment {
    /// First page of the segment.
    pub fn page_start(&self) -> u64 {
        self.vaddr & !(PAGE_SIZE - 1)
    }

    /// End of its last page (exclusive).
    pub fn page_end(&self) -> u64 {
        // Cannot overflow: the plan checked vaddr + mem_size <= USER_TOP.
        (self.vaddr + self.mem_size).next_multiple_of(PAGE_SIZE)
    }
}

/// What kind of executable the plan is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageKind {
    /// `ET_EXEC`, at its link addresses.
    Fixed,
    /// Static-PIE, moved by the load bias.
    StaticPie,
}

/// Everything the loader and the initial stack need from an executable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadPlan {
    pub kind: ImageKind,
    /// Added to every link address (0 for [`ImageKind::Fixed`]).
    pub load_bias: u64,
    /// Segments sorted by address, biased.
    pub segments: Vec<Segment>,
    /// Entry point, biased (`AT_ENTRY` and the first user RIP).
    pub entry: u64,
    /// Where the program headers are in user memory (`AT_PHDR`).
    pub phdr_addr: u64,
    /// `AT_PHNUM`.
    pub phnum: u16,
    /// `AT_PHENT`.
    pub phent: u16,
    /// `PT_GNU_STACK` asked for an executable stack (absent: not executable, as on Linux x86-64).
    pub exec_stack: bool,
}

impl LoadPlan {
    /// The first page above the image: where `brk` starts.
    pub fn image_end(&self) -> u64 {
        self.segments.iter().map(Segment::page_end).max().unwrap_or(0)
    }
}

/// Read the load plan of `image`. A static-PIE is placed so that its lowest page is at `pie_base`
/// (page-aligned; the caller picks it, randomised or not).
pub fn plan(image: &[u8], pie_base: u64) -> Result<LoadPlan, ElfError> {
    let header = elf::FileHeader64::<LE>::parse(image).map_err(|_| ElfError::Malformed("no ELF64 header"))?;
    if !header.is_class_64() || !header.is_little_endian() {
        return Err(ElfError::WrongClass);
    }
    let endian = LE;
    let machine = header.e_machine(endian);
    if machine != elf::EM_X86_64 {
        return Err(ElfError::WrongMachine(machine.0));
    }
    let kind = match header.e_type(endian) {
        elf::ET_EXEC => ImageKind::Fixed,
        elf::ET_DYN => ImageKind::StaticPie,
        other => return Err(ElfError::NotExecutable(other.0)),
    };
    let phdrs = header.program_headers(endian, image).map_err(|_| ElfError::Malformed("program headers outside the file"))?;

    let mut raw = Vec::new();
    let mut phdr_link: Option<u64> = None;
    let mut exec_stack = false;
    for ph in phdrs {
        match ph.p_type(endian) {
            elf::PT_INTERP => return Err(ElfError::NeedsInterpreter),
            elf::PT_PHDR => phdr_link = Some(ph.p_vaddr(endian)),
            elf::PT_GNU_STACK => exec_stack = ph.p_flags(endian).0 & elf::PF_X.0 != 0,
            elf::PT_LOAD => {
                if raw.len() == MAX_LOAD_SEGMENTS {
                    return Err(ElfError::BadSegmentCount(phdrs.len()));
                }
                let flags = ph.p_flags(endian).0;
                raw.push(Segment {
                    vaddr: ph.p_vaddr(endian),
                    mem_size: ph.p_memsz(endian),
                    file_offset: ph.p_offset(endian),
                    file_size: ph.p_filesz(endian),
                    prot: SegmentProt {
                        read: flags & elf::PF_R.0 != 0,
                        write: flags & elf::PF_W.0 != 0,
                        exec: flags & elf::PF_X.0 != 0,
                    },
                });
            }
            _ => {}
        }
    }
    if raw.is_empty() {
        return Err(ElfError::BadSegmentCount(0));
    }

    // Check each segment at its link address first, so the bias arithmetic below cannot overflow.
    let file_len = image.len() as u64;
    for (index, s) in raw.iter().enumerate() {
        let file_end = s.file_offset.checked_add(s.file_size);
        if s.file_size > s.mem_size || file_end.is_none_or(|end| end > file_len) {
            return Err(ElfError::BadSegment { index });
        }
        if s.vaddr % PAGE_SIZE != s.file_offset % PAGE_SIZE {
            return Err(ElfError::Misaligned { index });
        }
        if s.vaddr.checked_add(s.mem_size).is_none_or(|end| end > USER_TOP) {
            return Err(ElfError::OutsideUser { index });
        }
    }

    let link_low = raw.iter().map(Segment::page_start).min().unwrap_or(0);
    let link_high = raw.iter().map(Segment::page_end).max().unwrap_or(0);
    if link_high - link_low > MAX_IMAGE_SPAN {
        return Err(ElfError::TooLarge);
    }
    let load_bias = match kind {
        ImageKind::Fixed => 0,
        ImageKind::StaticPie => {
            if !pie_base.is_multiple_of(PAGE_SIZE) {
                return Err(ElfError::OutsideUser { index: 0 });
            }
            pie_base.wrapping_sub(link_low)
        }
    };
    // Biased bounds: the whole image must sit in [MIN_USER_ADDR, USER_TOP).
    let low = link_low.wrapping_add(load_bias);
    let high = low.checked_add(link_high - link_low).ok_or(ElfError::OutsideUser { index: 0 })?;
    if low < MIN_USER_ADDR || high > USER_TOP {
        let index = raw.iter().position(|s| s.page_start() == link_low).unwrap_or(0);
        return Err(ElfError::OutsideUser { index });
    }

    let mut order: Vec<usize> = (0..raw.len()).collect();
    order.sort_by_key(|&i| raw[i].vaddr);
    for pair in order.windows(2) {
        let (a, b) = (&raw[pair[0]], &raw[pair[1]]);
        if a.vaddr + a.mem_size > b.vaddr {
            return Err(ElfError::Overlap { first: pair[0], second: pair[1] });
        }
    }
    let segments: Vec<Segment> = order
        .iter()
        .map(|&i| Segment { vaddr: raw[i].vaddr.wrapping_add(load_bias), ..raw[i] })
        .collect();

    let entry = header.e_entry(endian).wrapping_add(load_bias);
    if !segments.iter().any(|s| s.prot.exec && entry >= s.vaddr && entry < s.vaddr + s.mem_size) {
        return Err(ElfError::BadEntry(entry));
    }

    // AT_PHDR: PT_PHDR when present, else the segment whose file bytes hold the headers (Linux does
    // the same in load_elf_binary).
    let phnum = phdrs.len();
    let phent = header.e_phentsize(endian);
    let phoff = header.e_phoff(endian);
    let ph_bytes = phnum as u64 * u64::from(phent);
    let phdr_addr = match phdr_link {
        Some(link) => link.wrapping_add(load_bias),
        None => segments
            .iter()
            .find(|s| phoff >= s.file_offset && phoff + ph_bytes <= s.file_offset + s.file_size)
            .map(|s| s.vaddr + (phoff - s.file_offset))
            .ok_or(ElfError::PhdrNotLoaded)?,
    };
    if !segments.iter().any(|s| phdr_addr >= s.vaddr && phdr_addr.saturating_add(ph_bytes) <= s.vaddr + s.mem_size) {
        return Err(ElfError::PhdrNotLoaded);
    }

    Ok(LoadPlan {
        kind,
        load_bias,
        segments,
        entry,
        phdr_addr,
        phnum: phnum as u16,
        phent,
        exec_stack,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use alloc::{vec, vec::Vec};

    use proptest::prelude::*;

    use super::*;

    /// A program header as the test images declare it.
    #[derive(Clone, Copy)]
    pub struct Ph {
        pub ty: u32,
        pub flags: u32,
        pub offset: u64,
        pub vaddr: u64,
        pub filesz: u64,
        pub memsz: u64,
    }

    pub const EHDR: usize = 64;
    pub const PHENT: usize = 56;

    /// A minimal ELF64 image: header, program headers right after it, then `body` bytes.
    pub fn image(e_type: u16, machine: u16, entry: u64, phs: &[Ph], total_len: usize) -> Vec<u8> {
        let mut v = vec![0u8; total_len.max(EHDR + PHENT * phs.len())];
        v[..4].copy_from_slice(b"\x7fELF");
        v[4] = 2; // ELFCLASS64
        v[5] = 1; // little endian
        v[6] = 1; // EV_CURRENT
        v[16..18].copy_from_slice(&e_type.to_le_bytes());
        v[18..20].copy_from_slice(&machine.to_le_bytes());
        v[20..24].copy_from_slice(&1u32.to_le_bytes());
        v[24..32].copy_from_slice(&entry.to_le_bytes());
        v[32..40].copy_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
        v[52..54].copy_from_slice(&(EHDR as u16).to_le_bytes());
        v[54..56].copy_from_slice(&(PHENT as u16).to_le_bytes());
        v[56..58].copy_from_slice(&(phs.len() as u16).to_le_bytes());
        for (i, p) in phs.iter().enumerate() {
            let o = EHDR + i * PHENT;
            v[o..o + 4].copy_from_slice(&p.ty.to_le_bytes());
            v[o + 4..o + 8].copy_from_slice(&p.flags.to_le_bytes());
            v[o + 8..o + 16].copy_from_slice(&p.offset.to_le_bytes());
            v[o + 16..o + 24].copy_from_slice(&p.vaddr.to_le_bytes());
            v[o + 24..o + 32].copy_from_slice(&p.vaddr.to_le_bytes());
            v[o + 32..o + 40].copy_from_slice(&p.filesz.to_le_bytes());
            v[o + 40..o + 48].copy_from_slice(&p.memsz.to_le_bytes());
            v[o + 48..o + 56].copy_from_slice(&0x1000u64.to_le_bytes());
        }
        v
    }

    const R: u32 = 4;
    const W: u32 = 2;
    const X: u32 = 1;

    /// The shape of a small static program: a read-only first segment holding the headers, code,
    /// and data with bss.
    pub fn typical(e_type: u16, base: u64) -> Vec<u8> {
        let phs = [
            Ph { ty: 1, flags: R, offset: 0, vaddr: base, filesz: 0x200, memsz: 0x200 },
            Ph { ty: 1, flags: R | X, offset: 0x1000, vaddr: base + 0x1000, filesz: 0x800, memsz: 0x800 },
            Ph { ty: 1, flags: R | W, offset: 0x2000, vaddr: base + 0x2000, filesz: 0x100, memsz: 0x3000 },
            Ph { ty: 0x6474_e551, flags: R | W, offset: 0, vaddr: 0, filesz: 0, memsz: 0 },
        ];
        image(e_type, 62, base + 0x1010, &phs, 0x2100)
    }

    #[test]
    fn fixed_executable_loads_at_link_addresses() {
        let img = typical(2, 0x40_0000);
        let p = plan(&img, 0x5555_0000_0000).unwrap();
        assert_eq!(p.kind, ImageKind::Fixed);
        assert_eq!(p.load_bias, 0);
        assert_eq!(p.entry, 0x40_1010);
        assert_eq!(p.phdr_addr, 0x40_0000 + EHDR as u64);
        assert_eq!((p.phnum, p.phent), (4, PHENT as u16));
        assert_eq!(p.segments.len(), 3);
        assert_eq!(p.segments[2].mem_size, 0x3000);
        assert!(p.segments[1].prot.exec && !p.segments[1].prot.write);
        assert!(!p.exec_stack);
        assert_eq!(p.image_end(), 0x40_5000);
    }

    #[test]
    fn static_pie_moves_by_its_bias() {
        let img = typical(3, 0);
        let p = plan(&img, 0x5555_5555_4000).unwrap();
        assert_eq!(p.kind, ImageKind::StaticPie);
        assert_eq!(p.load_bias, 0x5555_5555_4000);
        assert_eq!(p.segments[0].vaddr, 0x5555_5555_4000);
        assert_eq!(p.entry, 0x5555_5555_5010);
        assert_eq!(p.phdr_addr, 0x5555_5555_4000 + EHDR as u64);
    }

    #[test]
    fn interpreter_is_refused() {
        let phs = [
            Ph { ty: 3, flags: R, offset: 0x100, vaddr: 0x40_0100, filesz: 10, memsz: 10 },
            Ph { ty: 1, flags: R | X, offset: 0, vaddr: 0x40_0000, filesz: 0x200, memsz: 0x200 },
        ];
        assert_eq!(plan(&image(3, 62, 0x40_0000, &phs, 0x200), 0x1000_0000), Err(ElfError::NeedsInterpreter));
    }

    #[test]
    fn wrong_machine_and_type_are_named() {
        let mut img = typical(2, 0x40_0000);
        img[18] = 3; // EM_386
        assert_eq!(plan(&img, 0), Err(ElfError::WrongMachine(3)));
        let img = typical(1, 0x40_0000); // ET_REL
        assert_eq!(plan(&img, 0), Err(ElfError::NotExecutable(1)));
        let mut img = typical(2, 0x40_0000);
        img[4] = 1; // ELFCLASS32
        assert!(matches!(plan(&img, 0), Err(ElfError::Malformed(_) | ElfError::WrongClass)));
    }

    #[test]
    fn overlapping_segments_are_refused() {
        let phs = [
            Ph { ty: 1, flags: R | X, offset: 0, vaddr: 0x40_0000, filesz: 0x200, memsz: 0x2000 },
            Ph { ty: 1, flags: R | W, offset: 0x1000, vaddr: 0x40_1000, filesz: 0x10, memsz: 0x10 },
        ];
        let err = plan(&image(2, 62, 0x40_0100, &phs, 0x1100), 0).unwrap_err();
        assert_eq!(err, ElfError::Overlap { first: 0, second: 1 });
    }

    #[test]
    fn kernel_addresses_are_refused() {
        let phs = [Ph { ty: 1, flags: R | X, offset: 0, vaddr: 0xffff_8000_0000_0000, filesz: 0x200, memsz: 0x200 }];
        let err = plan(&image(2, 62, 0xffff_8000_0000_0100, &phs, 0x200), 0).unwrap_err();
        assert_eq!(err, ElfError::OutsideUser { index: 0 });
        // Ending exactly past the last user page is refused too.
        let phs = [Ph { ty: 1, flags: R | X, offset: 0, vaddr: USER_TOP - 0x1000, filesz: 0x200, memsz: 0x1001 }];
        let err = plan(&image(2, 62, USER_TOP - 0x1000 + 0x100, &phs, 0x200), 0).unwrap_err();
        assert_eq!(err, ElfError::OutsideUser { index: 0 });
        // And the null page region.
        let phs = [Ph { ty: 1, flags: R | X, offset: 0, vaddr: 0, filesz: 0x200, memsz: 0x200 }];
        assert_eq!(plan(&image(2, 62, 0x100, &phs, 0x200), 0).unwrap_err(), ElfError::OutsideUser { index: 0 });
    }

    #[test]
    fn huge_and_inconsistent_segments_are_refused() {
        let phs = [
            Ph { ty: 1, flags: R | X, offset: 0, vaddr: 0x40_0000, filesz: 0x200, memsz: 0x200 },
            Ph { ty: 1, flags: R | W, offset: 0, vaddr: 0x40_0000 + (2 << 30), filesz: 0, memsz: 0x1000 },
        ];
        assert_eq!(plan(&image(2, 62, 0x40_0100, &phs, 0x200), 0), Err(ElfError::TooLarge));
        let phs = [Ph { ty: 1, flags: R | X, offset: 0, vaddr: 0x40_0000, filesz: 0x300, memsz: 0x200 }];
        assert_eq!(plan(&image(2, 62, 0x40_0100, &phs, 0x300), 0), Err(ElfError::BadSegment { index: 0 }));
        let phs = [Ph { ty: 1, flags: R | X, offset: 0, vaddr: 0x40_0000, filesz: 0x9000, memsz: 0x9000 }];
        assert_eq!(plan(&image(2, 62, 0x40_0100, &phs, 0x300), 0), Err(ElfError::BadSegment { index: 0 }));
        let phs = [Ph { ty: 1, flags: R | X, offset: 0x10, vaddr: 0x40_0000, filesz: 0x100, memsz: 0x100 }];
        assert_eq!(plan(&image(2, 62, 0x40_0010, &phs, 0x300), 0), Err(ElfError::Misaligned { index: 0 }));
    }

    #[test]
    fn entry_outside_code_is_refused() {
        let img = image(2, 62, 0x40_2010, &[Ph { ty: 1, flags: R | X, offset: 0, vaddr: 0x40_0000, filesz: 0x200, memsz: 0x200 }], 0x200);
        assert_eq!(plan(&img, 0), Err(ElfError::BadEntry(0x40_2010)));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let img = typical(2, 0x40_0000);
        for len in 0..img.len() {
            // Cuts inside the headers or the file data must be refused; cuts in the unused tail
            // after the last segment's file bytes (none here) could pass.
            assert!(plan(&img[..len], 0).is_err(), "truncated to {len} bytes was accepted");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Random byte flips and stores anywhere in the headers never panic, and whatever plan comes
        /// out still keeps every promise the loader relies on.
        #[test]
        fn mutated_images_keep_the_plan_invariants(
            edits in proptest::collection::vec((0usize..EHDR + 4 * PHENT, any::<u8>()), 1..8),
            pie in any::<bool>(),
            base_page in 0x10u64..0x7fff_ffffu64,
        ) {
            let mut img = typical(if pie { 3 } else { 2 }, if pie { 0 } else { 0x40_0000 });
            for (at, byte) in edits {
                img[at] = byte;
            }
            if let Ok(p) = plan(&img, base_page * PAGE_SIZE) {
                prop_assert!(!p.segments.is_empty());
                for w in p.segments.windows(2) {
                    prop_assert!(w[0].vaddr + w[0].mem_size <= w[1].vaddr);
                }
                for s in &p.segments {
                    prop_assert!(s.page_start() >= MIN_USER_ADDR && s.page_end() <= USER_TOP);
                    prop_assert!(s.file_size <= s.mem_size);
                    prop_assert!(s.file_offset + s.file_size <= img.len() as u64);
                }
                prop_assert!(p.segments.iter().any(|s| s.prot.exec && (s.vaddr..s.vaddr + s.mem_size).contains(&p.entry)));
            }
        }

        /// Arbitrary bytes with a valid magic never panic.
        #[test]
        fn random_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if bytes.len() >= 4 {
                bytes[..4].copy_from_slice(b"\x7fELF");
            }
            let _ = plan(&bytes, 0x1000_0000);
        }
    }
}
