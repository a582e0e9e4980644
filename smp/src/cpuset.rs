//! Sets of CPUs: [`CpuSet`], a plain `Copy` bitset, and [`AtomicCpuSet`], the same bits as atomics
//! for sets that several CPUs update at once.
//!
//! Both hold [`MAX_CPUS`] bits, bit `i` standing for `CpuId` `i`, in `u64` words. A `CpuSet` is a
//! value: the result of a snapshot, the targets of an IPI, the CPUs of a `CpuMap`. An
//! `AtomicCpuSet` lives in shared structures: the `active` and `may_cache` sets of a
//! `tracker::TlbTracker`, the pending set and doorbell of a shootdown mailbox.
//!
//! Memory ordering of `AtomicCpuSet`: every access to a word is `SeqCst` (no dearer than
//! acquire/release on x86, where loads are plain moves and read-modify-writes are locked anyway),
//! so a read that sees a bit also sees everything its writer did before setting it. Protocols that
//! need a store-then-load order across two locations (`tracker`: mark active, then read the
//! generation) get it from the one total order of `SeqCst` operations (under loom, which models
//! `SeqCst` accesses as acquire/release only, from a `SeqCst` fence between the two). Operations
//! on the whole set (`snapshot`, `insert_all`, `remove_all`, `take`, `is_empty`) touch the words
//! one by one: they are atomic per word, not across words. Per bit
//! this is enough: a bit that stays set (or clear) during a snapshot is reported so, and a bit
//! that changes during it is reported in either state.
//!
//! Words in use: [`limit_ids`], called once at boot with the number of CPUs, bounds the words that
//! whole-set operations visit (Linux's `nr_cpu_ids` does the same for its masks). A machine of
//! two CPUs then counts, compares and copies one word per set instead of eight, on every TLB
//! change and shootdown. Until it is called (and on the host), every word is visited.

use core::fmt;

use crate::ids::{CpuId, MAX_CPUS};
use crate::sync::{AtomicU64, Ordering, spin_loop};

const WORD_BITS: usize = u64::BITS as usize;
const WORDS: usize = MAX_CPUS / WORD_BITS;

/// The words whole-set operations visit; see [`limit_ids`]. A plain `core` atomic, under loom too:
/// it is set before the sets are shared and never changes while they are, so no model needs to
/// explore it (and loom atomics cannot live in a `static`).
static WORDS_IN_USE: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(WORDS);

/// From now on no set holds a CPU id above `nr_cpus`: whole-set operations (`len`, `is_empty`,
/// `iter`, `union`, `intersection`, `difference`, and `AtomicCpuSet`'s `insert_all`, `remove_all`,
/// `snapshot`, `take`, `is_empty`) visit only the words that can hold ids `0..=nr_cpus` (one past
/// the last CPU included: an id that names no CPU, which a caller may use to ask an absent one).
/// The boot CPU calls it once, when it knows the number of CPUs and before any set holds an id
/// beyond; the CPUs it starts afterwards see it through their start. Clamped to the words a set
/// has.
pub fn limit_ids(nr_cpus: usize) {
    let words = (nr_cpus / WORD_BITS + 1).min(WORDS);
    // Relaxed: published to the other CPUs by whatever starts them (see above).
    WORDS_IN_USE.store(words, core::sync::atomic::Ordering::Relaxed);
}

/// The number of words whole-set operations visit, at most `WORDS` (which lets the compiler drop
/// the bounds checks of `words[..in_use()]`).
#[inline]
fn in_use() -> usize {
    WORDS_IN_USE
        .load(core::sync::atomic::Ordering::Relaxed)
        .min(WORDS)
}

/// The sets a change of one address space starts from (see `tracker::TlbTracker::begin_change`),
/// in one pass over the words in use: `targets` gets `active` without `me`, `avoided` gets
/// `may_cache` without `active` and without `me`, both overwritten. Every word of `active` is read
/// (SeqCst) before any of `may_cache`, as two snapshots would. Returns whether `me` is in
/// `active`.
pub(crate) fn load_plan_sets(
    active: &AtomicCpuSet,
    may_cache: &AtomicCpuSet,
    me: CpuId,
    targets: &mut CpuSet,
    avoided: &mut CpuSet,
) -> bool {
    let n = in_use();
    for (out, word) in targets.words[..n].iter_mut().zip(&active.words[..n]) {
        *out = word.load(Ordering::SeqCst);
    }
    for ((out, word), &active) in avoided.words[..n].iter_mut().zip(&may_cache.words[..n]).zip(&targets.words[..n]) {
        *out = word.load(Ordering::SeqCst) & !active;
    }
    let (word, mask) = word_and_mask(me);
    let local = targets.words[word] & mask != 0;
    targets.words[word] &= !mask;
    avoided.words[word] &= !mask;
    local
}

