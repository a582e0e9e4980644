//! Extended (x87/SSE/AVX) register state: detection, save areas, save and restore, the first-use trap.
//!
//! Key types and functions:
//! - [`FpuFeatures`] (from CPUID through `raw-cpuid`, and XCR0): which of XSAVE, XSAVEOPT, XSAVEC and
//!   XSAVES exist, whether the OS has enabled XSAVE, the enabled XCR0 components and the save area
//!   size they need (CPUID leaf 0xD); [`FpuFeatures::kind`] picks the [`FpuKind`] to use.
//! - [`FpuArea`]: a 64-byte aligned heap buffer of that size, initialised to the clean state.
//! - [`save`] / [`restore`]: `xsaveopt`/`xsave`/`fxsave` and `xrstor`/`fxrstor` on an area.
//! - [`save_switch`] / [`restore_switch`]: the switch path's pair: while x87 is in its init state
//!   (XINUSE, read with XGETBV1), plain stores and loads of the vector registers and MXCSR into
//!   and out of the same standard-form image, a fraction of the instructions' cost; otherwise
//!   [`save`] / [`restore`]. [`xinuse_tracks_x87`] says whether a CPU ever lets them run (QEMU's
//!   TCG reports every component in use, so there they never do).
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
    /// CPUID.(0xD,1):EAX[2]: `xgetbv` with ECX = 1 reads XINUSE, the components not in their init
    /// state (what [`save_switch`] and [`restore_switch`] decide on).
    pub xgetbv1: bool,
    /// Offset of the AVX component (ymm upper halves) in a standard-form area: CPUID.(0xD,2):EBX
    /// with AVX state enabled, else 0.
    pub avx_offset: usize,
    /// The enabled state components (XCR0), 0 when XSAVE is not enabled.
    pub xcr0: u64,
    /// Bytes an area needs for the enabled components: CPUID.(0xD,0):EBX with XSAVE enabled, else 512.
    pub area_bytes: usize,
    /// An AMD (or Hygon) CPU without XSAVEERPTR (CPUID.8000_0008:EBX[2]): its saves write, and its
    /// restores load, the x87 last-instruction and last-operand pointers and opcode (FIP, FDP, FOP)
    /// only while an x87 exception is pending, so after a restore they still hold the previous
    /// thread's, which the next thread can read with `fxsave` once it has made an exception
    /// pending (CVE-2006-1056; Linux's X86_BUG_FXSAVE_LEAK). [`restore`] then sets them to fixed
    /// values first.
    pub x87_pointer_leak: bool,
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
        let avx_offset = if state.is_some() && xcr0 & XCr0Flags::AVX.bits() != 0 {
            // Leaf 0xD is there: XSAVE is.
            core::arch::x86_64::__cpuid_count(0xd, 2).ebx as usize
        } else {
            0
        };
        let area_bytes = match &state {
            Some(s) if os_xsave => s.xsave_area_size_enabled_features() as usize,
            _ => FXSAVE_BYTES,
        };
        let amd = cpuid.get_vendor_info().is_some_and(|v| matches!(v.as_str(), "AuthenticAMD" | "HygonGenuine"));
        let xsaveerptr = core::arch::x86_64::__cpuid(0x8000_0000).eax >= 0x8000_0008
            && core::arch::x86_64::__cpuid(0x8000_0008).ebx & (1 << 2) != 0;
        FpuFeatures {
            xsave,
            os_xsave,
            xsaveopt: state.as_ref().is_some_and(|s| s.has_xsaveopt()),
            xsavec: state.as_ref().is_some_and(|s| s.has_xsavec()),
            xsaves: state.as_ref().is_some_and(|s| s.has_xsaves_xrstors()),
            avx,
            xgetbv1: state.as_ref().is_some_and(|s| s.has_xgetbv()),
            avx_offset,
            xcr0,
            area_bytes,
            x87_pointer_leak: amd && !xsaveerptr,
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

    /// Whether [`save_switch`] and [`restore_switch`] may move the vector registers with plain
    /// stores and loads when x87 is in its init state: XSAVEOPT is the pair in use, XINUSE can be
    /// read (XGETBV1), and the state is x87, SSE and AVX with the AVX component where the standard
    /// form puts it (after the legacy region and header). Elsewhere they use the instruction pair.
    pub fn fast_switch(&self) -> bool {
        self.kind() == FpuKind::Xsaveopt
            && self.xgetbv1
            && self.ymm_enabled()
            && self.avx_offset >= FXSAVE_BYTES + 64
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
    /// Offset of the AVX component where [`FpuFeatures::fast_switch`] allowed [`save_switch`] and
    /// [`restore_switch`] their plain stores and loads for this area; 0 where they always use the
    /// area's instruction pair.
    fast_avx_offset: usize,
    /// [`FpuFeatures::x87_pointer_leak`]: [`restore`] sets the x87 pointers to fixed values first.
    clear_x87_pointers: bool,
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
            fast_avx_offset: if kind == FpuKind::Xsaveopt && features.fast_switch() && bytes >= features.avx_offset + 256 {
                features.avx_offset
            } else {
                0
            },
            clear_x87_pointers: features.x87_pointer_leak,
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
    // which `clobber_abi("C")` tells the compiler, exactly as for a call. Where the CPU leaks the
    // x87 pointers ([`FpuFeatures::x87_pointer_leak`]), the restore is preceded by what sets them
    // to fixed values, as Linux does: `fnclex` (so the load cannot raise a pending exception),
    // `emms` (every x87 register empty, so it cannot overflow the stack), and an integer load of
    // the image's first word, whose pointers are then this instruction's and this area's; the
    // restore replaces the register it loaded.
    match (kind, area.clear_x87_pointers) {
        // SAFETY: see above.
        (FpuKind::Xsaveopt | FpuKind::Xsave, false) => unsafe {
            core::arch::asm!("xrstor64 [{}]", in(reg) p, in("eax") mask_lo, in("edx") mask_hi,
                clobber_abi("C"), options(nostack, preserves_flags, readonly))
        },
        // SAFETY: see above; the three x87 instructions touch only x87 state and read 4 bytes of
        // the image.
        (FpuKind::Xsaveopt | FpuKind::Xsave, true) => unsafe {
            core::arch::asm!("fnclex", "emms", "fild dword ptr [{p}]", "xrstor64 [{p}]", p = in(reg) p,
                in("eax") mask_lo, in("edx") mask_hi, clobber_abi("C"), options(nostack, preserves_flags, readonly))
        },
        // SAFETY: see above.
        (FpuKind::Fxsave, false) => unsafe {
            core::arch::asm!("fxrstor64 [{}]", in(reg) p, clobber_abi("C"), options(nostack, preserves_flags, readonly))
        },
        // SAFETY: as for the XSAVE form with the pointers cleared.
        (FpuKind::Fxsave, true) => unsafe {
            core::arch::asm!("fnclex", "emms", "fild dword ptr [{p}]", "fxrstor64 [{p}]", p = in(reg) p,
                clobber_abi("C"), options(nostack, preserves_flags, readonly))
        },
    }
}

/// Offset of the XSAVE header (XSTATE_BV, then XCOMP_BV) in a standard-form area.
const HEADER_OFFSET: usize = 512;
/// XSTATE_BV bits: x87, SSE, AVX.
const X87_BIT: u64 = 1;
const SSE_AVX_BITS: u64 = 0b110;

/// XINUSE (`xgetbv` with ECX = 1): bit `i` clear means state component `i` is in its initial
/// configuration on this CPU (the processor may report a component in use that is not, never the
/// reverse).
///
/// # Safety
/// CR4.OSXSAVE is set and the CPU has XGETBV1 ([`FpuFeatures::xgetbv1`]).
#[inline(always)]
unsafe fn xinuse() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees the instruction and ECX = 1 are supported; it only reads.
    unsafe {
        core::arch::asm!("xgetbv", in("ecx") 1u32, out("eax") lo, out("edx") hi,
            options(nostack, nomem, preserves_flags))
    };
    u64::from(lo) | u64::from(hi) << 32
}

