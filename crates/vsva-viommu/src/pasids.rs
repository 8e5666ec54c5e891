//! [`PasidMap`]: the unit's PASID-keyed records (the PASIDs the guest allocated, the host
//! binds made for it) as one sorted vector. A guest holds few PASIDs and binds and unbinds
//! one at a time, so a binary search and a short shift beat a tree, and an insert after a
//! remove reuses the vector's storage instead of allocating a node. The entry the last
//! look-up found is tried first (a guest's unmaps flush one PASID after another).

use std::cell::Cell;

/// Values keyed by PASID, kept in ascending PASID order.
#[derive(Debug, Clone)]
pub(crate) struct PasidMap<V> {
    entries: Vec<(u32, V)>,
    /// Index of the entry the last look-up found. Only a hint: its key is compared before it
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
    #[inline]
    fn find(&self, pasid: u32) -> Result<usize, usize> {
        let last = self.last.get();
        if self.entries.get(last).is_some_and(|e| e.0 == pasid) {
            return Ok(last);
        }
        self.search(pasid)
    }

    /// The binary search behind [`PasidMap::find`] when the last entry found is not `pasid`.
    #[inline(never)]
    fn search(&self, pasid: u32) -> Result<usize, usize> {
        let r = self.entries.binary_search_by_key(&pasid, |e| e.0);
        if let Ok(i) = r {
            self.last.set(i);
        }
        r
    }

    /// Whether `pasid` has a value.
    #[inline]
    pub(crate) fn contains_key(&self, pasid: &u32) -> bool {
        let last = self.last.get();
        self.entries.get(last).is_some_and(|e| e.0 == *pasid) || self.search(*pasid).is_ok()
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
        self.find(*pasid).ok().map(|i| self.entries.remove(i).1)
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
        assert_eq!(m.get(&9), Some(&90));
        assert_eq!(m.get(&4), None, "the last entry found is 9's, not 4's");
        assert_eq!(m.remove(&3), Some(30));
        assert_eq!(m.get(&9), Some(&90), "9 moved from index 2 to 1");
        m.insert(1, 10);
        assert_eq!(m.get(&9), Some(&90), "9 moved back to index 2");
        assert_eq!(m.get(&6), Some(&60));
        assert_eq!(m.remove(&6), Some(60));
        assert!(!m.contains_key(&6));
        assert_eq!(m.keys().copied().collect::<Vec<_>>(), [1, 9]);
    }
}
