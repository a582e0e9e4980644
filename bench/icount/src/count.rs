//! Counting: a translated block cut into segments at its markers, and the per-vCPU state machine
//! that adds executed segments to the open window.
//!
//! A translation block runs from its first instruction to its last unless an exception cuts it
//! short, so counts are added per segment, not per instruction: a block is cut before each
//! marker, and each piece ([`Segment`]) is counted in one callback on its first instruction. The
//! marker itself is not counted: a window holds what runs strictly between its markers.
//!
//! Per vCPU ([`Vcpu`]):
//! - `Begin(tag)` opens a window (an open one is discarded: its end never came); `End(tag)`
//!   closes it into the tag's totals ([`TagStats`]); an `End` with no window of its tag open and
//!   nothing armed is counted as unmatched.
//! - `Arm(tag)`: the next interrupt entry opens the window `tag`; it closes at the first block
//!   after a block that ended in `iret`, i.e. on the first instruction of the resumed context,
//!   which is not counted. An `End(tag)` disarms. An interrupt window still open at the next
//!   `Arm` or at an `End` of its tag is discarded: the interrupted context resumed without an
//!   `iret` (a thread's first run, or a voluntary switch back).
//! - An interrupt or exception taken is a block that starts inside one of the vector entry ranges
//!   given to the plugin (the kernel's 16-byte `trap_stub_N` stubs: the CPU is the only way in).
//!
//! Limits: an exception in the middle of a block (a page fault, a #GP) re-executes the faulting
//! instruction after its handler, so that block's segment is counted in full once and its tail
//! again: a few instructions per fault. Interrupts are taken only between blocks under TCG.
//!
//! A page-crossing instruction: QEMU 7.2 ends a block before an instruction that would cross into
//! the next page (unless it is the block's first), and starts the next block with it; but its
//! plugin API still lists the abandoned, partly decoded instruction as the first block's last, so
//! counting the listing would count that instruction twice, once in each block, and a count would
//! move by one with where the linker happened to put code. A block whose last instruction starts
//! in the last 15 bytes of a page carries its address ([`Segment::tail`]); when the next block the
//! vCPU executes starts at that very address, the instruction did not run at the end of the first
//! block and is taken back out of the window (and the profile). The one other way a block can
//! be followed by one that starts at its own last instruction is that instruction repeating
//! itself (a `rep` string instruction, which QEMU runs one iteration per block and the plugin
//! counts per iteration, or a jump to itself): ending a block in a page's last 15 bytes, it loses
//! one count per entry into that block, against the many it is counted already.

use crate::decode::{Insn, Marker, MarkerKind, Special, classify};

/// Addresses at and above this are the kernel half (x86_64 canonical higher half).
pub const KERNEL_HALF: u64 = 0xffff_8000_0000_0000;

/// Instructions executed, by half, and the expensive ones among them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Counts {
    pub kernel: u64,
    pub user: u64,
    /// Interrupts and exceptions taken (entries into a vector range).
    pub interrupts: u64,
    pub special: [u64; Special::COUNT],
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.kernel += other.kernel;
        self.user += other.user;
        self.interrupts += other.interrupts;
        for (sum, n) in self.special.iter_mut().zip(other.special) {
            *sum += n;
        }
    }
}

/// A piece of a translated block: from its first instruction (a marker, or the block's first
/// instruction) up to the next marker or the block's end.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Segment {
    /// The marker this segment starts with (not counted in `counts`).
    pub marker: Option<Marker>,
    /// The first segment of its block.
    pub block_start: bool,
    /// The block starts in a vector entry range: an interrupt or exception was taken.
    pub vector_entry: bool,
    /// The segment's last instruction is an `iret`.
    pub ends_in_iret: bool,
    /// The address of the block's last instruction, where a block of more than one instruction
    /// ends with one that starts in the last 15 bytes of a page: it may be an instruction QEMU
    /// abandoned because it crosses into the next page (see the module's notes).
    pub tail: Option<u64>,
    /// The address of its first instruction (for the profile: where its instructions ran).
    pub start: u64,
    pub counts: Counts,
}

