//! The TLB shootdown protocol run against a software model of PCID-tagged TLBs.
//!
//! The real `PcidTable`, `TlbTracker`, `ShootdownMailbox` and `FreeAfter` decide; the model plays
//! the hardware and the kernel around them: each CPU has TLB entries `(pcid, vpage) -> (frame,
//! writable)` and paging-structure-cache entries `(pcid, table span) -> page-table page`, filled
//! by touches from the model's page tables; CR3 writes with and without the no-flush bit,
//! INVLPG (modelled conservatively: it drops only the entries of its own page and span, where
//! the hardware drops every paging-structure-cache entry of the PCID), INVPCID single-context
//! and full flushes drop what the architecture says they drop.
//!
//! Proptest generates schedules of CPU steps: switches (more address spaces than PCID slots),
//! touches, maps, unmaps, remaps and protection reductions (waited for, or left in flight with a
//! `FreeAfter`), IPI deliveries at random times, unrelated full flushes, address-space exits, and
//! lazy halts: a CPU halts with its address space still loaded and marks itself lazy, as the
//! kernel's idle loop does. A change that frees no page-table page spares lazy CPUs the IPI
//! (`begin_change_sparing`); one that frees tables interrupts them, and they leave the space for
//! the kernel-only context without flushing. A lazy CPU runs nothing until it wakes, and on waking
//! it catches up before anything else: a flush of its PCID if its slot is behind the space's
//! generation.
//! A switch takes two steps (`switch_in`, then the CR3 write) and a waited-for change spins until
//! its acknowledgements are in, so other CPUs act in between; a change's page-table edit,
//! generation bump, local flush and post form one step (the race of a switch-in with a bump is
//! left to `loom_switch_vs_change.rs`). After every step it checks:
//! - no CPU can translate through a stale entry (one its address space's page tables no longer
//!   back) unless that entry's change is still waiting for this CPU's acknowledgement (or a
//!   flushing CR3 write this CPU has decided on is about to drop it), or the CPU is halted lazily
//!   with its slot behind that change (it flushes on waking, before it runs anything);
//! - a stale entry that survives an acknowledgement is on a CPU not running that PCID whose slot
//!   is behind the change (so the next switch-in flushes it), or on a PCID its address space no
//!   longer owns (so the next owner flushes it);
//! - a switch without flush never exposes a stale or foreign entry;
//! - nothing usable points to a freed frame, no CPU (halted lazily or not) can walk a freed
//!   page-table page, and a `FreeAfter` is releasable exactly when the model's own record says
//!   every target has flushed;
//! - `active` and `may_cache` match the model's view of loaded CR3s and held slots, and every
//!   plan targets exactly the other CPUs with the address space loaded, less the lazy ones when
//!   the change frees no page-table page.
//!
//! At the end of a schedule it drains (finishes switches, delivers IPIs, completes waits) and
//! checks conservation: every posted request serviced exactly once per target, every switch and
//! every change counted, every frame and page-table page either mapped or freed, never both.
//!
//! Default: 3,000 cases x 200 steps for each of two configurations (2 PCID slots for 5 address
//! spaces, 6 slots for 8), 3 CPUs; `PROPTEST_CASES` overrides the case count.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use proptest::prelude::*;
use smp::{
    AsId, CpuId, CpuSet, FULL_FLUSH_THRESHOLD_PAGES, FlushAction, FreeAfter, PageRange, PcidTable,
    Request, ShootdownMailbox, SwitchIn, SwitchKind, TlbStats, TlbTracker,
};

const NR_CPUS: usize = 3;
/// Virtual pages per address space.
const VPAGES: u64 = 48;
/// Pages mapped by one page-table page of the model (a "span").
const SPAN_PAGES: u64 = 8;
const STEPS: usize = 200;

fn cpu_id(index: usize) -> CpuId {
    CpuId::new(index as u32).unwrap()
}

fn span_of(vpage: u64) -> u64 {
    vpage / SPAN_PAGES
}

#[derive(Clone, Copy, Debug)]
enum Action {
    Switch(usize),
    SwitchKernel,
    Touch {
        vpage: u64,
        write: bool,
    },
    Map {
        space: usize,
        start: u64,
        pages: u64,
        writable: bool,
    },
    Unmap {
        space: usize,
        start: u64,
        pages: u64,
        deferred: bool,
    },
    Protect {
        space: usize,
        start: u64,
        pages: u64,
        deferred: bool,
    },
    Remap {
        space: usize,
        vpage: u64,
        deferred: bool,
    },
    Deliver,
    FullFlush,
    /// A running CPU with an address space loaded halts lazily; a lazy CPU wakes and catches up.
    Idle,
}

#[derive(Clone, Copy, Debug)]
enum Op {
    /// CPU `cpu` takes a step: `action` if it is running, otherwise the next step of what it is
    /// in the middle of (the CR3 write of a switch, one turn of a shootdown wait).
    Cpu { cpu: usize, action: Action },
    /// Address space `space` is destroyed (if it is loaded nowhere) and replaced by a new one.
    Exit { space: usize },
}

