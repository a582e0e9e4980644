//! The dump: how the rings leave the machine, as one byte stream, and how the host reads it back.
//!
//! ```text
//!   header   "KTRACE01"  u32 version=1  u32 nr_cpus  u64 tsc_hz  u32 mask  u32 capacity
//!   names    u32 count, then count x ( u64 thread id, u16 len, len bytes of UTF-8 )
//!   per CPU  "CPU:"  u32 cpu, records (32 bytes each, `event` layout), a zero record,
//!            u64 dropped
//!   end      "KTRACEND"
//! ```
//!
//! Every integer is little endian. A CPU block ends with an all-zero record (kind 0 is never a
//! kind), so the writer streams each ring in one pass without counting it first. The reader skips
//! anything before the first magic (a channel may carry other bytes before the dump) and refuses a
//! dump without its end marker: a truncated file is an error, not a shorter trace.
//!
//! Key items: [`Sink`] (where the writer puts bytes: a port, a `Vec`), [`write_header`],
//! [`write_cpu`], [`write_end`], [`Dump::parse`] (needs `alloc`). Neighbours: `Tracer::dump`
//! calls the writers; the host tool and `check` take a parsed [`Dump`].

extern crate alloc;

use alloc::{string::String, vec::Vec};
use core::fmt;

use crate::{
    event::{RECORD_BYTES, Record},
    mask::Mask,
    ring::{ReadStats, Ring},
};

/// Magic at the start of a dump.
pub const MAGIC: &[u8; 8] = b"KTRACE01";
/// Magic at the start of each CPU block.
pub const CPU_MAGIC: &[u8; 4] = b"CPU:";
/// Magic at the end of a dump.
pub const END_MAGIC: &[u8; 8] = b"KTRACEND";
/// The format version this crate writes and reads.
pub const VERSION: u32 = 1;

/// Somewhere a dump can be written, a few bytes at a time.
pub trait Sink {
    /// Write all of `bytes`.
    fn write(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn write(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// What the header says about the whole dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// CPUs that have a block in the dump.
    pub nr_cpus: u32,
    /// Time stamp counter ticks per second.
    pub tsc_hz: u64,
    /// The categories that were recorded.
    pub mask: Mask,
    /// Records each CPU's ring holds.
    pub capacity: u32,
}

/// Write the header and the thread-name table.
pub fn write_header<'a>(
    sink: &mut impl Sink,
    header: &Header,
    names: impl ExactSizeIterator<Item = (u64, &'a str)>,
) {
    sink.write(MAGIC);
    sink.write(&VERSION.to_le_bytes());
    sink.write(&header.nr_cpus.to_le_bytes());
    sink.write(&header.tsc_hz.to_le_bytes());
    sink.write(&header.mask.0.to_le_bytes());
    sink.write(&header.capacity.to_le_bytes());
    sink.write(&(names.len() as u32).to_le_bytes());
    for (id, name) in names {
        let name = &name.as_bytes()[..name.len().min(u16::MAX as usize)];
        sink.write(&id.to_le_bytes());
        sink.write(&(name.len() as u16).to_le_bytes());
        sink.write(name);
    }
}

/// Write CPU `cpu`'s block from its ring; returns what the read found.
pub fn write_cpu(sink: &mut impl Sink, cpu: u32, ring: &Ring) -> ReadStats {
    sink.write(CPU_MAGIC);
    sink.write(&cpu.to_le_bytes());
    let stats = ring.read(|r| sink.write(&r.to_bytes()));
    sink.write(&[0; RECORD_BYTES]);
    sink.write(&stats.dropped.to_le_bytes());
    stats
}

/// Write the end marker.
pub fn write_end(sink: &mut impl Sink) {
    sink.write(END_MAGIC);
}

/// One CPU's part of a parsed dump.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuBlock {
    /// The CPU.
    pub cpu: u32,
    /// Its records, in ring order (oldest first).
    pub records: Vec<Record>,
    /// Records its ring lost (overwritten, or torn by a writer during the dump).
    pub dropped: u64,
}

/// A parsed dump.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dump {
    /// The header.
    pub header: Header,
    /// Thread names by id (the idle threads included).
    pub names: Vec<(u64, String)>,
    /// One block per CPU.
    pub cpus: Vec<CpuBlock>,
}

/// Why [`Dump::parse`] refused its input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DumpError {
    /// No `KTRACE01` anywhere in the input.
    NoMagic,
    /// The dump's version is not [`VERSION`].
    Version(u32),
    /// The input ends inside the dump (at this offset): the channel lost its tail.
    Truncated(usize),
    /// Something else than expected at this offset.
    Corrupt(usize, &'static str),
}

impl fmt::Display for DumpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DumpError::NoMagic => write!(f, "no trace dump in the input (no KTRACE01 magic)"),
            DumpError::Version(v) => {
                write!(f, "dump format version {v}, this tool reads {VERSION}")
            }
            DumpError::Truncated(at) => write!(f, "the dump is truncated at byte {at}"),
            DumpError::Corrupt(at, what) => write!(f, "corrupt dump at byte {at}: {what}"),
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DumpError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or(DumpError::Truncated(self.bytes.len()))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DumpError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u16(&mut self) -> Result<u16, DumpError> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, DumpError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, DumpError> {
        self.array().map(u64::from_le_bytes)
    }
}

