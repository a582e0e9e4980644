//! The recording side as the kernel holds it: a [`Gate`] (the enable mask, the only thing a hot
//! path touches while tracing is off) and a [`Tracer`] (one [`Ring`] per CPU and the thread-name
//! table, made when tracing is switched on).
//!
//! The off cost: a hook site reads `gate.enabled(category)`, one relaxed load and one test that
//! is false on every call while tracing is off, so the branch predictor learns it at once; the
//! recording code sits behind it, out of line. The kernel keeps the `Gate` in a `static` and the
//! `Tracer` behind a once-set pointer that is set before the gate opens.
//!
//! Neighbours: `ring` (storage), `dump` (`Tracer::dump` writes the dump format), `mask`.

extern crate alloc;

use alloc::{boxed::Box, vec::Vec};

use crossbeam_utils::CachePadded;
use spin::Mutex;

use crate::{
    dump::{self, Header, Sink},
    event::{Category, Record},
    mask::Mask,
    ring::{ReadStats, Ring},
    sync::{AtomicU32, Ordering},
};

/// The enable mask, checked at every hook site.
pub struct Gate(AtomicU32);

impl Gate {
    /// A closed gate (nothing recorded).
    #[cfg(not(loom))]
    pub const fn new() -> Gate {
        Gate(AtomicU32::new(0))
    }

    /// A closed gate (nothing recorded).
    #[cfg(loom)]
    pub fn new() -> Gate {
        Gate(AtomicU32::new(0))
    }

    /// Whether events of `category` are recorded now.
    #[inline(always)]
    pub fn enabled(&self, category: Category) -> bool {
        self.0.load(Ordering::Relaxed) & category.bit() != 0
    }

    /// The categories recorded now.
    pub fn mask(&self) -> Mask {
        Mask(self.0.load(Ordering::Relaxed))
    }

    /// Record `mask`'s categories from now on (`Mask::NONE` stops recording). Release: a hook
    /// that sees the new mask sees the tracer set up before it.
    pub fn set(&self, mask: Mask) {
        self.0.store(mask.0, Ordering::Release);
    }
}

impl Default for Gate {
    fn default() -> Gate {
        Gate::new()
    }
}

/// The rings of every CPU and the names of the threads they mention.
pub struct Tracer {
    rings: Box<[CachePadded<Ring>]>,
    /// Thread id and name, in spawn order; written on spawn only (not a hot path).
    names: Mutex<Vec<(u64, &'static str)>>,
}

impl Tracer {
    /// Rings of `capacity` records (rounded up to a power of two) for `nr_cpus` CPUs.
    pub fn new(nr_cpus: usize, capacity: usize) -> Tracer {
        Tracer {
            rings: (0..nr_cpus)
                .map(|_| CachePadded::new(Ring::new(capacity)))
                .collect(),
            names: Mutex::new(Vec::new()),
        }
    }

    /// Number of CPUs (rings).
    pub fn nr_cpus(&self) -> usize {
        self.rings.len()
    }

    /// Records each ring keeps.
    pub fn capacity(&self) -> usize {
        self.rings[0].capacity()
    }

    /// CPU `cpu`'s ring.
    pub fn ring(&self, cpu: usize) -> &Ring {
        &self.rings[cpu]
    }

    /// Append `record` to CPU `cpu`'s ring (`cpu` out of range: dropped silently, never a panic
    /// on a hot path). Never blocks.
    #[inline]
    pub fn record(&self, cpu: usize, record: &Record) {
        if let Some(ring) = self.rings.get(cpu) {
            ring.push(record);
        }
    }

    /// Remember thread `id`'s name for the dump.
    pub fn name_thread(&self, id: u64, name: &'static str) {
        self.names.lock().push((id, name));
    }

    /// Forget every record and name (only while nothing records).
    pub fn clear(&self) {
        self.rings.iter().for_each(|r| r.clear());
        self.names.lock().clear();
    }

    /// Write every ring to `sink` in the dump format; returns the read statistics of all rings
    /// together. Best called after the gate closed; correct (with torn records counted as
    /// dropped) even while CPUs still record.
    pub fn dump(&self, sink: &mut impl Sink, tsc_hz: u64, mask: Mask) -> ReadStats {
        let header = Header {
            nr_cpus: self.rings.len() as u32,
            tsc_hz,
            mask,
            capacity: self.capacity() as u32,
        };
        {
            let names = self.names.lock();
            dump::write_header(sink, &header, names.iter().copied());
        }
        let mut total = ReadStats::default();
        for (cpu, ring) in self.rings.iter().enumerate() {
            let stats = dump::write_cpu(sink, cpu as u32, ring);
            total.delivered += stats.delivered;
            total.dropped += stats.dropped;
        }
        dump::write_end(sink);
        total
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::{dump::Dump, event::Kind};

    #[test]
    fn the_gate_opens_only_its_categories() {
        let gate = Gate::new();
        assert!(!gate.enabled(Category::Sched));
        gate.set(Mask::NONE.with(Category::Sched));
        assert!(gate.enabled(Category::Sched));
        assert!(!gate.enabled(Category::Ipi));
        gate.set(Mask::NONE);
        assert!(!gate.enabled(Category::Sched));
    }

    #[test]
    fn a_tracer_dumps_what_it_recorded_with_names() {
        let t = Tracer::new(3, 16);
        t.name_thread(7, "worker");
        t.record(2, &Record::new(5, 2, Kind::IdleEnter));
        t.record(9, &Record::new(6, 9, Kind::IdleEnter));
        let mut out = Vec::new();
        let stats = t.dump(&mut out, 1000, Mask::ALL);
        assert_eq!(
            stats,
            ReadStats {
                delivered: 1,
                dropped: 0
            }
        );
        let d = Dump::parse(&out).unwrap();
        assert_eq!(d.header.nr_cpus, 3);
        assert_eq!(d.header.capacity, 16);
        assert_eq!(d.name_of(7), Some("worker"));
        assert_eq!(d.cpus[2].records, [Record::new(5, 2, Kind::IdleEnter)]);
        t.clear();
        let mut again = Vec::new();
        t.dump(&mut again, 1000, Mask::ALL);
        assert!(
            Dump::parse(&again)
                .unwrap()
                .cpus
                .iter()
                .all(|c| c.records.is_empty())
        );
    }
}
