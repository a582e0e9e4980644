//! `/proc`: files generated when they are opened, in Linux's formats (`abi::procfs` writes the
//! text), over the RAM filesystem's empty `/proc` directory.
//!
//! ```text
//!  /proc/self -> <pid>          /proc/<pid>/{stat,status,cmdline,exe}
//!  /proc/{cpuinfo,stat,meminfo,loadavg,uptime,mounts}
//!  /proc/kcounters              this kernel's per-CPU switch, preemption, steal, IPI and PCID counts
//! ```
//!
//! The process list comes from the process layer above, through the [`ProcSource`] it registers
//! ([`set_source`]). Paths are matched after lexical clean-up (`.`, `..`, repeated `/`), so a
//! relative path from a working directory inside `/proc` works too.
//!
//! Trade-offs: a file's text is fixed at open (Linux regenerates at each read from offset 0;
//! readers here reopen, as `top` does); `/proc/<pid>` directories list the four files named
//! above only.

use alloc::{
    format,
    string::{String, ToString},
    vec,
    vec::Vec,
};

use abi::{
    linux::{errno, general as g},
    procfs::{self, ProcInfo},
    ramfs::{DT_DIR, DT_LNK, DT_REG, DirEntry, Errno, Ino},
};

use super::file::File;
use crate::task;

/// What the process layer tells `/proc`.
pub trait ProcSource: Sync {
    /// Every process (zombies included).
    fn list(&self) -> Vec<ProcInfo>;
    /// The arguments of `pid` (`/proc/<pid>/cmdline`: each NUL-terminated).
    fn cmdline(&self, pid: u32) -> Option<Vec<u8>>;
    /// The path of the program `pid` runs.
    fn exe(&self, pid: u32) -> Option<String>;
    /// The calling thread's process id (what `/proc/self` names).
    fn current_pid(&self) -> u32;
}

static SOURCE: spin::Once<&'static dyn ProcSource> = spin::Once::new();

/// Register the process list (once, at boot).
pub fn set_source(s: &'static dyn ProcSource) {
    SOURCE.call_once(|| s);
}

/// The name of this kernel's counter file under `/proc`.
pub const COUNTER_FILE: &str = "kcounters";

const SYSTEM_FILES: [&str; 7] = ["cpuinfo", "stat", "meminfo", "loadavg", "uptime", "mounts", COUNTER_FILE];
const PID_FILES: [&str; 4] = ["stat", "status", "cmdline", "exe"];

/// A `/proc` name.
pub enum ProcNode {
    Dir(Vec<DirEntry>),
    Text(Vec<u8>),
    Link(String),
}

/// `path` (relative to `dir`) as `/proc` components (`abi::procfs::proc_components`), or `None`
/// if it is outside `/proc`.
fn components(dir: Ino, path: &str) -> Result<Option<Vec<String>>, Errno> {
    let full = if path.starts_with('/') {
        String::from(path)
    } else {
        let base = super::path_of(dir)?;
        if !base.starts_with("/proc") {
            return Ok(None);
        }
        format!("{base}/{path}")
    };
    Ok(procfs::proc_components(&full).map(|c| c.into_iter().map(String::from).collect()))
}

