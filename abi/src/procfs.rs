//! The text of `/proc` files, rendered from plain data the kernel gathers under its locks. The
//! formats are Linux's (`fs/proc/array.c`, `fs/proc/stat.c`, `fs/proc/meminfo.c`,
//! `fs/proc/loadavg.c`, `fs/proc/uptime.c`, `arch/x86/kernel/cpu/proc.c`), field for field, because
//! busybox's `ps`, `top`, `free` and `uptime` parse them by position or by name:
//!
//! - `ps`/`top` (libbb's `procps_scan`) read `/proc/[pid]/stat` after the last `)`: state, ppid,
//!   pgid, sid, tty, tpgid, utime, stime, nice, start time, vsize, rss and the last CPU (field 39);
//!   `/proc/[pid]/cmdline` for the arguments, `/proc/[pid]/status` for `VmRSS`-style fields.
//! - `top` reads the `cpu` and `cpuN` lines of `/proc/stat` (eight counters in USER_HZ ticks),
//!   `MemTotal`, `MemFree`, `Shmem`, `Buffers`, `Cached` of `/proc/meminfo`, and `/proc/loadavg`.
//! - `free` reads `/proc/meminfo` by name (`MemAvailable`, `Cached`, `SReclaimable`, `Buffers`).
//! - `uptime` calls `sysinfo`; `/proc/uptime` serves `cat` and scripts.
//!
//! Also [`LoadAvg`], Linux's fixed-point exponential load average, and the text of this kernel's
//! own per-CPU scheduler and TLB counter file.

use alloc::{
    format,
    string::{String, ToString},
    vec::Vec,
};
use core::fmt::Write;

/// Clock ticks per second in `/proc` times (`USER_HZ`, and `AT_CLKTCK` in the auxiliary vector).
pub const USER_HZ: u64 = 100;

/// Nanoseconds to `USER_HZ` ticks.
pub const fn ns_to_ticks(ns: u64) -> u64 {
    ns / (1_000_000_000 / USER_HZ)
}

/// A process state as `/proc` letters it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TaskState {
    #[default]
    Running,
    Sleeping,
    /// Uninterruptible sleep.
    DiskSleep,
    Stopped,
    Zombie,
}

impl TaskState {
    pub fn letter(self) -> char {
        match self {
            TaskState::Running => 'R',
            TaskState::Sleeping => 'S',
            TaskState::DiskSleep => 'D',
            TaskState::Stopped => 'T',
            TaskState::Zombie => 'Z',
        }
    }

    fn long_name(self) -> &'static str {
        match self {
            TaskState::Running => "R (running)",
            TaskState::Sleeping => "S (sleeping)",
            TaskState::DiskSleep => "D (disk sleep)",
            TaskState::Stopped => "T (stopped)",
            TaskState::Zombie => "Z (zombie)",
        }
    }
}

/// What `/proc/[pid]/stat` and `status` show of one process. Times are in nanoseconds, sizes in
/// bytes; the renderers convert.
#[derive(Clone, Debug, Default)]
pub struct ProcInfo {
    pub pid: u32,
    /// The program name (at most 15 bytes are shown, as Linux's `TASK_COMM_LEN`).
    pub comm: String,
    pub state: TaskState,
    pub ppid: u32,
    pub pgrp: u32,
    pub session: u32,
    /// Device number of the controlling terminal, 0 for none (the console is 5:1 = 0x501).
    pub tty_nr: u32,
    /// Foreground process group of that terminal, or -1.
    pub tpgid: i32,
    pub minflt: u64,
    pub majflt: u64,
    pub utime_ns: u64,
    pub stime_ns: u64,
    pub cutime_ns: u64,
    pub cstime_ns: u64,
    pub nice: i32,
    pub num_threads: u32,
    /// Start time since boot.
    pub start_ns: u64,
    pub vsize: u64,
    pub rss_pages: u64,
    pub start_code: u64,
    pub end_code: u64,
    pub start_stack: u64,
    pub sig_pending: u64,
    pub sig_blocked: u64,
    pub sig_ignored: u64,
    pub sig_caught: u64,
    /// The CPU it last ran on.
    pub processor: u32,
    pub start_brk: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
    pub exit_code: i32,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
}

