//! Which categories of events are recorded: the [`Mask`], and its parse from the kernel command
//! line (`trace` alone: every category; `trace=sched,ipi,...`: those; `trace=all`, `trace=none`).
//!
//! Neighbours: `event::Category` (one bit each), `Tracer` (holds the live mask in an atomic, so
//! the off test on a hot path is one load and one predictable branch).

use core::fmt;

use crate::event::Category;

/// A set of [`Category`]s.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Mask(pub u32);

/// A category name [`Mask::parse_list`] does not know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownCategory<'a>(pub &'a str);

impl fmt::Display for UnknownCategory<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown trace category `{}` (known: all, none", self.0)?;
        for c in Category::ALL {
            write!(f, ", {}", c.name())?;
        }
        f.write_str(")")
    }
}

impl Mask {
    /// Nothing is recorded.
    pub const NONE: Mask = Mask(0);
    /// Every category.
    pub const ALL: Mask = Mask((1 << Category::ALL.len()) - 1);

    /// Whether `category` is in the set.
    #[inline(always)]
    pub const fn contains(self, category: Category) -> bool {
        self.0 & category.bit() != 0
    }

    /// The set with `category` added.
    pub const fn with(self, category: Category) -> Mask {
        Mask(self.0 | category.bit())
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The categories in the set, in bit order.
    pub fn iter(self) -> impl Iterator<Item = Category> {
        Category::ALL.into_iter().filter(move |c| self.contains(*c))
    }

    /// The set named by a comma-separated list of category names, `all` or `none` (empty items
    /// are ignored, so `sched,` is fine).
    pub fn parse_list(list: &str) -> Result<Mask, UnknownCategory<'_>> {
        let mut mask = Mask::NONE;
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            mask = match item {
                "all" => Mask::ALL,
                "none" => mask,
                name => match Category::ALL.iter().find(|c| c.name() == name) {
                    Some(c) => mask.with(*c),
                    None => return Err(UnknownCategory(name)),
                },
            };
        }
        Ok(mask)
    }

    /// The mask a `trace` command-line option asks for: `value` is `None` for a bare `trace`
    /// (every category) and the text after `=` otherwise.
    pub fn from_option(value: Option<&str>) -> Result<Mask, UnknownCategory<'_>> {
        match value {
            None => Ok(Mask::ALL),
            Some(list) => Mask::parse_list(list),
        }
    }

    /// The mask a whole command line asks for: the last `trace` or `trace=...` word wins; no
    /// such word means [`Mask::NONE`].
    pub fn from_cmdline(cmdline: &str) -> Result<Mask, UnknownCategory<'_>> {
        let mut mask = Mask::NONE;
        for word in cmdline.split_ascii_whitespace() {
            if word == "trace" {
                mask = Mask::ALL;
            } else if let Some(list) = word.strip_prefix("trace=") {
                mask = Mask::parse_list(list)?;
            }
        }
        Ok(mask)
    }
}

impl fmt::Display for Mask {
    /// The categories as `trace=` takes them: `sched,ipi`, or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        for (i, c) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(c.name())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Mask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mask({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_trace_enables_every_category() {
        assert_eq!(Mask::from_option(None), Ok(Mask::ALL));
        assert_eq!(
            Mask::from_cmdline("loglevel=debug trace smp"),
            Ok(Mask::ALL)
        );
        assert_eq!(Mask::ALL.iter().count(), Category::ALL.len());
    }

    #[test]
    fn a_list_enables_exactly_its_categories() {
        let m = Mask::from_cmdline("trace=sched,ipi").unwrap();
        assert!(m.contains(Category::Sched) && m.contains(Category::Ipi));
        assert!(!m.contains(Category::Tlb) && !m.contains(Category::Timer));
        assert_eq!(m.to_string(), "sched,ipi");
    }

    #[test]
    fn all_none_and_empty_items() {
        assert_eq!(Mask::parse_list("all"), Ok(Mask::ALL));
        assert_eq!(Mask::parse_list("none"), Ok(Mask::NONE));
        assert_eq!(
            Mask::parse_list("tlb,,"),
            Ok(Mask::NONE.with(Category::Tlb))
        );
        assert_eq!(Mask::from_cmdline("quiet"), Ok(Mask::NONE));
        assert_eq!(Mask::NONE.to_string(), "none");
    }

    #[test]
    fn an_unknown_name_is_refused_by_name() {
        let err = Mask::parse_list("sched,bogus").unwrap_err();
        assert_eq!(err, UnknownCategory("bogus"));
        assert!(err.to_string().contains("`bogus`"));
    }

    #[test]
    fn the_last_trace_word_wins_and_tracer_is_not_trace() {
        assert_eq!(
            Mask::from_cmdline("trace trace=idle").unwrap(),
            Mask::NONE.with(Category::Idle)
        );
        assert_eq!(Mask::from_cmdline("tracer=1").unwrap(), Mask::NONE);
    }
}