impl Dump {
    /// Parse the first dump in `bytes` (bytes before its magic are skipped).
    pub fn parse(bytes: &[u8]) -> Result<Dump, DumpError> {
        let start = bytes
            .windows(MAGIC.len())
            .position(|w| w == MAGIC)
            .ok_or(DumpError::NoMagic)?;
        let mut r = Reader {
            bytes,
            at: start + MAGIC.len(),
        };
        let version = r.u32()?;
        if version != VERSION {
            return Err(DumpError::Version(version));
        }
        let header = Header {
            nr_cpus: r.u32()?,
            tsc_hz: r.u64()?,
            mask: Mask(r.u32()?),
            capacity: r.u32()?,
        };
        let nr_names = r.u32()?;
        let mut names = Vec::new();
        for _ in 0..nr_names {
            let id = r.u64()?;
            let len = r.u16()? as usize;
            let at = r.at;
            let name = core::str::from_utf8(r.take(len)?)
                .map_err(|_| DumpError::Corrupt(at, "a thread name is not UTF-8"))?;
            names.push((id, String::from(name)));
        }
        let mut cpus = Vec::new();
        for _ in 0..header.nr_cpus {
            let at = r.at;
            if &r.array::<4>()? != CPU_MAGIC {
                return Err(DumpError::Corrupt(at, "expected a CPU block"));
            }
            let cpu = r.u32()?;
            let mut records = Vec::new();
            loop {
                let bytes = r.array::<RECORD_BYTES>()?;
                if bytes == [0; RECORD_BYTES] {
                    break;
                }
                records.push(Record::from_bytes(&bytes));
            }
            let dropped = r.u64()?;
            cpus.push(CpuBlock {
                cpu,
                records,
                dropped,
            });
        }
        let at = r.at;
        if &r.array::<8>()? != END_MAGIC {
            return Err(DumpError::Corrupt(at, "expected the end marker"));
        }
        Ok(Dump {
            header,
            names,
            cpus,
        })
    }

    /// The name of thread `id`, if the table has it.
    pub fn name_of(&self, id: u64) -> Option<&str> {
        self.names
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, n)| n.as_str())
    }

    /// Records lost on every CPU together.
    pub fn dropped(&self) -> u64 {
        self.cpus.iter().map(|c| c.dropped).sum()
    }

    /// Write this dump again, as the kernel would have (for tests and for tools that edit one).
    pub fn write(&self, sink: &mut impl Sink) {
        write_header(
            sink,
            &self.header,
            self.names.iter().map(|(id, n)| (*id, n.as_str())),
        );
        for block in &self.cpus {
            sink.write(CPU_MAGIC);
            sink.write(&block.cpu.to_le_bytes());
            for r in &block.records {
                sink.write(&r.to_bytes());
            }
            sink.write(&[0; RECORD_BYTES]);
            sink.write(&block.dropped.to_le_bytes());
        }
        write_end(sink);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::event::{Kind, Reason};

    fn sample() -> Vec<u8> {
        let rings = [Ring::new(4), Ring::new(4)];
        rings[0].push(&Record::switch(100, 0, 1, 3, Reason::Idle, 0));
        for n in 0..6 {
            rings[1].push(&Record::new(200 + n, 1, Kind::TimerFire));
        }
        let mut out = b"boot noise".to_vec();
        let header = Header {
            nr_cpus: 2,
            tsc_hz: 1_000_000_000,
            mask: Mask::ALL,
            capacity: 4,
        };
        write_header(
            &mut out,
            &header,
            [(1, "idle"), (3, "worker-ü")].into_iter(),
        );
        for (cpu, ring) in rings.iter().enumerate() {
            write_cpu(&mut out, cpu as u32, ring);
        }
        write_end(&mut out);
        out
    }

    #[test]
    fn a_dump_reads_back_as_written() {
        let dump = Dump::parse(&sample()).unwrap();
        assert_eq!(dump.header.tsc_hz, 1_000_000_000);
        assert_eq!(dump.header.mask, Mask::ALL);
        assert_eq!(dump.name_of(3), Some("worker-ü"));
        assert_eq!(dump.cpus.len(), 2);
        assert_eq!(
            dump.cpus[0].records,
            [Record::switch(100, 0, 1, 3, Reason::Idle, 0)]
        );
        assert_eq!(dump.cpus[0].dropped, 0);
        let tscs: Vec<u64> = dump.cpus[1].records.iter().map(|r| r.tsc).collect();
        assert_eq!(tscs, [202, 203, 204, 205]);
        assert_eq!(dump.cpus[1].dropped, 2);
        assert_eq!(dump.dropped(), 2);
    }

    #[test]
    fn writing_a_parsed_dump_gives_the_same_bytes() {
        let bytes = sample();
        let dump = Dump::parse(&bytes).unwrap();
        let mut again = Vec::new();
        dump.write(&mut again);
        assert_eq!(again, bytes[b"boot noise".len()..]);
    }

    #[test]
    fn a_truncated_dump_is_an_error_wherever_it_is_cut() {
        let bytes = sample();
        for cut in b"boot noise".len() + 8..bytes.len() {
            assert!(Dump::parse(&bytes[..cut]).is_err(), "cut at {cut} parsed");
        }
    }

    #[test]
    fn garbage_and_wrong_versions_are_refused() {
        assert_eq!(Dump::parse(b"nothing here"), Err(DumpError::NoMagic));
        let mut bytes = sample();
        let at = b"boot noise".len() + 8;
        bytes[at] = 9;
        assert_eq!(Dump::parse(&bytes), Err(DumpError::Version(9)));
    }
}