fn comm15(s: &str) -> &str {
    let mut end = s.len().min(15);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `/proc/[pid]/stat`: one line of 52 fields (proc(5) numbers them; the comment at each is its
/// number and name).
pub fn pid_stat(p: &ProcInfo) -> String {
    let t = ns_to_ticks;
    let low = |m: u64| m & 0xffff_ffff;
    let fields: [u64; 44] = [
        0,                     // 9 flags (PF_*): nothing a reader of this kernel needs
        p.minflt,              // 10 minflt
        0,                     // 11 cminflt
        p.majflt,              // 12 majflt
        0,                     // 13 cmajflt
        t(p.utime_ns),         // 14 utime
        t(p.stime_ns),         // 15 stime
        t(p.cutime_ns),        // 16 cutime
        t(p.cstime_ns),        // 17 cstime
        (20 + p.nice) as u64,  // 18 priority, as Linux shows it for SCHED_OTHER
        0,                     // 19 nice (placeholder, written signed below)
        u64::from(p.num_threads), // 20 num_threads
        0,                     // 21 itrealvalue
        t(p.start_ns),         // 22 starttime
        p.vsize,               // 23 vsize
        p.rss_pages,           // 24 rss
        u64::MAX,              // 25 rsslim: RLIM_INFINITY
        p.start_code,          // 26 startcode
        p.end_code,            // 27 endcode
        p.start_stack,         // 28 startstack
        0,                     // 29 kstkesp
        0,                     // 30 kstkeip
        low(p.sig_pending),    // 31 signal
        low(p.sig_blocked),    // 32 blocked
        low(p.sig_ignored),    // 33 sigignore
        low(p.sig_caught),     // 34 sigcatch
        0,                     // 35 wchan
        0,                     // 36 nswap
        0,                     // 37 cnswap
        17,                    // 38 exit_signal: SIGCHLD
        u64::from(p.processor), // 39 processor
        0,                     // 40 rt_priority
        0,                     // 41 policy: SCHED_OTHER
        0,                     // 42 delayacct_blkio_ticks
        0,                     // 43 guest_time
        0,                     // 44 cguest_time
        p.start_brk,           // 45 start_data (data ends where the break starts)
        p.start_brk,           // 46 end_data
        p.start_brk,           // 47 start_brk
        p.arg_start,           // 48 arg_start
        p.arg_end,             // 49 arg_end
        p.env_start,           // 50 env_start
        p.env_end,             // 51 env_end
        0,                     // 52 exit_code (placeholder, written signed below)
    ];
    let mut s = String::new();
    let _ = write!(s, "{} ({}) {} {} {} {} {} {}", p.pid, comm15(&p.comm), p.state.letter(), p.ppid, p.pgrp, p.session, p.tty_nr, p.tpgid);
    for (i, f) in fields.iter().enumerate() {
        match i + 9 {
            19 => {
                let _ = write!(s, " {}", p.nice);
            }
            52 => {
                let _ = write!(s, " {}", p.exit_code);
            }
            _ => {
                let _ = write!(s, " {f}");
            }
        }
    }
    s.push('\n');
    s
}

/// `/proc/[pid]/status`.
pub fn pid_status(p: &ProcInfo) -> String {
    let kb = |b: u64| b / 1024;
    let mut s = String::new();
    let _ = write!(
        s,
        "Name:\t{}\nUmask:\t0022\nState:\t{}\nTgid:\t{}\nNgid:\t0\nPid:\t{}\nPPid:\t{}\nTracerPid:\t0\n\
         Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nFDSize:\t64\nGroups:\t\n\
         VmPeak:\t{:8} kB\nVmSize:\t{:8} kB\nVmRSS:\t{:8} kB\nThreads:\t{}\n\
         SigQ:\t0/0\nSigPnd:\t{:016x}\nShdPnd:\t{:016x}\nSigBlk:\t{:016x}\nSigIgn:\t{:016x}\nSigCgt:\t{:016x}\n\
         voluntary_ctxt_switches:\t{}\nnonvoluntary_ctxt_switches:\t{}\n",
        comm15(&p.comm),
        p.state.long_name(),
        p.pid,
        p.pid,
        p.ppid,
        kb(p.vsize),
        kb(p.vsize),
        p.rss_pages * 4,
        p.num_threads,
        0,
        p.sig_pending,
        p.sig_blocked,
        p.sig_ignored,
        p.sig_caught,
        p.voluntary_switches,
        p.involuntary_switches,
    );
    s
}

/// `/proc/[pid]/cmdline`: each argument followed by a NUL.
pub fn pid_cmdline(argv: &[&str]) -> Vec<u8> {
    let mut v = Vec::new();
    for a in argv {
        v.extend_from_slice(a.as_bytes());
        v.push(0);
    }
    v
}

/// Time one CPU spent in each state, in nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub user_ns: u64,
    pub nice_ns: u64,
    pub system_ns: u64,
    pub idle_ns: u64,
    pub iowait_ns: u64,
    pub irq_ns: u64,
    pub softirq_ns: u64,
}

impl CpuTimes {
    fn fields(&self) -> [u64; 10] {
        let t = ns_to_ticks;
        [t(self.user_ns), t(self.nice_ns), t(self.system_ns), t(self.idle_ns), t(self.iowait_ns), t(self.irq_ns), t(self.softirq_ns), 0, 0, 0]
    }
}

/// System-wide counters of `/proc/stat`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemCounts {
    pub interrupts: u64,
    pub context_switches: u64,
    /// Boot time, seconds since the epoch.
    pub boot_time_s: u64,
    /// Processes created since boot.
    pub forks: u64,
    pub running: u32,
    pub blocked: u32,
}

