//! The kernel binary: boot entries, the init order, and the glue between the crates.
//!
//! Init order (boot CPU): console -> boot information -> IDT, GDT/TSS, per-CPU block -> memory
//! (frames, page tables, heap) -> ACPI -> local APIC and timers -> application processors ->
//! scheduler -> processes, console input (tty) -> tests or demonstration -> idle.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![cfg_attr(not(target_os = "none"), allow(dead_code, unused_imports))]

#[cfg(target_os = "none")]
extern crate alloc;

// The layers, lowest first; a module uses only the ones declared before it (`make check` runs
// the layer check, `cargo run -p ktest --bin layers`).
#[cfg(all(target_os = "none", feature = "ktest"))]
mod testing;
#[cfg(target_os = "none")]
mod cpu;
#[cfg(target_os = "none")]
mod boot;
#[cfg(target_os = "none")]
mod mm;
#[cfg(target_os = "none")]
mod acpi;
#[cfg(target_os = "none")]
mod irq;
#[cfg(target_os = "none")]
mod time;
#[cfg(target_os = "none")]
mod cpus;
#[cfg(target_os = "none")]
mod task;
#[cfg(target_os = "none")]
mod vm;
// Services: each forbids unsafe code (the layer check insists) and reaches the hardware only
// through the layers above.
#[cfg(target_os = "none")]
#[forbid(unsafe_code)]
mod ipc;
#[cfg(target_os = "none")]
#[forbid(unsafe_code)]
mod fs;
#[cfg(target_os = "none")]
#[forbid(unsafe_code)]
mod tty;
#[cfg(target_os = "none")]
#[forbid(unsafe_code)]
mod process;
#[cfg(target_os = "none")]
#[forbid(unsafe_code)]
mod syscall;
#[cfg(all(target_os = "none", feature = "ktest"))]
#[forbid(unsafe_code)]
mod user_tests;
#[cfg(target_os = "none")]
#[forbid(unsafe_code)]
mod demo;
#[cfg(all(target_os = "none", feature = "kbench"))]
#[forbid(unsafe_code)]
mod kbench;
#[cfg(all(target_os = "none", feature = "ktest"))]
#[forbid(unsafe_code)]
mod selftest;

/// The kernel only runs on bare metal; a host build of this binary just says so.
#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("this is the kernel binary; build it for x86_64-unknown-none (`make run`)");
}

#[cfg(target_os = "none")]
use boot::BootInfo;
#[cfg(target_os = "none")]
use crate::{
    cpu::{console, features, percpu},
    cpus::bringup,
    irq::{apic, ipi, trap},
    vm::space,
};

#[cfg(target_os = "none")]
static BSP_PERCPU: spin::Once<()> = spin::Once::new();

