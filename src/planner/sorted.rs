//! The lists the planner looks Tweets up in, kept sorted by key: the inventory is sorted by
//! Tweet ID, so a plan walks each list alongside it with a [`Cursor`] instead of probing a hash
//! table for every Tweet (at a million Tweets the probes' cache misses were most of a plan).

/// A map kept as a list sorted by key: binary search for a single look-up, a [`Cursor`] for
/// look-ups in ascending order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortedMap<K, V> {
    entries: Vec<(K, V)>,
}

impl<K, V> Default for SortedMap<K, V> {
    fn default() -> Self {
        SortedMap {
            entries: Vec::new(),
        }
    }
}

impl<K: Ord + Copy, V> SortedMap<K, V> {
    pub fn new() -> Self {
        SortedMap::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn find(&self, key: &K) -> Result<usize, usize> {
        self.entries.binary_search_by(|(k, _)| k.cmp(key))
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.find(key).ok().map(|i| &self.entries[i].1)
    }

    pub fn contains_key(&self, key: &K) -> bool {
        self.find(key).is_ok()
    }

    /// Sets `key` to `value`, returning the value it replaces. Linear in the map's size: for
    /// building small maps; large ones are collected.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (key, value));
                None
            }
        }
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.find(key).ok().map(|i| self.entries.remove(i).1)
    }

    /// The entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    /// A cursor for look-ups in ascending key order.
    pub fn cursor(&self) -> Cursor<'_, K, V> {
        Cursor {
            entries: &self.entries,
            pos: 0,
        }
    }
}

/// Collects in any order; for a key given twice, the last value wins (as with a `HashMap`).
/// Entries already in key order (as the store reads them) are taken as they are.
impl<K: Ord + Copy, V> FromIterator<(K, V)> for SortedMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut entries: Vec<(K, V)> = iter.into_iter().collect();
        if !entries.is_sorted_by(|a, b| a.0 < b.0) {
            // Stable: of equal keys, the last given stays last, and wins below.
            entries.sort_by_key(|a| a.0);
            let mut unique: Vec<(K, V)> = Vec::with_capacity(entries.len());
            for (k, v) in entries {
                match unique.last_mut() {
                    Some(last) if last.0 == k => last.1 = v,
                    _ => unique.push((k, v)),
                }
            }
            entries = unique;
        }
        SortedMap { entries }
    }
}

impl<K, V> IntoIterator for SortedMap<K, V> {
    type Item = (K, V);
    type IntoIter = std::vec::IntoIter<(K, V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

/// A set kept as a sorted list (see [`SortedMap`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortedSet<K> {
    map: SortedMap<K, ()>,
}

impl<K> Default for SortedSet<K> {
    fn default() -> Self {
        SortedSet {
            map: SortedMap::default(),
        }
    }
}

impl<K: Ord + Copy> SortedSet<K> {
    pub fn new() -> Self {
        SortedSet {
            map: SortedMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn contains(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    /// Adds `key`; whether it was new. Linear in the set's size (see [`SortedMap::insert`]).
    pub fn insert(&mut self, key: K) -> bool {
        self.map.insert(key, ()).is_none()
    }

    pub fn remove(&mut self, key: &K) -> bool {
        self.map.remove(key).is_some()
    }

    /// The keys in order.
    pub fn iter(&self) -> impl Iterator<Item = &K> {
        self.map.iter().map(|(k, _)| k)
    }

    /// A cursor for look-ups in ascending order.
    pub fn cursor(&self) -> Cursor<'_, K, ()> {
        self.map.cursor()
    }
}

impl<K: Ord + Copy> FromIterator<K> for SortedSet<K> {
    fn from_iter<I: IntoIterator<Item = K>>(iter: I) -> Self {
        SortedSet {
            map: iter.into_iter().map(|k| (k, ())).collect(),
        }
    }
}

/// Look-ups into a [`SortedMap`] that remember where the last one ended: a key at or after the
/// previous one is found by galloping forward from there (a walk alongside another sorted list
/// costs one pass over both), an earlier key by binary search from the start. Any order of keys
/// gives the same answers as [`SortedMap::get`].
#[derive(Debug, Clone)]
pub struct Cursor<'a, K, V> {
    entries: &'a [(K, V)],
    /// Every entry before `pos` has a key below the last key looked up.
    pos: usize,
}

impl<'a, K: Ord + Copy, V> Cursor<'a, K, V> {
    pub fn get(&mut self, key: &K) -> Option<&'a V> {
        if self.pos > 0 && self.entries[self.pos - 1].0 >= *key {
            self.pos = self.entries[..self.pos].partition_point(|(k, _)| k < key);
        } else {
            // Exponential search: the first entry not below `key` is in [bound / 2, bound).
            let rest = &self.entries[self.pos..];
            let mut bound = 1;
            while bound <= rest.len() && rest[bound - 1].0 < *key {
                bound *= 2;
            }
            let (low, high) = (bound / 2, bound.min(rest.len()));
            self.pos += low + rest[low..high].partition_point(|(k, _)| k < key);
        }
        match self.entries.get(self.pos) {
            Some((k, v)) if k == key => Some(v),
            _ => None,
        }
    }

    pub fn contains(&mut self, key: &K) -> bool {
        self.get(key).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Collecting keeps the last value of a key; cursors answer as a `BTreeMap` does, for
        /// keys in any order, ascending runs and jumps back included.
        #[test]
        fn cursor_and_map_answer_as_a_btree_map(
            entries in proptest::collection::vec((0u16..400, any::<u8>()), 0..300),
            mut keys in proptest::collection::vec(0u16..420, 0..300),
            sorted_keys in any::<bool>(),
        ) {
            let map: SortedMap<u16, u8> = entries.iter().copied().collect();
            let reference: std::collections::BTreeMap<u16, u8> = entries.iter().copied().collect();
            prop_assert_eq!(map.len(), reference.len());
            prop_assert!(map.iter().map(|(k, v)| (*k, *v)).eq(reference.iter().map(|(k, v)| (*k, *v))));
            if sorted_keys {
                keys.sort_unstable();
            }
            let mut cursor = map.cursor();
            for key in &keys {
                prop_assert_eq!(cursor.get(key), reference.get(key), "key {}", key);
                prop_assert_eq!(map.get(key), reference.get(key));
            }
        }
    }

    #[test]
    fn insert_and_remove_keep_the_order() {
        let mut set = SortedSet::new();
        for k in [5, 1, 9, 5, 3] {
            set.insert(k);
        }
        assert_eq!(set.iter().copied().collect::<Vec<_>>(), vec![1, 3, 5, 9]);
        assert!(set.remove(&5) && !set.remove(&5));
        assert!(set.contains(&9) && !set.contains(&5));
        let mut map = SortedMap::new();
        assert_eq!(map.insert(2, 'a'), None);
        assert_eq!(map.insert(2, 'b'), Some('a'));
        assert_eq!(map.get(&2), Some(&'b'));
        let mut cursor = map.cursor();
        assert_eq!(cursor.get(&3), None);
        assert_eq!(cursor.get(&2), Some(&'b'));
    }
}