/// Whether XINUSE shows x87 in its init state right after an `xrstor` of the clean image on this
/// CPU: where it does not (QEMU's TCG reports every component in use), [`save_switch`] and
/// [`restore_switch`] always take the instructions. False where [`FpuFeatures::fast_switch`] is
/// false, or an area cannot be allocated. Replaces the extended state with the clean one.
///
/// # Safety
/// `features` are this CPU's, with XSAVE enabled and CR0.TS clear; the caller has no extended state
/// to keep.
pub unsafe fn xinuse_tracks_x87(features: &FpuFeatures) -> bool {
    if !features.fast_switch() {
        return false;
    }
    let Some(clean) = FpuArea::new(FpuKind::Xsaveopt, features) else { return false };
    // SAFETY: XSAVE is enabled (fast_switch) and the clean image is valid; XGETBV1 is there
    // (fast_switch); the caller keeps no extended state.
    unsafe {
        restore(&clean, FpuKind::Xsaveopt);
        xinuse() & X87_BIT == 0
    }
}

/// The switch path's [`save`]: when x87 is in its init state on this CPU, the vector registers are
/// written with plain stores instead of `xsaveopt`, into the same places in the standard form
/// (xmm0-15 in the legacy region at offset 160, ymm upper halves with `vextractf128` at the AVX
/// component's offset, MXCSR with `stmxcsr` at 24, XSTATE_BV = XINUSE's SSE and AVX bits with the
/// x87 bit clear, XCOMP_BV 0), so the area stays an image `xrstor`, signal frames and every
/// other reader of the standard form take as before. True when the stores ran: x87 is then in
/// its init state on this CPU, and stays so until something other than a switch runs here.
///
/// Where the area does not allow it ([`FpuFeatures::fast_switch`]) or x87 is in use, this is
/// [`save`].
///
/// # Safety
/// As for [`save`].
#[inline]
pub unsafe fn save_switch(area: &mut FpuArea, kind: FpuKind) -> bool {
    let avx = area.fast_avx_offset;
    if avx == 0 {
        // SAFETY: the caller's guarantees are `save`'s.
        unsafe { save(area, kind) };
        return false;
    }
    // SAFETY: a fast area exists only where `fast_switch` saw OSXSAVE and XGETBV1.
    let in_use = unsafe { xinuse() };
    if in_use & X87_BIT != 0 {
        // SAFETY: as above.
        unsafe { save(area, kind) };
        return false;
    }
    let p = area.ptr.as_ptr();
    // SAFETY: `p` is a 64-byte aligned standard-form area, exclusively borrowed, at least
    // `avx + 256` bytes long (checked in `FpuArea::new`): every store below is in bounds and
    // aligned (160 + 16 i, avx + 16 i with avx a multiple of 64, 24, 512, 520). AVX state is
    // enabled (`fast_switch`), so the VEX encodings run, and CR0.TS is clear (caller). The asm
    // only reads vector registers and MXCSR.
    //
    // What the stores leave is what `xsaveopt` would: x87 is in its init state (XINUSE[0] = 0
    // guarantees it, the reverse of the processor's permitted over-reporting), so its bytes are
    // left alone with XSTATE_BV[0] = 0, exactly as `xsaveopt` skips an init component; XSTATE_BV
    // bits 1 and 2 are XINUSE's (a clear bit: the registers are zero, which a restore gives back
    // from the bit alone); MXCSR is written whatever the bits, as `xsave` does when SSE or AVX is
    // requested. Bits of XSTATE_BV above 2 were never set in a thread's area (every save and
    // restore requests x87, SSE and AVX only), so the whole word is written. MXCSR_MASK (offset
    // 28) keeps whatever an `xsave` last wrote there, or 0 in a fresh area ("the default mask",
    // in the manuals' words).
    //
    // The XSAVEOPT "modified" tracking stays right: it only lets a later `xsaveopt` to the area
    // last given to `xrstor` skip components that no instruction has written since that
    // `xrstor`; these stores change no register, and put into the area the values the registers
    // hold, which is what that `xsaveopt` would have written anyway.
    unsafe {
        core::arch::asm!(
            "vmovdqa [{p} + 160], xmm0",
            "vmovdqa [{p} + 176], xmm1",
            "vmovdqa [{p} + 192], xmm2",
            "vmovdqa [{p} + 208], xmm3",
            "vmovdqa [{p} + 224], xmm4",
            "vmovdqa [{p} + 240], xmm5",
            "vmovdqa [{p} + 256], xmm6",
            "vmovdqa [{p} + 272], xmm7",
            "vmovdqa [{p} + 288], xmm8",
            "vmovdqa [{p} + 304], xmm9",
            "vmovdqa [{p} + 320], xmm10",
            "vmovdqa [{p} + 336], xmm11",
            "vmovdqa [{p} + 352], xmm12",
            "vmovdqa [{p} + 368], xmm13",
            "vmovdqa [{p} + 384], xmm14",
            "vmovdqa [{p} + 400], xmm15",
            "vextractf128 [{a} + 0], ymm0, 1",
            "vextractf128 [{a} + 16], ymm1, 1",
            "vextractf128 [{a} + 32], ymm2, 1",
            "vextractf128 [{a} + 48], ymm3, 1",
            "vextractf128 [{a} + 64], ymm4, 1",
            "vextractf128 [{a} + 80], ymm5, 1",
            "vextractf128 [{a} + 96], ymm6, 1",
            "vextractf128 [{a} + 112], ymm7, 1",
            "vextractf128 [{a} + 128], ymm8, 1",
            "vextractf128 [{a} + 144], ymm9, 1",
            "vextractf128 [{a} + 160], ymm10, 1",
            "vextractf128 [{a} + 176], ymm11, 1",
            "vextractf128 [{a} + 192], ymm12, 1",
            "vextractf128 [{a} + 208], ymm13, 1",
            "vextractf128 [{a} + 224], ymm14, 1",
            "vextractf128 [{a} + 240], ymm15, 1",
            "vstmxcsr [{p} + 24]",
            "mov [{p} + 512], {bv}",
            "mov qword ptr [{p} + 520], 0",
            p = in(reg) p,
            a = in(reg) p.add(avx),
            bv = in(reg) in_use & SSE_AVX_BITS,
            options(nostack, preserves_flags),
        )
    };
    true
}

