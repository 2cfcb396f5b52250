//! A compact hash table from 32-bit keys to 32-bit values, for the per-device tables that
//! a process consults on nearly every event (a chat server's connections).
//!
//! Open addressing with linear probing in one array of `(key, value)` pairs: a lookup
//! usually touches one cache line, where a `HashMap` touches its control bytes and then its
//! bucket (two misses when the table is far larger than the cache, as 100K connections
//! are), and the line a key lives in can be computed ahead, so a caller that knows its next
//! keys can `prefetch` them. Deletion shifts the following entries back, so no tombstones
//! accumulate. Nothing iterates the table: its order is never observable.
//!
//! A slot holds `key + 1` (0 marks an empty slot) and the value: a new table is all
//! zeroes, which the allocator hands over as untouched pages, so a table's memory follows
//! the slots used rather than its capacity.

/// The stored form of an empty slot.
const EMPTY: u32 = 0;

/// The table grows past this load (7 of 8 slots): a successful lookup then probes about
/// 2.6 slots on average, within one or two cache lines of 8-byte entries.
const LOAD_NUM: usize = 7;
const LOAD_DEN: usize = 8;

/// Slots of a new table (a power of two).
const CAPACITY_MIN: usize = 16;

/// A map from `u32` keys (any but `u32::MAX`) to `u32` values.
#[derive(Clone, Debug)]
pub(crate) struct U32Map {
    /// `[key + 1, value]`.
    slots: Vec<[u32; 2]>,
    len: usize,
    /// `64 - log2(slots.len())`: the hash's top bits pick the home slot.
    shift: u32,
}

impl Default for U32Map {
    fn default() -> Self {
        U32Map::with_slots(CAPACITY_MIN)
    }
}

impl U32Map {
    fn with_slots(n: usize) -> U32Map {
        debug_assert!(n.is_power_of_two());
        U32Map { slots: vec![[EMPTY; 2]; n], len: 0, shift: 64 - n.trailing_zeros() }
    }

    /// A table that holds `n` entries without growing. Its slots are zeroed pages, which
    /// cost memory only once used.
    pub fn with_capacity(n: usize) -> U32Map {
        U32Map::with_slots((n * LOAD_DEN).div_ceil(LOAD_NUM).next_power_of_two().max(CAPACITY_MIN))
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The home slot of a stored key: Fibonacci hashing, whose top bits spread keys that
    /// differ in their low bits (devices of neighbouring users) over the whole table.
    #[inline]
    fn home(&self, stored: u32) -> usize {
        (u64::from(stored).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    /// The stored form of a key.
    #[inline]
    fn stored(key: u32) -> u32 {
        key.wrapping_add(1)
    }

    #[inline]
    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// The slot holding `key`, if any.
    #[inline]
    fn find(&self, key: u32) -> Option<usize> {
        let key = Self::stored(key);
        let mut i = self.home(key);
        loop {
            let k = self.slots[i][0];
            if k == key {
                return Some(i);
            }
            if k == EMPTY {
                return None;
            }
            i = (i + 1) & self.mask();
        }
    }

    /// A hint that `key` is looked up soon: its home slot is loaded meanwhile.
    #[inline]
    pub fn prefetch(&self, key: u32) {
        crate::prefetch(&self.slots[self.home(Self::stored(key))]);
    }

    #[inline]
    pub fn get(&self, key: u32) -> Option<u32> {
        self.find(key).map(|i| self.slots[i][1])
    }

    #[inline]
    pub fn get_mut(&mut self, key: u32) -> Option<&mut u32> {
        self.find(key).map(|i| &mut self.slots[i][1])
    }

    #[inline]
    pub fn contains_key(&self, key: u32) -> bool {
        self.find(key).is_some()
    }

    /// Set `key` to `value`; returns the value it replaced.
    pub fn insert(&mut self, key: u32, value: u32) -> Option<u32> {
        assert_ne!(key, u32::MAX, "u32::MAX has no stored form");
        if (self.len + 1) * LOAD_DEN > self.slots.len() * LOAD_NUM {
            self.grow();
        }
        self.insert_stored(Self::stored(key), value)
    }

    fn insert_stored(&mut self, key: u32, value: u32) -> Option<u32> {
        let mut i = self.home(key);
        loop {
            let slot = &mut self.slots[i];
            if slot[0] == key {
                return Some(std::mem::replace(&mut slot[1], value));
            }
            if slot[0] == EMPTY {
                *slot = [key, value];
                self.len += 1;
                return None;
            }
            i = (i + 1) & self.mask();
        }
    }

    /// Remove `key`; returns its value. The entries after it in its probe run move back
    /// into the gap when their home allows, so that every lookup still finds its key
    /// before an empty slot.
    pub fn remove(&mut self, key: u32) -> Option<u32> {
        let mut gap = self.find(key)?;
        let value = self.slots[gap][1];
        let mask = self.mask();
        let mut j = gap;
        loop {
            j = (j + 1) & mask;
            let k = self.slots[j][0];
            if k == EMPTY {
                break;
            }
            // The entry at `j` may fill the gap unless its home lies cyclically in
            // `(gap, j]`: moving it before its home would hide it.
            let home = self.home(k);
            let stays = if gap <= j { gap < home && home <= j } else { gap < home || home <= j };
            if !stays {
                self.slots[gap] = self.slots[j];
                gap = j;
            }
        }
        self.slots[gap] = [EMPTY; 2];
        self.len -= 1;
        Some(value)
    }

    fn grow(&mut self) {
        let old = std::mem::replace(self, U32Map::with_slots(self.slots.len() * 2));
        for [k, v] in old.slots {
            if k != EMPTY {
                self.insert_stored(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use std::collections::HashMap;

    #[test]
    fn agrees_with_a_hash_map_through_inserts_and_removals() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut table = U32Map::default();
        let mut reference = HashMap::new();
        for step in 0..200_000u32 {
            // A small key space, so that runs collide, wrap the table's end and are removed from.
            let key = rng.random_range(0..3_000u32) * 7;
            match rng.random_range(0..3) {
                0 => assert_eq!(table.insert(key, step), reference.insert(key, step)),
                1 => assert_eq!(table.remove(key), reference.remove(&key)),
                _ => assert_eq!(table.get(key), reference.get(&key).copied()),
            }
            assert_eq!(table.len(), reference.len());
        }
        for key in 0..21_000 {
            assert_eq!(table.contains_key(key), reference.contains_key(&key), "key {key}");
        }
    }

    #[test]
    fn get_mut_changes_the_stored_value() {
        let mut table = U32Map::default();
        table.insert(9, 1);
        *table.get_mut(9).unwrap() += 5;
        assert_eq!(table.get(9), Some(6));
        assert_eq!(table.get_mut(10), None);
    }
}