/// `/proc/stat`: the `cpu` total, one `cpuN` line per CPU, and the system counters.
pub fn stat(cpus: &[CpuTimes], sys: &SystemCounts) -> String {
    let mut s = String::new();
    let mut total = [0u64; 10];
    for c in cpus {
        for (t, f) in total.iter_mut().zip(c.fields()) {
            *t += f;
        }
    }
    let line = |s: &mut String, name: &str, f: &[u64; 10]| {
        s.push_str(name);
        for x in f {
            let _ = write!(s, " {x}");
        }
        s.push('\n');
    };
    line(&mut s, "cpu ", &total);
    for (i, c) in cpus.iter().enumerate() {
        line(&mut s, &format!("cpu{i}"), &c.fields());
    }
    let _ = write!(
        s,
        "intr {}\nctxt {}\nbtime {}\nprocesses {}\nprocs_running {}\nprocs_blocked {}\nsoftirq 0\n",
        sys.interrupts, sys.context_switches, sys.boot_time_s, sys.forks, sys.running, sys.blocked
    );
    s
}

/// Memory figures in bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct MemInfo {
    pub total: u64,
    pub free: u64,
    /// What could be had without swapping: free memory plus reclaimable caches.
    pub available: u64,
    /// File contents held in memory (the RAM filesystem's data counts here, as tmpfs is `Shmem`
    /// and `Cached` on Linux).
    pub cached: u64,
    pub shmem: u64,
    /// Kernel heap.
    pub slab: u64,
    pub page_tables: u64,
    pub kernel_stack: u64,
}

/// `/proc/meminfo`, each line `Name:` padded to 16 columns and the value right-aligned in 8, in kB.
pub fn meminfo(m: &MemInfo) -> String {
    let mut s = String::new();
    for (name, v) in [
        ("MemTotal", m.total),
        ("MemFree", m.free),
        ("MemAvailable", m.available),
        ("Buffers", 0),
        ("Cached", m.cached),
        ("SwapCached", 0),
        ("Active", 0),
        ("Inactive", 0),
        ("SwapTotal", 0),
        ("SwapFree", 0),
        ("Dirty", 0),
        ("Shmem", m.shmem),
        ("Slab", m.slab),
        ("SReclaimable", 0),
        ("SUnreclaim", m.slab),
        ("KernelStack", m.kernel_stack),
        ("PageTables", m.page_tables),
    ] {
        let label = format!("{name}:");
        let _ = writeln!(s, "{label:<16}{:>8} kB", v / 1024);
    }
    s
}

/// Linux's load average: an exponentially decaying mean of the number of runnable threads,
/// sampled every [`LoadAvg::SAMPLE_NS`], in fixed point with 11 fractional bits
/// (`kernel/sched/loadavg.c`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadAvg {
    /// 1, 5 and 15 minute averages, fixed point.
    pub avg: [u64; 3],
}

impl LoadAvg {
    pub const FSHIFT: u32 = 11;
    pub const FIXED_1: u64 = 1 << Self::FSHIFT;
    /// `1/exp(5s/1min)`, `1/exp(5s/5min)`, `1/exp(5s/15min)` in fixed point.
    pub const EXP: [u64; 3] = [1884, 2014, 2037];
    pub const SAMPLE_NS: u64 = 5_000_000_000;

