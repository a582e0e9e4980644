//! In-kernel tests of the file layer: the RAM filesystem filled from the initramfs answers the
//! program loader through symbolic links, descriptor tables copy for fork and sweep for exec, and
//! a pipe between kernel threads on different CPUs delivers every byte, each `PIPE_BUF` record
//! whole.
//!
//! A service's tests: a plain slice ([`TESTS`]) the runner chains, since a `link_section`
//! static counts as unsafe code.

use alloc::{format, string::String, sync::Arc, vec::Vec};

use abi::{
    linux::{errno, general as g},
    pipe::PIPE_BUF,
    ramfs::ROOT,
};

use super::{File, Files, dev::Device, pipe::PipeObj, read_file, with_fs};
use crate::{task, testing::Test};

pub static TESTS: &[Test] = &[
    Test { name: "fs_loader_reads_through_symlinks", min_cpus: 1, expect_fault: false, run: loader_reads_through_symlinks },
    Test { name: "fs_fd_table_fork_copy_and_exec_sweep", min_cpus: 1, expect_fault: false, run: fd_table_fork_and_exec },
    Test { name: "fs_pipe_across_cpus_conserves_records", min_cpus: 1, expect_fault: false, run: pipe_across_cpus },
    Test { name: "fs_proc_system_files", min_cpus: 1, expect_fault: false, run: proc_system_files },
];

/// The whole text of a `/proc` file, read through an open file description in small pieces.
fn proc_text(path: &str) -> Result<String, String> {
    let f = super::open(ROOT, path, g::O_RDONLY, 0).map_err(|e| format!("open {path}: errno {e}"))?;
    let mut out = Vec::new();
    let mut buf = [0u8; 100];
    loop {
        let n = f.read(&mut buf).map_err(|e| format!("read {path}: errno {e}"))?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(out).map_err(|_| format!("{path} is not UTF-8"))
}

fn proc_system_files() -> Result<(), String> {
    let ncpu = task::sched().nr_cpus();
    let counters = proc_text("/proc/kcounters")?;
    let lines: Vec<&str> = counters.lines().collect();
    if lines.first() != Some(&"cpu switches preemptions steals wake_ipis_sent wake_ipis_avoided shootdown_ipis pcid_hits pcid_misses") || lines.len() != ncpu + 2 {
        return Err(format!("/proc/kcounters for {ncpu} CPUs:\n{counters}"));
    }
    // Every CPU has switched threads by now (the boot brought each to its idle loop and back).
    let switches: Vec<u64> = lines[1..=ncpu].iter().map(|l| l.split(' ').nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)).collect();
    let total: u64 = lines[ncpu + 1].split(' ').nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    if switches.iter().sum::<u64>() != total {
        return Err(format!("per-CPU switches {switches:?} do not add up to the total {total}"));
    }
    let cpuinfo = proc_text("/proc/cpuinfo")?;
    if cpuinfo.lines().filter(|l| l.starts_with("processor")).count() != ncpu {
        return Err(format!("/proc/cpuinfo lists other than {ncpu} processors"));
    }
    let stat = proc_text("/proc/stat")?;
    if !stat.starts_with("cpu ") || stat.lines().filter(|l| l.starts_with("cpu")).count() != ncpu + 1 {
        return Err(format!("/proc/stat:\n{stat}"));
    }
    let meminfo = proc_text("/proc/meminfo")?;
    if !meminfo.starts_with("MemTotal:") {
        return Err(format!("/proc/meminfo:\n{meminfo}"));
    }
    for path in ["/proc/loadavg", "/proc/uptime", "/proc/mounts"] {
        if proc_text(path)?.is_empty() {
            return Err(format!("{path} is empty"));
        }
    }
    if super::open(ROOT, "/proc/nothing", g::O_RDONLY, 0).err() != Some(errno::ENOENT) {
        return Err(String::from("/proc/nothing opened"));
    }
    if super::open(ROOT, "/proc/uptime", g::O_WRONLY, 0).err() != Some(errno::EACCES) {
        return Err(String::from("/proc/uptime opened for writing"));
    }
    let listing = super::open(ROOT, "/proc", g::O_RDONLY | g::O_DIRECTORY, 0).map_err(|e| format!("open /proc: errno {e}"))?;
    let bytes = listing.getdents(4096).map_err(|e| format!("getdents /proc: errno {e}"))?;
    if !bytes.windows(10).any(|w| w == b"kcounters\0") || !bytes.windows(5).any(|w| w == b"self\0") {
        return Err(String::from("the /proc listing lacks kcounters or self"));
    }
    Ok(())
}