/// Moves the CPUs of `spared` that are in `targets` from `targets` to `avoided`, in one pass.
pub(crate) fn move_spared(spared: &CpuSet, targets: &mut CpuSet, avoided: &mut CpuSet) {
    let n = in_use();
    for ((&spared, target), avoided) in spared.words[..n].iter().zip(&mut targets.words[..n]).zip(&mut avoided.words[..n]) {
        let moved = spared & *target;
        *target &= !moved;
        *avoided |= moved;
    }
}

/// The word holding `cpu`'s bit, and the bit's mask within it.
const fn word_and_mask(cpu: CpuId) -> (usize, u64) {
    (cpu.index() / WORD_BITS, 1u64 << (cpu.index() % WORD_BITS))
}

/// A set of CPUs, one bit per possible `CpuId`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CpuSet {
    words: [u64; WORDS],
}

impl CpuSet {
    /// The empty set.
    pub const EMPTY: CpuSet = CpuSet { words: [0; WORDS] };

    /// The empty set.
    pub const fn new() -> CpuSet {
        CpuSet::EMPTY
    }

    /// The set holding only `cpu`.
    #[inline]
    pub const fn single(cpu: CpuId) -> CpuSet {
        let mut set = CpuSet::EMPTY;
        let (word, mask) = word_and_mask(cpu);
        set.words[word] = mask;
        set
    }

    /// The set of CPUs `0..nr_cpus`.
    ///
    /// # Panics
    /// If `nr_cpus > MAX_CPUS`.
    pub const fn first_n(nr_cpus: usize) -> CpuSet {
        assert!(nr_cpus <= MAX_CPUS, "more CPUs than MAX_CPUS");
        let mut set = CpuSet::EMPTY;
        let mut word = 0;
        while word < WORDS {
            let below = nr_cpus.saturating_sub(word * WORD_BITS);
            set.words[word] = if below >= WORD_BITS {
                u64::MAX
            } else {
                (1u64 << below) - 1
            };
            word += 1;
        }
        set
    }

    /// Adds `cpu`; returns whether it was absent.
    #[inline]
    pub fn insert(&mut self, cpu: CpuId) -> bool {
        let (word, mask) = word_and_mask(cpu);
        let was_absent = self.words[word] & mask == 0;
        self.words[word] |= mask;
        was_absent
    }

    /// Removes `cpu`; returns whether it was present.
    #[inline]
    pub fn remove(&mut self, cpu: CpuId) -> bool {
        let (word, mask) = word_and_mask(cpu);
        let was_present = self.words[word] & mask != 0;
        self.words[word] &= !mask;
        was_present
    }

    /// Whether `cpu` is in the set.
    #[inline]
    pub const fn contains(&self, cpu: CpuId) -> bool {
        let (word, mask) = word_and_mask(cpu);
        self.words[word] & mask != 0
    }

    /// The number of CPUs in the set. Empty words are skipped and a word of one CPU is counted by
    /// a test: without the POPCNT instruction (the kernel's target does not assume it) counting a
    /// word takes some fifteen instructions, and most words of a machine's sets are empty or, in
    /// the sets a change plans (its IPI targets, the CPUs it spares), hold one CPU.
    #[inline]
    pub fn len(&self) -> usize {
        self.words[..in_use()]
            .iter()
            .filter(|&&w| w != 0)
            .map(|&w| if w & (w - 1) == 0 { 1 } else { w.count_ones() as usize })
            .sum()
    }

    /// Keeps only the CPUs for which `keep` says so, in place (no iterator copy of the set, no new
    /// set).
    #[inline]
    pub fn retain(&mut self, mut keep: impl FnMut(CpuId) -> bool) {
        let n = in_use();
        for (index, word) in self.words[..n].iter_mut().enumerate() {
            let mut bits = *word;
            while bits != 0 {
                let bit = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let cpu = CpuId::new((index * WORD_BITS + bit) as u32).expect("a set holds only valid ids");
                if !keep(cpu) {
                    *word &= !(1u64 << bit);
                }
            }
        }
    }

