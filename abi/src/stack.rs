//! The initial user stack of a new program, as Linux's `create_elf_tables` lays it out and as musl's
//! `__libc_start_main` and glibc's `_dl_aux_init` read it.
//!
//! ```text
//!  top ->  +---------------------------+  (16-byte aligned, given by the caller)
//!          | 8 zero bytes              |  end marker
//!          | execfn string             |  AT_EXECFN points here
//!          | envp strings              |
//!          | argv strings              |  argv[0] lowest
//!          | padding                   |
//!          | 16 random bytes           |  AT_RANDOM, 16-byte aligned
//!          | padding                   |  so that rsp ends 16-byte aligned
//!          | auxv pairs ... AT_NULL, 0 |
//!          | envp[0..n], NULL          |
//!          | argv[0..n], NULL          |
//!  rsp ->  | argc                      |  rsp % 16 == 0 at the first instruction (SysV x86-64 ABI 3.4.1)
//!          +---------------------------+
//! ```
//!
//! [`build`] returns the bytes of `[rsp, top)` and `rsp`; the kernel copies them to the new stack with
//! the user-copy routines and starts the program with that `rsp`.

use alloc::vec::Vec;

use linux_raw_sys::auxvec::{
    AT_BASE, AT_CLKTCK, AT_EGID, AT_ENTRY, AT_EUID, AT_EXECFN, AT_FLAGS, AT_GID, AT_HWCAP, AT_HWCAP2, AT_NULL,
    AT_PAGESZ, AT_PHDR, AT_PHENT, AT_PHNUM, AT_RANDOM, AT_SECURE, AT_UID,
};

use crate::PAGE_SIZE;

/// The values the auxiliary vector carries besides the addresses of strings this module places.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuxValues {
    pub phdr: u64,
    pub phnum: u64,
    pub phent: u64,
    pub entry: u64,
    /// CPUID.1:EDX, as Linux gives it for x86.
    pub hwcap: u64,
    /// `AT_HWCAP2`: on x86 bit 1, `HWCAP2_FSGSBASE`, when user code may use the FSGSBASE
    /// instructions.
    pub hwcap2: u64,
    /// Clock ticks per second of `times()` (`USER_HZ`, 100 on Linux).
    pub clktck: u64,
    pub uid: u64,
    pub euid: u64,
    pub gid: u64,
    pub egid: u64,
    pub secure: bool,
}

/// What the new program receives.
#[derive(Clone, Copy, Debug)]
pub struct ExecArgs<'a> {
    pub argv: &'a [&'a [u8]],
    pub envp: &'a [&'a [u8]],
    /// The path the program was started by (`AT_EXECFN`).
    pub execfn: &'a [u8],
    /// `AT_RANDOM`: libc seeds its stack protector and pointer guard from these.
    pub random: [u8; 16],
    pub aux: AuxValues,
}

/// Why a stack image cannot be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackError {
    /// The strings and vectors need more than the allowed bytes (Linux: `E2BIG`).
    TooBig,
    /// A string contains a NUL byte, so the program would see it cut short.
    NulInString,
    /// The stack top is not 16-byte aligned or too low to hold the image.
    BadTop,
}

/// The built stack: `bytes` belong at `[rsp, rsp + bytes.len())`, which ends at the given top.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackImage {
    pub bytes: Vec<u8>,
    pub rsp: u64,
}

