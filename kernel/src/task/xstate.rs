//! The calling user thread's extended state (x87, SSE, AVX) as bytes, for signal frames: a save in
//! the standard (non-compacted) XSAVE form, or FXSAVE's 512 bytes where XSAVE is off, and a load
//! of an image the caller has checked (`abi::signal::check_xsave`).
//!
//! Why this works while the thread is in the kernel: the kernel is built without SSE, so the user's
//! extended registers stay live in the CPU from the ring-3 entry to the return. At a switch the
//! scheduler (`sched`'s `switch_fpu`) either restores the incoming thread's state or, switching
//! lazily, arms CR0.TS with the clean state or another thread's of its space in the registers;
//! the `xsave` or `xrstor` here then raises #NM, whose handler (`task::fpu_trap`) loads the
//! thread's own state and disarms, and the instruction runs again. A save here therefore reads the
//! thread's own state wherever it runs, and a load becomes the state the next switch saves and the
//! return to ring 3 finds.
//!
//! The save uses plain `xsave`, never `xsaveopt`: the latter may skip components that were not
//! modified since the last `xrstor` *from the same address*, and a short-lived buffer can reuse the
//! address of one `rt_sigreturn` just loaded from.

use alloc::vec::Vec;

use arch::fpu::{self, FpuArea, FpuFeatures, FpuKind};

/// The extended-state format user signal frames get on this machine.
#[derive(Clone, Copy, Debug)]
pub struct Format {
    /// Bytes of an image (the XSAVE area size for the enabled components, or 512).
    pub size: usize,
    /// Whether the image is in XSAVE form (else FXSAVE only).
    pub xsave: bool,
    /// The enabled components (XCR0), 0 without XSAVE.
    pub xcr0: u64,
    /// The MXCSR bits the CPU accepts (FXSAVE's MXCSR_MASK, 0xffbf when it reports 0).
    pub mxcsr_mask: u32,
}

static FORMAT: spin::Once<(FpuKind, FpuFeatures, Format)> = spin::Once::new();

fn kind_and_features() -> Option<(FpuKind, FpuFeatures)> {
    let f = crate::task::platform::fpu_features()?;
    let kind = match f.kind() {
        FpuKind::Xsaveopt | FpuKind::Xsave => FpuKind::Xsave,
        FpuKind::Fxsave => FpuKind::Fxsave,
    };
    Some((kind, f))
}

/// The format of this machine's images; `None` when threads have no extended state.
pub fn format() -> Option<Format> {
    let (kind, features) = kind_and_features()?;
    let (_, _, f) = FORMAT.call_once(|| {
        let mut probe = FpuArea::new(kind, &features);
        let mask = match probe.as_mut() {
            Some(a) => {
                // SAFETY: `kind` is what the scheduler uses for every FPU thread on every CPU (its
                // XSAVE variant without the optimisation), enabled by `fpu::enable_on_this_cpu`;
                // the area was sized for it. With CR0.TS set (a lazy switch) the save traps to
                // `task::fpu_trap` first (module notes).
                unsafe { fpu::save(a, kind) };
                let b = a.as_bytes();
                u32::from_le_bytes([b[28], b[29], b[30], b[31]])
            }
            None => 0,
        };
        let size = probe.as_ref().map_or(512, |a| a.len());
        let xsave = kind == FpuKind::Xsave;
        (kind, features, Format { size, xsave, xcr0: if xsave { features.xcr0 } else { 0 }, mxcsr_mask: if mask == 0 { 0xffbf } else { mask } })
    });
    Some(*f)
}

/// The calling thread's extended state as an image of [`Format::size`] bytes.
pub fn save_current() -> Option<Vec<u8>> {
    format()?;
    let (kind, features) = kind_and_features()?;
    let mut area = FpuArea::new(kind, &features)?;
    // SAFETY: as in `format`: the kind is enabled on every CPU, the area is sized for it; the
    // registers hold the calling thread's state, or CR0.TS is set and the trap puts it there
    // (module notes).
    unsafe { fpu::save(&mut area, kind) };
    Some(area.as_bytes().to_vec())
}

/// Load `image` (checked by the caller: for XSAVE, `abi::signal::check_xsave` against
/// [`Format::xcr0`] and [`Format::mxcsr_mask`]; for FXSAVE, the MXCSR against the mask) as the
/// calling thread's extended state; `None` for the clean state. False when it has the wrong size.
pub fn load_current(image: Option<&[u8]>) -> bool {
    let Some(fmt) = format() else { return image.is_none() };
    let Some((kind, features)) = kind_and_features() else { return false };
    let Some(mut area) = FpuArea::new(kind, &features) else { return false };
    if let Some(img) = image {
        if img.len() != fmt.size || area.len() != fmt.size {
            return false;
        }
        area.as_bytes_mut().copy_from_slice(img);
        let mxcsr = u32::from_le_bytes([img[24], img[25], img[26], img[27]]);
        if mxcsr & !fmt.mxcsr_mask != 0 {
            return false;
        }
        if fmt.xsave && abi::signal::check_xsave(img, fmt.xcr0, fmt.mxcsr_mask).is_err() {
            return false;
        }
    }
    // SAFETY: the kind is enabled on every CPU (with CR0.TS set, the trap makes the registers the
    // thread's first, module notes); the image is either the clean
    // one of `FpuArea::new` or passed the checks above, which rule out every #GP of XRSTOR/FXRSTOR
    // on a standard-form image (SDM vol. 1 13.8.1: reserved header bits, XSTATE_BV outside XCR0,
    // compaction; MXCSR reserved bits); bytes of components the header marks as initial are not
    // read.
    unsafe { fpu::restore(&area, kind) };
    true
}