/// Cut a block, given as its instructions' addresses and bytes, into segments; returns each
/// segment with the index of the instruction whose execution counts it.
pub fn segments(insns: &[(u64, &[u8])], vectors: &[(u64, u64)]) -> Vec<(usize, Segment)> {
    let mut out: Vec<(usize, Segment)> = Vec::new();
    for (index, &(vaddr, bytes)) in insns.iter().enumerate() {
        let insn = classify(bytes);
        if index == 0 || matches!(insn, Insn::Marker(_)) {
            let mut segment = Segment { block_start: index == 0, start: vaddr, ..Segment::default() };
            if index == 0 {
                segment.vector_entry = vectors.iter().any(|&(start, end)| (start..end).contains(&vaddr));
            }
            out.push((index, segment));
        }
        let segment = &mut out.last_mut().expect("the first instruction opened a segment").1;
        segment.ends_in_iret = insn == Insn::Iret;
        match insn {
            Insn::Marker(marker) => {
                segment.marker = Some(marker);
                continue;
            }
            Insn::Special(special) => segment.counts.special[special as usize] += 1,
            Insn::Iret | Insn::Other => {}
        }
        if vaddr >= KERNEL_HALF {
            segment.counts.kernel += 1;
        } else {
            segment.counts.user += 1;
        }
        if index > 0 && index == insns.len() - 1 && vaddr & PAGE_MASK > PAGE_MASK - MAX_INSN_LEN {
            segment.tail = Some(vaddr);
        }
    }
    out
}

/// The offset bits of a 4 KiB page.
const PAGE_MASK: u64 = 0xfff;
/// The longest x86 instruction, in bytes.
const MAX_INSN_LEN: u64 = 15;

/// One tag's totals on one vCPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TagStats {
    /// Windows closed (by their `End`, or by the `iret` of an armed interrupt).
    pub windows: u64,
    /// Windows dropped: a `Begin` or `Arm` came while they were open.
    pub discarded: u64,
    /// `End` markers with no window of their tag open.
    pub unmatched: u64,
    /// Sums over the closed windows.
    pub counts: Counts,
}

/// An open window.
#[derive(Clone, Copy, Debug)]
struct Window {
    tag: u16,
    /// Opened by an armed interrupt: closed by the next `iret`'s return.
    by_interrupt: bool,
    counts: Counts,
}

/// One vCPU's counting state.
#[derive(Debug, Default)]
pub struct Vcpu {
    open: Option<Window>,
    /// The tag the next interrupt opens a window for (consumed by it).
    armed: Option<u16>,
    /// The tag the last `End` disarmed, until the next `Begin` or `Arm`.
    disarmed: Option<u16>,
    /// The tag of the last `Arm`, until its `End`: that `End` matches even when the last arming
    /// was consumed by an interrupt whose window has closed.
    arming: Option<u16>,
    /// The last block executed ended in `iret`.
    after_iret: bool,
    /// The last segment executed had a [`Segment::tail`]: its address, that segment's start and
    /// the tag of the window it was counted in.
    tail: Option<(u64, u64, u16)>,
    /// Per tag, kept sorted by tag.
    stats: Vec<(u16, TagStats)>,
}

impl Vcpu {
    fn stats_mut(&mut self, tag: u16) -> &mut TagStats {
        let at = match self.stats.binary_search_by_key(&tag, |(t, _)| *t) {
            Ok(at) => at,
            Err(at) => {
                self.stats.insert(at, (tag, TagStats::default()));
                at
            }
        };
        &mut self.stats[at].1
    }

    fn close(&mut self, window: Window) {
        let stats = self.stats_mut(window.tag);
        stats.windows += 1;
        stats.counts.add(&window.counts);
    }

    fn discard_open(&mut self) {
        if let Some(window) = self.open.take() {
            self.stats_mut(window.tag).discarded += 1;
        }
    }