    /// Fold in one sample of `active` runnable threads.
    pub fn sample(&mut self, active: u64) {
        let a = active * Self::FIXED_1;
        for (l, e) in self.avg.iter_mut().zip(Self::EXP) {
            let mut n = *l * e + a * (Self::FIXED_1 - e);
            if a >= *l {
                n += Self::FIXED_1 - 1;
            }
            *l = n / Self::FIXED_1;
        }
    }

    fn show(v: u64) -> String {
        // Linux's LOAD_INT and LOAD_FRAC: rounded to hundredths.
        let v = v + Self::FIXED_1 / 200;
        format!("{}.{:02}", v >> Self::FSHIFT, ((v & (Self::FIXED_1 - 1)) * 100) >> Self::FSHIFT)
    }
}

/// `/proc/loadavg`: three averages, running/total threads, and the last pid handed out.
pub fn loadavg(l: &LoadAvg, running: u32, threads: u32, last_pid: u32) -> String {
    format!("{} {} {} {}/{} {}\n", LoadAvg::show(l.avg[0]), LoadAvg::show(l.avg[1]), LoadAvg::show(l.avg[2]), running, threads, last_pid)
}

fn secs_centis(ns: u64) -> String {
    format!("{}.{:02}", ns / 1_000_000_000, (ns % 1_000_000_000) / 10_000_000)
}

/// `/proc/uptime`: seconds since boot and the idle time summed over CPUs.
pub fn uptime(up_ns: u64, idle_ns: u64) -> String {
    format!("{} {}\n", secs_centis(up_ns), secs_centis(idle_ns))
}

/// What `/proc/cpuinfo` shows of one CPU.
#[derive(Clone, Debug, Default)]
pub struct CpuDesc {
    pub apic_id: u32,
    pub vendor: String,
    pub family: u32,
    pub model: u32,
    pub model_name: String,
    pub stepping: u32,
    pub mhz: u32,
    /// Feature flags in Linux's names (`fpu`, `sse2`, `avx2`, ...).
    pub flags: Vec<&'static str>,
}

/// `/proc/cpuinfo`: one block per CPU, blank-line separated, `name\t: value` as Linux aligns it.
pub fn cpuinfo(cpus: &[CpuDesc]) -> String {
    let mut s = String::new();
    let n = cpus.len();
    for (i, c) in cpus.iter().enumerate() {
        let _ = write!(
            s,
            "processor\t: {i}\nvendor_id\t: {}\ncpu family\t: {}\nmodel\t\t: {}\nmodel name\t: {}\nstepping\t: {}\n\
             cpu MHz\t\t: {}.000\nphysical id\t: 0\nsiblings\t: {n}\ncore id\t\t: {i}\ncpu cores\t: {n}\n\
             apicid\t\t: {}\nfpu\t\t: yes\nfpu_exception\t: yes\nwp\t\t: yes\nflags\t\t: {}\n\
             clflush size\t: 64\ncache_alignment\t: 64\naddress sizes\t: 48 bits physical, 48 bits virtual\n\n",
            c.vendor,
            c.family,
            c.model,
            c.model_name,
            c.stepping,
            c.mhz,
            c.apic_id,
            c.flags.join(" "),
        );
    }
    s
}

/// This kernel's own counters of one CPU, for its counter file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedCounters {
    pub switches: u64,
    pub preemptions: u64,
    pub steals: u64,
    pub wake_ipis_sent: u64,
    pub wake_ipis_avoided: u64,
    pub shootdown_ipis: u64,
    pub pcid_hits: u64,
    pub pcid_misses: u64,
}

/// The column names of the counter file, in order.
pub const SCHED_COLUMNS: [&str; 8] = ["switches", "preemptions", "steals", "wake_ipis_sent", "wake_ipis_avoided", "shootdown_ipis", "pcid_hits", "pcid_misses"];

impl SchedCounters {
    fn fields(&self) -> [u64; 8] {
        [self.switches, self.preemptions, self.steals, self.wake_ipis_sent, self.wake_ipis_avoided, self.shootdown_ipis, self.pcid_hits, self.pcid_misses]
    }
}

/// The counter file: a header, one line per CPU (`cpuN` then the counts), and a `total` line, all
/// space-separated so `awk` and a small reader can take it apart.
pub fn sched_counters(cpus: &[SchedCounters]) -> String {
    let mut s = String::from("cpu");
    for c in SCHED_COLUMNS {
        s.push(' ');
        s.push_str(c);
    }
    s.push('\n');
    let mut total = [0u64; 8];
    for (i, c) in cpus.iter().enumerate() {
        let _ = write!(s, "cpu{i}");
        for (t, f) in total.iter_mut().zip(c.fields()) {
            *t += f;
            let _ = write!(s, " {f}");
        }
        s.push('\n');
    }
    s.push_str("total");
    for t in total {
        let _ = write!(s, " {t}");
    }
    s.push('\n');
    s
}