    /// Whether the set is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.words[..in_use()].iter().all(|&w| w == 0)
    }

    /// The CPUs in either set.
    #[must_use]
    #[inline]
    pub fn union(&self, other: &CpuSet) -> CpuSet {
        self.zip_with(other, |a, b| a | b)
    }

    /// The CPUs in both sets.
    #[must_use]
    #[inline]
    pub fn intersection(&self, other: &CpuSet) -> CpuSet {
        self.zip_with(other, |a, b| a & b)
    }

    /// The CPUs in `self` but not in `other`.
    #[must_use]
    #[inline]
    pub fn difference(&self, other: &CpuSet) -> CpuSet {
        self.zip_with(other, |a, b| a & !b)
    }

    /// Adds every CPU of `other`, in place (no new set built and copied).
    #[inline]
    pub fn insert_all(&mut self, other: &CpuSet) {
        let n = in_use();
        for (a, &b) in self.words[..n].iter_mut().zip(&other.words[..n]) {
            *a |= b;
        }
    }

    /// Removes every CPU of `other`, in place.
    #[inline]
    pub fn remove_all(&mut self, other: &CpuSet) {
        let n = in_use();
        for (a, &b) in self.words[..n].iter_mut().zip(&other.words[..n]) {
            *a &= !b;
        }
    }

    /// Calls `f` for each CPU in the set, ascending, reading the set in place (where
    /// [`CpuSet::iter`] copies it whole, to be free of the borrow).
    #[inline]
    pub fn for_each(&self, mut f: impl FnMut(CpuId)) {
        let n = in_use();
        for (index, &word) in self.words[..n].iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let bit = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                f(CpuId::new((index * WORD_BITS + bit) as u32).expect("a set holds only valid ids"));
            }
        }
    }

    /// The CPUs in the set, in ascending order.
    #[inline]
    pub fn iter(&self) -> Iter {
        Iter {
            words: self.words,
            word: 0,
            end: in_use(),
        }
    }

    #[inline]
    fn zip_with(&self, other: &CpuSet, op: impl Fn(u64, u64) -> u64) -> CpuSet {
        let mut out = CpuSet::EMPTY;
        let n = in_use();
        for ((out, &a), &b) in out.words[..n].iter_mut().zip(&self.words[..n]).zip(&other.words[..n]) {
            *out = op(a, b);
        }
        out
    }
}

/// Iterator over the CPUs of a [`CpuSet`], ascending; see [`CpuSet::iter`].
pub struct Iter {
    words: [u64; WORDS],
    word: usize,
    /// The words in use when the iterator was made.
    end: usize,
}

impl Iterator for Iter {
    type Item = CpuId;

    #[inline]
    fn next(&mut self) -> Option<CpuId> {
        while self.word < self.end.min(WORDS) {
            let bits = self.words[self.word];
            if bits != 0 {
                let bit = bits.trailing_zeros() as usize;
                // Clear the lowest set bit so the next call moves on.
                self.words[self.word] = bits & (bits - 1);
                let index = (self.word * WORD_BITS + bit) as u32;
                return CpuId::new(index);
            }
            self.word += 1;
        }
        None
    }
}

impl IntoIterator for &CpuSet {
    type Item = CpuId;
    type IntoIter = Iter;

    fn into_iter(self) -> Iter {
        self.iter()
    }
}

impl FromIterator<CpuId> for CpuSet {
    fn from_iter<I: IntoIterator<Item = CpuId>>(cpus: I) -> CpuSet {
        let mut set = CpuSet::EMPTY;
        for cpu in cpus {
            set.insert(cpu);
        }
        set
    }
}

/// Prints ranges of consecutive CPUs: `{0-3,6}`; the empty set is `{}`.
impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        let mut cpus = self.iter().map(CpuId::get).peekable();
        let mut first = true;
        while let Some(start) = cpus.next() {
            let mut end = start;
            while cpus.peek() == Some(&(end + 1)) {
                end += 1;
                cpus.next();
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        f.write_str("}")
    }
}

/// Same form as `Display`: the raw words would be unreadable.
impl fmt::Debug for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CpuSet{self}")
    }
}

