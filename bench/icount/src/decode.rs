//! What one guest instruction is, from its bytes alone: a marker, one of the expensive
//! instructions the counter reports apart, an `iret`, or anything else.
//!
//! Only as much of the x86 encoding is read as these need (SDM vol. 2A, chapter 2): legacy
//! prefixes, one REX byte, the opcode and the ModRM byte. Operand-size and repeat prefixes select
//! other instructions on some of these opcodes (`66 0f ae /6` is CLWB, not XSAVEOPT), so those
//! are checked where it matters; ModRM `mod == 3` forms of the memory-only instructions are
//! fences or other instructions (`0f ae e8` is LFENCE, `0f 01 f8` is SWAPGS).

/// The marker's displacement layout, as `arch::marker` emits it: `0x4d` ('M') in the high byte,
/// the kind next, the tag in the low 16 bits.
pub const MARKER_MAGIC: u8 = 0x4d;

/// What a marker asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MarkerKind {
    /// Open the window `tag` on this vCPU.
    Begin,
    /// Close it.
    End,
    /// The next interrupt taken on this vCPU opens the window `tag`, up to its `iret`.
    Arm,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Marker {
    pub kind: MarkerKind,
    pub tag: u16,
}

/// The expensive instructions counted apart, as indices into [`crate::count::Counts::special`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Special {
    /// `mov cr3, reg` (0f 22 /3).
    Cr3Write = 0,
    /// WRMSR (0f 30).
    Wrmsr,
    /// XSAVE, XSAVEOPT, XSAVEC, XSAVES, FXSAVE.
    Xsave,
    /// XRSTOR, XRSTORS, FXRSTOR.
    Xrstor,
    /// INVLPG (0f 01 /7, memory operand).
    Invlpg,
    /// INVPCID (66 0f 38 82).
    Invpcid,
    /// HLT (f4).
    Hlt,
}

impl Special {
    pub const COUNT: usize = 7;
    pub const ALL: [Special; Special::COUNT] =
        [Special::Cr3Write, Special::Wrmsr, Special::Xsave, Special::Xrstor, Special::Invlpg, Special::Invpcid, Special::Hlt];

