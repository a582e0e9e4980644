//! What the benchmark learns about the machine it runs on, and how it pins itself there.
//!
//! Key items: [`Host`] (CPU model, kernel release, calibrated TSC rate, timer overhead),
//! [`pin_to_cpu`] and [`allowed_cpus`] over `sched_{set,get}affinity`. `main` fills a `Host`
//! once; `report` prints it and writes it into the JSON.

use std::{fs, io, mem, thread, time::Duration, time::Instant};

use arch::tsc;

/// Facts about the machine that a reader needs to interpret the cycle counts.
#[derive(Clone, Debug)]
pub struct Host {
    /// `model name` of the first processor in /proc/cpuinfo.
    pub cpu_model: String,
    /// `cpu MHz` of the first processor in /proc/cpuinfo, as the kernel reports it.
    pub cpuinfo_mhz: Option<f64>,
    /// The running kernel's release string (what `uname -r` prints).
    pub kernel_release: String,
    /// The 1, 5 and 15 minute load averages from /proc/loadavg when the run started: other work on
    /// the machine preempts the measured threads and shows in the p99 figures.
    pub load_avg: [f64; 3],
    /// TSC ticks per second, calibrated against CLOCK_MONOTONIC.
    pub tsc_hz: f64,
    /// Median cycles between `tsc::start()` and `tsc::end()` with nothing in between: the fixed
    /// cost every per-iteration sample carries.
    pub timer_overhead_cycles: f64,
}

impl Host {
    /// Gather the facts; `calibration` is how long the TSC is compared with the monotonic clock.
    pub fn probe(calibration: Duration) -> io::Result<Self> {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo")?;
        let field = |name: &str| {
            cpuinfo
                .lines()
                .filter_map(|line| line.split_once(':'))
                .find(|(key, _)| key.trim() == name)
                .map(|(_, value)| value.trim().to_owned())
        };
        let cpu_model = field("model name").unwrap_or_else(|| "unknown".to_owned());
        let cpuinfo_mhz = field("cpu MHz").and_then(|mhz| mhz.parse().ok());
        let kernel_release = fs::read_to_string("/proc/sys/kernel/osrelease")?.trim().to_owned();
        let load_avg = parse_load_avg(&fs::read_to_string("/proc/loadavg")?)?;
        let overhead = crate::measure::cycles_per_op(
            crate::measure::Sampling { nr_warmup: 1_000, nr_samples: 10_000 },
            1,
            || {},
        );
        Ok(Self {
            cpu_model,
            cpuinfo_mhz,
            kernel_release,
            load_avg,
            tsc_hz: calibrate_tsc_hz(calibration),
            timer_overhead_cycles: crate::stats::summarize(overhead).median_cycles,
        })
    }

    /// Nanoseconds that `cycles` TSC ticks last on this machine.
    pub fn ns(&self, cycles: f64) -> f64 {
        cycles * 1e9 / self.tsc_hz
    }
}

/// The first three fields of /proc/loadavg.
fn parse_load_avg(text: &str) -> io::Result<[f64; 3]> {
    let mut fields = text.split_whitespace().map(str::parse::<f64>);
    let mut next = || match fields.next() {
        Some(Ok(value)) => Ok(value),
        _ => Err(io::Error::other(format!("unexpected /proc/loadavg: {text:?}"))),
    };
    Ok([next()?, next()?, next()?])
}

/// TSC ticks per second: count ticks across a sleep of `window` on CLOCK_MONOTONIC (which is what
/// `Instant` reads on Linux). The TSC is invariant on the machines this runs on (`constant_tsc`,
/// `nonstop_tsc`), so the sleep does not disturb it.
fn calibrate_tsc_hz(window: Duration) -> f64 {
    let (t0, c0) = (Instant::now(), tsc::start());
    thread::sleep(window);
    let (c1, t1) = (tsc::end(), Instant::now());
    c1.wrapping_sub(c0) as f64 / (t1 - t0).as_secs_f64()
}

/// Pin the calling thread to one CPU, so every switch it takes part in happens there.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is a plain bit array for which all-zero is the valid empty set.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    // SAFETY: CPU_SET writes one bit of `set`; it bounds-checks `cpu` against the set's size.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 means the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// The CPUs this process may run on, ascending.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: as in `pin_to_cpu`, all-zero is the valid empty set.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    // SAFETY: `set` is a writable cpu_set_t of the size passed; pid 0 means the calling thread.
    let rc = unsafe { libc::sched_getaffinity(0, mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let nr_bits = 8 * mem::size_of::<libc::cpu_set_t>();
    // SAFETY: CPU_ISSET only reads one bit of `set`, and `cpu` stays below the set's size.
    Ok((0..nr_bits).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinning_to_an_allowed_cpu_leaves_exactly_that_cpu_allowed() {
        // Runs on a thread of its own so the test harness's other threads keep their masks.
        thread::spawn(|| {
            let cpus = allowed_cpus().unwrap();
            let last = *cpus.last().expect("a process runs on at least one CPU");
            pin_to_cpu(last).unwrap();
            assert_eq!(allowed_cpus().unwrap(), vec![last]);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn load_average_is_the_first_three_fields() {
        assert_eq!(parse_load_avg("7.96 10.28 6.22 3/412 9001\n").unwrap(), [7.96, 10.28, 6.22]);
        assert!(parse_load_avg("7.96 x").is_err());
    }

    #[test]
    fn probe_reads_the_kernel_release_and_a_positive_tsc_rate() {
        let host = Host::probe(Duration::from_millis(20)).unwrap();
        assert!(!host.kernel_release.is_empty());
        assert!(host.tsc_hz > 0.0);
        assert!(host.ns(host.tsc_hz) > 0.0);
    }
}
