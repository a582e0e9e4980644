//! Loading a program into a fresh address space and starting it: the segments of the ELF plan, the
//! heap break, the stack with its guard gap, the initial stack image, then ring 3.
//!
//! User memory layout:
//!
//! ```text
//!  USER_TOP (0x7fff_ffff_f000)   the last canonical page is never mapped
//!  STACK_TOP                     one more free page below it
//!  STACK_TOP - STACK_BYTES       the stack (demand-zero, 8 MiB)
//!  ... - GUARD_BYTES             the guard gap (no access: an overflow faults there)
//!  MMAP_TOP = the guard's bottom mmap regions go top-down below it
//!  ...
//!  brk start                     the page after the image; the heap grows up from it
//!  image                         the ELF segments (ET_EXEC where linked, static-PIE at PIE_BASE)
//! ```
//!
//! The loader runs in the process's first thread, in its address space, so it writes the segments
//! and the stack through the user-copy routines like any system call would.

use alloc::{string::String, sync::Arc, vec::Vec};

use abi::{
    PAGE_SIZE, USER_TOP,
    elf::LoadPlan,
    stack::{AuxValues, ExecArgs},
    vma::{PROT_EXEC, PROT_READ, PROT_WRITE, VmaKind},
};
use arch::syscall::UserFrame;

use super::Process;
use crate::vm::space::UserProt;

/// Where a static-PIE's lowest page goes (Linux's ELF_ET_DYN_BASE for x86-64, without
/// randomisation: runs repeat exactly).
pub const PIE_BASE: u64 = 0x5555_5555_4000;
pub const STACK_TOP: u64 = USER_TOP - PAGE_SIZE;
pub const STACK_BYTES: u64 = 8 << 20;
pub const GUARD_BYTES: u64 = 1 << 20;
/// mmap without a hint places below this.
pub const MMAP_TOP: u64 = STACK_TOP - STACK_BYTES - GUARD_BYTES;
/// Most bytes of argv, envp and auxv (Linux allows a quarter of the stack limit).
const MAX_ARG_BYTES: usize = 128 * 1024;

/// Page rights as the page tables take them.
pub fn user_prot(prot: u32) -> UserProt {
    UserProt { writable: prot & PROT_WRITE != 0, exec: prot & PROT_EXEC != 0 }
}

/// Load `image` by `plan` into the calling thread's (fresh) space and run it. On failure the process
/// ends with SIGSEGV, as Linux ends a process whose exec fails past the point of no return.
pub fn start(p: Arc<Process>, image: Vec<u8>, plan: LoadPlan, path: String, argv: Vec<String>, envp: Vec<String>) -> ! {
    let loaded = load(&p, &image, &plan, &path, &argv, &envp);
    let root = p.space().root();
    // Nothing may stay owned on this stack: entering user mode (or exiting) abandons it.
    drop((p, image, plan, argv, envp));
    match loaded {
        Ok(frame) => {
            drop(path);
            crate::vm::user::enter(root, &frame)
        }
        Err(what) => {
            log::error!("exec {path}: {what}; the process ends");
            drop(path);
            super::exit_current(SIGSEGV, true)
        }
    }
}

const SIGSEGV: i32 = 11;

fn load(p: &Process, image: &[u8], plan: &LoadPlan, path: &str, argv: &[String], envp: &[String]) -> Result<UserFrame, &'static str> {
    let s = crate::task::sched();
    let memory = p.mem();
    let mut mem = memory.lock(s);
    // Each page gets the union of the rights of the segments on it (two may share a boundary page).
    let mut pages: alloc::collections::BTreeMap<u64, u32> = alloc::collections::BTreeMap::new();
    for seg in &plan.segments {
        let prot = PROT_READ | if seg.prot.write { PROT_WRITE } else { 0 } | if seg.prot.exec { PROT_EXEC } else { 0 };
        for page in (seg.page_start()..seg.page_end()).step_by(PAGE_SIZE as usize) {
            *pages.entry(page).or_insert(0) |= prot;
        }
    }
    // Map writable first, fill, then give each page its final rights.
    for (&page, _) in pages.iter() {
        p.space().map_user_range(page, 1, UserProt { writable: true, exec: false }).map_err(|_| "out of memory for the image")?;
    }
    for seg in &plan.segments {
        let bytes = &image[seg.file_offset as usize..(seg.file_offset + seg.file_size) as usize];
        arch::usercopy::copy_to_user(seg.vaddr, bytes).map_err(|_| "image copy faulted")?;
    }
    for (&page, &prot) in pages.iter() {
        if prot != PROT_READ | PROT_WRITE {
            p.space().protect_user(page, 1, user_prot(prot)).map_err(|_| "image protection failed")?;
        }
        mem.vmas.map_fixed(page, PAGE_SIZE, prot, VmaKind::Image).map_err(|_| "image outside user memory")?;
    }
    mem.vmas.map_fixed(MMAP_TOP, GUARD_BYTES, 0, VmaKind::Guard).map_err(|_| "no room for the guard")?;
    mem.vmas
        .map_fixed(STACK_TOP - STACK_BYTES, STACK_BYTES, PROT_READ | PROT_WRITE, VmaKind::Stack)
        .map_err(|_| "no room for the stack")?;
    drop(mem);

    let argv_b: Vec<&[u8]> = argv.iter().map(|a| a.as_bytes()).collect();
    let envp_b: Vec<&[u8]> = envp.iter().map(|e| e.as_bytes()).collect();
    let args = ExecArgs {
        argv: &argv_b,
        envp: &envp_b,
        execfn: path.as_bytes(),
        random: random_bytes(),
        aux: AuxValues {
            phdr: plan.phdr_addr,
            phnum: u64::from(plan.phnum),
            phent: u64::from(plan.phent),
            entry: plan.entry,
            hwcap: hwcap(),
            hwcap2: hwcap2(),
            clktck: 100,
            uid: 0,
            euid: 0,
            gid: 0,
            egid: 0,
            secure: false,
        },
    };
    let stack = abi::stack::build(STACK_TOP, &args, MAX_ARG_BYTES).map_err(|_| "arguments too large")?;
    // The stack pages are demand-zero: this copy faults them in through the process's own handler.
    arch::usercopy::copy_to_user(stack.rsp, &stack.bytes).map_err(|_| "stack copy faulted")?;
    Ok(UserFrame::new_user(plan.entry, stack.rsp))
}

