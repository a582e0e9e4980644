//! The guest instruction counter in part 2: the TCG plugin of `bench/icount`, built for the QEMU
//! at hand, loaded into the boot of the benchmark kernel, and its counts turned into counts per
//! operation on the in-kernel rows.
//!
//! The kernel brackets each row's operations with marker NOPs (`arch::marker`) and prints, after
//! each row, which tags its windows carry and how many operations they hold (`kbench marker`
//! lines, read by `qemu::parse`). The plugin writes per tag and vCPU: windows, kernel and user
//! instructions, interrupts taken, and the expensive instructions. [`annotate`] divides them by
//! the operations and adds them to the row's counts: `kernel_insns_per_switch`,
//! `cr3_write_insns_per_switch`, `target_kernel_insns_per_interrupt`, ...
//!
//! [`prepare`] fails with a reason where the counter cannot run (a KVM guest, a QEMU whose plugin
//! API this crate does not build for, a failed plugin build): `main` then says so and part 2 runs
//! without counts.
//!
//! Neighbours: `qemu` (the boot and the `kbench` lines), `report` (the counts are row counts).

use std::{
    collections::BTreeMap,
    env, fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use object::{Object, ObjectSymbol};

use crate::qemu::{KernelRun, Plan};

/// What the counter needs for one boot.
#[derive(Clone, Debug)]
pub struct Counter {
    /// The plugin library.
    pub plugin: PathBuf,
    /// The plugin API version it was built for.
    pub api: u32,
    /// The kernel's interrupt entry stubs, `[start, end)`.
    pub vectors: (u64, u64),
    /// Where the plugin writes its counts.
    pub out: PathBuf,
}

/// The plugin API version to build for the QEMU whose `--version` line is `version`: QEMU 7.x
/// (Debian bookworm's 7.2) loads only API 1; QEMU 10.x loads API 4 (10.0 accepts 2 to 4, 10.1
/// 2 to 5).
pub fn plugin_api(version: &str) -> Result<u32, String> {
    let number = version
        .split_whitespace()
        .skip_while(|word| *word != "version")
        .nth(1)
        .ok_or_else(|| format!("no version number in `{version}`"))?;
    let major: u32 = number.split('.').next().unwrap_or("").parse().map_err(|_| format!("`{number}` is no version"))?;
    match major {
        7 => Ok(1),
        10 => Ok(4),
        other => Err(format!("QEMU {other}.x: the counter is built for QEMU 7 (plugin API 1) and 10 (API 4) only")),
    }
}

/// Why QEMU 10 with `-icount` gets no counts: `-icount` runs every vCPU on one thread, and then
/// QEMU 10 hands plugin callbacks the index of the vCPU that translated a block, not of the one
/// running it (measured here: the yield row lost three quarters of its instructions to vCPU 0).
/// QEMU 7.2 reads the running vCPU's index in both modes.
pub const ICOUNT_SMP: &str = "QEMU 10 with -icount (one thread for every vCPU) reports the vCPU that translated a \
     block to plugins, not the one running it, so per-vCPU counts would be wrong with 2 vCPUs";

/// The range of the kernel's interrupt entry stubs, from its `trap_stub_N` symbols: from the
/// lowest to 16 bytes past the highest (each stub is 16-byte aligned and shorter than that).
pub fn vector_range(elf: &[u8]) -> Result<(u64, u64), String> {
    let file = object::File::parse(elf).map_err(|e| format!("the kernel is no ELF: {e}"))?;
    let stubs: Vec<u64> = file
        .symbols()
        .filter(|symbol| {
            symbol.name().is_ok_and(|name| {
                name.strip_prefix("trap_stub_").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
        })
        .map(|symbol| symbol.address())
        .collect();
    match (stubs.iter().min(), stubs.iter().max()) {
        (Some(&start), Some(&last)) => Ok((start, last + 16)),
        _ => Err("the kernel has no trap_stub_N symbols (stripped?)".to_owned()),
    }
}

/// Build the plugin for plugin API `api` (one target folder per API: the two builds of the same
/// crate would replace each other) and return the library's path.
pub fn build_plugin(api: u32, workspace: &Path) -> Result<PathBuf, String> {
    let target_dir = workspace.join("target").join(format!("icount-api{api}"));
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.current_dir(workspace).env("CARGO_TARGET_DIR", &target_dir).args(["build", "-q", "-p", "icount", "--release"]);
    if api != 1 {
        build.args(["--no-default-features", "--features", &format!("api-v{api}")]);
    }
    eprintln!("bench: building the instruction counter (cargo build -p icount --release, plugin API {api})");
    let status = build.stdout(Stdio::null()).status().map_err(|e| format!("running cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building the plugin failed ({status})"));
    }
    let plugin = target_dir.join("release").join("libicount.so");
    if !plugin.is_file() {
        return Err(format!("cargo built no {}", plugin.display()));
    }
    Ok(plugin)
}

/// Build the plugin for `plan`'s QEMU and find the kernel's vector range; the counts will go to
/// `out`.
pub fn prepare(plan: &Plan, workspace: &Path, out: &Path) -> Result<Counter, String> {
    if plan.accel.qemu_name != "tcg" {
        return Err(format!("the instruction counter is a TCG plugin, and part 2 runs under {}", plan.accel.label));
    }
    let api = plugin_api(&plan.qemu_version)?;
    if api > 1 && plan.icount.is_some() {
        return Err(ICOUNT_SMP.to_owned());
    }
    let elf = fs::read(&plan.kernel).map_err(|e| format!("reading {}: {e}", plan.kernel.display()))?;
    let vectors = vector_range(&elf)?;
    let plugin = build_plugin(api, workspace)?;
    let _ = fs::remove_file(out);
    Ok(Counter { plugin, api, vectors, out: out.to_owned() })
}

impl Counter {
    /// QEMU's arguments that load the plugin.
    pub fn qemu_args(&self) -> Vec<String> {
        vec![
            "-plugin".to_owned(),
            format!(
                "{},out={},vectors={:#x}-{:#x}",
                self.plugin.display(),
                self.out.display(),
                self.vectors.0,
                self.vectors.1
            ),
        ]
    }

    /// Read what the plugin wrote at QEMU's exit.
    pub fn read(&self) -> Result<BTreeMap<u16, TagTotals>, String> {
        let text = fs::read_to_string(&self.out)
            .map_err(|e| format!("the plugin wrote no {} ({e}): did QEMU load it?", self.out.display()))?;
        parse(&text)
    }
}

/// One tag's counts over every vCPU.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TagTotals {
    pub windows: u64,
    pub discarded: u64,
    pub unmatched: u64,
    pub kernel: u64,
    pub user: u64,
    pub interrupts: u64,
    /// The expensive instructions by name (`cr3_writes`, `wrmsr`, ...), in the plugin's order.
    pub special: Vec<(String, u64)>,
}

/// The plugin's output, summed per tag over the vCPUs. Fails unless it is complete (`icount
/// begin` ... `icount end`) and well formed.
pub fn parse(text: &str) -> Result<BTreeMap<u16, TagTotals>, String> {
    let (mut began, mut ended) = (false, false);
    let mut totals: BTreeMap<u16, TagTotals> = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("icount ") else { continue };
        let (kind, words) = rest.split_once(' ').unwrap_or((rest, ""));
        match kind {
            "begin" => began = true,
            "end" => ended = true,
            "window" => {
                let mut tag = None;
                let mut entry = TagTotals::default();
                for word in words.split_whitespace() {
                    let (key, value) = word.split_once('=').ok_or_else(|| format!("`{word}` in `{line}`"))?;
                    let number: u64 = value.parse().map_err(|_| format!("{key}={value} is not a number"))?;
                    match key {
                        "tag" => tag = Some(u16::try_from(number).map_err(|_| format!("tag={value}"))?),
                        "vcpu" => {}
                        "windows" => entry.windows = number,
                        "discarded" => entry.discarded = number,
                        "unmatched" => entry.unmatched = number,
                        "kernel" => entry.kernel = number,
                        "user" => entry.user = number,
                        "interrupts" => entry.interrupts = number,
                        special => entry.special.push((special.to_owned(), number)),
                    }
                }
                let tag = tag.ok_or_else(|| format!("no tag= in `{line}`"))?;
                let sum = totals.entry(tag).or_default();
                sum.windows += entry.windows;
                sum.discarded += entry.discarded;
                sum.unmatched += entry.unmatched;
                sum.kernel += entry.kernel;
                sum.user += entry.user;
                sum.interrupts += entry.interrupts;
                for (name, n) in entry.special {
                    match sum.special.iter_mut().find(|(known, _)| *known == name) {
                        Some((_, total)) => *total += n,
                        None => sum.special.push((name, n)),
                    }
                }
            }
            other => return Err(format!("unknown icount line kind `{other}`")),
        }
    }
    if !began || !ended {
        return Err("the plugin's output is incomplete (no `icount begin` or `icount end`)".to_owned());
    }
    Ok(totals)
}