/// Resolve `/proc/...`; `follow`: `/proc/self` in the last place is followed (`exe` is always
/// a link here; [`open`] follows it).
pub fn lookup(dir: Ino, path: &str, follow: bool) -> Result<Option<ProcNode>, Errno> {
    let Some(mut comps) = components(dir, path)? else { return Ok(None) };
    let src = SOURCE.get().copied();
    if comps.first().map(String::as_str) == Some("self") {
        let pid = src.map_or(0, |s| s.current_pid());
        if comps.len() == 1 && !follow {
            return Ok(Some(ProcNode::Link(pid.to_string())));
        }
        comps[0] = pid.to_string();
    }
    let comps: Vec<&str> = comps.iter().map(String::as_str).collect();
    let node = match comps.as_slice() {
        [] => {
            let mut e = dots();
            e.push(DirEntry { ino: 0x7100, name: "self".to_string(), d_type: DT_LNK });
            for (i, n) in SYSTEM_FILES.iter().enumerate() {
                e.push(DirEntry { ino: 0x7200 + i as u64, name: n.to_string(), d_type: DT_REG });
            }
            for p in src.map(|s| s.list()).unwrap_or_default() {
                e.push(DirEntry { ino: 0x10000 + u64::from(p.pid), name: p.pid.to_string(), d_type: DT_DIR });
            }
            ProcNode::Dir(e)
        }
        [name] if SYSTEM_FILES.contains(name) => ProcNode::Text(system_file(name).into_bytes()),
        [pid, rest @ ..] => {
            let pid = procfs::parse_pid_dir(pid).ok_or(errno::ENOENT)?;
            let src = src.ok_or(errno::ENOENT)?;
            let info = src.list().into_iter().find(|p| p.pid == pid).ok_or(errno::ENOENT)?;
            match rest {
                [] => {
                    let mut e = dots();
                    for (i, n) in PID_FILES.iter().enumerate() {
                        e.push(DirEntry { ino: 0x20000 + u64::from(pid) * 8 + i as u64, name: n.to_string(), d_type: if *n == "exe" { DT_LNK } else { DT_REG } });
                    }
                    ProcNode::Dir(e)
                }
                ["stat"] => ProcNode::Text(procfs::pid_stat(&info).into_bytes()),
                ["status"] => ProcNode::Text(procfs::pid_status(&info).into_bytes()),
                ["cmdline"] => ProcNode::Text(src.cmdline(pid).unwrap_or_default()),
                ["exe"] => {
                    ProcNode::Link(src.exe(pid).ok_or(errno::ENOENT)?)
                }
                _ => return Err(errno::ENOENT),
            }
        }
    };
    Ok(Some(node))
}

fn dots() -> Vec<DirEntry> {
    vec![DirEntry { ino: 0x7000, name: ".".to_string(), d_type: DT_DIR }, DirEntry { ino: abi::ramfs::ROOT, name: "..".to_string(), d_type: DT_DIR }]
}

/// `open` of a `/proc` path: `None` when the path is elsewhere.
pub fn open(dir: Ino, path: &str, flags: u32) -> Result<Option<File>, Errno> {
    let node = match lookup(dir, path, flags & g::O_NOFOLLOW == 0)? {
        None => return Ok(None),
        Some(n) => n,
    };
    if flags & g::O_ACCMODE != g::O_RDONLY || flags & g::O_CREAT != 0 {
        return Err(errno::EACCES);
    }
    match node {
        ProcNode::Text(t) => {
            if flags & g::O_DIRECTORY != 0 {
                return Err(errno::ENOTDIR);
            }
            Ok(Some(File::text(t, flags)))
        }
        ProcNode::Dir(e) => Ok(Some(File::listing(e, flags))),
        // `exe` followed: the program file itself.
        ProcNode::Link(target) => super::open(abi::ramfs::ROOT, &target, flags, 0).map(Some),
    }
}

/// The load average, the time it was last folded and the CPUs' idle time then.
static LOAD: spin::Mutex<(procfs::LoadAvg, u64, u64)> = spin::Mutex::new((procfs::LoadAvg { avg: [0; 3] }, 0, 0));

/// The load average now. The scheduler keeps no count of runnable threads, so each 5 s period
/// since the last fold samples the busy CPUs of that span (CPU time not idle, divided by the
/// span, rounded): a machine with every CPU busy shows its CPU count, as Linux's average does
/// when each CPU has one runnable thread. Folded when read (`/proc/loadavg`, `sysinfo`).
pub fn load_average() -> procfs::LoadAvg {
    let s = task::sched();
    let ncpu = s.nr_cpus() as u64;
    let now = crate::time::now_ns();
    let idle: u64 = (0..ncpu).map(|i| s.counters(sched::CpuIndex(i as u32)).idle_ns).sum();
    // The first fold covers the time since boot (stamp 0, no idle time yet).
    let mut l = LOAD.lock();
    let periods = now.saturating_sub(l.1) / procfs::LoadAvg::SAMPLE_NS;
    if periods > 0 {
        let span = now - l.1;
        let busy = (ncpu * span).saturating_sub(idle.saturating_sub(l.2));
        let active = (busy + span / 2) / span;
        // After 15 minutes without a read every average has forgotten what came before.
        for _ in 0..periods.min(200) {
            l.0.sample(active);
        }
        l.1 += periods * procfs::LoadAvg::SAMPLE_NS;
        l.2 = idle;
    }
    l.0
}