/// Common code from here on, whichever loader ran.
#[cfg(target_os = "none")]
fn kernel_main(info: BootInfo) -> ! {
    use kcore::memmap::RegionKind;

    // SAFETY: boot CPU, once, interrupts off, before any other CPU exists. The GDT comes first: the
    // IDT's entries take their code selector from CS, which must be ours, not the loader's (Limine's
    // kernel code selector is 0x28, ours 0x08).
    let loaded = unsafe {
        let loaded = arch::gdt::CpuTables::bsp().load();
        arch::idt::init();
        loaded
    };
    arch::idt::load();
    BSP_PERCPU.call_once(|| {
        static mut BSP: percpu::PerCpu = percpu::PerCpu::new(0, 0);
        // SAFETY: runs once (Once), so this is the only reference to BSP.
        unsafe { percpu::install(&mut *(&raw mut BSP)) };
    });
    let why = match info.path {
        boot::BootPath::Limine => "the kernel was loaded by Limine",
        boot::BootPath::Pvh => "QEMU booted the kernel directly (no Limine)",
    };
    log::info!(
        "boot: {} ({}; {})",
        match info.path {
            boot::BootPath::Limine => "limine",
            boot::BootPath::Pvh => "pvh",
        },
        info.loader,
        why
    );
    for p in info.problems.iter().flatten() {
        log::warn!("boot: {p}");
    }
    let (opts, warnings) = kcore::cmdline::parse(info.cmdline);
    // The problems with the command line are said before its `loglevel=` applies: a
    // `loglevel=error` must not hide that the rest of the line was not understood.
    log::info!("cmdline: \"{}\"", info.cmdline);
    if let Some((len, kept)) = info.cmdline_kept.truncated {
        log::warn!("cmdline: {len} bytes, longer than {}: cut after byte {kept}, before the word the limit fell in", kcore::cmdline::MAX_LEN);
    }
    if info.cmdline_kept.replaced > 0 {
        let n = info.cmdline_kept.replaced;
        log::warn!("cmdline: {n} byte{} that {} not printable UTF-8 shown and parsed as `?`", if n == 1 { "" } else { "s" }, if n == 1 { "is" } else { "are" });
    }
    for w in warnings.iter() {
        log::warn!("cmdline: {w}");
    }
    if warnings.total > kcore::cmdline::MAX_WARNINGS {
        log::warn!("cmdline: {} more problems not shown", warnings.total - kcore::cmdline::MAX_WARNINGS);
    }
    console::set_level(opts.loglevel);
    if opts.nosmap {
        arch::usercopy::forbid_smap();
    }
    // After the command line, whose `nosmap` decides whether the entry paths use stac/clac.
    // SAFETY: boot CPU, once, interrupts off, its per-CPU block installed, no user mapping yet.
    unsafe { crate::cpu::ring3::init_this_cpu(loaded) };
    features::init();
    let m = &info.memory;
    log::info!(
        "memory: {} MiB usable, {} MiB bootloader-reclaimable, {} KiB ACPI, kernel {} KiB at {:#x}, {} regions, top of RAM {:#x}",
        m.bytes(RegionKind::Usable) >> 20,
        m.bytes(RegionKind::BootloaderReclaimable) >> 20,
        (m.bytes(RegionKind::AcpiReclaimable) + m.bytes(RegionKind::AcpiNvs)) >> 10,
        m.bytes(RegionKind::Kernel) >> 10,
        info.kernel_phys_base,
        m.regions().len(),
        m.top_of_ram()
    );
    for r in m.regions() {
        log::debug!("memory: {:#014x}..{:#014x} {:?}", r.base, r.base + r.len, r.kind);
    }
    mm::init(&info);
    // The boot CPU's IST stacks had to exist before memory did; now they get guard pages.
    match bringup::new_ist_stacks() {
        // SAFETY: boot CPU, tables loaded above; the stacks are fresh, never freed, and only these
        // IST entries use them.
        Some(tops) => unsafe { arch::gdt::CpuTables::set_bsp_ist(tops) },
        None => log::warn!("mm: no memory for the boot CPU's guarded IST stacks; it keeps its static ones"),
    }
    let platform = acpi::init(info.rsdp_phys);
    apic::init_bsp(platform.lapic_phys, !opts.nox2apic, !opts.notscdeadline);
    time::init();
    if let Some(s) = opts.exit_after_s {
        time::set_power_off_after_s(s);
    }
    let cpus_online = bringup::start(info.limine_mp, opts.maxcpus);
    // Nothing reads the loader's structures after this (every AP has left Limine's page tables).
    mm::reclaim_bootloader_memory();

    // The scheduler spans every CPU id up to the highest one online (a CPU that failed to start
    // leaves an empty queue nobody is woken onto).
    let nr_cpus = crate::cpu::map::online().iter().map(|c| c.get() + 1).max().unwrap_or(1);
    if !opts.trace.is_empty() {
        let tracer = alloc::boxed::Box::leak(alloc::boxed::Box::new(::trace::Tracer::new(nr_cpus as usize, opts.trace_buf as usize)));
        log::info!(
            "trace: recording {} on {nr_cpus} CPUs, {} records per CPU; dumped at exit to the debug console (port 0xe9)",
            opts.trace,
            tracer.capacity()
        );
        cpu::trace::install(tracer, opts.trace);
    }
    space::init(!opts.nopcid);
    // The kernel's shootdown hook exists now, so unmapping the trampoline reaches every AP's TLB.
    bringup::release_trampoline();
    // SAFETY: boot CPU, interrupts off, no thread has used the FPU yet.
    let fpu = unsafe { arch::fpu::enable_on_this_cpu(!opts.noxsave) };
    NOXSAVE.store(opts.noxsave, core::sync::atomic::Ordering::Relaxed);
    task::init(nr_cpus, opts.slice_us * 1000, opts.idle_poll_us * 1000, fpu, !opts.eagerfpu);
    // SAFETY: boot CPU, XSAVE enabled where `fast_switch` says so, CR0.TS clear; no thread has
    // extended state yet.
    let xinuse_x87 = unsafe { arch::fpu::xinuse_tracks_x87(&fpu) };
    log::info!(
        "fpu: threads' {} state with {}{}; {}",
        if fpu.ymm_enabled() { "x87, SSE and AVX" } else { "x87 and SSE" },
        match fpu.kind() {
            // The eager switch stores and loads the vector registers itself while x87 is in its
            // init state (`arch::fpu::save_switch`) where XINUSE can be read; say which.
            arch::fpu::FpuKind::Xsaveopt if xinuse_x87 =>
                "XSAVEOPT/XRSTOR, or vector stores and loads while x87 is in its init state (XGETBV1)",
            arch::fpu::FpuKind::Xsaveopt if fpu.fast_switch() =>
                "XSAVEOPT/XRSTOR (XGETBV1 reports x87 always in use: no vector stores and loads)",
            arch::fpu::FpuKind::Xsaveopt => "XSAVEOPT/XRSTOR (no XGETBV1 or AVX: always)",
            arch::fpu::FpuKind::Xsave => "XSAVE/XRSTOR",
            arch::fpu::FpuKind::Fxsave if opts.noxsave => "FXSAVE/FXRSTOR (noxsave)",
            arch::fpu::FpuKind::Fxsave => "FXSAVE/FXRSTOR (the CPU has no XSAVE)",
        },
        if fpu.x87_pointer_leak {
            ", the x87 pointers set to fixed values before each restore (AMD without XSAVEERPTR)"
        } else {
            ""
        },
        if opts.eagerfpu {
            "saved and restored at every switch (eagerfpu)"
        } else {
            "switched lazily for threads that did not use it lately (CR0.TS, restored at first use)"
        }
    );
    syscall::init();
    process::init(info.initrd.map(|(pa, len)| {
        // SAFETY: the boot path reserved these bytes (RegionKind::Kernel), so the frame allocator
        // never hands them out and nothing writes them; the direct map covers all RAM for ever.
        unsafe { core::slice::from_raw_parts(crate::mm::phys_to_virt(pa) as *const u8, len as usize) }
    }));
    tty::init();
    tty::set_hooks(tty::Hooks { signal_group: tty_signal_group, caller: tty_caller });
    process::signal::start_group_worker();
    let (smep, smap) = crate::cpu::ring3::protections();
    let smap_state = if opts.nosmap { "off (nosmap)" } else { on_off(smap) };
    log::info!("ring 3: syscall/sysret on every CPU; SMEP {}, SMAP {smap_state}", on_off(smep));
    bringup::set_ap_main(ap_main);
    ipi::send_all_others(trap::VECTOR_RESCHED);

    let test = opts.test;
    let soak_s = opts.soak_s;
    let demo = opts.demo;
    let init = (opts.init, opts.init_args, opts.init_list);
    let bench = opts.bench.then_some(opts.bench_quick);
    task::sched()
        .spawn(sched::Builder::new("main").pinned(sched::CpuIndex(0)).stack_bytes(256 * 1024), move || {
            main_thread(test, soak_s, bench, demo, init, cpus_online, nr_cpus)
        })
        .expect("spawn the main thread");
    // `exit-after=`: every CPU's timer interrupt checks the deadline, but idle CPUs are tickless, so
    // while every CPU halts (a shell waiting for input) no interrupt would come. A thread that
    // sleeps until the deadline arms a timer for it, whatever the main thread is doing.
    if let Some(at) = time::power_off_deadline_ns() {
        task::sched()
            .spawn(sched::Builder::new("exit-after").pinned(sched::CpuIndex(0)).stack_bytes(16 * 1024), move || {
                task::sched().sleep_ns(at.saturating_sub(time::now_ns()));
                time::power_off_if_due();
            })
            .expect("spawn the exit-after thread");
    }
    // The boot stack has no guard page below it (and under Limine it is the loader's): the boot
    // CPU's idle thread, which the scheduler adopts from the running code, gets a guarded kernel
    // stack like every AP's.
    let idle = mm::stacks::KernelStack::new(BSP_IDLE_STACK_BYTES, "bsp-idle").expect("memory for the boot CPU's idle stack");
    // SAFETY: a fresh kernel stack, never freed (into_raw), 16-byte aligned top; nothing on the boot
    // stack is used again (everything the rest needs was moved into the main thread).
    unsafe { arch::trampoline::call_on_stack(idle.into_raw().1, bsp_idle, 0) }
}

