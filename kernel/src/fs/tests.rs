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
];

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
    if dir != Err(errno::EISDIR) {
        return Err(format!("reading a directory as a program: {:?}, not EISDIR", dir.map(|d| d.len())));
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
    child.close_all();
    parent.close_all();
    if Arc::strong_count(&null) != 1 || parent.get(0).is_ok() {
        return Err(format!("{} references left after closing both tables", Arc::strong_count(&null)));
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
