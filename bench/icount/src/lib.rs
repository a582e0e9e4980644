//! A QEMU TCG plugin that counts guest instructions between marker instructions, per vCPU and per
//! tag: instructions at kernel addresses and at user addresses, interrupts and exceptions taken,
//! and the expensive instructions (CR3 writes, WRMSR, the XSAVE and XRSTOR families, INVLPG,
//! INVPCID, HLT) among them.
//!
//! The markers are the seven-byte NOPs of `arch::marker` (and of `user/include/marker.h` in user
//! programs). Load it with
//!
//! ```text
//! qemu-system-x86_64 -accel tcg -plugin target/release/libicount.so,out=FILE,vectors=START-END ...
//! ```
//!
//! - `out=FILE`: where the counts go at exit (default: QEMU's log, i.e. stderr);
//! - `vectors=START-END` (hex, end exclusive; may repeat): the guest's interrupt entry stubs. A
//!   block that starts there is an interrupt or exception taken: plugin API 1 has no callback for
//!   those, and the entry stubs are reached only through the IDT. The host reads the range from
//!   the kernel's `trap_stub_N` symbols. Without it, interrupts are not counted and `Arm` markers
//!   never open a window.
//! - `profile=FILE`: also write where the instructions inside windows ran, one line per tag and
//!   translated segment start: `icount profile tag=T addr=0xADDR execs=N insns=M` (all vCPUs
//!   summed). Map the addresses to functions with the guest's symbols (`nm -n` of the kernel ELF):
//!   this is how a path's instructions are attributed. Off by default (it slows the vCPUs).
//!
//! Output, one line per tag and vCPU that saw a marker (see `count::line`), between `icount begin`
//! and `icount end` lines:
//!
//! ```text
//! icount begin api=1 vcpus=2 vectors=1
//! icount window tag=1 vcpu=1 windows=100 discarded=0 unmatched=0 kernel=41230 user=0 interrupts=0 cr3_writes=0 wrmsr=0 xsave=0 xrstor=0 invlpg=0 invpcid=0 hlt=0
//! icount end
//! ```
//!
//! Limits: callbacks name the vCPU QEMU reports. Under multi-threaded TCG (QEMU's default) that is
//! the running vCPU in QEMU 7.2 and 10. Under one thread for all vCPUs (`-accel tcg,thread=single`,
//! or any `-icount`), QEMU 10 reports the vCPU that translated the block instead: with more than
//! one vCPU its counts are wrong (QEMU 7.2 measured right in that mode). An exception in the
//! middle of a block counts the block's tail once too often (see `count`).
//!
//! Build: `cargo build -p icount --release` for QEMU 7.2 (plugin API 1, the default feature
//! `api-v1`); `--no-default-features --features api-v4` for QEMU 10.0 (which loads API 2 to 4).
//!
//! Modules: `decode` (an instruction's bytes to what it is), `count` (segments and the per-vCPU
//! windows), `plugin` (the QEMU entry points; not built for unit tests, which have no QEMU to
//! resolve its symbols).

pub mod count;
pub mod decode;
#[cfg(not(test))]
mod plugin;

#[cfg(all(feature = "api-v1", feature = "api-v4"))]
compile_error!("features api-v1 and api-v4 exclude each other: build one plugin per QEMU");
#[cfg(not(any(feature = "api-v1", feature = "api-v4")))]
compile_error!("pick the plugin API: feature api-v1 (QEMU 7.2) or api-v4 (QEMU 10.0)");

/// Parse `START-END` (hexadecimal, `0x` optional, end exclusive).
pub fn parse_range(text: &str) -> Result<(u64, u64), String> {
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|e| format!("`{s}`: {e}"));
    let (start, end) = text.split_once('-').ok_or_else(|| format!("`{text}` is not START-END"))?;
    let (start, end) = (hex(start)?, hex(end)?);
    if start >= end {
        return Err(format!("`{text}`: empty range"));
    }
    Ok((start, end))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ranges_parse_in_hex_with_or_without_prefix() {
        assert_eq!(super::parse_range("0xffffffff80001000-0xffffffff80002000"), Ok((0xffff_ffff_8000_1000, 0xffff_ffff_8000_2000)));
        assert_eq!(super::parse_range("10-20"), Ok((0x10, 0x20)));
        assert!(super::parse_range("20-10").is_err());
        assert!(super::parse_range("10").is_err());
    }
}