/// The boot CPU's idle stack, as large as an AP's.
#[cfg(target_os = "none")]
const BSP_IDLE_STACK_BYTES: usize = 32 * 1024;

/// The boot CPU on its guarded idle stack: it becomes the idle thread and schedules.
#[cfg(target_os = "none")]
extern "C" fn bsp_idle(_: u64) -> ! {
    task::run_this_cpu()
}

/// What the kernel does once every CPU schedules: the tests (test kernel), the benchmarks (`bench`:
/// `Some(quick)`), or the demonstration, and the power-off after `exit-after=`.
#[cfg(target_os = "none")]
fn main_thread(
    test: Option<&'static str>,
    soak_s: Option<u64>,
    bench: Option<bool>,
    demo: bool,
    init: (&'static str, &'static str, Option<&'static str>),
    cpus_online: u32,
    nr_cpus: u32,
) {
    #[cfg(feature = "ktest")]
    if let Some(seconds) = soak_s {
        selftest::soak(seconds, cpus_online);
    }
    #[cfg(not(feature = "ktest"))]
    if soak_s.is_some() {
        log::warn!("cmdline: `soak=` needs the test kernel (make soak); ignored");
    }
    #[cfg(feature = "ktest")]
    if let Some(sel) = test {
        selftest::run(sel, cpus_online);
    }
    #[cfg(not(feature = "ktest"))]
    if test.is_some() {
        log::warn!("cmdline: `test=` needs the test kernel (make test); ignored");
    }
    let _ = cpus_online;
    #[cfg(feature = "kbench")]
    if let Some(quick) = bench {
        kbench::run(quick);
    }
    #[cfg(not(feature = "kbench"))]
    if bench.is_some() {
        log::warn!("cmdline: `bench` needs the kernel built with the kbench feature (make bench); ignored");
    }
    if let Some(list) = init.2.filter(|_| test.is_none() && bench.is_none()) {
        run_list(list);
        log::info!("init-list: {list} done: powering off");
        cpu::power::exit(cpu::power::Exit::Success);
    }
    let init_found = process::initramfs::file(init.0).is_some();
    if test.is_none() && bench.is_none() && !init_found && process::initramfs::present() {
        log::error!("init: {} is not in the initramfs (init= names the first program); the kernel's demo runs instead", init.0);
    }
    if test.is_none() && bench.is_none() && init_found {
        if !run_init(init.0, init.1, true) {
            log::error!("init: {} could not start: powering off with the failure code", init.0);
            cpu::power::exit(cpu::power::Exit::Failure);
        }
        // Like a machine whose init ended: nothing is left to do. The status line above tells
        // scripts how init ended; the power-off code says the kernel itself held.
        if let Some((written, lost)) = cpu::trace::dump(time::tsc_hz()) {
            log::info!("trace: {written} records written to the debug console, {lost} lost (overwritten or in flight)");
        }
        log::info!("init ended: powering off");
        cpu::power::exit(cpu::power::Exit::Success);
    } else if demo {
        log::info!("demo: compute, sleeping and ping-pong threads on {nr_cpus} CPUs; statistics every second");
        demo::start(nr_cpus);
    } else {
        log::info!("idle: every CPU halts until there is work");
    }
}

/// `init-list=`: run each program the file lists (a line: its path and arguments; blank lines and
/// `#` lines skipped) in turn, each a child of the kernel's pid 1, once every thread of the one
/// before has ended. Before each, a line `init-list: running PATH` marks where its output starts.
#[cfg(target_os = "none")]
fn run_list(list: &'static str) {
    let Some(text) = process::initramfs::file(list).and_then(|f| core::str::from_utf8(f).ok()) else {
        log::error!("init-list: {list} is not a text file of the initramfs");
        return;
    };
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (path, args) = line.split_once(' ').unwrap_or((line, ""));
        log::info!("init-list: running {path}");
        // A program that cannot start is reported there and judged failed by the log's reader.
        let _ = run_init(path, args, false);
    }
}