/// A `/proc/[pid]` directory name, or `None` for anything else in `/proc`.
/// The components of absolute path `path` below `/proc`, after a lexical clean-up (empty
/// components and `.` dropped, `..` going up, never above `/`), or `None` when the path is not
/// `/proc` or below it. `/proc` itself gives no components.
pub fn proc_components(path: &str) -> Option<alloc::vec::Vec<&str>> {
    if !path.starts_with('/') {
        return None;
    }
    let mut out = alloc::vec::Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    (out.first() == Some(&"proc")).then(|| out.split_off(1))
}

pub fn parse_pid_dir(name: &str) -> Option<u32> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) || name.starts_with('0') {
        return None;
    }
    name.parse().ok()
}

/// The names `/proc` lists besides the pid directories.
pub const PROC_FILES: [&str; 8] = ["self", "cpuinfo", "stat", "meminfo", "loadavg", "uptime", "kcounters", "mounts"];

/// `/proc/mounts`: what is mounted where (busybox `df` and `mount` read it).
pub fn mounts() -> String {
    "rootfs / rootfs rw 0 0\nproc /proc proc rw 0 0\ndevtmpfs /dev devtmpfs rw 0 0\n".to_string()
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use super::*;

    #[test]
    fn proc_paths_are_cleaned_lexically() {
        assert_eq!(proc_components("/proc"), Some(alloc::vec![]));
        assert_eq!(proc_components("//proc/./self//stat"), Some(alloc::vec!["self", "stat"]));
        assert_eq!(proc_components("/tmp/../proc/1/../uptime"), Some(alloc::vec!["uptime"]));
        assert_eq!(proc_components("/../../proc/self"), Some(alloc::vec!["self"]), "nothing above /");
        assert_eq!(proc_components("/proc/.."), None);
        assert_eq!(proc_components("/procfs/x"), None);
        assert_eq!(proc_components("proc/self"), None, "only absolute paths");
        assert_eq!(proc_components("/tmp/proc"), None);
    }

    fn sample() -> ProcInfo {
        ProcInfo {
            pid: 42,
            comm: "a very long program name".into(),
            state: TaskState::Sleeping,
            ppid: 1,
            pgrp: 42,
            session: 1,
            tty_nr: 0x501,
            tpgid: 42,
            utime_ns: 1_230_000_000,
            stime_ns: 450_000_000,
            num_threads: 3,
            start_ns: 2_000_000_000,
            vsize: 8 << 20,
            rss_pages: 300,
            processor: 2,
            exit_code: 0,
            ..Default::default()
        }
    }

    /// Split a stat line as procps does: the name between the first `(` and the last `)`, then
    /// space-separated fields numbered from 3.
    fn fields(line: &str) -> (String, Vec<String>) {
        let open = line.find('(').unwrap();
        let close = line.rfind(')').unwrap();
        let rest: Vec<String> = line[close + 2..].trim_end().split(' ').map(String::from).collect();
        (line[open + 1..close].to_string(), rest)
    }

    #[test]
    fn pid_stat_has_52_fields_where_procps_reads_them() {
        let line = pid_stat(&sample());
        assert!(line.starts_with("42 (a very long pro) S 1 42 1 1281 42 "), "{line}");
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let (comm, f) = fields(&line);
        assert_eq!(comm.len(), 15);
        assert_eq!(f.len(), 50, "fields 3..=52");
        let field = |n: usize| f[n - 3].as_str();
        assert_eq!(field(3), "S");
        assert_eq!(field(14), "123", "utime in ticks");
        assert_eq!(field(15), "45");
        assert_eq!(field(19), "0", "nice");
        assert_eq!(field(20), "3", "threads");
        assert_eq!(field(22), "200", "start time in ticks");
        assert_eq!(field(23), (8u64 << 20).to_string());
        assert_eq!(field(24), "300");
        assert_eq!(field(38), "17");
        assert_eq!(field(39), "2", "last CPU");
        assert_eq!(field(52), "0");
    }

    #[test]
    fn status_names_fields() {
        let s = pid_status(&sample());
        assert!(s.contains("Name:\ta very long pro\n"));
        assert!(s.contains("State:\tS (sleeping)\n"));
        assert!(s.contains("PPid:\t1\n"));
        assert!(s.contains("VmRSS:\t    1200 kB\n"));
        assert!(s.contains("Threads:\t3\n"));
        assert_eq!(pid_cmdline(&["sh", "-c", "x"]), b"sh\0-c\0x\0");
    }

    #[test]
    fn proc_stat_totals_are_the_sum_of_cpus() {
        let cpus = vec![
            CpuTimes { user_ns: 1_000_000_000, idle_ns: 3_000_000_000, ..Default::default() },
            CpuTimes { user_ns: 500_000_000, system_ns: 250_000_000, idle_ns: 10_000_000, ..Default::default() },
        ];
        let s = stat(&cpus, &SystemCounts { context_switches: 99, forks: 5, running: 1, ..Default::default() });
        let mut lines = s.lines();
        assert_eq!(lines.next(), Some("cpu  150 0 25 301 0 0 0 0 0 0"));
        assert_eq!(lines.next(), Some("cpu0 100 0 0 300 0 0 0 0 0 0"));
        assert_eq!(lines.next(), Some("cpu1 50 0 25 1 0 0 0 0 0 0"));
        assert!(s.contains("\nctxt 99\n") && s.contains("\nprocesses 5\n") && s.contains("\nprocs_running 1\n"));
    }

    #[test]
    fn meminfo_columns_match_linux() {
        let s = meminfo(&MemInfo { total: 512 << 20, free: 400 << 20, available: 450 << 20, ..Default::default() });
        let first = s.lines().next().unwrap();
        assert_eq!(first, "MemTotal:         524288 kB");
        assert_eq!(first.len(), 27);
        assert!(s.contains("\nMemFree:          409600 kB\n"));
        assert!(s.contains("\nMemAvailable:     460800 kB\n"));
        assert!(s.lines().all(|l| l.ends_with(" kB") && l.len() == 27));
    }

    #[test]
    fn load_average_converges_and_prints_like_linux() {
        let mut l = LoadAvg::default();
        assert_eq!(loadavg(&l, 1, 10, 77), "0.00 0.00 0.00 1/10 77\n");
        // One minute of 2 runnable threads: the 1-minute average reaches 1 - 1/e of the way.
        for _ in 0..12 {
            l.sample(2);
        }
        let one = l.avg[0] as f64 / LoadAvg::FIXED_1 as f64;
        assert!((one - 2.0 * (1.0 - (-1.0f64).exp())).abs() < 0.02, "{one}");
        assert!(l.avg[0] > l.avg[1] && l.avg[1] > l.avg[2]);
        for _ in 0..2000 {
            l.sample(2);
        }
        assert!(loadavg(&l, 2, 5, 9).starts_with("2.00 2.00 2.00 "), "{}", loadavg(&l, 2, 5, 9));
        for _ in 0..2000 {
            l.sample(0);
        }
        assert_eq!(l.avg, [0, 0, 0], "decays to zero");
    }

    #[test]
    fn uptime_and_cpuinfo() {
        assert_eq!(uptime(12_345_000_000, 20_010_000_000), "12.34 20.01\n");
        let c = CpuDesc { vendor: "GenuineIntel".into(), model_name: "QEMU Virtual CPU".into(), flags: vec!["fpu", "sse2"], ..Default::default() };
        let s = cpuinfo(&[c.clone(), CpuDesc { apic_id: 1, ..c }]);
        assert_eq!(s.matches("processor\t: ").count(), 2);
        assert!(s.contains("processor\t: 1\n") && s.contains("flags\t\t: fpu sse2\n") && s.contains("siblings\t: 2\n"));
        assert!(s.ends_with("\n\n"));
    }

    #[test]
    fn counter_file_totals() {
        let a = SchedCounters { switches: 10, pcid_hits: 4, ..Default::default() };
        let b = SchedCounters { switches: 5, shootdown_ipis: 2, pcid_misses: 1, ..Default::default() };
        let s = sched_counters(&[a, b]);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0].split(' ').count(), 9);
        assert_eq!(lines[1], "cpu0 10 0 0 0 0 0 4 0");
        assert_eq!(lines[3], "total 15 0 0 0 0 2 4 1");
    }

    #[test]
    fn pid_dirs() {
        assert_eq!(parse_pid_dir("123"), Some(123));
        for bad in ["", "0", "012", "self", "1a", "99999999999"] {
            assert_eq!(parse_pid_dir(bad), None, "{bad}");
        }
    }
}