/// A set of CPUs that several CPUs update concurrently. See the module comment for its orderings.
pub struct AtomicCpuSet {
    words: [AtomicU64; WORDS],
}

impl AtomicCpuSet {
    /// The empty set.
    #[cfg(not(loom))]
    pub const fn new() -> AtomicCpuSet {
        AtomicCpuSet {
            words: [const { AtomicU64::new(0) }; WORDS],
        }
    }

    /// The empty set (loom atomics cannot be built in a `const fn`).
    #[cfg(loom)]
    pub fn new() -> AtomicCpuSet {
        AtomicCpuSet {
            words: core::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Adds `cpu`; returns whether it was absent. Of several CPUs inserting the same bit at once,
    /// exactly one sees `true`.
    pub fn insert(&self, cpu: CpuId) -> bool {
        let (word, mask) = word_and_mask(cpu);
        self.words[word].fetch_or(mask, Ordering::SeqCst) & mask == 0
    }

    /// Removes `cpu`; returns whether it was present.
    pub fn remove(&self, cpu: CpuId) -> bool {
        let (word, mask) = word_and_mask(cpu);
        self.words[word].fetch_and(!mask, Ordering::SeqCst) & mask != 0
    }

    /// Whether `cpu` is in the set.
    #[inline]
    pub fn contains(&self, cpu: CpuId) -> bool {
        let (word, mask) = word_and_mask(cpu);
        self.words[word].load(Ordering::SeqCst) & mask != 0
    }

    /// Adds every CPU of `cpus` (one atomic operation per word that has bits in `cpus`).
    pub fn insert_all(&self, cpus: &CpuSet) {
        let n = in_use();
        for (word, &bits) in self.words[..n].iter().zip(&cpus.words[..n]) {
            if bits != 0 {
                word.fetch_or(bits, Ordering::SeqCst);
            }
        }
    }

    /// Removes every CPU of `cpus` (one atomic operation per word that has bits in `cpus`).
    pub fn remove_all(&self, cpus: &CpuSet) {
        let n = in_use();
        for (word, &bits) in self.words[..n].iter().zip(&cpus.words[..n]) {
            if bits != 0 {
                word.fetch_and(!bits, Ordering::SeqCst);
            }
        }
    }

    /// The current bits, read word by word.
    #[inline]
    pub fn snapshot(&self) -> CpuSet {
        let mut set = CpuSet::EMPTY;
        let n = in_use();
        for (out, word) in set.words[..n].iter_mut().zip(&self.words[..n]) {
            *out = word.load(Ordering::SeqCst);
        }
        set
    }

    /// Empties the set and returns what it held; each bit is returned by exactly one `take` (or
    /// `remove`) of all the ones racing for it.
    pub fn take(&self) -> CpuSet {
        let mut set = CpuSet::EMPTY;
        let n = in_use();
        for (out, word) in set.words[..n].iter_mut().zip(&self.words[..n]) {
            // A load first: swapping an empty word would be a needless write to a shared line.
            if word.load(Ordering::SeqCst) != 0 {
                *out = word.swap(0, Ordering::SeqCst);
            }
        }
        set
    }

    /// Whether no bit is set, reading words until the first non-empty one.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.words[..in_use()].iter().all(|w| w.load(Ordering::SeqCst) == 0)
    }
}

impl AtomicCpuSet {
    /// Reads the set until it is empty, with the spin hint after each read that finds it not, at
    /// most `checks` such reads; returns whether it was found empty. For a set that only empties while this
    /// runs (a shootdown's pending set, read by its sender, the only CPU that adds to it): a word
    /// once seen empty is not read again, so each turn is one load, a test and the hint.
    #[inline]
    pub fn spin_until_empty(&self, checks: usize) -> bool {
        let words = &self.words[..in_use()];
        let (mut next, mut spins) = (0, 0);
        while let Some(word) = words.get(next) {
            if word.load(Ordering::SeqCst) == 0 {
                next += 1;
                continue;
            }
            spin_loop();
            spins += 1;
            if spins >= checks {
                return false;
            }
        }
        true
    }
}

impl Default for AtomicCpuSet {
    fn default() -> AtomicCpuSet {
        AtomicCpuSet::new()
    }
}

impl fmt::Debug for AtomicCpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AtomicCpuSet{}", self.snapshot())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn cpu(index: u32) -> CpuId {
        CpuId::new(index).unwrap()
    }

    fn set(indices: &[u32]) -> CpuSet {
        indices.iter().map(|&i| cpu(i)).collect()
    }

    fn indices(set: &CpuSet) -> Vec<u32> {
        set.iter().map(CpuId::get).collect()
    }

    #[test]
    fn new_and_empty_are_empty() {
        assert!(CpuSet::new().is_empty());
        assert_eq!(CpuSet::new(), CpuSet::EMPTY);
        assert_eq!(CpuSet::default(), CpuSet::EMPTY);
        assert_eq!(CpuSet::EMPTY.len(), 0);
        assert_eq!(CpuSet::EMPTY.iter().next(), None);
    }

    #[test]
    fn insert_reports_whether_the_cpu_was_absent() {
        let mut s = CpuSet::new();
        assert!(s.insert(cpu(70)));
        assert!(!s.insert(cpu(70)));
        assert!(s.contains(cpu(70)));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn remove_reports_whether_the_cpu_was_present() {
        let mut s = set(&[1, 511]);
        assert!(s.remove(cpu(511)));
        assert!(!s.remove(cpu(511)));
        assert!(!s.contains(cpu(511)));
        assert!(s.contains(cpu(1)));
    }

    #[test]
    fn contains_sees_only_inserted_cpus() {
        let s = set(&[0, 63, 64, 511]);
        for i in 0..MAX_CPUS as u32 {
            assert_eq!(s.contains(cpu(i)), [0, 63, 64, 511].contains(&i), "cpu {i}");
        }
    }

    #[test]
    fn len_and_is_empty_count_across_words() {
        let s = set(&[0, 63, 64, 200, 511]);
        assert_eq!(s.len(), 5);
        assert!(!s.is_empty());
        assert!(CpuSet::single(cpu(300)).len() == 1);
    }

    #[test]
    fn len_counts_words_of_one_cpu_and_full_words_alike() {
        assert_eq!(set(&[5]).len(), 1);
        assert_eq!(set(&[0, 1]).len(), 2);
        assert_eq!(CpuSet::first_n(64).len(), 64);
        assert_eq!(CpuSet::first_n(MAX_CPUS).len(), MAX_CPUS);
        assert_eq!(set(&[63, 64, 65, 511]).len(), 4);
    }

    #[test]
    fn insert_all_and_remove_all_work_in_place() {
        let mut s = set(&[1, 70]);
        s.insert_all(&set(&[2, 70, 511]));
        assert_eq!(indices(&s), vec![1, 2, 70, 511]);
        s.remove_all(&set(&[1, 511, 300]));
        assert_eq!(indices(&s), vec![2, 70]);
        assert_eq!(s, set(&[1, 70]).union(&set(&[2, 70, 511])).difference(&set(&[1, 511, 300])));
    }

    #[test]
    fn for_each_visits_what_iter_yields() {
        let s = set(&[0, 3, 63, 64, 130, 511]);
        let mut seen = Vec::new();
        s.for_each(|c| seen.push(c.get()));
        assert_eq!(seen, indices(&s));
        CpuSet::EMPTY.for_each(|c| panic!("{c} in the empty set"));
    }

    #[test]
    fn retain_keeps_exactly_the_cpus_asked_for() {
        let mut s = set(&[0, 3, 63, 64, 130, 511]);
        let mut asked = Vec::new();
        s.retain(|c| {
            asked.push(c.get());
            c.get() % 2 == 1
        });
        assert_eq!(asked, vec![0, 3, 63, 64, 130, 511], "asked once per member, ascending");
        assert_eq!(indices(&s), vec![3, 63, 511]);
        let mut none = set(&[7, 400]);
        none.retain(|_| false);
        assert!(none.is_empty());
    }

    #[test]
    fn iter_is_ascending_across_word_boundaries() {
        let s = set(&[511, 64, 3, 63, 128, 0]);
        assert_eq!(indices(&s), vec![0, 3, 63, 64, 128, 511]);
        let by_ref: Vec<u32> = (&s).into_iter().map(CpuId::get).collect();
        assert_eq!(by_ref, indices(&s));
    }

    #[test]
    fn union_intersection_difference() {
        let a = set(&[0, 1, 2, 100]);
        let b = set(&[2, 3, 100, 400]);
        assert_eq!(indices(&a.union(&b)), vec![0, 1, 2, 3, 100, 400]);
        assert_eq!(indices(&a.intersection(&b)), vec![2, 100]);
        assert_eq!(indices(&a.difference(&b)), vec![0, 1]);
        assert_eq!(indices(&b.difference(&a)), vec![3, 400]);
    }

    #[test]
    fn single_holds_one_cpu() {
        assert_eq!(indices(&CpuSet::single(cpu(129))), vec![129]);
    }

    #[test]
    fn first_n_holds_exactly_the_first_n() {
        for n in [0, 1, 5, 63, 64, 65, 128, 300, MAX_CPUS] {
            let s = CpuSet::first_n(n);
            assert_eq!(s.len(), n, "n = {n}");
            assert_eq!(indices(&s), (0..n as u32).collect::<Vec<_>>());
        }
    }

    #[test]
    #[should_panic(expected = "more CPUs than MAX_CPUS")]
    fn first_n_rejects_more_than_max_cpus() {
        let _ = CpuSet::first_n(MAX_CPUS + 1);
    }

    #[test]
    fn display_collapses_runs() {
        assert_eq!(CpuSet::EMPTY.to_string(), "{}");
        assert_eq!(set(&[5]).to_string(), "{5}");
        assert_eq!(set(&[0, 1, 2, 3, 6]).to_string(), "{0-3,6}");
        assert_eq!(
            set(&[1, 3, 4, 62, 63, 64, 65, 511]).to_string(),
            "{1,3-4,62-65,511}"
        );
        assert_eq!(format!("{:?}", set(&[0, 1])), "CpuSet{0-1}");
    }

    #[test]
    fn atomic_new_and_default_are_empty() {
        assert!(AtomicCpuSet::new().is_empty());
        assert!(AtomicCpuSet::default().snapshot().is_empty());
    }

    #[test]
    fn atomic_insert_and_remove_report_the_previous_state() {
        let s = AtomicCpuSet::new();
        assert!(s.insert(cpu(9)));
        assert!(!s.insert(cpu(9)));
        assert!(s.contains(cpu(9)));
        assert!(s.remove(cpu(9)));
        assert!(!s.remove(cpu(9)));
        assert!(!s.contains(cpu(9)));
    }

    #[test]
    fn atomic_snapshot_matches_the_inserted_bits() {
        let s = AtomicCpuSet::new();
        for i in [0, 64, 65, 510] {
            s.insert(cpu(i));
        }
        assert_eq!(s.snapshot(), set(&[0, 64, 65, 510]));
        assert!(!s.is_empty());
        assert_eq!(format!("{s:?}"), "AtomicCpuSet{0,64-65,510}");
    }

    #[test]
    fn atomic_insert_all_and_remove_all_touch_only_the_given_cpus() {
        let s = AtomicCpuSet::new();
        s.insert(cpu(1));
        s.insert_all(&set(&[2, 100, 300]));
        assert_eq!(s.snapshot(), set(&[1, 2, 100, 300]));
        s.remove_all(&set(&[1, 300, 400]));
        assert_eq!(s.snapshot(), set(&[2, 100]));
    }

    #[test]
    fn atomic_take_empties_the_set_and_returns_its_bits() {
        let s = AtomicCpuSet::new();
        s.insert_all(&set(&[3, 200]));
        assert_eq!(s.take(), set(&[3, 200]));
        assert!(s.is_empty());
        assert_eq!(s.take(), CpuSet::EMPTY);
    }

    #[test]
    fn atomic_set_conserves_bits_under_threads() {
        // Four threads each own 128 CPUs and insert then remove every other one of them, all at
        // once on shared words; afterwards exactly the odd CPUs of each block remain.
        let s = AtomicCpuSet::new();
        std::thread::scope(|scope| {
            for block in 0..4u32 {
                let s = &s;
                scope.spawn(move || {
                    for i in block * 128..(block + 1) * 128 {
                        assert!(s.insert(cpu(i)));
                    }
                    for i in (block * 128..(block + 1) * 128).step_by(2) {
                        assert!(s.remove(cpu(i)));
                    }
                });
            }
        });
        let expected: CpuSet = (0..MAX_CPUS as u32)
            .filter(|i| i % 2 == 1)
            .map(cpu)
            .collect();
        assert_eq!(s.snapshot(), expected);
    }
}