/// Start the first user program (`init=`, default `/init`) with the arguments after `--`, and
/// report how it ended, once all its threads have ended; `false` if it could not start. With
/// `as_init` it is pid 1, the parent of orphans; without (`init-list=`), a child of the kernel's
/// pid 1 like a program a shell starts, so what one program leaves behind is reaped by the kernel
/// and never becomes the next one's child.
#[cfg(target_os = "none")]
fn run_init(path: &'static str, args: &'static str, as_init: bool) -> bool {
    use alloc::{string::String, vec::Vec};
    let mut argv: Vec<String> = Vec::from([String::from(path)]);
    argv.extend(args.split_ascii_whitespace().map(String::from));
    let envp = Vec::from([String::from("HOME=/"), String::from("TERM=linux")]);
    let started = if as_init { process::spawn_init(path, argv, envp) } else { process::spawn(path, argv, envp, false) };
    match started {
        Ok((p, thread)) => {
            log::info!("init: {path} started as pid {}", p.pid());
            thread.join();
            match p.wait_exit() {
                s if s & 0x7f == 0 => log::info!("init: {path} exited with status {}", (s >> 8) & 0xff),
                s => log::info!("init: {path} was killed by signal {}", s & 0x7f),
            }
        }
        Err(e) => {
            log::error!("init: cannot start {path}: {e:?}");
            return false;
        }
    }
    true
}