#[derive(Clone, Copy, Debug)]
struct TlbEntry {
    asid: AsId,
    frame: u64,
    writable: bool,
    /// The generation of the first change that made this entry stale.
    stale_since: Option<u64>,
}

#[derive(Clone, Copy, Debug)]
struct PscEntry {
    asid: AsId,
    table: u64,
    stale_since: Option<u64>,
}

#[derive(Clone, Copy, Debug)]
struct Pte {
    frame: u64,
    writable: bool,
}

struct Space {
    asid: AsId,
    tracker: TlbTracker,
    ptes: BTreeMap<u64, Pte>,
    /// span -> page-table page.
    tables: BTreeMap<u64, u64>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cr3 {
    Kernel,
    Space { asid: AsId, pcid: u16 },
}

impl Cr3 {
    fn asid(self) -> Option<AsId> {
        match self {
            Cr3::Kernel => None,
            Cr3::Space { asid, .. } => Some(asid),
        }
    }

    fn pcid(self) -> u16 {
        match self {
            Cr3::Kernel => 0,
            Cr3::Space { pcid, .. } => pcid,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum CpuState {
    Running,
    /// `switch_in` done, CR3 not written yet.
    MidSwitch {
        next: AsId,
        decision: SwitchIn,
    },
    /// Spinning in `Shootdown::wait` for its own change, interrupts off.
    Waiting,
    /// Halted with its address space kept loaded (or left by a shootdown meanwhile), marked lazy:
    /// it only services IPIs until it wakes.
    Lazy,
}

struct Cpu<const N: usize> {
    table: PcidTable<N>,
    cr3: Cr3,
    state: CpuState,
    tlb: HashMap<(u16, u64), TlbEntry>,
    psc: HashMap<(u16, u64), PscEntry>,
    /// Destroyed address spaces whose slot this CPU has not forgotten yet.
    to_forget: Vec<AsId>,
}

struct InFlight {
    changer: usize,
    asid: AsId,
    new_gen: u64,
    /// The model's own record of the targets that have not flushed yet.
    remaining: CpuSet,
    token: FreeAfter,
    frames: Vec<u64>,
    tables: Vec<u64>,
}

#[derive(Default)]
struct Counters {
    switch_ins: u64,
    changes: u64,
    requests_posted: u64,
    requests_serviced: u64,
    frames_allocated: u64,
    tables_allocated: u64,
    /// IPIs a change did not send to lazy CPUs.
    spared: u64,
    /// Lazy CPUs a change that frees page-table pages interrupted, which left their space.
    lazy_leaves: u64,
    /// Wakes that found the slot behind and flushed it.
    catch_ups: u64,
}

struct Model<const N: usize> {
    cpus: Vec<Cpu<N>>,
    spaces: Vec<Space>,
    dead: BTreeSet<AsId>,
    mailboxes: Vec<ShootdownMailbox>,
    stats: TlbStats,
    inflight: Vec<InFlight>,
    freed_frames: BTreeSet<u64>,
    freed_tables: BTreeSet<u64>,
    next_asid: u64,
    next_frame: u64,
    next_table: u64,
    counters: Counters,
    step: usize,
}

/// Performs a flush decided by `TlbTracker::flush_action` on the CPU's model TLB; INVLPG and
/// INVPCID act on the PCID actually in CR3.
fn apply_flush<const N: usize>(cpu: &mut Cpu<N>, action: FlushAction) {
    match action {
        FlushAction::Nothing => {}
        FlushAction::Pages(range) => {
            let pcid = cpu.cr3.pcid();
            for vpage in range.start_vpage..range.start_vpage + range.pages {
                cpu.tlb.remove(&(pcid, vpage));
                cpu.psc.remove(&(pcid, span_of(vpage)));
            }
        }
        FlushAction::Pcid(pcid) => drop_pcid(cpu, pcid.get()),
    }
}

fn drop_pcid<const N: usize>(cpu: &mut Cpu<N>, pcid: u16) {
    cpu.tlb.retain(|&(p, _), _| p != pcid);
    cpu.psc.retain(|&(p, _), _| p != pcid);
}

/// Services CPU `me`'s mailbox the way the kernel's IPI handler does: the flush decided by the
/// loaded address space's tracker, performed before the acknowledgement.
fn service<const N: usize>(
    cpus: &mut [Cpu<N>],
    spaces: &[Space],
    mailboxes: &[ShootdownMailbox],
    inflight: &mut [InFlight],
    counters: &mut Counters,
    me: usize,
) {
    let cpu = &mut cpus[me];
    let lazy = matches!(cpu.state, CpuState::Lazy);
    let tracker = cpu.cr3.asid().map(|asid| {
        &spaces
            .iter()
            .find(|s| s.asid == asid)
            .expect("loaded spaces live")
            .tracker
    });
    ShootdownMailbox::service(mailboxes, cpu_id(me), |request| {
        if lazy
            && let Some(t) = tracker
            && cpu.cr3.asid() == Some(request.asid)
        {
            // The kernel's `leave_lazily`: no flush; the slot stays behind this change and
            // flushes when the space is loaded again.
            cpu.table.switch_to_kernel();
            cpu.cr3 = Cr3::Kernel;
            t.switch_out(cpu_id(me));
            counters.lazy_leaves += 1;
        } else {
            let action = tracker.map_or(FlushAction::Nothing, |t| {
                t.flush_action(request, &mut cpu.table)
            });
            apply_flush(cpu, action);
        }
        let change = inflight
            .iter_mut()
            .find(|c| c.asid == request.asid && c.new_gen == request.new_gen)
            .expect("a serviced request belongs to a change in flight");
        assert!(
            change.remaining.remove(cpu_id(me)),
            "cpu{me} serviced a request twice"
        );
        counters.requests_serviced += 1;
    });
}

impl<const N: usize> Model<N> {
    fn new(nr_spaces: usize) -> Model<N> {
        let mut model = Model {
            cpus: (0..NR_CPUS)
                .map(|_| Cpu {
                    table: PcidTable::new(),
                    cr3: Cr3::Kernel,
                    state: CpuState::Running,
                    tlb: HashMap::new(),
                    psc: HashMap::new(),
                    to_forget: Vec::new(),
                })
                .collect(),
            spaces: Vec::new(),
            dead: BTreeSet::new(),
            mailboxes: (0..NR_CPUS).map(|_| ShootdownMailbox::new()).collect(),
            stats: TlbStats::new(),
            inflight: Vec::new(),
            freed_frames: BTreeSet::new(),
            freed_tables: BTreeSet::new(),
            next_asid: 1,
            next_frame: 0,
            next_table: 0,
            counters: Counters::default(),
            step: 0,
        };
        for space in 0..nr_spaces {
            let fresh = model.new_space();
            model.spaces.push(fresh);
            model.populate(space);
        }
        model
    }

    /// A fresh, empty address space.
    fn new_space(&mut self) -> Space {
        let asid = AsId::new(self.next_asid);
        self.next_asid += 1;
        Space {
            asid,
            tracker: TlbTracker::new(asid),
            ptes: BTreeMap::new(),
            tables: BTreeMap::new(),
        }
    }

    /// Maps the lower half of the pages of `space`, writable.
    fn populate(&mut self, space: usize) {
        for vpage in 0..VPAGES / 2 {
            self.map_page(space, vpage, true);
        }
    }

    fn map_page(&mut self, space: usize, vpage: u64, writable: bool) {
        let frame = self.next_frame;
        self.next_frame += 1;
        self.counters.frames_allocated += 1;
        let s = &mut self.spaces[space];
        if let std::collections::btree_map::Entry::Vacant(e) = s.tables.entry(span_of(vpage)) {
            e.insert(self.next_table);
            self.next_table += 1;
            self.counters.tables_allocated += 1;
        }
        s.ptes.insert(vpage, Pte { frame, writable });
    }

    fn space_index(&self, asid: AsId) -> Option<usize> {
        self.spaces.iter().position(|s| s.asid == asid)
    }

    /// The CPUs that have `asid` loaded: in CR3, or marked active by a switch in progress.
    fn loaded_on(&self, asid: AsId) -> CpuSet {
        (0..NR_CPUS)
            .filter(|&c| {
                let cpu = &self.cpus[c];
                cpu.cr3.asid() == Some(asid)
                    || matches!(cpu.state, CpuState::MidSwitch { next, .. } if next == asid)
            })
            .map(cpu_id)
            .collect()
    }

    /// The CPUs whose PCIDs may hold entries of `asid`: those holding a slot for it, and those
    /// recycling its slot in a switch whose flushing CR3 write is still to come.
    fn caching(&self, asid: AsId) -> CpuSet {
        (0..NR_CPUS)
            .filter(|&d| {
                let cpu = &self.cpus[d];
                cpu.table.slot_of(asid).is_some()
                    || matches!(cpu.state, CpuState::MidSwitch { decision, .. }
                        if decision.kind == SwitchKind::Recycled(asid))
            })
            .map(cpu_id)
            .collect()
    }

    fn run(&mut self, op: Op) {
        self.step += 1;
        match op {
            Op::Exit { space } => self.exit(space),
            Op::Cpu { cpu, action } => match self.cpus[cpu].state {
                CpuState::MidSwitch { next, decision } => self.finish_switch(cpu, next, decision),
                CpuState::Waiting => self.wait_turn(cpu),
                // Halted: an IPI is served in the halt; anything else wakes the CPU first.
                CpuState::Lazy => match action {
                    Action::Deliver => self.act(cpu, action),
                    _ => self.wake(cpu),
                },
                CpuState::Running => {
                    let forgotten = std::mem::take(&mut self.cpus[cpu].to_forget);
                    for asid in forgotten {
                        self.cpus[cpu].table.forget(asid);
                    }
                    self.act(cpu, action);
                }
            },
        }
        self.reap();
        self.check();
    }

    fn act(&mut self, c: usize, action: Action) {
        match action {
            Action::Switch(space) => self.start_switch(c, space),
            Action::SwitchKernel => {
                if let Some(prev) = self.cpus[c].cr3.asid() {
                    self.cpus[c].table.switch_to_kernel();
                    self.cpus[c].cr3 = Cr3::Kernel;
                    let i = self.space_index(prev).unwrap();
                    self.spaces[i].tracker.switch_out(cpu_id(c));
                }
            }
            Action::Touch { vpage, write } => self.touch(c, vpage, write),
            Action::Map {
                space,
                start,
                pages,
                writable,
            } => {
                for vpage in start..(start + pages).min(VPAGES) {
                    if !self.spaces[space].ptes.contains_key(&vpage) {
                        self.map_page(space, vpage, writable);
                    }
                }
            }
            Action::Unmap {
                space,
                start,
                pages,
                deferred,
            } => self.change(c, space, start, pages, deferred, |s, vpage, frames| {
                s.ptes
                    .remove(&vpage)
                    .map(|pte| frames.push(pte.frame))
                    .is_some()
            }),
            Action::Protect {
                space,
                start,
                pages,
                deferred,
            } => self.change(c, space, start, pages, deferred, |s, vpage, _| {
                match s.ptes.get_mut(&vpage) {
                    Some(pte) if pte.writable => {
                        pte.writable = false;
                        true
                    }
                    _ => false,
                }
            }),
            Action::Remap {
                space,
                vpage,
                deferred,
            } => {
                let frame = self.next_frame;
                let mut used = false;
                self.change(c, space, vpage, 1, deferred, |s, vpage, frames| {
                    match s.ptes.get_mut(&vpage) {
                        Some(pte) => {
                            frames.push(pte.frame);
                            pte.frame = frame;
                            used = true;
                            true
                        }
                        None => false,
                    }
                });
                if used {
                    self.next_frame += 1;
                    self.counters.frames_allocated += 1;
                }
            }
            Action::Deliver => service(
                &mut self.cpus,
                &self.spaces,
                &self.mailboxes,
                &mut self.inflight,
                &mut self.counters,
                c,
            ),
            Action::FullFlush => {
                self.cpus[c].tlb.clear();
                self.cpus[c].psc.clear();
            }
            Action::Idle => {
                if self.cpus[c].cr3.asid().is_some() {
                    self.cpus[c].state = CpuState::Lazy;
                }
            }
        }
    }

    /// CPU `c` wakes from a lazy halt: the kernel's `idle_exit`, which clears the lazy mark, then
    /// reads the loaded space's generation and flushes the whole PCID if its slot is behind.
    fn wake(&mut self, c: usize) {
        self.cpus[c].state = CpuState::Running;
        let Some(asid) = self.cpus[c].cr3.asid() else {
            return; // left the space meanwhile; the next switch loads one from none
        };
        let space = &self.spaces[self.space_index(asid).unwrap()];
        let request = Request {
            asid,
            new_gen: space.tracker.tlb_gen(),
            range: PageRange {
                start_vpage: 0,
                pages: VPAGES,
            },
            full_flush: true,
        };
        let action = space
            .tracker
            .flush_action(&request, &mut self.cpus[c].table);
        if action != FlushAction::Nothing {
            self.counters.catch_ups += 1;
        }
        apply_flush(&mut self.cpus[c], action);
    }

    /// The CPUs halted lazily now.
    fn lazy_cpus(&self) -> CpuSet {
        (0..NR_CPUS)
            .filter(|&c| matches!(self.cpus[c].state, CpuState::Lazy))
            .map(cpu_id)
            .collect()
    }

    fn start_switch(&mut self, c: usize, space: usize) {
        let next = self.spaces[space].asid;
        if self.cpus[c].cr3.asid() == Some(next) {
            return;
        }
        let decision = self.spaces[space]
            .tracker
            .switch_in(cpu_id(c), &mut self.cpus[c].table);
        self.counters.switch_ins += 1;
        self.cpus[c].state = CpuState::MidSwitch { next, decision };
    }

    fn finish_switch(&mut self, c: usize, next: AsId, decision: SwitchIn) {
        let pcid = decision.pcid.get();
        if decision.flush {
            drop_pcid(&mut self.cpus[c], pcid);
        } else {
            // A switch that keeps the PCID's entries must find only fresh ones of `next` there
            // (or stale ones whose shootdown this CPU has yet to service: it is still active).
            let tlb = self.cpus[c].tlb.iter().filter(|((p, _), _)| *p == pcid);
            for (&(_, vpage), e) in tlb {
                assert_eq!(
                    e.asid, next,
                    "step {}: cpu{c} kept a foreign entry for vpage {vpage}",
                    self.step
                );
                if let Some(g) = e.stale_since {
                    assert!(
                        self.awaits(c, e.asid, g),
                        "step {}: cpu{c} switched to {next} without flush over a stale entry \
                         (vpage {vpage}, gen {g})",
                        self.step
                    );
                }
            }
        }
        let prev = self.cpus[c].cr3;
        self.cpus[c].cr3 = Cr3::Space { asid: next, pcid };
        self.cpus[c].state = CpuState::Running;
        if let Some(prev) = prev.asid() {
            let i = self.space_index(prev).unwrap();
            self.spaces[i].tracker.switch_out(cpu_id(c));
        }
        if let SwitchKind::Recycled(evicted) = decision.kind
            && let Some(i) = self.space_index(evicted)
        {
            self.spaces[i].tracker.slot_recycled(cpu_id(c));
        }
    }

    fn touch(&mut self, c: usize, vpage: u64, write: bool) {
        let Cr3::Space { asid, pcid } = self.cpus[c].cr3 else {
            return;
        };
        let space = &self.spaces[self.space_index(asid).unwrap()];
        let cpu = &mut self.cpus[c];
        match cpu.tlb.get(&(pcid, vpage)) {
            // The hardware translates through the entry (the checks vouch for it); a write
            // through a read-only entry faults and the walk refills below.
            Some(e) if e.writable || !write => return,
            _ => {}
        }
        let span = span_of(vpage);
        match cpu.psc.get(&(pcid, span)) {
            // The walk would go through the cached page-table page; the model does not keep
            // old page-table contents, so it simply does not fill (the checks still judge the
            // cached entry itself).
            Some(p) if p.stale_since.is_some() => return,
            _ => {}
        }
        let (Some(pte), Some(&table)) = (space.ptes.get(&vpage), space.tables.get(&span)) else {
            return;
        };
        cpu.psc.insert(
            (pcid, span),
            PscEntry {
                asid,
                table,
                stale_since: None,
            },
        );
        cpu.tlb.insert(
            (pcid, vpage),
            TlbEntry {
                asid,
                frame: pte.frame,
                writable: pte.writable,
                stale_since: None,
            },
        );
    }

    /// A change to `pages` pages of `space` from `start`, made by CPU `c`: `edit` narrows one
    /// page's translation (returning whether it did, pushing frames to free), then the real
    /// protocol runs.
    fn change(
        &mut self,
        c: usize,
        space: usize,
        start: u64,
        pages: u64,
        deferred: bool,
        mut edit: impl FnMut(&mut Space, u64, &mut Vec<u64>) -> bool,
    ) {
        if self.inflight.iter().any(|f| f.changer == c) {
            // The previous request is still out: the kernel waits for it before changing more.
            assert!(!self.mailboxes[c].outbox().pending().is_empty());
            self.cpus[c].state = CpuState::Waiting;
            return;
        }
        let lazy = self.lazy_cpus();
        let s = &mut self.spaces[space];
        let asid = s.asid;
        let end = (start + pages).min(VPAGES);
        let mut frames = Vec::new();
        let mut narrowed = false;
        for vpage in start..end {
            narrowed |= edit(s, vpage, &mut frames);
        }
        if !narrowed {
            return;
        }
        // Spans left without mappings lose their page-table page.
        let mut tables = Vec::new();
        let mut unlinked_spans = Vec::new();
        for span in span_of(start)..=span_of(end - 1) {
            let lo = span * SPAN_PAGES;
            if s.tables.contains_key(&span) && s.ptes.range(lo..lo + SPAN_PAGES).next().is_none() {
                tables.push(s.tables.remove(&span).unwrap());
                unlinked_spans.push(span);
            }
        }
        let range = PageRange {
            start_vpage: start,
            pages: end - start,
        };
        // As the kernel: a change that frees no page-table page spares the lazy CPUs.
        let frees_tables = !tables.is_empty();
        let plan = s
            .tracker
            .begin_change_sparing(cpu_id(c), range, &self.stats, |others| {
                if frees_tables {
                    CpuSet::new()
                } else {
                    others.intersection(&lazy)
                }
            });
        self.counters.changes += 1;

        // The hardware view: which cached entries this change made stale.
        for cpu in &mut self.cpus {
            for (&(_, vpage), e) in cpu.tlb.iter_mut() {
                if e.asid != asid || e.stale_since.is_some() || !(start..end).contains(&vpage) {
                    continue;
                }
                let fresh = s
                    .ptes
                    .get(&vpage)
                    .is_some_and(|pte| pte.frame == e.frame && (pte.writable || !e.writable));
                if !fresh {
                    e.stale_since = Some(plan.new_gen);
                }
            }
            for e in cpu.psc.values_mut() {
                if e.asid == asid && e.stale_since.is_none() && tables.contains(&e.table) {
                    e.stale_since = Some(plan.new_gen);
                }
            }
        }

        // The plan must interrupt exactly the other CPUs with the address space loaded, less the
        // lazy ones unless the change frees page-table pages.
        let loaded = self.loaded_on(asid);
        let others = loaded.difference(&CpuSet::single(cpu_id(c)));
        let spared = if frees_tables {
            CpuSet::new()
        } else {
            others.intersection(&lazy)
        };
        assert_eq!(
            plan.local_flush,
            loaded.contains(cpu_id(c)),
            "step {}",
            self.step
        );
        assert_eq!(
            plan.ipi_targets,
            others.difference(&spared),
            "step {}",
            self.step
        );
        assert_eq!(
            plan.avoided,
            self.caching(asid)
                .difference(&loaded)
                .difference(&CpuSet::single(cpu_id(c)))
                .union(&spared),
            "step {}",
            self.step
        );
        self.counters.spared += spared.len() as u64;
        assert_eq!(plan.full_flush, range.pages > FULL_FLUSH_THRESHOLD_PAGES);

        let ticket = if plan.ipi_targets.is_empty() {
            None
        } else {
            let ticket = ShootdownMailbox::post(
                &self.mailboxes,
                cpu_id(c),
                plan.ipi_targets,
                &plan.request(),
            )
            .expect("the outbox is idle");
            self.counters.requests_posted += plan.ipi_targets.len() as u64;
            Some(ticket)
        };
        // As the kernel: the changer flushes itself after posting, while the targets work.
        let s = &self.spaces[space];
        if plan.local_flush {
            let action = s
                .tracker
                .flush_action(&plan.request(), &mut self.cpus[c].table);
            apply_flush(&mut self.cpus[c], action);
        }
        self.inflight.push(InFlight {
            changer: c,
            asid,
            new_gen: plan.new_gen,
            remaining: plan.ipi_targets,
            token: FreeAfter::new(&plan, ticket),
            frames,
            tables,
        });
        if ticket.is_some() && !deferred {
            self.cpus[c].state = CpuState::Waiting;
        }
    }

    /// One turn of `Shootdown::wait` on CPU `c`, servicing its own mailbox.
    fn wait_turn(&mut self, c: usize) {
        let Model {
            cpus,
            spaces,
            mailboxes,
            inflight,
            counters,
            ..
        } = self;
        let result = mailboxes[c].outbox().wait(
            || service(cpus, spaces, mailboxes, inflight, counters, c),
            || true,
        );
        let mine = self.inflight.iter().find(|f| f.changer == c);
        match result {
            Ok(()) => {
                assert!(
                    mine.is_none_or(|f| f.remaining.is_empty()),
                    "step {}: wait returned early",
                    self.step
                );
                self.cpus[c].state = CpuState::Running;
            }
            Err(unanswered) => {
                let f = mine.expect("an unanswered wait has a change in flight");
                assert_eq!(unanswered, f.remaining, "step {}", self.step);
            }
        }
    }

    fn exit(&mut self, space: usize) {
        let asid = self.spaces[space].asid;
        let loaded = self.loaded_on(asid);
        assert_eq!(
            self.spaces[space].tracker.active(),
            loaded,
            "step {}",
            self.step
        );
        if !loaded.is_empty() || self.inflight.iter().any(|f| f.asid == asid) {
            return;
        }
        let replacement = self.new_space();
        let old = std::mem::replace(&mut self.spaces[space], replacement);
        self.populate(space);
        // Loaded nowhere: no CPU can use its entries before a flushing switch.
        self.freed_frames
            .extend(old.ptes.values().map(|pte| pte.frame));
        self.freed_tables.extend(old.tables.values().copied());
        self.dead.insert(asid);
        for cpu in &mut self.cpus {
            cpu.to_forget.push(asid);
        }
    }

    /// Frees what completed changes unmapped, as the kernel does once a `FreeAfter` allows it.
    fn reap(&mut self) {
        let mailboxes = &self.mailboxes;
        let (done, in_flight): (Vec<_>, Vec<_>) = self
            .inflight
            .drain(..)
            .partition(|f| f.token.is_releasable(mailboxes));
        self.inflight = in_flight;
        for f in done {
            assert!(
                f.remaining.is_empty(),
                "step {}: freed before {} flushed",
                self.step,
                f.remaining
            );
            self.freed_frames.extend(f.frames);
            self.freed_tables.extend(f.tables);
        }
    }

    /// Whether CPU `d` still owes an acknowledgement for change `new_gen` of `asid`.
    fn awaits(&self, d: usize, asid: AsId, new_gen: u64) -> bool {
        self.inflight
            .iter()
            .any(|f| f.asid == asid && f.new_gen == new_gen && f.remaining.contains(cpu_id(d)))
    }

    /// Judges one cached entry of CPU `d` (TLB or paging-structure cache): `Err` if the CPU could
    /// translate through it although it is stale or foreign.
    fn judge(
        &self,
        d: usize,
        pcid: u16,
        asid: AsId,
        stale_since: Option<u64>,
    ) -> Result<(), String> {
        let cpu = &self.cpus[d];
        if let CpuState::MidSwitch { decision, .. } = cpu.state
            && decision.flush
            && decision.pcid.get() == pcid
        {
            return Ok(()); // dropped by the CR3 write that comes next
        }
        let current = cpu.cr3.pcid() == pcid;
        if self.dead.contains(&asid) {
            return if current {
                Err(format!(
                    "entry of destroyed {asid} in the loaded pcid{pcid}"
                ))
            } else {
                Ok(())
            };
        }
        let lazy = matches!(cpu.state, CpuState::Lazy);
        match cpu.table.slot_of(asid) {
            Some((p, synced)) if p.get() == pcid => match stale_since {
                None => Ok(()),
                Some(g) if self.awaits(d, asid, g) => Ok(()),
                Some(g) if !current && synced < g => Ok(()),
                // Halted lazily and spared: it runs nothing here before its wake flushes the slot.
                Some(g) if current && lazy && synced < g => Ok(()),
                Some(g) => Err(format!(
                    "stale entry of {asid} (gen {g}) in pcid{pcid}, loaded: {current}, \
                     slot synced to {synced}"
                )),
            },
            _ if current => Err(format!(
                "entry of {asid} in the loaded pcid{pcid} it does not own"
            )),
            _ => Ok(()),
        }
    }

    fn check(&self) {
        for (d, cpu) in self.cpus.iter().enumerate() {
            let walkable = |pcid: u16| {
                cpu.cr3.pcid() == pcid
                    && !matches!(cpu.state, CpuState::MidSwitch { decision, .. }
                        if decision.flush && decision.pcid.get() == pcid)
            };
            // A lazy CPU reads no memory through its TLB until it wakes and catches up; it may
            // still walk its loaded page tables speculatively, so freed tables stay forbidden.
            let usable = |pcid: u16| walkable(pcid) && !matches!(cpu.state, CpuState::Lazy);
            for (&(pcid, vpage), e) in &cpu.tlb {
                if let Err(why) = self.judge(d, pcid, e.asid, e.stale_since) {
                    panic!("step {}: cpu{d} vpage {vpage}: {why}", self.step);
                }
                assert!(
                    !(usable(pcid) && self.freed_frames.contains(&e.frame)),
                    "step {}: cpu{d} can reach freed frame {} at vpage {vpage}",
                    self.step,
                    e.frame
                );
            }
            for (&(pcid, span), e) in &cpu.psc {
                if let Err(why) = self.judge(d, pcid, e.asid, e.stale_since) {
                    panic!("step {}: cpu{d} page-table span {span}: {why}", self.step);
                }
                assert!(
                    !(walkable(pcid) && self.freed_tables.contains(&e.table)),
                    "step {}: cpu{d} can walk freed page-table page {}",
                    self.step,
                    e.table
                );
            }
        }
        for f in &self.inflight {
            assert_eq!(
                f.token.is_releasable(&self.mailboxes),
                f.remaining.is_empty(),
                "step {}: FreeAfter disagrees with the acknowledgements",
                self.step
            );
        }
        for s in &self.spaces {
            assert_eq!(
                s.tracker.active(),
                self.loaded_on(s.asid),
                "step {}: active of {}",
                self.step,
                s.asid
            );
            assert_eq!(
                s.tracker.may_cache(),
                self.caching(s.asid),
                "step {}: may_cache of {}",
                self.step,
                s.asid
            );
        }
    }

    /// Lets every CPU finish what it is in the middle of and answer every request.
    fn drain(&mut self) {
        for _ in 0..100 {
            if self.inflight.is_empty()
                && self
                    .cpus
                    .iter()
                    .all(|c| matches!(c.state, CpuState::Running))
            {
                return;
            }
            for c in 0..NR_CPUS {
                let action = if matches!(self.cpus[c].state, CpuState::Lazy) {
                    Action::Idle // wakes it
                } else {
                    Action::Deliver
                };
                self.run(Op::Cpu { cpu: c, action });
            }
        }
        panic!("shootdowns still unanswered after draining: a deadlock");
    }

    fn check_conservation(&self) {
        let c = &self.counters;
        let pcid_switches: u64 = self
            .cpus
            .iter()
            .map(|cpu| {
                let s = cpu.table.stats();
                s.hits + s.stale_flushes + s.misses + s.recycles
            })
            .sum();
        assert_eq!(pcid_switches, c.switch_ins, "every switch counted once");
        let stats = self.stats.snapshot();
        assert_eq!(stats.shootdowns, c.changes);
        assert_eq!(stats.ranged_flushes + stats.full_flushes, c.changes);
        assert_eq!(stats.ipis_sent, c.requests_posted);
        assert_eq!(
            c.requests_serviced, c.requests_posted,
            "every request serviced once per target"
        );
        for mailbox in &self.mailboxes {
            assert!(mailbox.outbox().pending().is_empty());
        }
        let mapped: BTreeSet<u64> = self
            .spaces
            .iter()
            .flat_map(|s| s.ptes.values().map(|p| p.frame))
            .collect();
        assert!(
            mapped.is_disjoint(&self.freed_frames),
            "a frame both mapped and freed"
        );
        assert_eq!(
            mapped.len() + self.freed_frames.len(),
            c.frames_allocated as usize,
            "frames lost"
        );
        let tables: BTreeSet<u64> = self
            .spaces
            .iter()
            .flat_map(|s| s.tables.values().copied())
            .collect();
        assert!(
            tables.is_disjoint(&self.freed_tables),
            "a page-table page both linked and freed"
        );
        assert_eq!(
            tables.len() + self.freed_tables.len(),
            c.tables_allocated as usize,
            "page-table pages lost"
        );
    }
}

fn action(nr_spaces: usize) -> impl Strategy<Value = Action> {
    let space = || 0..nr_spaces;
    let vpage = || 0..VPAGES;
    let touch = (vpage(), any::<bool>()).prop_map(|(vpage, write)| Action::Touch { vpage, write });
    let map =
        (space(), vpage(), 1..=12u64, any::<bool>()).prop_map(|(space, start, pages, writable)| {
            Action::Map {
                space,
                start,
                pages,
                writable,
            }
        });
    let unmap =
        (space(), vpage(), 1..=40u64, any::<bool>()).prop_map(|(space, start, pages, deferred)| {
            Action::Unmap {
                space,
                start,
                pages,
                deferred,
            }
        });
    let protect =
        (space(), vpage(), 1..=40u64, any::<bool>()).prop_map(|(space, start, pages, deferred)| {
            Action::Protect {
                space,
                start,
                pages,
                deferred,
            }
        });
    let remap =
        (space(), vpage(), any::<bool>()).prop_map(|(space, vpage, deferred)| Action::Remap {
            space,
            vpage,
            deferred,
        });
    prop_oneof![
        25 => space().prop_map(Action::Switch),
        3 => Just(Action::SwitchKernel),
        30 => touch,
        8 => map,
        8 => unmap,
        5 => protect,
        5 => remap,
        10 => Just(Action::Deliver),
        2 => Just(Action::FullFlush),
        8 => Just(Action::Idle),
    ]
}

fn schedule(nr_spaces: usize) -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        98 => (0..NR_CPUS, action(nr_spaces)).prop_map(|(cpu, action)| Op::Cpu { cpu, action }),
        2 => (0..nr_spaces).prop_map(|space| Op::Exit { space }),
    ];
    proptest::collection::vec(op, STEPS)
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3_000);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

fn run_schedule<const N: usize>(nr_spaces: usize, ops: &[Op]) {
    let mut model = Model::<N>::new(nr_spaces);
    for &op in ops {
        model.run(op);
    }
    model.drain();
    model.check_conservation();
}

proptest! {
    #![proptest_config(config())]

    /// Two PCID slots for five address spaces: slots are recycled all the time.
    #[test]
    fn shootdowns_leave_no_usable_stale_entry_with_two_slots(ops in schedule(5)) {
        run_schedule::<2>(5, &ops);
    }

    /// The default six slots for eight address spaces.
    #[test]
    fn shootdowns_leave_no_usable_stale_entry_with_six_slots(ops in schedule(8)) {
        run_schedule::<6>(8, &ops);
    }
}

/// The lazy rule step by step: a CPU halted with the space loaded is spared the IPI of a change
/// that frees no page-table page and flushes when it wakes; a change that frees a table still
/// interrupts it, and it leaves the space instead of flushing.
#[test]
fn a_lazy_cpu_is_spared_catches_up_on_waking_and_leaves_for_a_freed_table() {
    let mut model = Model::<2>::new(2);
    let step =
        |model: &mut Model<2>, cpu: usize, action: Action| model.run(Op::Cpu { cpu, action });
    let touch = Action::Touch {
        vpage: 0,
        write: false,
    };
    step(&mut model, 1, Action::Switch(0));
    step(&mut model, 1, Action::Deliver); // the CR3 write
    step(&mut model, 1, touch);
    step(&mut model, 1, Action::Idle);
    assert!(matches!(model.cpus[1].state, CpuState::Lazy));

    let remap = Action::Remap {
        space: 0,
        vpage: 0,
        deferred: false,
    };
    step(&mut model, 0, remap);
    assert_eq!(model.counters.spared, 1, "the lazy CPU is spared");
    assert_eq!(model.counters.requests_posted, 0, "no IPI");
    let pcid = model.cpus[1].cr3.pcid();
    assert!(
        model.cpus[1].tlb[&(pcid, 0)].stale_since.is_some(),
        "the halted CPU still holds the old translation"
    );

    step(&mut model, 1, touch); // wakes it: the catch-up comes before the touch
    assert_eq!(model.counters.catch_ups, 1, "the wake flushes the slot");
    assert!(matches!(model.cpus[1].state, CpuState::Running));
    step(&mut model, 1, touch);
    let pcid = model.cpus[1].cr3.pcid();
    let space = &model.spaces[0];
    assert_eq!(
        model.cpus[1].tlb[&(pcid, 0)].frame,
        space.ptes[&0].frame,
        "after the wake the CPU reads the new frame"
    );

    step(&mut model, 1, Action::Idle);
    let unmap_span = Action::Unmap {
        space: 0,
        start: 0,
        pages: SPAN_PAGES,
        deferred: false,
    };
    step(&mut model, 0, unmap_span);
    assert_eq!(
        model.counters.requests_posted, 1,
        "a freed table interrupts the lazy CPU"
    );
    assert!(matches!(model.cpus[0].state, CpuState::Waiting));
    step(&mut model, 1, Action::Deliver);
    assert_eq!(model.counters.lazy_leaves, 1, "it leaves the space");
    assert_eq!(model.cpus[1].cr3, Cr3::Kernel);
    step(&mut model, 0, Action::Deliver); // the changer's wait ends
    assert!(matches!(model.cpus[0].state, CpuState::Running));
    step(&mut model, 1, Action::Idle); // wakes with no space loaded
    model.drain();
    model.check_conservation();
}