/// Build the initial stack for a stack whose highest address (exclusive) is `top`, using at most
/// `max_bytes` bytes.
pub fn build(top: u64, args: &ExecArgs<'_>, max_bytes: usize) -> Result<StackImage, StackError> {
    if !top.is_multiple_of(16) {
        return Err(StackError::BadTop);
    }
    let all_strings = || args.argv.iter().chain(args.envp.iter()).chain(core::iter::once(&args.execfn));
    if all_strings().any(|s| s.contains(&0)) {
        return Err(StackError::NulInString);
    }
    // Everything in one checked sum, so absurd argument lists fail before any allocation.
    let string_bytes = all_strings().try_fold(0usize, |acc, s| acc.checked_add(s.len() + 1)).ok_or(StackError::TooBig)?;
    let aux: [(u32, u64); 18] = [
        (AT_PHDR, args.aux.phdr),
        (AT_PHENT, args.aux.phent),
        (AT_PHNUM, args.aux.phnum),
        (AT_PAGESZ, PAGE_SIZE),
        (AT_BASE, 0),
        (AT_FLAGS, 0),
        (AT_ENTRY, args.aux.entry),
        (AT_UID, args.aux.uid),
        (AT_EUID, args.aux.euid),
        (AT_GID, args.aux.gid),
        (AT_EGID, args.aux.egid),
        (AT_SECURE, u64::from(args.aux.secure)),
        (AT_HWCAP, args.aux.hwcap),
        (AT_HWCAP2, args.aux.hwcap2),
        (AT_CLKTCK, args.aux.clktck),
        (AT_RANDOM, 0), // filled below
        (AT_EXECFN, 0), // filled below
        (AT_NULL, 0),
    ];
    let words = 1 + (args.argv.len() + 1) + (args.envp.len() + 1) + 2 * aux.len();
    // Upper bound: marker, strings, random bytes and two alignments, then the vectors.
    let bound = words
        .checked_mul(8)
        .and_then(|w| w.checked_add(string_bytes))
        .and_then(|b| b.checked_add(8 + 16 + 32))
        .ok_or(StackError::TooBig)?;
    if bound > max_bytes {
        return Err(StackError::TooBig);
    }
    if (bound as u64) > top {
        return Err(StackError::BadTop);
    }

    // Place the strings top-down, remembering their addresses.
    let mut cursor = top - 8;
    let mut place = |s: &[u8]| {
        cursor -= s.len() as u64 + 1;
        cursor
    };
    let execfn_at = place(args.execfn);
    let envp_at: Vec<u64> = args.envp.iter().map(|s| place(s)).collect();
    let mut argv_at: Vec<u64> = args.argv.iter().rev().map(|s| place(s)).collect();
    argv_at.reverse();
    let random_at = (cursor - 16) & !15;
    let rsp = (random_at - words as u64 * 8) & !15;

    let mut bytes = alloc::vec![0u8; (top - rsp) as usize];
    let mut put = |addr: u64, data: &[u8]| {
        let at = (addr - rsp) as usize;
        bytes[at..at + data.len()].copy_from_slice(data);
    };
    put(execfn_at, args.execfn);
    for (s, &at) in args.envp.iter().zip(&envp_at) {
        put(at, s);
    }
    for (s, &at) in args.argv.iter().zip(&argv_at) {
        put(at, s);
    }
    put(random_at, &args.random);

    let mut vector: Vec<u64> = Vec::with_capacity(words);
    vector.push(args.argv.len() as u64);
    vector.extend_from_slice(&argv_at);
    vector.push(0);
    vector.extend_from_slice(&envp_at);
    vector.push(0);
    for (key, value) in aux {
        let value = match key {
            AT_RANDOM => random_at,
            AT_EXECFN => execfn_at,
            _ => value,
        };
        vector.push(u64::from(key));
        vector.push(value);
    }
    for (i, w) in vector.iter().enumerate() {
        put(rsp + 8 * i as u64, &w.to_le_bytes());
    }
    Ok(StackImage { bytes, rsp })
}

#[cfg(test)]
mod tests {
    use alloc::{collections::BTreeMap, vec::Vec};

    use proptest::prelude::*;

    use super::*;

    /// Reads the image back the way libc's startup code does: argc at rsp, argv after it, envp after
    /// argv's NULL, auxv after envp's NULL.
    struct Decoded {
        argv: Vec<Vec<u8>>,
        envp: Vec<Vec<u8>>,
        aux: BTreeMap<u64, u64>,
    }

    fn word(img: &StackImage, addr: u64) -> u64 {
        let at = (addr - img.rsp) as usize;
        u64::from_le_bytes(img.bytes[at..at + 8].try_into().unwrap())
    }

    fn c_string(img: &StackImage, addr: u64) -> Vec<u8> {
        let at = (addr - img.rsp) as usize;
        let len = img.bytes[at..].iter().position(|&b| b == 0).expect("string without NUL");
        img.bytes[at..at + len].to_vec()
    }

    fn decode(img: &StackImage) -> Decoded {
        let argc = word(img, img.rsp);
        let mut p = img.rsp + 8;
        let argv = (0..argc).map(|i| c_string(img, word(img, p + 8 * i))).collect();
        p += 8 * argc;
        assert_eq!(word(img, p), 0, "argv not NULL-terminated");
        p += 8;
        let mut envp = Vec::new();
        while word(img, p) != 0 {
            envp.push(c_string(img, word(img, p)));
            p += 8;
        }
        p += 8;
        let mut aux = BTreeMap::new();
        loop {
            let (k, v) = (word(img, p), word(img, p + 8));
            p += 16;
            if k == u64::from(AT_NULL) {
                break;
            }
            assert!(aux.insert(k, v).is_none(), "auxv key {k} twice");
        }
        Decoded { argv, envp, aux }
    }