    /// The name in the output lines.
    pub fn name(self) -> &'static str {
        match self {
            Special::Cr3Write => "cr3_writes",
            Special::Wrmsr => "wrmsr",
            Special::Xsave => "xsave",
            Special::Xrstor => "xrstor",
            Special::Invlpg => "invlpg",
            Special::Invpcid => "invpcid",
            Special::Hlt => "hlt",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insn {
    Marker(Marker),
    Special(Special),
    /// IRET, IRETD or IRETQ (cf): the end of an interrupt window.
    Iret,
    Other,
}

/// The fields of a ModRM byte.
struct ModRm {
    mode: u8,
    reg: u8,
}

fn modrm(byte: u8) -> ModRm {
    ModRm { mode: byte >> 6, reg: (byte >> 3) & 7 }
}

/// Classify the instruction whose bytes are `bytes` (exactly one instruction, as QEMU hands it
/// over; a shorter slice is read as far as it goes).
pub fn classify(bytes: &[u8]) -> Insn {
    let mut i = 0;
    let (mut opsize, mut rep, mut any_prefix) = (false, false, false);
    while let Some(&byte) = bytes.get(i) {
        match byte {
            0x66 => opsize = true,
            0xf2 | 0xf3 => rep = true,
            0x67 | 0x2e | 0x36 | 0x3e | 0x26 | 0x64 | 0x65 | 0xf0 => {}
            _ => break,
        }
        any_prefix = true;
        i += 1;
    }
    let rex = match bytes.get(i) {
        Some(&byte @ 0x40..=0x4f) => {
            i += 1;
            byte
        }
        _ => 0,
    };
    let rex_r = (rex >> 2) & 1;
    let at = |k: usize| bytes.get(i + k).copied();
    match at(0) {
        Some(0xf4) => Insn::Special(Special::Hlt),
        Some(0xcf) => Insn::Iret,
        Some(0x0f) => {
            let memory_only = |m: &ModRm| m.mode != 3 && !opsize && !rep;
            match (at(1), at(2).map(modrm)) {
                (Some(0x1f), _) if !any_prefix && rex == 0 && at(2) == Some(0x80) && bytes.len() == i + 7 => {
                    let disp = u32::from_le_bytes([bytes[i + 3], bytes[i + 4], bytes[i + 5], bytes[i + 6]]);
                    marker(disp).map_or(Insn::Other, Insn::Marker)
                }
                (Some(0x22), Some(m)) if (rex_r << 3 | m.reg) == 3 => Insn::Special(Special::Cr3Write),
                (Some(0x30), _) => Insn::Special(Special::Wrmsr),
                (Some(0xae), Some(m)) if memory_only(&m) => match m.reg {
                    0 | 4 | 6 => Insn::Special(Special::Xsave),
                    1 | 5 => Insn::Special(Special::Xrstor),
                    _ => Insn::Other,
                },
                (Some(0xc7), Some(m)) if memory_only(&m) => match m.reg {
                    4 | 5 => Insn::Special(Special::Xsave),
                    3 => Insn::Special(Special::Xrstor),
                    _ => Insn::Other,
                },
                (Some(0x01), Some(m)) if m.mode != 3 && m.reg == 7 => Insn::Special(Special::Invlpg),
                (Some(0x38), _) if opsize && at(2) == Some(0x82) => Insn::Special(Special::Invpcid),
                _ => Insn::Other,
            }
        }
        _ => Insn::Other,
    }
}

/// The marker a `nopl disp32(%rax)` displacement encodes, if it is one.
fn marker(disp: u32) -> Option<Marker> {
    let [tag_lo, tag_hi, kind, magic] = disp.to_le_bytes();
    if magic != MARKER_MAGIC {
        return None;
    }
    let kind = match kind {
        b'B' => MarkerKind::Begin,
        b'E' => MarkerKind::End,
        b'I' => MarkerKind::Arm,
        _ => return None,
    };
    Some(Marker { kind, tag: u16::from_le_bytes([tag_lo, tag_hi]) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn special(bytes: &[u8]) -> Option<Special> {
        match classify(bytes) {
            Insn::Special(s) => Some(s),
            _ => None,
        }
    }

    #[test]
    fn markers_decode_with_kind_and_tag() {
        let m = |kind, tag| Insn::Marker(Marker { kind, tag });
        assert_eq!(classify(&[0x0f, 0x1f, 0x80, 0x0b, 0x0a, b'B', 0x4d]), m(MarkerKind::Begin, 0x0a0b));
        assert_eq!(classify(&[0x0f, 0x1f, 0x80, 0x01, 0x00, b'E', 0x4d]), m(MarkerKind::End, 1));
        assert_eq!(classify(&[0x0f, 0x1f, 0x80, 0xff, 0xff, b'I', 0x4d]), m(MarkerKind::Arm, 0xffff));
    }

    #[test]
    fn other_long_nops_are_not_markers() {
        // The compiler's own alignment padding: nopl 0x0(%rax), nopw with prefixes.
        assert_eq!(classify(&[0x0f, 0x1f, 0x80, 0, 0, 0, 0]), Insn::Other);
        assert_eq!(classify(&[0x66, 0x0f, 0x1f, 0x84, 0, 0, 0, 0, 0]), Insn::Other);
        assert_eq!(classify(&[0x0f, 0x1f, 0x80, 0x01, 0x00, b'X', 0x4d]), Insn::Other);
        assert_eq!(classify(&[0x0f, 0x1f, 0x44, 0x00, 0x00]), Insn::Other);
    }

    #[test]
    fn cr3_writes_in_every_register_form_and_not_other_control_registers() {
        assert_eq!(special(&[0x0f, 0x22, 0xd8]), Some(Special::Cr3Write)); // mov cr3, rax
        assert_eq!(special(&[0x0f, 0x22, 0xdf]), Some(Special::Cr3Write)); // mov cr3, rdi
        assert_eq!(special(&[0x41, 0x0f, 0x22, 0xd8]), Some(Special::Cr3Write)); // mov cr3, r8
        assert_eq!(special(&[0x0f, 0x22, 0xe0]), None); // mov cr4, rax
        assert_eq!(special(&[0x0f, 0x22, 0xc0]), None); // mov cr0, rax
        assert_eq!(special(&[0x44, 0x0f, 0x22, 0xc0]), None); // mov cr8, rax (REX.R)
        assert_eq!(special(&[0x0f, 0x20, 0xd8]), None); // mov rax, cr3 (a read)
    }

    #[test]
    fn wrmsr_hlt_invlpg_invpcid() {
        assert_eq!(special(&[0x0f, 0x30]), Some(Special::Wrmsr));
        assert_eq!(special(&[0x0f, 0x32]), None); // rdmsr
        assert_eq!(special(&[0xf4]), Some(Special::Hlt));
        assert_eq!(special(&[0x0f, 0x01, 0x38]), Some(Special::Invlpg)); // invlpg (rax)
        assert_eq!(special(&[0x41, 0x0f, 0x01, 0x7d, 0x00]), Some(Special::Invlpg)); // invlpg 0(r13)
        assert_eq!(special(&[0x0f, 0x01, 0xf8]), None); // swapgs
        assert_eq!(special(&[0x0f, 0x01, 0xf9]), None); // rdtscp
        assert_eq!(special(&[0x66, 0x0f, 0x38, 0x82, 0x07]), Some(Special::Invpcid)); // invpcid rax, (rdi)
        assert_eq!(special(&[0x66, 0x44, 0x0f, 0x38, 0x82, 0x07]), Some(Special::Invpcid));
        assert_eq!(classify(&[0x48, 0xcf]), Insn::Iret);
    }

    #[test]
    fn xsave_family_in_all_rex_forms_and_not_the_fences() {
        let saves: [&[u8]; 7] = [
            &[0x0f, 0xae, 0x27],       // xsave (rdi)
            &[0x48, 0x0f, 0xae, 0x27], // xsave64
            &[0x0f, 0xae, 0x37],       // xsaveopt
            &[0x48, 0x0f, 0xae, 0x37], // xsaveopt64
            &[0x0f, 0xc7, 0x27],       // xsavec
            &[0x49, 0x0f, 0xc7, 0x2f], // xsaves64 (r15)
            &[0x48, 0x0f, 0xae, 0x07], // fxsave64
        ];
        for bytes in saves {
            assert_eq!(special(bytes), Some(Special::Xsave), "{bytes:02x?}");
        }
        let restores: [&[u8]; 4] = [
            &[0x0f, 0xae, 0x2f],       // xrstor
            &[0x48, 0x0f, 0xae, 0x2f], // xrstor64
            &[0x48, 0x0f, 0xc7, 0x1f], // xrstors64
            &[0x0f, 0xae, 0x0f],       // fxrstor
        ];
        for bytes in restores {
            assert_eq!(special(bytes), Some(Special::Xrstor), "{bytes:02x?}");
        }
        let others: [&[u8]; 6] = [
            &[0x0f, 0xae, 0xe8],       // lfence
            &[0x0f, 0xae, 0xf0],       // mfence
            &[0x0f, 0xae, 0x38],       // clflush (rax)
            &[0x66, 0x0f, 0xae, 0x30], // clwb (rax)
            &[0x0f, 0xc7, 0x0f],       // cmpxchg8b (rdi)
            &[0x0f, 0xc7, 0xf0],       // rdrand eax
        ];
        for bytes in others {
            assert_eq!(special(bytes), None, "{bytes:02x?}");
        }
    }
}