/// The calling process's pid, group and session, for the terminal's job-control checks.
#[cfg(target_os = "none")]
fn tty_caller() -> abi::tty::Caller {
    let pid = process::current().map(|p| p.pid()).unwrap_or(0);
    let pgrp = process::tree::pgid(pid).unwrap_or(pid);
    let sid = process::tree::sid(pid).unwrap_or(pid);
    abi::tty::Caller { pid, pgrp, sid }
}

/// Ctrl-C, Ctrl-\ and Ctrl-Z on the console: the signal goes to the foreground group, through a
/// worker thread (this runs in the interrupt handler, where the process tree's lock may be held by
/// the interrupted thread).
#[cfg(target_os = "none")]
fn tty_signal_group(pgid: u32, signal: u32) {
    process::signal::send_to_group_later(pgid, signal);
}

#[cfg(target_os = "none")]
fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off (the CPU lacks it)" }
}

/// The command line's `noxsave`, for the application processors' FPU set-up.
#[cfg(target_os = "none")]
static NOXSAVE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Every application processor ends here once the scheduler exists.
#[cfg(target_os = "none")]
fn ap_main() -> ! {
    // SAFETY: this AP, interrupts off, before it runs any thread; the same choice as the boot CPU's.
    unsafe { arch::fpu::enable_on_this_cpu(!NOXSAVE.load(core::sync::atomic::Ordering::Relaxed)) };
    task::run_this_cpu()
}