/// Add to each row of `run` its counts per operation from `totals`, and return what did not match:
/// a window tag the kernel announced with no closed window, or markers left unmatched. The caller
/// decides whether that fails the run.
pub fn annotate(run: &mut KernelRun, totals: &BTreeMap<u16, TagTotals>) -> Vec<String> {
    let mut problems = Vec::new();
    for row in &mut run.rows {
        for marker in &row.markers {
            let Some(t) = totals.get(&marker.tag).filter(|t| t.windows > 0) else {
                problems.push(format!("{}: no closed counting window of tag {}", row.name, marker.tag));
                continue;
            };
            if t.unmatched > 0 {
                problems.push(format!("{}: {} end markers of tag {} had no window open", row.name, t.unmatched, marker.tag));
            }
            let ops = marker.ops.unwrap_or(t.windows);
            let prefix = if marker.side == "cpu" { String::new() } else { format!("{}_", marker.side) };
            let per = |n: u64| if ops == 0 { None } else { Some(n as f64 / ops as f64) };
            let mut add = |name: &str, n: u64| row.counts.push((format!("{prefix}{name}_per_{}", marker.per), per(n)));
            add("kernel_insns", t.kernel);
            if t.user > 0 {
                add("user_insns", t.user);
            }
            // An interrupt window holds one interrupt by construction (more only if nested).
            if marker.per != "interrupt" {
                add("interrupts", t.interrupts);
            }
            // `cr3_write_insns`, `hlt_insns`, ...: apart from the kernel's own event counts of
            // similar names (`cr3_writes_per_switch`).
            for (name, n) in &t.special {
                if *n > 0 {
                    add(&format!("{}_insns", name.trim_end_matches('s')), *n);
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::{KernelRow, Marker};

    const OUTPUT: &str = "\
icount begin api=1 vcpus=2 vectors=1
icount window tag=1 vcpu=1 windows=100 discarded=0 unmatched=0 kernel=123100 user=0 interrupts=1 cr3_writes=0 wrmsr=0 xsave=0 xrstor=0 invlpg=0 invpcid=0 hlt=0
icount window tag=3 vcpu=0 windows=1 discarded=0 unmatched=0 kernel=100 user=0 interrupts=1 cr3_writes=0 wrmsr=2 xsave=0 xrstor=0 invlpg=0 invpcid=0 hlt=0
icount window tag=3 vcpu=1 windows=19 discarded=1 unmatched=0 kernel=9900 user=0 interrupts=19 cr3_writes=0 wrmsr=0 xsave=0 xrstor=0 invlpg=0 invpcid=0 hlt=0
icount end
";

    fn row(name: &str, markers: Vec<Marker>) -> KernelRow {
        KernelRow {
            name: name.to_owned(),
            unit: "switch".to_owned(),
            nr_samples: 100,
            median_ticks: 1.0,
            p99_ticks: 1.0,
            counts: Vec::new(),
            markers,
        }
    }

    fn marker(tag: u16, side: &str, per: &str, ops: Option<u64>) -> Marker {
        Marker { tag, side: side.to_owned(), per: per.to_owned(), ops }
    }

    #[test]
    fn the_api_follows_the_qemu_major_version() {
        assert_eq!(plugin_api("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)"), Ok(1));
        assert_eq!(plugin_api("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)"), Ok(4));
        assert!(plugin_api("QEMU emulator version 8.2.0").unwrap_err().contains("8.x"));
        assert!(plugin_api("qemu").is_err());
    }

    #[test]
    fn qemu_10_with_icount_is_refused_before_anything_is_built() {
        let plan = Plan {
            qemu: PathBuf::from("/q/qemu-system-x86_64"),
            icount: Some("shift=auto,sleep=off".to_owned()),
            qemu_version: "QEMU emulator version 10.0.2".to_owned(),
            accel: crate::qemu::decide_accel(crate::qemu::AccelChoice::Tcg, false, ""),
            kernel: PathBuf::from("/nonexistent/kernel"),
        };
        assert_eq!(prepare(&plan, Path::new("/nonexistent"), Path::new("/tmp/x")).unwrap_err(), ICOUNT_SMP);
    }

    #[test]
    fn counts_are_summed_over_vcpus_per_tag() {
        let totals = parse(OUTPUT).unwrap();
        assert_eq!(totals.len(), 2);
        let preempt = &totals[&3];
        assert_eq!((preempt.windows, preempt.discarded, preempt.kernel, preempt.interrupts), (20, 1, 10_000, 20));
        assert!(preempt.special.contains(&("wrmsr".to_owned(), 2)));
        assert!(parse("icount begin\n").unwrap_err().contains("incomplete"));
        assert!(parse(&OUTPUT.replace("kernel=100 ", "kernel=x ")).is_err());
    }

    #[test]
    fn rows_gain_counts_per_operation_or_per_window() {
        let mut run = crate::qemu::parse(crate::qemu::tests::OUTPUT).unwrap();
        run.rows = vec![
            row("yield_same_as", vec![marker(1, "cpu", "switch", Some(2000))]),
            row("preempt_timer", vec![marker(3, "target", "interrupt", None)]),
        ];
        let problems = annotate(&mut run, &parse(OUTPUT).unwrap());
        assert!(problems.is_empty(), "{problems:?}");
        let count = |row: usize, name: &str| run.rows[row].counts.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        assert_eq!(count(0, "kernel_insns_per_switch"), Some(Some(61.55)));
        assert_eq!(count(0, "interrupts_per_switch"), Some(Some(0.0005)));
        assert_eq!(count(0, "user_insns_per_switch"), None, "no user instructions ran: no column");
        assert_eq!(count(1, "target_kernel_insns_per_interrupt"), Some(Some(500.0)));
        assert_eq!(count(1, "target_wrmsr_insns_per_interrupt"), Some(Some(0.1)));
    }

    #[test]
    fn missing_windows_and_unmatched_markers_are_reported() {
        let mut run = crate::qemu::parse(crate::qemu::tests::OUTPUT).unwrap();
        run.rows = vec![row("shootdown_local", vec![marker(9, "cpu", "unmap", Some(100))])];
        let problems = annotate(&mut run, &parse(&OUTPUT.replace("unmatched=0 kernel=123100", "unmatched=2 kernel=123100")).unwrap());
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("shootdown_local") && problems[0].contains("tag 9"));
        run.rows = vec![row("yield_same_as", vec![marker(1, "cpu", "switch", Some(2000))])];
        let problems = annotate(&mut run, &parse(&OUTPUT.replace("unmatched=0 kernel=123100", "unmatched=2 kernel=123100")).unwrap());
        assert!(problems[0].contains("2 end markers"), "{problems:?}");
    }

    #[test]
    fn the_plugin_argument_names_its_output_and_the_vector_range() {
        let counter = Counter {
            plugin: PathBuf::from("/ws/target/icount-api1/release/libicount.so"),
            api: 1,
            vectors: (0xffff_ffff_8023_a2e0, 0xffff_ffff_8023_b2e0),
            out: PathBuf::from("/ws/target/bench/icount.txt"),
        };
        assert_eq!(
            counter.qemu_args(),
            vec![
                "-plugin".to_owned(),
                "/ws/target/icount-api1/release/libicount.so,out=/ws/target/bench/icount.txt,vectors=0xffffffff8023a2e0-0xffffffff8023b2e0"
                    .to_owned()
            ]
        );
    }
}
