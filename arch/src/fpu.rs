//! Extended (x87/SSE/AVX) register state: detection, save areas, save and restore, the first-use trap.
//!
//! Key types and functions:
//! - [`FpuFeatures`] (from CPUID through `raw-cpuid`, and XCR0): which of XSAVE, XSAVEOPT, XSAVEC and
//!   XSAVES exist, whether the OS has enabled XSAVE, the enabled XCR0 components and the save area
//!   size they need (CPUID leaf 0xD); [`FpuFeatures::kind`] picks the [`FpuKind`] to use.
//! - [`FpuArea`]: a 64-byte aligned heap buffer of that size, initialised to the clean state.
//! - [`save`] / [`restore`]: `xsaveopt`/`xsave`/`fxsave` and `xrstor`/`fxrstor` on an area.
//! - [`enable_on_this_cpu`] (kernel only): CR0/CR4/XCR0 set up so the instructions above work, with
//!   the first-use trap disarmed; [`set_trap`] arms and disarms it (CR0.TS).
//! - [`fill_vector_regs`] / [`read_vector_regs`] / [`expected_vector_regs`]: write and read a known
//!   pattern in the vector registers, for FPU isolation tests (here and in the kernel, which is
//!   compiled without SSE and so cannot touch those registers from Rust).
//!
//! Neighbours: `sched` saves a thread's area when it switches out a thread that may have changed its
//! state, and restores it when such a thread comes back to a CPU whose registers do not hold its
//! state any more (or at its first use of it, after a lazy switch);
//! [`crate::switch`] never touches this state. The kernel calls [`enable_on_this_cpu`] on each CPU.
//!
//! Lazy switching (trap on first use) never leaves another process's values in the registers:
//! `sched` lets a thread run without its own state, trap armed, only while the registers hold the
//! clean state or the state of a thread that shares its space (which shares all its memory
//! anyway), and loads the clean state first otherwise; speculative reads of a foreign process's
//! registers under an armed trap are what LazyFP (CVE-2018-3665) leaks. XSAVES/XRSTORS are not used: they need CPL 0 and the
//! IA32_XSS MSR and only add supervisor state components (PT, CET, ...), none of which this kernel
//! uses; the standard (non-compacted) XSAVE form covers every user component, and works natively on a
//! host in user space too, where XSAVES would fault. XSAVEC is reported but not used for the same
//! reason the optimised form is preferred: XSAVEOPT already skips unmodified and init components.

extern crate alloc;

use alloc::alloc::{Layout, alloc_zeroed, dealloc};
use core::ptr::NonNull;
use raw_cpuid::CpuId;
use x86_64::registers::xcontrol::{XCr0, XCr0Flags};

/// Which instruction pair saves and restores extended state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FpuKind {
    /// `xsaveopt` / `xrstor`: skips components that are in their init state or unmodified since the
    /// last `xrstor` from the same area.
    Xsaveopt,
    /// `xsave` / `xrstor`: the full standard-form save of every XCR0 component.
    Xsave,
    /// `fxsave` / `fxrstor`: x87 and SSE only (512 bytes); every x86_64 CPU has it.
    Fxsave,
}

/// The state components a thread's extended state holds: x87, SSE and AVX (bits 0 to 2 of XCR0).
/// The kernel enables no more than these ([`enable_on_this_cpu`]), and code that runs the switch
/// path elsewhere (natively, on a host whose OS also enabled AVX-512 or PKRU) limits its areas to
/// them with [`FpuFeatures::for_threads`], so that it saves and restores what the kernel would.
pub const THREAD_COMPONENTS: u64 = 0b111;

/// Size of the legacy `fxsave` region (and the first part of every XSAVE area).
const FXSAVE_BYTES: usize = 512;
/// Offset of MXCSR in the legacy region.
const MXCSR_OFFSET: usize = 24;
/// MXCSR after reset: all exceptions masked, round to nearest.
const MXCSR_DEFAULT: u32 = 0x1f80;
/// x87 control word after `fninit`: all exceptions masked, 64-bit precision, round to nearest.
const FCW_DEFAULT: u16 = 0x037f;