/// `AT_HWCAP` on x86: CPUID.1:EDX.
fn hwcap() -> u64 {
    arch::cpu::hwcap()
}

/// `AT_HWCAP2` on x86: `HWCAP2_FSGSBASE` (bit 1) when the kernel turned CR4.FSGSBASE on, as
/// Linux sets it: user code may then run RDFSBASE/WRFSBASE/RDGSBASE/WRGSBASE.
fn hwcap2() -> u64 {
    const HWCAP2_FSGSBASE: u64 = 1 << 1;
    if crate::cpu::ring3::fsgsbase() { HWCAP2_FSGSBASE } else { 0 }
}

/// `AT_RANDOM`: RDRAND where the CPU has it, else a mix of the TSC (good enough for stack-protector
/// canaries in a test kernel, not for keys; `getrandom` says the same).
pub fn random_bytes() -> [u8; 16] {
    let mut out = [0u8; 16];
    for chunk in out.chunks_mut(8) {
        let v = arch::cpu::rdrand64().unwrap_or_else(tsc_mix);
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    out
}

fn tsc_mix() -> u64 {
    let t = arch::tsc::read();
    // splitmix64 of the TSC: different on every call, spread over all bits.
    let mut z = t.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Longest path `execve` takes, with its NUL (Linux's `PATH_MAX`).
const PATH_MAX: usize = 4096;
/// Longest single argument or environment string, with its NUL (Linux's `MAX_ARG_STRLEN`).
const MAX_ARG_STRLEN: usize = 32 * PAGE_SIZE as usize;

/// A NUL-terminated user string of at most `max` bytes with its NUL: `EFAULT`, or `too_long`.
fn user_string(addr: u64, max: usize, too_long: u32) -> Result<String, u32> {
    use abi::linux::errno;
    // Most strings are short: try a small buffer first, the full limit only for a long one.
    let mut buf = Vec::new();
    for size in [256, max] {
        buf = alloc::vec![0u8; size];
        let n = arch::usercopy::strncpy_from_user(&mut buf, addr).map_err(|_| errno::EFAULT)?;
        if n < size {
            buf.truncate(n);
            break;
        }
        if size == max {
            return Err(too_long);
        }
    }
    // Arguments are bytes on Linux; a non-UTF-8 one is carried lossily (named trade-off).
    Ok(String::from_utf8(buf).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// The strings of a NULL-terminated user array of string pointers (argv or envp; a null array is
/// empty, as Linux allows), adding their bytes (with NULs and pointers) to `*total`: `E2BIG` past
/// [`MAX_ARG_BYTES`], `EFAULT` for a bad pointer.
fn user_strings(array: u64, total: &mut usize) -> Result<Vec<String>, u32> {
    use abi::linux::errno;
    let mut out = Vec::new();
    if array == 0 {
        return Ok(out);
    }
    for i in 0.. {
        let mut raw = [0u8; 8];
        arch::usercopy::copy_from_user(&mut raw, array + 8 * i).map_err(|_| errno::EFAULT)?;
        let ptr = u64::from_ne_bytes(raw);
        if ptr == 0 {
            break;
        }
        let s = user_string(ptr, MAX_ARG_STRLEN, errno::E2BIG)?;
        *total += s.len() + 1 + 8;
        if *total > MAX_ARG_BYTES {
            return Err(errno::E2BIG);
        }
        out.push(s);
    }
    Ok(out)
}

/// A program found for `execve`: what [`start`] takes.
struct Program {
    image: Vec<u8>,
    plan: LoadPlan,
    /// The path of the file loaded (the last interpreter's, after `#!` lines).
    path: String,
    argv: Vec<String>,
}

/// The program `path` names, following `#!` lines (up to `abi::script::MAX_DEPTH` interpreters):
/// the image, its plan, the path loaded and the argument list with the interpreters in front, as
/// Linux builds it (`interpreter [arg] path argv[1..]`).
fn resolve(cwd: abi::ramfs::Ino, path: String, mut argv: Vec<String>) -> Result<Program, u32> {
    use abi::linux::errno;
    let mut path = path;
    for _ in 0..=abi::script::MAX_DEPTH {
        // The one place programs are read from: the RAM filesystem, from the working directory.
        let image = crate::fs::read_program(cwd, &path, true)?;
        match abi::script::parse(&image) {
            Some(Err(e)) => return Err(e),
            Some(Ok(shebang)) => {
                let mut v = Vec::from([String::from(shebang.interpreter)]);
                if let Some(arg) = shebang.arg {
                    v.push(String::from(arg));
                }
                v.push(path);
                v.extend(argv.into_iter().skip(1));
                argv = v;
                path = String::from(shebang.interpreter);
            }
            None => {
                let plan = abi::elf::plan(&image, PIE_BASE).map_err(|_| errno::ENOEXEC)?;
                return Ok(Program { image, plan, path, argv });
            }
        }
    }
    Err(errno::ELOOP)
}

/// `execve(path, argv, envp)`: replace the calling process's image. Reads the arguments, finds the
/// program (ENOENT, ENOEXEC, E2BIG, EFAULT leave the caller as it was), then past the point of no
/// return: ends the process's other threads and waits for them, gives the calling thread a fresh
/// address space (loaded on this CPU before the old one is dropped), resets the mappings, the FS
/// base and the thread-id word, releases a vfork parent, and starts the new image. The pid stays.
pub fn execve(path: u64, argv: u64, envp: u64) -> Result<core::convert::Infallible, u32> {
    use abi::linux::errno;
    let p = super::current().ok_or(errno::ESRCH)?;
    let path = user_string(path, PATH_MAX, errno::ENAMETOOLONG)?;
    if path.is_empty() {
        return Err(errno::ENOENT);
    }
    let mut total = 0;
    let argv = user_strings(argv, &mut total)?;
    let envp = user_strings(envp, &mut total)?;
    let Program { image, plan, path, argv } = resolve(p.fs.cwd(), path, argv)?;
    let space = crate::vm::space::AddressSpace::new().map_err(|_| errno::ENOMEM)?;

    // The point of no return: the other threads end first.
    if !p.begin_exec() {
        // Being killed already: end here like the others.
        drop((p, space, plan, argv, envp, path));
        super::exit_if_killed();
        return Err(errno::EINTR);
    }
    let s = crate::task::sched();
    super::tree::child_events().wait_until(s, || p.threads.load(core::sync::atomic::Ordering::Acquire) == 1 || p.killed_during_exec());
    if p.killed_during_exec() {
        drop((p, space, plan, argv, envp, path));
        super::exit_if_killed();
        return Err(errno::EINTR);
    }
    let old = s.replace_current_mm(space.mm());
    // The new image starts with the clean vector state, as on Linux: nothing of the old image's,
    // nor of another thread's left in the registers, reaches it.
    s.reset_current_fpu();
    let old_space = p.replace_space(space);
    // New mappings, not a reset of the old ones: a process that shared them (`CLONE_VM`) keeps its own.
    let old_mem = p.replace_mem(Arc::new(sched::Mutex::new(super::MemState {
        vmas: abi::vma::VmaSet::new(abi::elf::MIN_USER_ADDR),
        brk_start: plan.image_end(),
        brk: plan.image_end(),
    })));
    *p.name.lock() = String::from(path.rsplit('/').next().unwrap_or(&path));
    *p.argv.lock() = argv.clone();
    *p.exe.lock() = path.clone();
    // Descriptors marked close-on-exec close; caught signals go back to their defaults.
    p.unshare_files();
    p.files().close_on_exec();
    p.signals.on_exec(super::current_tid());
    super::CLEAR_TID.lock().remove(&super::current_tid());
    s.set_current_fs_base(0);
    let _ = arch::fsbase::write(0);
    let _ = arch::fsbase::write_user_gs(0);
    // The thread that execs becomes the main thread: its id is the pid from now on.
    p.ids.main_tid.store(super::current_tid(), core::sync::atomic::Ordering::Release);
    p.end_exec();
    p.release_vfork();
    super::tree::execed(p.pid());
    // The old space goes now, in thread context, loaded nowhere by this thread any more.
    drop((old, old_space, old_mem));
    start(p, image, plan, path, argv, envp)
}