fn loader_reads_through_symlinks() -> Result<(), String> {
    let init = read_file("/init").map_err(|e| format!("/init from the initramfs: errno {e}"))?;
    if !init.starts_with(b"\x7fELF") {
        return Err(String::from("/init is not an ELF file"));
    }
    with_fs(|fs| {
        fs.mkdir_p(ROOT, "/tmp/ktest-links")?;
        fs.symlink("/init", ROOT, "/tmp/ktest-links/a")?;
        fs.symlink("a", ROOT, "/tmp/ktest-links/b")
    })
    .map_err(|e| format!("making the links: errno {e}"))?;
    let through = read_file("/tmp/ktest-links/b");
    let dir = read_file("/tmp");
    let dev = with_fs(|fs| fs.lookup(ROOT, "/dev/null", true).map(|i| fs.char_dev(i)));
    with_fs(|fs| {
        fs.unlink(ROOT, "/tmp/ktest-links/b")?;
        fs.unlink(ROOT, "/tmp/ktest-links/a")?;
        fs.rmdir(ROOT, "/tmp/ktest-links")
    })
    .map_err(|e| format!("removing the links: errno {e}"))?;
    if through.as_deref() != Ok(&init[..]) {
        return Err(format!("two links to /init read {:?} bytes, not /init's {}", through.map(|t| t.len()), init.len()));
    }
    if dir != Err(errno::EACCES) {
        return Err(format!("reading a directory as a program: {:?}, not EACCES", dir.map(|d| d.len())));
    }
    let tmp = with_fs(|fs| fs.lookup(ROOT, "/tmp", true)).map_err(|e| format!("/tmp: errno {e}"))?;
    let relative = super::read_program(tmp, "../init", true);
    if relative.as_deref() != Ok(&init[..]) {
        return Err(format!("../init from /tmp as an executable: {:?}", relative.map(|r| r.len())));
    }
    with_fs(|fs| fs.create(ROOT, "/tmp/ktest-plain", 0o644, true).map(|_| ())).map_err(|e| format!("create: errno {e}"))?;
    let plain = super::read_program(ROOT, "/tmp/ktest-plain", true);
    with_fs(|fs| fs.unlink(ROOT, "/tmp/ktest-plain")).map_err(|e| format!("unlink: errno {e}"))?;
    if plain != Err(errno::EACCES) {
        return Err(format!("a file without execute bits ran: {:?}", plain.map(|p| p.len())));
    }
    if dev != Ok(Some(abi::ramfs::makedev(1, 3))) {
        return Err(format!("/dev/null is {dev:?}"));
    }
    Ok(())
}

fn fd_table_fork_and_exec() -> Result<(), String> {
    let parent = Files::with_console();
    let null = Arc::new(File::device(Device::Null, g::O_RDWR));
    let kept = parent.install(null.clone(), false, 0).map_err(|e| format!("install: errno {e}"))?;
    let swept = parent.install(null.clone(), true, 10).map_err(|e| format!("install: errno {e}"))?;
    if (kept, swept) != (3, 10) {
        return Err(format!("descriptors {kept} and {swept}, expected 3 and 10"));
    }
    let child = parent.fork_copy();
    if Arc::strong_count(&null) != 5 {
        return Err(format!("{} references to the file after fork, expected 5 (ours and two per table)", Arc::strong_count(&null)));
    }
    child.close_on_exec();
    let child_has = |fd| child.get(fd).is_ok();
    let parent_has = |fd| parent.get(fd).is_ok();
    if !(child_has(0) && child_has(2) && child_has(kept) && !child_has(swept)) {
        return Err(String::from("exec in the child did not keep exactly the descriptors without close-on-exec"));
    }
    if !parent_has(swept) {
        return Err(String::from("exec in the child closed the parent's descriptor"));
    }
    drop(child);
    drop(parent);
    if Arc::strong_count(&null) != 1 {
        return Err(format!("{} references left after dropping both tables", Arc::strong_count(&null)));
    }
    Ok(())
}

const WRITERS: usize = 3;
const RECORDS: usize = 400;

fn pipe_across_cpus() -> Result<(), String> {
    let pipe = Arc::new(PipeObj::new());
    let reader = File::pipe_end(pipe.clone(), false, 0);
    let writer = Arc::new(File::pipe_end(pipe, true, 0));
    let ncpu = task::sched().nr_cpus() as u32;
    let mut handles = Vec::new();
    for w in 0..WRITERS {
        let writer = writer.clone();
        let builder = sched::Builder::new("pipe-writer").pinned(sched::CpuIndex((w as u32 + 1) % ncpu)).stack_bytes(32 * 1024);
        let h = task::sched()
            .spawn(builder, move || {
                let mut rec = [b'a' + w as u8; PIPE_BUF];
                for i in 0..RECORDS {
                    rec[..4].copy_from_slice(&(i as u32).to_le_bytes());
                    if writer.write(&rec) != Ok(PIPE_BUF) {
                        return false;
                    }
                }
                true
            })
            .map_err(|e| format!("spawning a writer: {e:?}"))?;
        handles.push(h);
    }
    // The writers hold the only write ends from here: EOF comes when the last one ends.
    drop(writer);
    let mut next = [0u32; WRITERS];
    let mut rec = [0u8; PIPE_BUF];
    let mut bytes = 0usize;
    loop {
        let mut have = 0;
        while have < PIPE_BUF {
            let n = reader.read(&mut rec[have..]).map_err(|e| format!("read: errno {e}"))?;
            if n == 0 {
                break;
            }
            have += n;
        }
        bytes += have;
        if have == 0 {
            break;
        }
        if have != PIPE_BUF {
            return Err(format!("EOF inside a record ({have} bytes)"));
        }
        let w = rec[4].wrapping_sub(b'a') as usize;
        if w >= WRITERS || rec[4..].iter().any(|&b| b != rec[4]) {
            return Err(format!("a mixed record after {bytes} bytes"));
        }
        let seq = u32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]]);
        if seq != next[w] {
            return Err(format!("writer {w}: record {seq} where {} was due", next[w]));
        }
        next[w] += 1;
    }
    for h in handles {
        if h.join() != Some(true) {
            return Err(String::from("a writer's write came back short, or the writer did not finish"));
        }
    }
    if bytes != WRITERS * RECORDS * PIPE_BUF || next.iter().any(|&n| n as usize != RECORDS) {
        return Err(format!("{bytes} bytes, records {next:?}: expected {RECORDS} from each of {WRITERS}"));
    }
    Ok(())
}