/// What the CPU and the OS offer for saving extended state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FpuFeatures {
    /// CPUID.1:ECX.XSAVE.
    pub xsave: bool,
    /// CPUID.1:ECX.OSXSAVE: the OS has set CR4.OSXSAVE, so XCR0 can be read and XSAVE used.
    pub os_xsave: bool,
    /// CPUID.(0xD,1):EAX[0].
    pub xsaveopt: bool,
    /// CPUID.(0xD,1):EAX[1] (reported, not used: see the module notes).
    pub xsavec: bool,
    /// CPUID.(0xD,1):EAX[3] (reported, not used: see the module notes).
    pub xsaves: bool,
    /// CPUID.1:ECX.AVX.
    pub avx: bool,
    /// The enabled state components (XCR0), 0 when XSAVE is not enabled.
    pub xcr0: u64,
    /// Bytes an area needs for the enabled components: CPUID.(0xD,0):EBX with XSAVE enabled, else 512.
    pub area_bytes: usize,
}

impl FpuFeatures {
    /// Read CPUID (and XCR0 when the OS has enabled XSAVE) on the calling CPU.
    ///
    /// Uses the `cpuid` instruction, which is slow in a virtual machine: call it once, not per switch.
    pub fn detect() -> FpuFeatures {
        let cpuid = CpuId::new();
        let (xsave, os_xsave, avx) = cpuid.get_feature_info().map_or((false, false, false), |f| {
            (f.has_xsave(), f.has_oxsave(), f.has_avx())
        });
        let state = if xsave {
            cpuid.get_extended_state_info()
        } else {
            None
        };
        let xcr0 = if os_xsave { XCr0::read_raw() } else { 0 };
        let area_bytes = match &state {
            Some(s) if os_xsave => s.xsave_area_size_enabled_features() as usize,
            _ => FXSAVE_BYTES,
        };
        FpuFeatures {
            xsave,
            os_xsave,
            xsaveopt: state.as_ref().is_some_and(|s| s.has_xsaveopt()),
            xsavec: state.as_ref().is_some_and(|s| s.has_xsavec()),
            xsaves: state.as_ref().is_some_and(|s| s.has_xsaves_xrstors()),
            avx,
            xcr0,
            area_bytes,
        }
    }

    /// These features with the saved components limited to [`THREAD_COMPONENTS`] (the area size
    /// stays the one for all enabled components: large enough, and the offsets of x87, SSE and AVX
    /// in the standard form do not depend on what else is enabled).
    pub fn for_threads(self) -> FpuFeatures {
        FpuFeatures { xcr0: self.xcr0 & THREAD_COMPONENTS, ..self }
    }

    /// The best instruction pair the enabled features allow.
    pub fn kind(&self) -> FpuKind {
        match (self.xsave && self.os_xsave, self.xsaveopt) {
            (true, true) => FpuKind::Xsaveopt,
            (true, false) => FpuKind::Xsave,
            (false, _) => FpuKind::Fxsave,
        }
    }

    /// Whether the upper halves of the ymm registers are enabled state (XCR0 has SSE and AVX).
    pub fn ymm_enabled(&self) -> bool {
        let both = XCr0Flags::SSE.bits() | XCr0Flags::AVX.bits();
        self.xcr0 & both == both
    }
}

/// A save area for one thread's extended state: 64-byte aligned, sized for the enabled components.
///
/// Starts in the clean state: x87 control word 0x037F, MXCSR 0x1F80, every register zero and, for the
/// XSAVE forms, an all-zero header (every component in its init state, standard form).
pub struct FpuArea {
    ptr: NonNull<u8>,
    layout: Layout,
    kind: FpuKind,
    /// The XCR0 components the area was sized for: the requested-feature mask of every
    /// `xsave`/`xrstor` on it, so a save can never write past the area even if XCR0 grew later.
    /// Kept as the EAX and EDX halves those instructions take, so each loads them with two plain
    /// moves (a 64-bit field costs a load, a copy and a shift on every switch).
    xcr0_halves: [u32; 2],
}