fn system_file(name: &str) -> String {
    let s = task::sched();
    let ncpu = s.nr_cpus();
    let up = crate::time::now_ns();
    match name {
        "cpuinfo" => {
            let id = raw_cpuid::CpuId::new();
            let (family, model, stepping) = id.get_feature_info().map_or((0, 0, 0), |f| (u32::from(f.family_id()), u32::from(f.model_id()), u32::from(f.stepping_id())));
            let desc = procfs::CpuDesc {
                apic_id: 0,
                vendor: id.get_vendor_info().map_or("unknown".to_string(), |v| v.as_str().to_string()),
                family,
                model,
                model_name: id.get_processor_brand_string().map_or("unknown".to_string(), |b| b.as_str().trim().to_string()),
                stepping,
                mhz: (crate::time::tsc_hz() / 1_000_000) as u32,
                flags: vec!["fpu", "sse", "sse2"],
            };
            let cpus: Vec<procfs::CpuDesc> = (0..ncpu).map(|i| procfs::CpuDesc { apic_id: i as u32, ..desc.clone() }).collect();
            procfs::cpuinfo(&cpus)
        }
        "stat" => {
            let cpus: Vec<procfs::CpuTimes> = (0..ncpu)
                .map(|i| {
                    let c = s.counters(sched::CpuIndex(i as u32));
                    // Busy time split as the ticks sampled it (`user_ns`); the rest is system.
                    let busy = up.saturating_sub(c.idle_ns);
                    let user_ns = c.user_ns.min(busy);
                    procfs::CpuTimes { idle_ns: c.idle_ns, user_ns, system_ns: busy - user_ns, ..Default::default() }
                })
                .collect();
            let t = s.total_counters();
            let procs = SOURCE.get().map(|s| s.list()).unwrap_or_default();
            let sys = procfs::SystemCounts {
                context_switches: t.context_switches,
                boot_time_s: crate::time::wall_clock_ns().saturating_sub(up) / 1_000_000_000,
                forks: procs.len() as u64,
                running: procs.iter().filter(|p| p.state == procfs::TaskState::Running).count() as u32,
                ..Default::default()
            };
            procfs::stat(&cpus, &sys)
        }
        "meminfo" => {
            let (free, total) = crate::mm::frames::stats();
            procfs::meminfo(&procfs::MemInfo { total: total as u64 * 4096, free: free as u64 * 4096, available: free as u64 * 4096, ..Default::default() })
        }
        "loadavg" => {
            let procs = SOURCE.get().map(|s| s.list()).unwrap_or_default();
            let threads: u32 = procs.iter().map(|p| p.num_threads).sum();
            let running = procs.iter().filter(|p| p.state == procfs::TaskState::Running).count() as u32;
            procfs::loadavg(&load_average(), running, threads, procs.iter().map(|p| p.pid).max().unwrap_or(0))
        }
        "uptime" => {
            let idle: u64 = (0..ncpu).map(|i| s.counters(sched::CpuIndex(i as u32)).idle_ns).sum();
            procfs::uptime(up, idle)
        }
        "mounts" => procfs::mounts(),
        _ => {
            let cpus: Vec<procfs::SchedCounters> = (0..ncpu)
                .map(|i| {
                    let c = s.counters(sched::CpuIndex(i as u32));
                    let t = smp::CpuId::new(i as u32).map(crate::vm::tlb::counters).unwrap_or_default();
                    procfs::SchedCounters {
                        switches: c.context_switches,
                        preemptions: c.preemptions,
                        steals: c.migrations_in,
                        wake_ipis_sent: c.ipis_sent,
                        wake_ipis_avoided: c.ipis_avoided,
                        shootdown_ipis: t.ipis_sent + t.kernel_ipis,
                        pcid_hits: t.pcid_hits,
                        pcid_misses: t.pcid_misses + t.pcid_stale + t.pcid_recycles,
                    }
                })
                .collect();
            procfs::sched_counters(&cpus)
        }
    }
}
