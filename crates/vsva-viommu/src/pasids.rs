//! [`PasidMap`]: the unit's PASID-keyed records (the PASIDs the guest allocated, the host
//! binds made for it) as one sorted vector. A guest holds few PASIDs and binds and unbinds
//! one at a time, so a binary search and a short shift beat a tree, and an insert after a
//! remove reuses the vector's storage instead of allocating a node. The entry the last
//! membership test found is tried first (a guest's unmaps flush one PASID after another).

use std::cell::Cell;

/// Values keyed by PASID, kept in ascending PASID order.
#[derive(Debug, Clone)]
pub(crate) struct PasidMap<V> {
    entries: Vec<(u32, V)>,
    /// Index of the entry the last [`PasidMap::contains_key`] found. Only a hint: its key is compared before it
    /// is used, so an insert or remove that moves entries makes it miss, never answer wrong.
    last: Cell<usize>,
}

impl<V> Default for PasidMap<V> {
    fn default() -> Self {
        PasidMap {
            entries: Vec::new(),
            last: Cell::new(0),
        }
    }
}

impl<V> PasidMap<V> {
    fn find(&self, pasid: u32) -> Result<usize, usize> {
        self.entries.binary_search_by_key(&pasid, |e| e.0)
    }

    /// Whether `pasid` has a value: the entry the last such test found is tried first (one
    /// compare), the search runs out of line when it is another PASID's.
    #[inline]
    pub(crate) fn contains_key(&self, pasid: &u32) -> bool {
        let last = self.last.get();
        self.entries.get(last).is_some_and(|e| e.0 == *pasid) || self.search(*pasid)
    }

    /// The search behind [`PasidMap::contains_key`]; remembers the entry it finds.
    #[inline(never)]
    fn search(&self, pasid: u32) -> bool {
        let found = self.find(pasid);
        if let Ok(i) = found {
            self.last.set(i);
        }
        found.is_ok()
    }

    /// The value of `pasid`.
    pub(crate) fn get(&self, pasid: &u32) -> Option<&V> {
        self.find(*pasid).ok().map(|i| &self.entries[i].1)
    }

    /// Sets the value of `pasid`, returning the one it replaces.
    pub(crate) fn insert(&mut self, pasid: u32, value: V) -> Option<V> {
        match self.find(pasid) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (pasid, value));
                None
            }
        }
    }

    /// Takes the value of `pasid` out.
    pub(crate) fn remove(&mut self, pasid: &u32) -> Option<V> {
        let i = self.find(*pasid).ok()?;
        Some(self.remove_at(i))
    }

    /// Calls `f` with the value of `pasid`, if there is one, then removes it: one search, and
    /// the value is looked at where it lies instead of being moved out first.
    pub(crate) fn remove_with<R>(&mut self, pasid: &u32, f: impl FnOnce(&V) -> R) -> Option<R> {
        let i = self.find(*pasid).ok()?;
        let r = f(&self.entries[i].1);
        self.remove_at(i);
        Some(r)
    }

    /// Removes the entry at `i` (an index `find` returned); the last entry (a guest's one
    /// bound PASID) is popped, with no shift to call.
    #[inline]
    fn remove_at(&mut self, i: usize) -> V {
        if i + 1 == self.entries.len() {
            if let Some((_, v)) = self.entries.pop() {
                return v;
            }
        }
        self.entries.remove(i).1
    }

    /// The PASIDs, ascending.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &u32> + '_ {
        self.entries.iter().map(|e| &e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_pasids_sorted_and_values_replaced() {
        let mut m = PasidMap::default();
        assert_eq!(m.insert(9, 'a'), None);
        assert_eq!(m.insert(3, 'b'), None);
        assert_eq!(m.insert(6, 'c'), None);
        assert_eq!(m.insert(9, 'd'), Some('a'));
        assert_eq!(m.keys().copied().collect::<Vec<_>>(), [3, 6, 9]);
        assert_eq!(m.get(&9), Some(&'d'));
        assert!(m.contains_key(&6) && !m.contains_key(&7));
        assert_eq!(m.remove(&6), Some('c'));
        assert_eq!(m.remove(&6), None);
        assert_eq!(m.keys().copied().collect::<Vec<_>>(), [3, 9]);
    }

    #[test]
    fn the_last_entry_found_is_checked_before_it_answers() {
        let mut m = PasidMap::default();
        for p in [3, 6, 9] {
            m.insert(p, p * 10);
        }
        assert!(m.contains_key(&9));
        assert!(!m.contains_key(&4), "the last entry found is 9's, not 4's");
        assert_eq!(m.remove(&3), Some(30));
        assert!(m.contains_key(&9), "9 moved from index 2 to 1");
        m.insert(1, 10);
        assert!(m.contains_key(&6), "the entry at index 1");
        assert!(!m.contains_key(&7), "index 1 holds 6's entry, not 7's");
        assert!(m.contains_key(&9), "9 moved back to index 2");
        assert_eq!(m.remove(&6), Some(60));
        assert!(!m.contains_key(&6));
        assert_eq!(m.keys().copied().collect::<Vec<_>>(), [1, 9]);
    }

    #[test]
    fn remove_with_sees_the_value_then_removes_it() {
        let mut m = PasidMap::default();
        for p in [3, 6, 9] {
            m.insert(p, p * 10);
        }
        assert_eq!(m.remove_with(&4, |v| *v), None);
        assert_eq!(m.remove_with(&6, |v| *v + 1), Some(61));
        assert_eq!(m.remove_with(&9, |v| *v), Some(90), "the last entry");
        assert_eq!(m.remove(&3), Some(30), "the last entry, by remove");
        assert_eq!(m.keys().count(), 0);
        assert_eq!(m.remove_with(&3, |v| *v), None);
    }
}
