//! An IOAS's record of its mappings (Linux's `iopt` area tree): the areas by start IOVA, kept
//! as a vector sorted by start. A VMM keeps few areas per IOAS, mostly added at rising IOVAs,
//! and a map + unmap pair is the hot path: a binary search and a push or a short move cost
//! less than a B-tree's node work (an insert into the middle of `n` areas moves up to `n`
//! records).
//!
//! Areas never overlap (the IOAS checks a new one first), so the area with the highest start
//! at or below an address is the only one that can contain it.

/// One mapping of an IOAS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Area {
    pub(crate) len: u64,
    pub(crate) hpa: u64,
    /// Whether the pages were mapped writeable (Linux `iopt_pages::writable`): a copy of
    /// them asking for write is refused.
    pub(crate) writable: bool,
}

/// The areas of an IOAS, sorted by start IOVA, not overlapping.
#[derive(Debug, Default)]
pub(crate) struct Areas {
    by_start: Vec<(u64, Area)>,
}

impl Areas {
    /// Index of the first area starting at or after `at`.
    #[inline]
    fn first_from(&self, at: u64) -> usize {
        self.by_start.partition_point(|&(s, _)| s < at)
    }

    /// The area with the highest start at or below `at`.
    #[inline]
    pub(crate) fn at_or_below(&self, at: u64) -> Option<(u64, Area)> {
        let after = self.by_start.partition_point(|&(s, _)| s <= at);
        after.checked_sub(1).map(|i| self.by_start[i])
    }

    /// Areas intersecting `[first, last]`, by IOVA.
    pub(crate) fn overlapping(
        &self,
        first: u64,
        last: u64,
    ) -> impl Iterator<Item = (u64, Area)> + '_ {
        let from = self.first_from(first);
        let before = from
            .checked_sub(1)
            .map(|i| self.by_start[i])
            .filter(|&(s, a)| s + a.len > first);
        before.into_iter().chain(
            self.by_start[from..]
                .iter()
                .take_while(move |&&(s, _)| s <= last)
                .copied(),
        )
    }

    /// Records a new area at `start`; the caller checked it overlaps none.
    #[inline]
    pub(crate) fn insert(&mut self, start: u64, area: Area) {
        match self.by_start.last() {
            // Maps at rising IOVAs, the usual order: an append.
            Some(&(s, _)) if s >= start => {
                let at = self.first_from(start);
                debug_assert!(self.by_start.get(at).is_none_or(|&(s, _)| s != start));
                self.by_start.insert(at, (start, area));
            }
            _ => self.by_start.push((start, area)),
        }
    }

    /// Takes out the area that is exactly `[first, last]`, if there is one.
    #[inline]
    pub(crate) fn take_exact(&mut self, first: u64, last: u64) -> Option<Area> {
        let at = self.first_from(first);
        match self.by_start.get(at) {
            Some(&(s, a)) if s == first && a.len - 1 == last - first => {
                if at + 1 == self.by_start.len() {
                    // The last area, the usual case after an append: no move.
                    self.by_start.pop();
                } else {
                    self.by_start.remove(at);
                }
                Some(a)
            }
            _ => None,
        }
    }

    /// Takes out the areas starting in `[first, back]`, by IOVA.
    pub(crate) fn take_starting_in(
        &mut self,
        first: u64,
        back: u64,
    ) -> impl Iterator<Item = (u64, Area)> + '_ {
        let from = self.first_from(first);
        let to = self.by_start.partition_point(|&(s, _)| s <= back);
        self.by_start.drain(from..to.max(from))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn area(len: u64) -> Area {
        Area {
            len,
            hpa: 0,
            writable: true,
        }
    }

    /// The record answers as a `BTreeMap` of the same areas does, whatever the insert order.
    #[test]
    fn answers_as_an_ordered_map() {
        let starts = [0x5000u64, 0x1000, 0x9000, 0x3000, 0x20000, 0x7000];
        let mut areas = Areas::default();
        let mut model = BTreeMap::new();
        for &s in &starts {
            areas.insert(s, area(0x1000));
            model.insert(s, area(0x1000));
        }
        for at in (0..0x22000).step_by(0x800) {
            let want = model.range(..=at).next_back().map(|(&s, &a)| (s, a));
            assert_eq!(areas.at_or_below(at), want, "at_or_below({at:#x})");
            let got: Vec<_> = areas.overlapping(at, at + 0x2fff).collect();
            let want: Vec<_> = model
                .iter()
                .filter(|(&s, a)| s <= at + 0x2fff && s + a.len > at)
                .map(|(&s, &a)| (s, a))
                .collect();
            assert_eq!(got, want, "overlapping({at:#x})");
        }
        assert_eq!(areas.take_exact(0x3000, 0x3fff), Some(area(0x1000)));
        assert_eq!(areas.take_exact(0x3000, 0x3fff), None);
        assert_eq!(areas.take_exact(0x5000, 0x6fff), None, "a longer range");
        let taken: Vec<_> = areas
            .take_starting_in(0x4000, 0x9000)
            .map(|(s, _)| s)
            .collect();
        assert_eq!(taken, [0x5000, 0x7000, 0x9000]);
        let left: Vec<_> = areas.overlapping(0, u64::MAX - 1).map(|(s, _)| s).collect();
        assert_eq!(left, [0x1000, 0x20000]);
        assert_eq!(areas.take_starting_in(0x30000, 0x40000).count(), 0);
    }
}