// SAFETY: the area is plain bytes owned by this value; it is only read or written through `&mut self`
// or by `save`/`restore`, whose callers hold the exclusive access they promise.
unsafe impl Send for FpuArea {}
// SAFETY: `&FpuArea` gives no access to the bytes except the address.
unsafe impl Sync for FpuArea {}

impl FpuArea {
    /// A clean area for `kind`, sized from `features` (as detected on this machine). `None` if the
    /// allocation fails.
    pub fn new(kind: FpuKind, features: &FpuFeatures) -> Option<FpuArea> {
        let bytes = match kind {
            FpuKind::Fxsave => FXSAVE_BYTES,
            FpuKind::Xsave | FpuKind::Xsaveopt => features.area_bytes.max(FXSAVE_BYTES + 64),
        };
        let layout = Layout::from_size_align(bytes, 64).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc_zeroed(layout) })?;
        // SAFETY: the buffer is at least 512 bytes, 64-byte aligned, and exclusively ours; both fields
        // are naturally aligned at their offsets.
        unsafe {
            ptr.as_ptr().cast::<u16>().write(FCW_DEFAULT);
            ptr.as_ptr()
                .add(MXCSR_OFFSET)
                .cast::<u32>()
                .write(MXCSR_DEFAULT);
        }
        Some(FpuArea {
            ptr,
            layout,
            kind,
            xcr0_halves: [features.xcr0 as u32, (features.xcr0 >> 32) as u32],
        })
    }

    /// The instruction pair this area was sized for.
    pub fn kind(&self) -> FpuKind {
        self.kind
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.layout.size()
    }

    /// Always false: an area holds at least the 512-byte legacy region.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Make the image the clean state again, as [`FpuArea::new`] leaves it (`execve`).
    pub fn clear(&mut self) {
        let bytes = self.as_bytes_mut();
        bytes.fill(0);
        bytes[..2].copy_from_slice(&FCW_DEFAULT.to_le_bytes());
        bytes[MXCSR_OFFSET..MXCSR_OFFSET + 4].copy_from_slice(&MXCSR_DEFAULT.to_le_bytes());
    }

    /// The image as bytes (a signal frame copies it to user memory).
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: `ptr` holds `layout.size()` initialised bytes (zeroed at allocation) owned by this
        // value; `&self` excludes `save` (which needs `&mut`).
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.layout.size()) }
    }

    /// The image as bytes to fill (`rt_sigreturn` loads a checked user image through it).
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_bytes`, exclusively borrowed.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }

    /// The saved MXCSR (from the legacy region).
    pub fn mxcsr(&self) -> u32 {
        // SAFETY: the area is at least 512 bytes and 64-byte aligned, so this 4-byte read at offset
        // 24 is in bounds and aligned; `&self` excludes concurrent `save` (which needs `&mut`).
        unsafe { self.ptr.as_ptr().add(MXCSR_OFFSET).cast::<u32>().read() }
    }
}

impl Drop for FpuArea {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with exactly this layout and not freed since.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// Save the calling CPU's extended state into `area` with the area's instruction pair.
///
/// The XSAVE forms use the XCR0 value read (with `xgetbv`) when the area was sized as their
/// requested-feature mask, so exactly the enabled components are saved, without an `xgetbv` per
/// switch.
///
/// # Safety
/// The area's kind must be usable on this CPU (for the XSAVE forms, CR4.OSXSAVE set and XCR0 unchanged
/// since the area was sized; for `fxsave`, CR4.OSFXSR set), and CR0.TS must be clear, or set with an
/// #NM handler installed that gives the caller its registers and clears it (the save then runs
/// again).
#[inline]
pub unsafe fn save(area: &mut FpuArea, kind: FpuKind) {
    debug_assert_eq!(kind, area.kind, "area sized for another kind");
    let p = area.ptr.as_ptr();
    let [mask_lo, mask_hi] = area.xcr0_halves;
    // For every arm: `p` is a 64-byte aligned buffer of the size this kind needs, exclusively
    // borrowed, and the caller guarantees the instruction is enabled; the instructions write only the
    // area and change no flags.
    match kind {
        // SAFETY: see above.
        FpuKind::Xsaveopt => unsafe {
            core::arch::asm!("xsaveopt64 [{}]", in(reg) p, in("eax") mask_lo, in("edx") mask_hi,
                options(nostack, preserves_flags))
        },
        // SAFETY: see above.
        FpuKind::Xsave => unsafe {
            core::arch::asm!("xsave64 [{}]", in(reg) p, in("eax") mask_lo, in("edx") mask_hi,
                options(nostack, preserves_flags))
        },
        // SAFETY: see above.
        FpuKind::Fxsave => unsafe {
            core::arch::asm!("fxsave64 [{}]", in(reg) p, options(nostack, preserves_flags))
        },
    }
}

/// [`save`] without the XSAVEOPT shortcut: every enabled component is written, even one the CPU
/// knows to be unmodified since the last `xrstor` from this address. For an area whose address may
/// be that of a freed one restored from earlier (a fresh copy), where the shortcut would leave
/// stale bytes.
///
/// # Safety
/// As for [`save`].
#[inline]
pub unsafe fn save_full(area: &mut FpuArea) {
    let p = area.ptr.as_ptr();
    let [mask_lo, mask_hi] = area.xcr0_halves;
    match area.kind {
        // SAFETY: as in `save`: a buffer sized and aligned for this form, exclusively borrowed; the
        // caller guarantees the instruction is enabled (XSAVE is wherever XSAVEOPT is).
        FpuKind::Xsaveopt | FpuKind::Xsave => unsafe {
            core::arch::asm!("xsave64 [{}]", in(reg) p, in("eax") mask_lo, in("edx") mask_hi,
                options(nostack, preserves_flags))
        },
        // SAFETY: as above.
        FpuKind::Fxsave => unsafe {
            core::arch::asm!("fxsave64 [{}]", in(reg) p, options(nostack, preserves_flags))
        },
    }
}

/// Load the calling CPU's extended state from `area` (every enabled component; components marked
/// as in their init state in the header are initialised).
///
/// # Safety
/// As for [`save`]; in addition the area holds a valid image: either clean (from [`FpuArea::new`] or
/// [`FpuArea::clear`]) or written by [`save`] or [`save_full`] with the same kind on a CPU with the
/// same XCR0.
#[inline]
pub unsafe fn restore(area: &FpuArea, kind: FpuKind) {
    debug_assert_eq!(kind, area.kind, "area sized for another kind");
    let p = area.ptr.as_ptr();
    let [mask_lo, mask_hi] = area.xcr0_halves;
    // For every arm: `p` is a valid image of the right size and alignment (caller's guarantee); the
    // instructions only read it and change no flags. They overwrite every vector and x87 register,
    // which `clobber_abi("C")` tells the compiler, exactly as for a call.
    match kind {
        // SAFETY: see above.
        FpuKind::Xsaveopt | FpuKind::Xsave => unsafe {
            core::arch::asm!("xrstor64 [{}]", in(reg) p, in("eax") mask_lo, in("edx") mask_hi,
                clobber_abi("C"), options(nostack, preserves_flags, readonly))
        },
        // SAFETY: see above.
        FpuKind::Fxsave => unsafe {
            core::arch::asm!("fxrstor64 [{}]", in(reg) p, clobber_abi("C"), options(nostack, preserves_flags, readonly))
        },
    }
}

/// Make the extended state usable on this CPU without any trap, and report how to save it.
///
/// CR0: MP=1 (wait/fwait honour TS), EM=0 (no x87 emulation), TS=0 (no lazy-switch trap). CR4:
/// OSFXSR (fxsave/fxrstor and SSE), OSXMMEXCPT (SIMD exceptions as #XM); with XSAVE also OSXSAVE and
/// XCR0 = x87 | SSE | AVX (AVX only where the CPU has it and CPUID leaf 0xD lists it for XCR0).
///
/// # Safety
/// Runs at CPL 0 on the CPU being set up, before any thread that uses the FPU runs on it, and with
/// the same `allow_xsave` on every CPU (areas are sized once for all of them).
///
/// `allow_xsave: false` (the `noxsave` command-line option) keeps CR4.OSXSAVE clear, so threads
/// get FXSAVE/FXRSTOR and no XCR0 access ever happens: some nested hypervisors cannot emulate
/// XGETBV/XSETBV in a guest whose ring 0 they emulate.
#[cfg(target_os = "none")]
pub unsafe fn enable_on_this_cpu(allow_xsave: bool) -> FpuFeatures {
    use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};
    // SAFETY: these bits only select how the FPU behaves; the caller runs at CPL 0 before any thread
    // depends on the previous setting.
    unsafe {
        Cr0::update(|f| {
            f.insert(Cr0Flags::MONITOR_COPROCESSOR);
            f.remove(Cr0Flags::EMULATE_COPROCESSOR | Cr0Flags::TASK_SWITCHED);
        });
        Cr4::update(|f| f.insert(Cr4Flags::OSFXSR | Cr4Flags::OSXMMEXCPT_ENABLE));
    }
    let cpuid = CpuId::new();
    let (xsave, avx) = cpuid
        .get_feature_info()
        .map_or((false, false), |f| (f.has_xsave(), f.has_avx()));
    if xsave && allow_xsave {
        let avx_state = cpuid
            .get_extended_state_info()
            .is_some_and(|s| s.xcr0_supports_avx_256());
        let mut xcr0 = XCr0Flags::X87 | XCr0Flags::SSE;
        debug_assert_eq!((XCr0Flags::X87 | XCr0Flags::SSE | XCr0Flags::AVX).bits(), THREAD_COMPONENTS);
        if avx && avx_state {
            xcr0 |= XCr0Flags::AVX;
        }
        // SAFETY: CPUID reports XSAVE, so CR4.OSXSAVE exists; the XCR0 bits written are all reported
        // as supported (x87 and SSE always are when XSAVE is).
        unsafe {
            Cr4::update(|f| f.insert(Cr4Flags::OSXSAVE));
            XCr0::write(xcr0);
        }
    }
    FpuFeatures::detect()
}

/// Arm (`on`: set CR0.TS) or disarm (`clts`) the trap on this CPU's next use of the extended
/// state: while armed, any x87, MMX, SSE or AVX instruction, and `xsave`/`xrstor` themselves,
/// raise #NM (vector 7) instead of running. The scheduler arms it for a thread that runs without
/// its own state in the registers, and its #NM handler disarms it and loads that state.
///
/// # Safety
/// CPL 0, on a CPU set up by [`enable_on_this_cpu`]. While armed, nothing may use the extended
/// state unless an #NM handler that disarms and makes the state right is installed.
#[cfg(target_os = "none")]
#[inline]
pub unsafe fn set_trap(on: bool) {
    if on {
        // SAFETY: CPL 0 (caller); only CR0.TS changes, which affects nothing but the extended
        // state's instructions (the caller's contract above).
        unsafe {
            core::arch::asm!("mov {0}, cr0", "or {0}, 8", "mov cr0, {0}", out(reg) _, options(nostack))
        };
    } else {
        // SAFETY: as above; `clts` clears CR0.TS only.
        unsafe { core::arch::asm!("clts", options(nostack, preserves_flags)) };
    }
}

/// The contents of the vector registers as the test helpers see them: for each of the 16 registers,
/// its four 64-bit lanes (lanes 2 and 3, the ymm upper half, read as 0 without AVX state).
pub type VectorRegs = [[u64; 4]; 16];

/// The value [`fill_vector_regs`] writes into lane `lane` of register `reg` for `pattern`.
fn lane_value(pattern: u64, reg: usize, lane: usize) -> u64 {
    pattern.wrapping_add((reg * 4 + lane) as u64)
}

/// What [`read_vector_regs`] returns after [`fill_vector_regs`]`(pattern)` on this machine.
pub fn expected_vector_regs(pattern: u64) -> VectorRegs {
    let lanes = if FpuFeatures::detect().ymm_enabled() {
        4
    } else {
        2
    };
    let mut regs = [[0; 4]; 16];
    for (reg, r) in regs.iter_mut().enumerate() {
        for (lane, v) in r.iter_mut().enumerate().take(lanes) {
            *v = lane_value(pattern, reg, lane);
        }
    }
    regs
}

/// Write `pattern + 4 * i + lane` into every 64-bit lane of xmm`i` (ymm`i` when AVX state is
/// enabled), for i in 0..16.
///
/// Done entirely in machine code (the kernel is compiled without SSE): the function checks
/// CPUID.OSXSAVE and XCR0 itself to decide between xmm and ymm. It only writes caller-saved registers,
/// as the ABI allows any call to.
///
/// # Safety
/// SSE must be enabled on this CPU (CR4.OSFXSR; always true in user space, true in the kernel after
/// [`enable_on_this_cpu`]).
#[unsafe(naked)]
pub unsafe extern "C" fn fill_vector_regs(pattern: u64) {
    core::arch::naked_asm!(
        // r9 = 1 if ymm state is enabled: CPUID.1:ECX.OSXSAVE, then XCR0 bits 1 and 2.
        "push rbx",
        "mov r8, rdi",
        "mov eax, 1",
        "cpuid",
        "pop rbx",
        "xor r9d, r9d",
        "bt ecx, 27",
        "jnc .Lfpu_fill_values",
        "xor ecx, ecx",
        "xgetbv",
        "and eax, 6",
        "cmp eax, 6",
        "jne .Lfpu_fill_values",
        "mov r9d, 1",
        ".Lfpu_fill_values:",
        // 64 lanes of pattern + index in a 512-byte buffer below the stack pointer.
        "sub rsp, 512",
        "xor ecx, ecx",
        ".Lfpu_fill_loop:",
        "lea rax, [r8 + rcx]",
        "mov [rsp + rcx * 8], rax",
        "inc ecx",
        "cmp ecx, 64",
        "jb .Lfpu_fill_loop",
        "test r9d, r9d",
        "jz .Lfpu_fill_xmm",
        "vmovdqu ymm0, [rsp + 0]",
        "vmovdqu ymm1, [rsp + 32]",
        "vmovdqu ymm2, [rsp + 64]",
        "vmovdqu ymm3, [rsp + 96]",
        "vmovdqu ymm4, [rsp + 128]",
        "vmovdqu ymm5, [rsp + 160]",
        "vmovdqu ymm6, [rsp + 192]",
        "vmovdqu ymm7, [rsp + 224]",
        "vmovdqu ymm8, [rsp + 256]",
        "vmovdqu ymm9, [rsp + 288]",
        "vmovdqu ymm10, [rsp + 320]",
        "vmovdqu ymm11, [rsp + 352]",
        "vmovdqu ymm12, [rsp + 384]",
        "vmovdqu ymm13, [rsp + 416]",
        "vmovdqu ymm14, [rsp + 448]",
        "vmovdqu ymm15, [rsp + 480]",
        "add rsp, 512",
        "ret",
        ".Lfpu_fill_xmm:",
        "movdqu xmm0, [rsp + 0]",
        "movdqu xmm1, [rsp + 32]",
        "movdqu xmm2, [rsp + 64]",
        "movdqu xmm3, [rsp + 96]",
        "movdqu xmm4, [rsp + 128]",
        "movdqu xmm5, [rsp + 160]",
        "movdqu xmm6, [rsp + 192]",
        "movdqu xmm7, [rsp + 224]",
        "movdqu xmm8, [rsp + 256]",
        "movdqu xmm9, [rsp + 288]",
        "movdqu xmm10, [rsp + 320]",
        "movdqu xmm11, [rsp + 352]",
        "movdqu xmm12, [rsp + 384]",
        "movdqu xmm13, [rsp + 416]",
        "movdqu xmm14, [rsp + 448]",
        "movdqu xmm15, [rsp + 480]",
        "add rsp, 512",
        "ret",
    )
}

/// Store all 16 vector registers into `*out` (ymm when AVX state is enabled, else xmm with lanes 2
/// and 3 zero). Reads the registers before touching anything else.
///
/// # Safety
/// As for [`fill_vector_regs`]; `out` is valid for writes of a [`VectorRegs`].
#[unsafe(naked)]
unsafe extern "C" fn store_vector_regs(out: *mut VectorRegs) {
    core::arch::naked_asm!(
        // cpuid and xgetbv touch only general registers, so the vector registers are still intact.
        "push rbx",
        "mov eax, 1",
        "cpuid",
        "pop rbx",
        "bt ecx, 27",
        "jnc .Lfpu_store_xmm",
        "xor ecx, ecx",
        "xgetbv",
        "and eax, 6",
        "cmp eax, 6",
        "jne .Lfpu_store_xmm",
        "vmovdqu [rdi + 0], ymm0",
        "vmovdqu [rdi + 32], ymm1",
        "vmovdqu [rdi + 64], ymm2",
        "vmovdqu [rdi + 96], ymm3",
        "vmovdqu [rdi + 128], ymm4",
        "vmovdqu [rdi + 160], ymm5",
        "vmovdqu [rdi + 192], ymm6",
        "vmovdqu [rdi + 224], ymm7",
        "vmovdqu [rdi + 256], ymm8",
        "vmovdqu [rdi + 288], ymm9",
        "vmovdqu [rdi + 320], ymm10",
        "vmovdqu [rdi + 352], ymm11",
        "vmovdqu [rdi + 384], ymm12",
        "vmovdqu [rdi + 416], ymm13",
        "vmovdqu [rdi + 448], ymm14",
        "vmovdqu [rdi + 480], ymm15",
        "ret",
        ".Lfpu_store_xmm:",
        "movdqu [rdi + 0], xmm0",
        "movdqu [rdi + 32], xmm1",
        "movdqu [rdi + 64], xmm2",
        "movdqu [rdi + 96], xmm3",
        "movdqu [rdi + 128], xmm4",
        "movdqu [rdi + 160], xmm5",
        "movdqu [rdi + 192], xmm6",
        "movdqu [rdi + 224], xmm7",
        "movdqu [rdi + 256], xmm8",
        "movdqu [rdi + 288], xmm9",
        "movdqu [rdi + 320], xmm10",
        "movdqu [rdi + 352], xmm11",
        "movdqu [rdi + 384], xmm12",
        "movdqu [rdi + 416], xmm13",
        "movdqu [rdi + 448], xmm14",
        "movdqu [rdi + 480], xmm15",
        // Lanes 2 and 3 do not exist without ymm state.
        "xor eax, eax",
        "xor ecx, ecx",
        ".Lfpu_store_zero:",
        "mov [rdi + rcx * 8 + 16], rax",
        "mov [rdi + rcx * 8 + 24], rax",
        "add ecx, 4",
        "cmp ecx, 64",
        "jb .Lfpu_store_zero",
        "ret",
    )
}

/// Read all 16 vector registers (see [`VectorRegs`]).
///
/// # Safety
/// As for [`fill_vector_regs`].
#[inline(always)]
pub unsafe fn read_vector_regs() -> VectorRegs {
    let mut out = core::mem::MaybeUninit::<VectorRegs>::uninit();
    // SAFETY: SSE is enabled (caller); `out` is a writable VectorRegs-sized slot, left uninitialised
    // so that no compiler-generated zeroing can touch a vector register before the read.
    unsafe {
        store_vector_regs(out.as_mut_ptr());
        out.assume_init()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features() -> FpuFeatures {
        FpuFeatures::detect()
    }

    /// Every kind this machine supports, best first.
    fn kinds() -> Vec<FpuKind> {
        let f = features();
        let mut v = Vec::new();
        if f.xsave && f.os_xsave {
            if f.xsaveopt {
                v.push(FpuKind::Xsaveopt);
            }
            v.push(FpuKind::Xsave);
        }
        v.push(FpuKind::Fxsave);
        v
    }

    /// Lanes an `fxsave` area carries: the xmm halves only.
    fn xmm_only(r: VectorRegs) -> [[u64; 2]; 16] {
        r.map(|l| [l[0], l[1]])
    }

    fn read_mxcsr() -> u32 {
        let mut v = 0u32;
        // SAFETY: stmxcsr writes 4 bytes to a valid local; SSE is always enabled in user space.
        unsafe {
            core::arch::asm!("stmxcsr [{}]", in(reg) &mut v, options(nostack, preserves_flags))
        };
        v
    }

    #[test]
    fn detection_is_consistent() {
        let f = features();
        if f.xsave && f.os_xsave {
            assert!(
                f.area_bytes >= 576,
                "an XSAVE area holds at least the legacy region and header"
            );
            assert_ne!(f.xcr0 & 3, 0, "XCR0 always enables x87 and SSE");
            assert_ne!(f.kind(), FpuKind::Fxsave);
        } else {
            assert_eq!(f.kind(), FpuKind::Fxsave);
        }
        if f.xsaveopt && f.xsave && f.os_xsave {
            assert_eq!(f.kind(), FpuKind::Xsaveopt);
        }
    }

    #[test]
    fn new_area_is_aligned_sized_and_clean() {
        let f = features();
        for kind in kinds() {
            let a = FpuArea::new(kind, &f).expect("allocation");
            assert_eq!(a.ptr.as_ptr() as usize % 64, 0);
            let want = if kind == FpuKind::Fxsave {
                512
            } else {
                f.area_bytes
            };
            assert_eq!(a.len(), want);
            assert_eq!(a.mxcsr(), MXCSR_DEFAULT);
        }
    }

    #[test]
    fn fill_then_read_returns_the_pattern() {
        // SAFETY: SSE is enabled in user space.
        let got = unsafe {
            fill_vector_regs(0x1111_0000_0000_0000);
            read_vector_regs()
        };
        assert_eq!(got, expected_vector_regs(0x1111_0000_0000_0000));
    }

    #[test]
    fn save_and_restore_keep_two_states_apart() {
        let f = features();
        for kind in kinds() {
            let mut a = FpuArea::new(kind, &f).unwrap();
            let mut b = FpuArea::new(kind, &f).unwrap();
            let (pa, pb) = (0xaaaa_0000_0000_0000u64, 0xbbbb_0000_0000_0000u64);
            // SAFETY: SSE and (per `kinds`) the kind's instructions are enabled; the areas are ours.
            let (got_a, got_b) = unsafe {
                fill_vector_regs(pa);
                save(&mut a, kind);
                fill_vector_regs(pb);
                save(&mut b, kind);
                restore(&a, kind);
                let got_a = read_vector_regs();
                restore(&b, kind);
                (got_a, read_vector_regs())
            };
            if kind == FpuKind::Fxsave {
                assert_eq!(
                    xmm_only(got_a),
                    xmm_only(expected_vector_regs(pa)),
                    "{kind:?}"
                );
                assert_eq!(
                    xmm_only(got_b),
                    xmm_only(expected_vector_regs(pb)),
                    "{kind:?}"
                );
            } else {
                assert_eq!(got_a, expected_vector_regs(pa), "{kind:?}");
                assert_eq!(got_b, expected_vector_regs(pb), "{kind:?}");
            }
        }
    }

    #[test]
    fn restoring_a_clean_area_clears_the_registers() {
        let f = features();
        for kind in kinds() {
            let clean = FpuArea::new(kind, &f).unwrap();
            // SAFETY: as above.
            let got = unsafe {
                fill_vector_regs(0xcccc_0000_0000_0000);
                restore(&clean, kind);
                read_vector_regs()
            };
            let zero = [[0u64; 4]; 16];
            if kind == FpuKind::Fxsave {
                assert_eq!(xmm_only(got), xmm_only(zero), "{kind:?}");
            } else {
                assert_eq!(got, zero, "{kind:?}");
            }
            assert_eq!(read_mxcsr(), MXCSR_DEFAULT, "{kind:?}");
        }
    }

    #[test]
    fn xsaveopt_resave_after_restore_keeps_the_image() {
        let f = features();
        if !kinds().contains(&FpuKind::Xsaveopt) {
            return;
        }
        let kind = FpuKind::Xsaveopt;
        let mut a = FpuArea::new(kind, &f).unwrap();
        let p = 0xdddd_0000_0000_0000u64;
        // SAFETY: as above.
        let got = unsafe {
            fill_vector_regs(p);
            save(&mut a, kind);
            restore(&a, kind);
            // Unmodified since the restore: xsaveopt may skip components, the image must stay right.
            save(&mut a, kind);
            fill_vector_regs(!p);
            restore(&a, kind);
            read_vector_regs()
        };
        assert_eq!(got, expected_vector_regs(p));
    }
}