    /// One execution of `segment` on this vCPU. Returns the tag and segment start to take one
    /// instruction back from in the profile, when the segment showed that the last one executed
    /// ended in an instruction that did not run there (see the module's notes on page crossings).
    pub fn execute(&mut self, segment: &Segment) -> Option<(u16, u64)> {
        let mut taken_back = None;
        if let Some((tail, start, tag)) = self.tail.take()
            && segment.block_start
            && segment.start == tail
            && let Some(window) = &mut self.open
            && window.tag == tag
        {
            let half = if tail >= KERNEL_HALF { &mut window.counts.kernel } else { &mut window.counts.user };
            *half = half.saturating_sub(1);
            taken_back = Some((tag, start));
        }
        if segment.block_start {
            if self.after_iret && self.open.is_some_and(|w| w.by_interrupt) {
                let window = self.open.take().expect("checked open");
                self.close(window);
            }
            self.after_iret = false;
            if segment.vector_entry {
                if self.open.is_none()
                    && let Some(tag) = self.armed.take()
                {
                    self.open = Some(Window { tag, by_interrupt: true, counts: Counts::default() });
                }
                if let Some(window) = &mut self.open {
                    window.counts.interrupts += 1;
                }
            }
        }
        if let Some(marker) = segment.marker {
            match marker.kind {
                MarkerKind::Begin => {
                    self.disarmed = None;
                    self.discard_open();
                    self.open = Some(Window { tag: marker.tag, by_interrupt: false, counts: Counts::default() });
                }
                MarkerKind::End => {
                    let was_armed = self.arming == Some(marker.tag);
                    // Two threads sharing this vCPU may each disarm the same tag on their way out;
                    // the second `End` then finds nothing armed, and is no stray end either.
                    let disarmed_again = self.disarmed == Some(marker.tag);
                    if was_armed {
                        self.armed = None;
                        self.arming = None;
                    }
                    self.disarmed = was_armed.then_some(marker.tag).or(self.disarmed.filter(|_| disarmed_again));
                    match self.open {
                        Some(window) if window.tag == marker.tag && !window.by_interrupt => {
                            self.open = None;
                            self.close(window);
                        }
                        // An interrupt window of this tag whose `iret` never came (the
                        // interrupted context resumed some other way): dropped.
                        Some(window) if window.tag == marker.tag => {
                            debug_assert!(window.by_interrupt);
                            self.discard_open();
                        }
                        _ if was_armed || disarmed_again => {}
                        _ => self.stats_mut(marker.tag).unmatched += 1,
                    }
                }
                MarkerKind::Arm => {
                    // An interrupt window still open here lost its `iret` (the interrupted
                    // context resumed some other way, e.g. a fresh thread's first run).
                    if self.open.is_some_and(|w| w.by_interrupt) {
                        self.discard_open();
                    }
                    self.armed = Some(marker.tag);
                    self.arming = Some(marker.tag);
                    self.disarmed = None;
                }
            }
        }
        if let Some(window) = &mut self.open {
            window.counts.add(&segment.counts);
        }
        if segment.ends_in_iret {
            self.after_iret = true;
        }
        self.tail = segment.tail.zip(self.open).map(|(tail, window)| (tail, segment.start, window.tag));
        taken_back
    }

    /// The tag of the window open now, which the last executed segment's instructions went to.
    pub fn open_tag(&self) -> Option<u16> {
        self.open.map(|w| w.tag)
    }

    /// The totals per tag, sorted by tag.
    pub fn stats(&self) -> &[(u16, TagStats)] {
        &self.stats
    }
}

/// Where a window's instructions ran: per tag and segment start address, how many times the
/// segment ran inside a window of that tag and how many instructions that added. Summed over the
/// vCPUs at exit; the host maps addresses to symbols (`nm -n` of the kernel ELF).
#[derive(Debug, Default)]
pub struct Profile {
    /// (tag, segment start) to (executions, instructions).
    spots: std::collections::HashMap<(u16, u64), (u64, u64)>,
}

impl Profile {
    /// `segment` just ran with the window `tag` open (`Vcpu::open_tag` after `execute`).
    pub fn record(&mut self, tag: u16, segment: &Segment) {
        let insns = segment.counts.kernel + segment.counts.user;
        if insns == 0 {
            return;
        }
        let spot = self.spots.entry((tag, segment.start)).or_default();
        spot.0 += 1;
        spot.1 += insns;
    }

    /// Take back one instruction recorded for the segment at `start` under `tag`
    /// (`Vcpu::execute`'s answer).
    pub fn take_back(&mut self, tag: u16, start: u64) {
        if let Some(spot) = self.spots.get_mut(&(tag, start)) {
            spot.1 = spot.1.saturating_sub(1);
        }
    }

    /// Add another vCPU's profile to this one.
    pub fn merge(&mut self, other: &Profile) {
        for (key, (execs, insns)) in &other.spots {
            let spot = self.spots.entry(*key).or_default();
            spot.0 += execs;
            spot.1 += insns;
        }
    }

