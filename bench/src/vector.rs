//! Live vector state on demand: the way both sides of the FPU yield row make their threads' AVX
//! state live and modified between yields.
//!
//! Key type: [`LiveVectors`], an extended-state image holding a pattern in every ymm register
//! (xmm where the OS enables no AVX state), and [`LiveVectors::touch`], which loads it with
//! `arch::fpu::restore`. A load from an image of our own marks every component in use and defeats
//! the save instructions' "unmodified since the last restore" shortcut, as real vector code would,
//! at the cost of one `xrstor` (which `main` measures and reports). The obvious alternative,
//! `arch::fpu::fill_vector_regs`, runs `cpuid` on every call, which exits to the hypervisor in a
//! virtual machine and would swamp the switch being measured. Neighbours: `linux` and `ours` call
//! `touch` between yields; the save and restore instructions live in `arch::fpu`.

use arch::fpu::{self, FpuArea, FpuFeatures, FpuKind};

/// An extended-state image with every vector register holding a pattern.
pub struct LiveVectors {
    area: FpuArea,
    kind: FpuKind,
    ymm_enabled: bool,
}

impl LiveVectors {
    /// Fill the vector registers with a pattern and save them; `None` if the area cannot be
    /// allocated.
    pub fn new() -> Option<Self> {
        let features = FpuFeatures::detect().for_threads();
        let kind = features.kind();
        let mut area = FpuArea::new(kind, &features)?;
        // SAFETY: SSE is always enabled for user space on x86_64 Linux; `kind` was chosen from the
        // detected features (an XSAVE form only when the OS has set CR4.OSXSAVE), CR0.TS is clear
        // for user space, and `area` was sized for `kind` on this machine.
        unsafe {
            fpu::fill_vector_regs(0x5eed_0000_0000_0000);
            fpu::save(&mut area, kind);
        }
        Some(Self { area, kind, ymm_enabled: features.ymm_enabled() })
    }

    /// The save/restore instruction pair the image was made with (the one `sched` uses here).
    pub fn kind(&self) -> FpuKind {
        self.kind
    }

    /// Whether the image carries ymm upper halves (the OS enabled AVX state), not only xmm.
    pub fn ymm_enabled(&self) -> bool {
        self.ymm_enabled
    }

    /// Load the image into this CPU's vector registers.
    pub fn touch(&self) {
        // SAFETY: the image was written by `save` with the same kind in this process (same XCR0),
        // and the kind's instructions are enabled for user space, as checked in `new`.
        unsafe { fpu::restore(&self.area, self.kind) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touch_loads_the_pattern_into_the_vector_registers() {
        let vectors = LiveVectors::new().unwrap();
        // SAFETY: SSE is enabled in user space.
        let regs = unsafe {
            fpu::fill_vector_regs(0);
            vectors.touch();
            fpu::read_vector_regs()
        };
        let expected = fpu::expected_vector_regs(0x5eed_0000_0000_0000);
        if vectors.kind == FpuKind::Fxsave {
            assert_eq!(regs.map(|lanes| [lanes[0], lanes[1]]), expected.map(|lanes| [lanes[0], lanes[1]]));
        } else {
            assert_eq!(regs, expected);
        }
        assert_eq!(vectors.ymm_enabled(), FpuFeatures::detect().ymm_enabled());
    }
}