    fn sample_aux() -> AuxValues {
        AuxValues {
            phdr: 0x40_0040,
            phnum: 7,
            phent: 56,
            entry: 0x40_1000,
            hwcap: 0x178b_fbff,
            hwcap2: 2,
            clktck: 100,
            uid: 0,
            euid: 0,
            gid: 0,
            egid: 0,
            secure: false,
        }
    }

    #[test]
    fn decodes_like_libc() {
        let top = 0x7fff_ffff_e000;
        let argv: [&[u8]; 3] = [b"/init", b"-v", b""];
        let envp: [&[u8]; 2] = [b"HOME=/", b"TERM=linux"];
        let random = *b"0123456789abcdef";
        let args = ExecArgs { argv: &argv, envp: &envp, execfn: b"/init", random, aux: sample_aux() };
        let img = build(top, &args, 64 * 1024).unwrap();
        assert_eq!(img.rsp % 16, 0, "rsp must be 16-byte aligned at entry");
        assert_eq!(img.rsp + img.bytes.len() as u64, top);
        let d = decode(&img);
        assert_eq!(d.argv, [b"/init".to_vec(), b"-v".to_vec(), b"".to_vec()]);
        assert_eq!(d.envp, [b"HOME=/".to_vec(), b"TERM=linux".to_vec()]);
        let a = |k: u32| d.aux[&u64::from(k)];
        assert_eq!(a(AT_PHDR), 0x40_0040);
        assert_eq!(a(AT_PHNUM), 7);
        assert_eq!(a(AT_PHENT), 56);
        assert_eq!(a(AT_PAGESZ), 4096);
        assert_eq!(a(AT_ENTRY), 0x40_1000);
        assert_eq!(a(AT_HWCAP), 0x178b_fbff);
        assert_eq!(a(AT_HWCAP2), 2);
        assert_eq!(a(AT_CLKTCK), 100);
        assert_eq!(a(AT_BASE), 0);
        assert_eq!(a(AT_FLAGS), 0);
        assert_eq!(a(AT_SECURE), 0);
        for k in [AT_UID, AT_EUID, AT_GID, AT_EGID] {
            assert_eq!(a(k), 0);
        }
        let r = a(AT_RANDOM);
        assert_eq!(r % 16, 0);
        let at = (r - img.rsp) as usize;
        assert_eq!(&img.bytes[at..at + 16], &random);
        assert_eq!(c_string(&img, a(AT_EXECFN)), b"/init");
        // The top 8 bytes stay zero: the end marker.
        assert_eq!(word(&img, top - 8), 0);
    }

    #[test]
    fn refusals() {
        let nul: [&[u8]; 1] = [b"a\0b"];
        let args = ExecArgs { argv: &nul, envp: &[], execfn: b"/x", random: [0; 16], aux: sample_aux() };
        assert_eq!(build(0x10_0000, &args, 4096), Err(StackError::NulInString));
        let long = alloc::vec![b'x'; 5000];
        let argv: [&[u8]; 1] = [&long];
        let args = ExecArgs { argv: &argv, envp: &[], execfn: b"/x", random: [0; 16], aux: sample_aux() };
        assert_eq!(build(0x10_0000, &args, 4096), Err(StackError::TooBig));
        assert_eq!(build(0x10_0008, &args, 1 << 20), Err(StackError::BadTop));
        assert_eq!(build(0x100, &args, 1 << 20), Err(StackError::BadTop));
    }

    proptest! {
        /// Any argument list round-trips through the decoder, the image ends at the top, rsp is
        /// aligned, and the image stays inside the stated limit.
        #[test]
        fn round_trips(
            argv in proptest::collection::vec(proptest::collection::vec(1u8..=255, 0..40), 0..12),
            envp in proptest::collection::vec(proptest::collection::vec(1u8..=255, 0..40), 0..12),
            top_pages in 16u64..1_000_000,
        ) {
            let top = top_pages * 4096;
            let argv_refs: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
            let envp_refs: Vec<&[u8]> = envp.iter().map(Vec::as_slice).collect();
            let args = ExecArgs { argv: &argv_refs, envp: &envp_refs, execfn: b"/bin/t", random: [7; 16], aux: sample_aux() };
            let img = build(top, &args, 32 * 1024).unwrap();
            prop_assert_eq!(img.rsp % 16, 0);
            prop_assert_eq!(img.rsp + img.bytes.len() as u64, top);
            prop_assert!(img.bytes.len() <= 32 * 1024);
            let d = decode(&img);
            prop_assert_eq!(d.argv, argv);
            prop_assert_eq!(d.envp, envp);
        }
    }
}
