//! Live vector state on demand: the way both sides of the FPU yield row make their threads' AVX
//! state live and modified between yields.
//!
//! Key type: [`LiveVectors`], a pattern for every ymm register (xmm where the OS enables no AVX
//! state) and an extended-state image saved with it, and [`LiveVectors::touch`], which loads the
//! pattern with 16 `vmovdqu` (`movdqu`) loads. Loads mark the vector components in use and
//! modified, as real vector code would, so the save instructions cannot take their "unmodified
//! since the last restore" shortcut, and they cost a few cycles, so the row measures the switch
//! rather than the touch (an `xrstor` of the image, the earlier touch, cost as much as the switch's
//! own restore). The obvious alternative, `arch::fpu::fill_vector_regs`, runs `cpuid` on every
//! call, which exits to the hypervisor in a virtual machine and would swamp the switch being
//! measured. Neighbours: `linux` and `ours` call `touch` between yields; `main` times `touch` and
//! the switch path's save and restore (`arch::fpu`) of the image as phases.

use arch::fpu::{self, FpuArea, FpuFeatures, FpuKind};

/// The pattern's base: register `i`, lane `l` holds `PATTERN + 4 i + l`.
const PATTERN: u64 = 0x5eed_0000_0000_0000;

/// 16 registers of 32 bytes, aligned for the loads.
#[repr(C, align(64))]
struct Pattern([u64; 64]);

/// A pattern for every vector register, and an extended-state image of the registers holding it.
pub struct LiveVectors {
    area: FpuArea,
    kind: FpuKind,
    ymm_enabled: bool,
    pattern: Box<Pattern>,
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
            fpu::fill_vector_regs(PATTERN);
            fpu::save(&mut area, kind);
        }
        // What the registers held (lanes 2 and 3 zero without AVX state, never loaded then).
        let regs = fpu::expected_vector_regs(PATTERN);
        let pattern = Box::new(Pattern(core::array::from_fn(|i| regs[i / 4][i % 4])));
        Some(Self { area, kind, ymm_enabled: features.ymm_enabled(), pattern })
    }

    /// The image of the vector registers holding the pattern (saved with [`Self::kind`]).
    pub fn area(&self) -> &FpuArea {
        &self.area
    }

    /// The save/restore instruction pair the image was made with (the one `sched` uses here).
    pub fn kind(&self) -> FpuKind {
        self.kind
    }

    /// Whether the image carries ymm upper halves (the OS enabled AVX state), not only xmm.
    pub fn ymm_enabled(&self) -> bool {
        self.ymm_enabled
    }

    /// Load the pattern into this CPU's vector registers: 16 ymm loads (xmm without AVX state).
    pub fn touch(&self) {
        let p = self.pattern.0.as_ptr();
        if self.ymm_enabled {
            // SAFETY: the OS enabled AVX state (XCR0, checked in `new`), so the VEX loads run;
            // `p` points to 512 readable bytes. The asm writes the 16 vector registers, which
            // `clobber_abi("C")` declares (as any call may write them), and reads nothing else.
            unsafe {
                core::arch::asm!(
                    "vmovdqu ymm0, [{p} + 0]",
                    "vmovdqu ymm1, [{p} + 32]",
                    "vmovdqu ymm2, [{p} + 64]",
                    "vmovdqu ymm3, [{p} + 96]",
                    "vmovdqu ymm4, [{p} + 128]",
                    "vmovdqu ymm5, [{p} + 160]",
                    "vmovdqu ymm6, [{p} + 192]",
                    "vmovdqu ymm7, [{p} + 224]",
                    "vmovdqu ymm8, [{p} + 256]",
                    "vmovdqu ymm9, [{p} + 288]",
                    "vmovdqu ymm10, [{p} + 320]",
                    "vmovdqu ymm11, [{p} + 352]",
                    "vmovdqu ymm12, [{p} + 384]",
                    "vmovdqu ymm13, [{p} + 416]",
                    "vmovdqu ymm14, [{p} + 448]",
                    "vmovdqu ymm15, [{p} + 480]",
                    p = in(reg) p,
                    clobber_abi("C"),
                    options(nostack, preserves_flags, readonly),
                )
            };
        } else {
            // SAFETY: SSE is always enabled for user space on x86_64; otherwise as above.
            unsafe {
                core::arch::asm!(
                    "movdqu xmm0, [{p} + 0]",
                    "movdqu xmm1, [{p} + 32]",
                    "movdqu xmm2, [{p} + 64]",
                    "movdqu xmm3, [{p} + 96]",
                    "movdqu xmm4, [{p} + 128]",
                    "movdqu xmm5, [{p} + 160]",
                    "movdqu xmm6, [{p} + 192]",
                    "movdqu xmm7, [{p} + 224]",
                    "movdqu xmm8, [{p} + 256]",
                    "movdqu xmm9, [{p} + 288]",
                    "movdqu xmm10, [{p} + 320]",
                    "movdqu xmm11, [{p} + 352]",
                    "movdqu xmm12, [{p} + 384]",
                    "movdqu xmm13, [{p} + 416]",
                    "movdqu xmm14, [{p} + 448]",
                    "movdqu xmm15, [{p} + 480]",
                    p = in(reg) p,
                    clobber_abi("C"),
                    options(nostack, preserves_flags, readonly),
                )
            };
        }
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