/// The switch path's [`restore`]: when the image has x87 in its init state (XSTATE_BV[0] clear,
/// nothing but SSE and AVX bits in XSTATE_BV, XCOMP_BV and the reserved header word zero) and so
/// has this CPU, the vector registers are loaded with plain loads instead of `xrstor`: MXCSR with
/// `ldmxcsr`, xmm0-15 with VEX-encoded 128-bit loads (which zero the upper halves), or zeroed when
/// the SSE bit is clear, then the upper halves with `vinsertf128` when the AVX bit is set. True
/// when the loads ran.
///
/// `x87_init`: the caller knows x87 is in its init state here (a [`save_switch`] just returned
/// true on this CPU, nothing has run since); false makes this read XINUSE to find out. Where the
/// area does not allow it ([`FpuFeatures::fast_switch`]), or either side has x87 in use, this is
/// [`restore`].
///
/// # Safety
/// As for [`restore`].
#[inline]
pub unsafe fn restore_switch(area: &FpuArea, kind: FpuKind, x87_init: bool) -> bool {
    let avx = area.fast_avx_offset;
    let p = area.ptr.as_ptr();
    if avx != 0 {
        // SAFETY: the header is within the area (at least 576 bytes), 8-byte aligned; `&FpuArea`
        // excludes a concurrent save (which needs `&mut`).
        let (bv, xcomp, reserved) = unsafe {
            let h = p.add(HEADER_OFFSET).cast::<u64>();
            (h.read(), h.add(1).read(), h.add(2).read())
        };
        // Anything but a plain SSE/AVX image (x87 in use, a compacted or malformed header: the
        // latter faults in `xrstor` exactly as before) takes `xrstor`.
        let plain = bv & !SSE_AVX_BITS == 0 && xcomp | reserved == 0;
        // SAFETY: a fast area exists only where `fast_switch` saw OSXSAVE and XGETBV1.
        if plain && (x87_init || unsafe { xinuse() } & X87_BIT == 0) {
            // SAFETY: the image is valid (caller), and every load below is in bounds and aligned as
            // in `save_switch`; AVX state is enabled and CR0.TS clear (caller). The asm writes every
            // vector register and MXCSR, declared by `clobber_abi("C")` (as for `restore`), and reads
            // the area only.
            //
            // No state of another thread survives: x87 is in its init state on the CPU (XINUSE[0]
            // = 0 means so; a processor may only err the other way) and in the image, where
            // `xrstor` would have initialised it: the x87 data registers, which these loads do
            // not touch, hold nothing of whoever ran before. Every xmm and ymm register is fully
            // written: by a VEX load or `vpxor` (both zero bits 255:128, and beyond where the
            // registers are wider), then `vinsertf128` for the upper half when the image has one.
            // MXCSR is loaded from the image whatever XSTATE_BV says, as `xrstor` does when SSE or
            // AVX is requested (and `ldmxcsr` faults on reserved bits as `xrstor` does).
            //
            // The XSAVEOPT tracking stays right: the address `xrstor` last loaded from keeps
            // belonging to that `xrstor`, and every register these loads write is marked modified
            // by the processor (any instruction that writes a component marks it), so a later
            // `xsaveopt` to that address saves them instead of trusting its bytes.
            unsafe {
                core::arch::asm!(
                    "vldmxcsr [{p} + 24]",
                    "test {bv:e}, 2",
                    "jz 2f",
                    "vmovdqa xmm0, [{p} + 160]",
                    "vmovdqa xmm1, [{p} + 176]",
                    "vmovdqa xmm2, [{p} + 192]",
                    "vmovdqa xmm3, [{p} + 208]",
                    "vmovdqa xmm4, [{p} + 224]",
                    "vmovdqa xmm5, [{p} + 240]",
                    "vmovdqa xmm6, [{p} + 256]",
                    "vmovdqa xmm7, [{p} + 272]",
                    "vmovdqa xmm8, [{p} + 288]",
                    "vmovdqa xmm9, [{p} + 304]",
                    "vmovdqa xmm10, [{p} + 320]",
                    "vmovdqa xmm11, [{p} + 336]",
                    "vmovdqa xmm12, [{p} + 352]",
                    "vmovdqa xmm13, [{p} + 368]",
                    "vmovdqa xmm14, [{p} + 384]",
                    "vmovdqa xmm15, [{p} + 400]",
                    "jmp 3f",
                    "2:",
                    "vpxor xmm0, xmm0, xmm0",
                    "vpxor xmm1, xmm1, xmm1",
                    "vpxor xmm2, xmm2, xmm2",
                    "vpxor xmm3, xmm3, xmm3",
                    "vpxor xmm4, xmm4, xmm4",
                    "vpxor xmm5, xmm5, xmm5",
                    "vpxor xmm6, xmm6, xmm6",
                    "vpxor xmm7, xmm7, xmm7",
                    "vpxor xmm8, xmm8, xmm8",
                    "vpxor xmm9, xmm9, xmm9",
                    "vpxor xmm10, xmm10, xmm10",
                    "vpxor xmm11, xmm11, xmm11",
                    "vpxor xmm12, xmm12, xmm12",
                    "vpxor xmm13, xmm13, xmm13",
                    "vpxor xmm14, xmm14, xmm14",
                    "vpxor xmm15, xmm15, xmm15",
                    "3:",
                    "test {bv:e}, 4",
                    "jz 4f",
                    "vinsertf128 ymm0, ymm0, [{a} + 0], 1",
                    "vinsertf128 ymm1, ymm1, [{a} + 16], 1",
                    "vinsertf128 ymm2, ymm2, [{a} + 32], 1",
                    "vinsertf128 ymm3, ymm3, [{a} + 48], 1",
                    "vinsertf128 ymm4, ymm4, [{a} + 64], 1",
                    "vinsertf128 ymm5, ymm5, [{a} + 80], 1",
                    "vinsertf128 ymm6, ymm6, [{a} + 96], 1",
                    "vinsertf128 ymm7, ymm7, [{a} + 112], 1",
                    "vinsertf128 ymm8, ymm8, [{a} + 128], 1",
                    "vinsertf128 ymm9, ymm9, [{a} + 144], 1",
                    "vinsertf128 ymm10, ymm10, [{a} + 160], 1",
                    "vinsertf128 ymm11, ymm11, [{a} + 176], 1",
                    "vinsertf128 ymm12, ymm12, [{a} + 192], 1",
                    "vinsertf128 ymm13, ymm13, [{a} + 208], 1",
                    "vinsertf128 ymm14, ymm14, [{a} + 224], 1",
                    "vinsertf128 ymm15, ymm15, [{a} + 240], 1",
                    "4:",
                    p = in(reg) p,
                    a = in(reg) p.add(avx),
                    bv = in(reg) bv,
                    clobber_abi("C"),
                    options(nostack, readonly),
                )
            };
            return true;
        }
    }
    // SAFETY: the caller's guarantees are `restore`'s.
    unsafe { restore(area, kind) };
    false
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

    /// Where the x87 pointers are set to fixed values before a restore (AMD without XSAVEERPTR),
    /// the restore still gives exactly the image: the x87 registers, control and status words,
    /// tags and the pointers the image holds.
    #[test]
    fn restore_with_the_x87_pointers_cleared_gives_the_image() {
        let f = features();
        let leaky = FpuFeatures { x87_pointer_leak: true, ..f };
        for kind in kinds() {
            let mut image = FpuArea::new(kind, &f).unwrap();
            let mut back = FpuArea::new(kind, &f).unwrap();
            let cleared = FpuArea::new(kind, &leaky).unwrap();
            assert!(cleared.clear_x87_pointers && !image.clear_x87_pointers);
            // SAFETY: x87 and SSE are enabled in user space and the kind's instructions per
            // `kinds`; the areas are ours. The two loads leave two values on the x87 stack, which
            // the saves record and the restores replace.
            unsafe {
                core::arch::asm!("fninit", "fld1", "fldpi", out("st(0)") _, out("st(1)") _, options(nostack));
                save_full(&mut image);
                core::arch::asm!("fninit", options(nostack));
                restore(&cleared, kind);
                restore(&image, kind);
                save_full(&mut back);
                core::arch::asm!("fninit", options(nostack));
            }
            let x87 = |a: &FpuArea| {
                // SAFETY: the legacy region's first 160 bytes are in every area.
                let bytes = unsafe { core::slice::from_raw_parts(a.ptr.as_ptr(), 160) };
                [&bytes[..24], &bytes[32..]].concat()
            };
            assert_eq!(x87(&back), x87(&image), "{kind:?}");
            // The image holds the two loads (TOP 6), so the comparison above compared them.
            let fsw = u16::from_le_bytes([x87(&image)[2], x87(&image)[3]]);
            assert_eq!((fsw >> 11) & 7, 6, "{kind:?}");
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

    fn write_mxcsr(v: u32) {
        // SAFETY: ldmxcsr reads 4 bytes from a valid local; the value has no reserved bits set
        // (the callers pass known-good values).
        unsafe { core::arch::asm!("ldmxcsr [{}]", in(reg) &v, options(nostack, preserves_flags)) };
    }

    fn read_fcw() -> u16 {
        let mut v = 0u16;
        // SAFETY: fnstcw writes 2 bytes to a valid local.
        unsafe { core::arch::asm!("fnstcw [{}]", in(reg) &mut v, options(nostack, preserves_flags)) };
        v
    }

    fn write_fcw(v: u16) {
        // SAFETY: fldcw reads 2 bytes from a valid local; only the x87 control word changes.
        unsafe { core::arch::asm!("fldcw [{}]", in(reg) &v, options(nostack, preserves_flags)) };
    }

    /// The fast switch features, or `None` (the test has nothing to check) where this machine
    /// lacks them.
    fn fast() -> Option<FpuFeatures> {
        let f = features().for_threads();
        if f.fast_switch() {
            Some(f)
        } else {
            eprintln!("no XSAVEOPT, XGETBV1 or AVX state here: the stores and loads are not used");
            None
        }
    }

    fn header(a: &FpuArea) -> [u64; 2] {
        let b = a.as_bytes();
        [0, 8].map(|o| u64::from_le_bytes(b[512 + o..520 + o].try_into().unwrap()))
    }

    /// Put x87 in its init state on this CPU (an `xrstor` of a clean image does; nothing in a
    /// test harness thread touches x87 afterwards).
    fn x87_init(f: &FpuFeatures) {
        let clean = FpuArea::new(FpuKind::Xsaveopt, f).unwrap();
        // SAFETY: XSAVE is enabled (fast_switch); the clean image is valid.
        unsafe { restore(&clean, FpuKind::Xsaveopt) };
    }

    #[test]
    fn xinuse_shows_x87_init_after_a_clean_restore() {
        let Some(f) = fast() else { return };
        // SAFETY: as for the tests below; nothing of this thread's state is kept.
        assert!(unsafe { xinuse_tracks_x87(&f) });
    }

    #[test]
    fn save_switch_writes_what_xsave_does() {
        let Some(f) = fast() else { return };
        let kind = FpuKind::Xsaveopt;
        let mut by_stores = FpuArea::new(kind, &f).unwrap();
        let mut by_xsave = FpuArea::new(kind, &f).unwrap();
        x87_init(&f);
        // SAFETY: SSE, AVX and XSAVE are enabled in user space here (fast_switch); areas are ours.
        let fast_taken = unsafe {
            fill_vector_regs(0x7777_0000_0000_0000);
            write_mxcsr(0x9fc0);
            let taken = save_switch(&mut by_stores, kind);
            save_full(&mut by_xsave);
            write_mxcsr(MXCSR_DEFAULT);
            taken
        };
        assert!(fast_taken, "x87 was in its init state: the stores should have run");
        let (s, x) = (by_stores.as_bytes(), by_xsave.as_bytes());
        assert_eq!(s[24..28], x[24..28], "MXCSR");
        assert_eq!(by_stores.mxcsr(), 0x9fc0);
        assert_eq!(s[160..416], x[160..416], "xmm0-15");
        let avx = f.avx_offset;
        assert_eq!(s[avx..avx + 256], x[avx..avx + 256], "ymm upper halves");
        assert_eq!(header(&by_stores), header(&by_xsave), "XSTATE_BV and XCOMP_BV");
        assert_eq!(header(&by_stores)[0] & X87_BIT, 0);
    }

    #[test]
    fn restore_switch_loads_what_xrstor_does() {
        let Some(f) = fast() else { return };
        let kind = FpuKind::Xsaveopt;
        let mut saved = FpuArea::new(kind, &f).unwrap();
        x87_init(&f);
        // SAFETY: as above.
        unsafe {
            fill_vector_regs(0x8888_0000_0000_0000);
            write_mxcsr(0x9fc0);
            assert!(save_switch(&mut saved, kind));
            write_mxcsr(MXCSR_DEFAULT);
        }
        // The image as saved, then with the AVX bit clear, the SSE bit clear, and both clear.
        for clear in [0, 0b100, 0b010, 0b110] {
            let mut image = FpuArea::new(kind, &f).unwrap();
            image.as_bytes_mut().copy_from_slice(saved.as_bytes());
            let bv = header(&image)[0] & !clear;
            image.as_bytes_mut()[512..520].copy_from_slice(&bv.to_le_bytes());
            // SAFETY: as above; the image is a valid standard-form image (one written by a save,
            // with header bits cleared).
            let (by_loads, loads_mxcsr, fast_taken, by_xrstor, xrstor_mxcsr) = unsafe {
                fill_vector_regs(0x9999_0000_0000_0000);
                let taken = restore_switch(&image, kind, false);
                let regs = read_vector_regs();
                let m = read_mxcsr();
                fill_vector_regs(0x9999_0000_0000_0000);
                write_mxcsr(MXCSR_DEFAULT);
                restore(&image, kind);
                let r2 = read_vector_regs();
                let m2 = read_mxcsr();
                write_mxcsr(MXCSR_DEFAULT);
                (regs, m, taken, r2, m2)
            };
            assert!(fast_taken, "XSTATE_BV {bv:#x}: the loads should have run");
            assert_eq!(by_loads, by_xrstor, "XSTATE_BV {bv:#x}");
            assert_eq!(loads_mxcsr, xrstor_mxcsr, "XSTATE_BV {bv:#x}");
            let mut want = expected_vector_regs(0x8888_0000_0000_0000);
            for r in want.iter_mut() {
                if clear & 0b010 != 0 {
                    r[0] = 0;
                    r[1] = 0;
                }
                if clear & 0b100 != 0 {
                    r[2] = 0;
                    r[3] = 0;
                }
            }
            assert_eq!(by_loads, want, "XSTATE_BV {bv:#x}");
        }
    }

    #[test]
    fn switch_round_trip_keeps_two_states_apart() {
        let Some(f) = fast() else { return };
        let kind = FpuKind::Xsaveopt;
        let mut a = FpuArea::new(kind, &f).unwrap();
        let mut b = FpuArea::new(kind, &f).unwrap();
        x87_init(&f);
        // SAFETY: as above.
        let (got_a, got_b, fresh) = unsafe {
            fill_vector_regs(0xaaaa_0000_0000_0000);
            let x87 = save_switch(&mut a, kind);
            // A thread that has not run yet: its clean image loads as zeros and the default MXCSR.
            let clean = FpuArea::new(kind, &f).unwrap();
            assert!(restore_switch(&clean, kind, x87));
            let fresh = (read_vector_regs(), read_mxcsr());
            fill_vector_regs(0xbbbb_0000_0000_0000);
            let x87 = save_switch(&mut b, kind);
            assert!(restore_switch(&a, kind, x87));
            let got_a = read_vector_regs();
            let x87 = save_switch(&mut a, kind);
            assert!(restore_switch(&b, kind, x87));
            (got_a, read_vector_regs(), fresh)
        };
        assert_eq!(got_a, expected_vector_regs(0xaaaa_0000_0000_0000));
        assert_eq!(got_b, expected_vector_regs(0xbbbb_0000_0000_0000));
        assert_eq!(fresh, ([[0; 4]; 16], MXCSR_DEFAULT));
    }

    #[test]
    fn x87_in_use_takes_the_instructions_and_keeps_x87() {
        let Some(f) = fast() else { return };
        let kind = FpuKind::Xsaveopt;
        let mut a = FpuArea::new(kind, &f).unwrap();
        let mut b = FpuArea::new(kind, &f).unwrap();
        x87_init(&f);
        // SAFETY: as above; the x87 control word written masks every exception.
        let (saved_fast, restored_fast, fcw, into_used_fast, fcw_after) = unsafe {
            // x87 in use: a control word other than the init one (0x037f).
            write_fcw(0x027f);
            fill_vector_regs(0xeeee_0000_0000_0000);
            let saved_fast = save_switch(&mut a, kind);
            // Another thread's state with x87 in its init state, then `a` back over it.
            x87_init(&f);
            fill_vector_regs(0x1234_0000_0000_0000);
            assert!(save_switch(&mut b, kind));
            let restored_fast = restore_switch(&a, kind, true);
            let fcw = read_fcw();
            let regs = read_vector_regs();
            assert_eq!(regs, expected_vector_regs(0xeeee_0000_0000_0000));
            // With x87 in use on the CPU, even an image without it goes through `xrstor`, which
            // puts x87 back in its init state.
            let into_used_fast = restore_switch(&b, kind, false);
            (saved_fast, restored_fast, fcw, into_used_fast, read_fcw())
        };
        assert!(!saved_fast, "x87 in use: xsaveopt");
        assert_ne!(header(&a)[0] & X87_BIT, 0, "xsaveopt recorded x87 in use");
        assert!(!restored_fast, "an image with x87 in use goes through xrstor");
        assert_eq!(fcw, 0x027f, "x87 state came back");
        assert!(!into_used_fast, "x87 in use on the CPU: xrstor");
        assert_eq!(fcw_after, FCW_DEFAULT);
        x87_init(&f);
    }
}