    /// One line per spot, by tag then address:
    /// `icount profile tag=T addr=0xADDR execs=N insns=M`.
    pub fn lines(&self) -> String {
        let mut spots: Vec<_> = self.spots.iter().collect();
        spots.sort();
        let mut text = String::new();
        for ((tag, addr), (execs, insns)) in spots {
            text.push_str(&format!("icount profile tag={tag} addr={addr:#x} execs={execs} insns={insns}\n"));
        }
        text
    }
}

/// The output line of one tag on one vCPU.
pub fn line(tag: u16, vcpu: usize, stats: &TagStats) -> String {
    let c = &stats.counts;
    let mut text = format!(
        "icount window tag={tag} vcpu={vcpu} windows={} discarded={} unmatched={} kernel={} user={} interrupts={}",
        stats.windows, stats.discarded, stats.unmatched, c.kernel, c.user, c.interrupts
    );
    for special in Special::ALL {
        text.push_str(&format!(" {}={}", special.name(), c.special[special as usize]));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: u64 = 0xffff_ffff_8000_0000;
    const NOP: &[u8] = &[0x90];
    const BEGIN_5: &[u8] = &[0x0f, 0x1f, 0x80, 5, 0, b'B', 0x4d];
    const END_5: &[u8] = &[0x0f, 0x1f, 0x80, 5, 0, b'E', 0x4d];
    const ARM_9: &[u8] = &[0x0f, 0x1f, 0x80, 9, 0, b'I', 0x4d];
    const END_9: &[u8] = &[0x0f, 0x1f, 0x80, 9, 0, b'E', 0x4d];
    const WRMSR: &[u8] = &[0x0f, 0x30];
    const IRETQ: &[u8] = &[0x48, 0xcf];
    const VECTORS: &[(u64, u64)] = &[(K + 0x1000, K + 0x2000)];

    /// Translate a block of kernel instructions starting at `start` and return its segments.
    fn block(start: u64, insns: &[&'static [u8]]) -> Vec<Segment> {
        let mut addr = start;
        let list: Vec<(u64, &[u8])> = insns
            .iter()
            .map(|bytes| {
                let at = addr;
                addr += bytes.len() as u64;
                (at, *bytes)
            })
            .collect();
        segments(&list, VECTORS).into_iter().map(|(_, s)| s).collect()
    }

    fn run(vcpu: &mut Vcpu, segments: &[Segment]) {
        for segment in segments {
            vcpu.execute(segment);
        }
    }

    fn stats(vcpu: &Vcpu, tag: u16) -> TagStats {
        vcpu.stats().iter().find(|(t, _)| *t == tag).map(|(_, s)| *s).unwrap_or_default()
    }

    #[test]
    fn a_block_is_cut_before_each_marker_and_markers_are_not_counted() {
        let segs = block(K, &[NOP, BEGIN_5, NOP, WRMSR, END_5, NOP]);
        assert_eq!(segs.len(), 3);
        assert_eq!(segs[0].counts.kernel, 1);
        assert_eq!(segs[1].marker.map(|m| (m.kind, m.tag)), Some((MarkerKind::Begin, 5)));
        assert_eq!(segs[1].counts.kernel, 2);
        assert_eq!(segs[1].counts.special[Special::Wrmsr as usize], 1);
        assert_eq!(segs[2].counts.kernel, 1);
        assert!(segs[0].block_start && !segs[1].block_start);
    }

    #[test]
    fn user_and_kernel_halves_are_counted_apart() {
        let segs = block(0x40_0000, &[NOP, NOP, NOP]);
        assert_eq!((segs[0].counts.user, segs[0].counts.kernel), (3, 0));
    }

    #[test]
    fn a_window_counts_what_runs_between_its_markers_across_blocks() {
        let mut vcpu = Vcpu::default();
        run(&mut vcpu, &block(K, &[NOP, BEGIN_5, NOP, NOP]));
        run(&mut vcpu, &block(K + 0x100, &[NOP, WRMSR]));
        run(&mut vcpu, &block(K + 0x200, &[NOP, END_5, NOP, NOP]));
        let s = stats(&vcpu, 5);
        assert_eq!((s.windows, s.discarded, s.unmatched), (1, 0, 0));
        assert_eq!(s.counts.kernel, 2 + 2 + 1);
        assert_eq!(s.counts.special[Special::Wrmsr as usize], 1);
    }

    /// QEMU 7.2's listing of a block cut before a page-crossing instruction: ten instructions,
    /// then the abandoned first two bytes of a 7-byte `cmp` at the page's last four bytes; the next
    /// block is that `cmp` alone.
    #[test]
    fn an_instruction_abandoned_at_a_page_end_is_counted_once() {
        const SUB: &[u8] = &[0x48, 0x83, 0xec, 0x78];
        const MOV: &[u8] = &[0x48, 0x89, 0x44, 0x24, 0x30];
        const CMP_PART: &[u8] = &[0x80, 0x3d];
        const CMP: &[u8] = &[0x80, 0x3d, 0xfd, 0x6f, 0x8e, 0x00, 0x00];
        let mut first = vec![SUB];
        first.extend([MOV; 9]);
        first.push(CMP_PART);
        let start = K + 0x2fcb;
        let cut = block(start, &first);
        assert_eq!(cut[0].tail, Some(K + 0x2ffc));
        assert_eq!(cut[0].counts.kernel, 11);
        let mut vcpu = Vcpu::default();
        run(&mut vcpu, &block(K, &[BEGIN_5]));
        assert_eq!(vcpu.execute(&cut[0]), None);
        assert_eq!(vcpu.execute(&block(K + 0x2ffc, &[CMP])[0]), Some((5, start)));
        run(&mut vcpu, &block(K + 0x3003, &[NOP, END_5]));
        assert_eq!(stats(&vcpu, 5).counts.kernel, 10 + 1 + 1);

        // A block that really ends at the page's last bytes (a jump away) keeps its count.
        let mut vcpu = Vcpu::default();
        run(&mut vcpu, &block(K, &[BEGIN_5]));
        assert_eq!(vcpu.execute(&cut[0]), None);
        assert_eq!(vcpu.execute(&block(K + 0x5000, &[NOP])[0]), None);
        run(&mut vcpu, &block(K + 0x5001, &[END_5]));
        assert_eq!(stats(&vcpu, 5).counts.kernel, 11 + 1);

        // A lone instruction at the page end, or a block ending further from it, carries no tail.
        assert_eq!(block(K + 0x2ffc, &[CMP])[0].tail, None);
        assert_eq!(block(K + 0x2f00, &[NOP, NOP])[0].tail, None);
    }

    #[test]
    fn interrupts_inside_a_window_are_counted() {
        let mut vcpu = Vcpu::default();
        run(&mut vcpu, &block(K, &[BEGIN_5, NOP]));
        run(&mut vcpu, &block(K + 0x1010, &[NOP, NOP])); // a stub
        run(&mut vcpu, &block(K + 0x3000, &[NOP, IRETQ]));
        run(&mut vcpu, &block(K + 0x10, &[NOP, END_5]));
        let s = stats(&vcpu, 5);
        assert_eq!((s.windows, s.counts.interrupts, s.counts.kernel), (1, 1, 1 + 2 + 2 + 1));
    }

    #[test]
    fn an_armed_interrupt_window_runs_from_the_entry_to_the_iret_return() {
        let mut vcpu = Vcpu::default();
        run(&mut vcpu, &block(K, &[ARM_9, NOP, NOP])); // not counted: no window yet
        run(&mut vcpu, &block(K + 0x1010, &[NOP, NOP])); // the stub opens it
        run(&mut vcpu, &block(K + 0x3000, &[NOP, NOP, IRETQ]));
        run(&mut vcpu, &block(K + 0x20, &[NOP, NOP])); // the resumed context: closes it, uncounted
        let s = stats(&vcpu, 9);
        assert_eq!((s.windows, s.counts.interrupts, s.counts.kernel), (1, 1, 5));
        // Consumed: the next interrupt opens nothing.
        run(&mut vcpu, &block(K + 0x1010, &[NOP]));
        run(&mut vcpu, &block(K + 0x3000, &[IRETQ]));
        assert_eq!(stats(&vcpu, 9).windows, 1);
    }

    #[test]
    fn a_second_disarm_of_the_same_tag_is_not_a_stray_end() {
        let mut vcpu = Vcpu::default();
        run(&mut vcpu, &block(K, &[ARM_9, NOP, END_9, NOP, END_9]));
        assert_eq!(stats(&vcpu, 9).unmatched, 0);
        // Without an arm before it, an end still is one.
        let mut vcpu = Vcpu::default();
        run(&mut vcpu, &block(K, &[NOP, END_9]));
        assert_eq!(stats(&vcpu, 9).unmatched, 1);
    }

    #[test]
    fn end_disarms_without_counting_it_unmatched() {
        let mut vcpu = Vcpu::default();
        run(&mut vcpu, &block(K, &[ARM_9, NOP, END_9]));
        run(&mut vcpu, &block(K + 0x1010, &[NOP]));
        run(&mut vcpu, &block(K + 0x3000, &[IRETQ]));
        run(&mut vcpu, &block(K, &[NOP]));
        let s = stats(&vcpu, 9);
        assert_eq!((s.windows, s.unmatched), (0, 0));
    }

    #[test]
    fn end_drops_an_open_interrupt_window_of_its_tag_without_calling_it_unmatched() {
        let mut vcpu = Vcpu::default();
        run(&mut vcpu, &block(K, &[ARM_9, NOP]));
        run(&mut vcpu, &block(K + 0x1010, &[NOP]));
        run(&mut vcpu, &block(K + 0x4000, &[NOP, END_9, NOP]));
        let s = stats(&vcpu, 9);
        assert_eq!((s.windows, s.discarded, s.unmatched), (0, 1, 0));
    }

    #[test]
    fn end_after_a_consumed_arm_is_not_unmatched() {
        let mut vcpu = Vcpu::default();
        run(&mut vcpu, &block(K, &[ARM_9, NOP]));
        run(&mut vcpu, &block(K + 0x1010, &[NOP]));
        run(&mut vcpu, &block(K + 0x3000, &[IRETQ]));
        run(&mut vcpu, &block(K + 0x20, &[NOP, END_9]));
        let s = stats(&vcpu, 9);
        assert_eq!((s.windows, s.discarded, s.unmatched), (1, 0, 0));
        // A second End right after it disarms again (two threads sharing the vCPU each disarm on
        // their way out), which is no stray end.
        run(&mut vcpu, &block(K + 0x20, &[END_9]));
        assert_eq!(stats(&vcpu, 9).unmatched, 0);
    }

    #[test]
    fn rearming_drops_an_interrupt_window_whose_iret_never_came() {
        let mut vcpu = Vcpu::default();
        run(&mut vcpu, &block(K, &[ARM_9, NOP]));
        run(&mut vcpu, &block(K + 0x1010, &[NOP]));
        run(&mut vcpu, &block(K + 0x4000, &[NOP, ARM_9, NOP]));
        let s = stats(&vcpu, 9);
        assert_eq!((s.windows, s.discarded), (0, 1));
    }

    #[test]
    fn unmatched_and_nested_markers_are_reported() {
        let mut vcpu = Vcpu::default();
        run(&mut vcpu, &block(K, &[END_5]));
        run(&mut vcpu, &block(K, &[BEGIN_5, NOP, BEGIN_5, NOP, END_5]));
        let s = stats(&vcpu, 5);
        assert_eq!((s.windows, s.discarded, s.unmatched, s.counts.kernel), (1, 1, 1, 1));
    }

    #[test]
    fn the_output_line_names_every_count() {
        let mut stats = TagStats { windows: 2, ..TagStats::default() };
        stats.counts.kernel = 300;
        stats.counts.special[Special::Cr3Write as usize] = 2;
        assert_eq!(
            line(4, 1, &stats),
            "icount window tag=4 vcpu=1 windows=2 discarded=0 unmatched=0 kernel=300 user=0 interrupts=0 \
             cr3_writes=2 wrmsr=0 xsave=0 xrstor=0 invlpg=0 invpcid=0 hlt=0"
        );
    }

    #[test]
    fn the_profile_adds_each_segment_to_its_window_tag_and_address() {
        let mut vcpu = Vcpu::default();
        let mut profile = Profile::default();
        let segs = block(K, &[BEGIN_5, NOP, NOP, END_5, NOP]);
        for _ in 0..3 {
            for segment in &segs {
                vcpu.execute(segment);
                if let Some(tag) = vcpu.open_tag() {
                    profile.record(tag, segment);
                }
            }
        }
        let mut total = Profile::default();
        total.merge(&profile);
        total.merge(&profile);
        // The window's one segment starts at its marker (K); the one after END_5 is outside.
        assert_eq!(total.lines(), format!("icount profile tag=5 addr={K:#x} execs=6 insns=12\n"));
    }
}
