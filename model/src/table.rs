//! Compact hash tables for the per-device tables that a process consults on nearly every
//! event: a chat server's connections (`U32Map`), what a device has shown and the ticks of
//! what it sent (`Table`).
//!
//! Open addressing with linear probing in one array of `(key, value)` pairs: a lookup
//! usually touches one cache line, where a `HashMap` touches its control bytes and then its
//! bucket (two misses when the table is far larger than the cache, as 100K connections
//! are), and the line a key lives in can be computed ahead, so a caller that knows its next
//! keys can `prefetch` them. Deletion shifts the following entries back, so no tombstones
//! accumulate. Nothing iterates the table: its order is never observable.
//!
//! In a `U32Map` a slot holds `key + 1` (0 marks an empty slot) and the value: a new table
//! is all zeroes, which the allocator hands over cheaply as untouched pages. Hashing
//! scatters keys over the whole table, so its pages are soon all touched: make a table for
//! what it will hold. A `Table` marks empty slots with a key value that no entry uses
//! (`TableKey::EMPTY`, which callers may not use as a key: checked).

/// The stored form of an empty slot.
const EMPTY: u32 = 0;

/// The table grows past this load (7 of 8 slots). Linear probing at load a takes about
/// (1 + 1/(1 - a)) / 2 probes on a hit: 4.5 slots (36 bytes, one or two cache lines of
/// 8-byte entries) just before the table grows, 1.4 just after.
const LOAD_NUM: usize = 7;
const LOAD_DEN: usize = 8;

/// Slots of a new table (a power of two).
const CAPACITY_MIN: usize = 16;

/// Fibonacci hashing's multiplier (2^64 / golden ratio): the product's top bits, which
/// pick the home slot, depend on every bit of the key.
const FIBONACCI: u64 = 0x9E37_79B9_7F4A_7C15;

/// A map from `u32` keys (any but `u32::MAX`) to `u32` values.
#[derive(Clone, Debug)]
pub(crate) struct U32Map {
    /// `[key + 1, value]`.
    slots: Vec<[u32; 2]>,
    len: usize,
}

impl Default for U32Map {
    fn default() -> Self {
        U32Map::with_slots(CAPACITY_MIN)
    }
}

/// The slot a hash picks among `n`: its top bits, scaled (no power of two needed).
#[inline]
fn slot_of(hash: u64, n: usize) -> usize {
    ((u128::from(hash) * n as u128) >> 64) as usize
}

/// The slot after `i` among `n`, round the end.
#[inline]
fn next_slot(i: usize, n: usize) -> usize {
    if i + 1 == n {
        0
    } else {
        i + 1
    }
}

/// In a backward-shift deletion, whether the entry at slot `j`, whose home slot is `home`,
/// must stay rather than fill the gap at `gap`: its home lies cyclically in `(gap, j]`, and
/// moving it before its home would hide it from lookups.
#[inline]
fn stays_put(gap: usize, home: usize, j: usize) -> bool {
    if gap <= j {
        gap < home && home <= j
    } else {
        gap < home || home <= j
    }
}

impl U32Map {
    fn with_slots(n: usize) -> U32Map {
        debug_assert!(n > 0);
        U32Map { slots: vec![[EMPTY; 2]; n], len: 0 }
    }

    /// A table that holds `n` entries without growing, at most 7/8 full then (no power of
    /// two: a server's 100K connections took 131,072 slots, 15% more than they need). Its
    /// slots are zeroed pages, which cost memory only once used.
    pub fn with_capacity(n: usize) -> U32Map {
        U32Map::with_slots((n * LOAD_DEN).div_ceil(LOAD_NUM).max(CAPACITY_MIN))
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The home slot of a stored key: Fibonacci hashing, whose top bits spread keys that
    /// differ in their low bits (devices of neighbouring users) over the whole table, and
    /// pick its slot.
    #[inline]
    fn home(&self, stored: u32) -> usize {
        slot_of(u64::from(stored).wrapping_mul(FIBONACCI), self.slots.len())
    }

    /// The stored form of a key.
    #[inline]
    fn stored(key: u32) -> u32 {
        key.wrapping_add(1)
    }

    /// The slot after `i`, round the end.
    #[inline]
    fn after(&self, i: usize) -> usize {
        next_slot(i, self.slots.len())
    }

    /// The slot holding `key`, if any.
    #[inline]
    fn find(&self, key: u32) -> Option<usize> {
        // u32::MAX has no stored form (it would read as an empty slot) and is never stored.
        if key == u32::MAX {
            return None;
        }
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
            i = self.after(i);
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
            i = self.after(i);
        }
    }

    /// Remove `key`; returns its value. The entries after it in its probe run move back
    /// into the gap when their home allows, so that every lookup still finds its key
    /// before an empty slot.
    pub fn remove(&mut self, key: u32) -> Option<u32> {
        let mut gap = self.find(key)?;
        let value = self.slots[gap][1];
        let mut j = gap;
        loop {
            j = self.after(j);
            let k = self.slots[j][0];
            if k == EMPTY {
                break;
            }
            if !stays_put(gap, self.home(k), j) {
                self.slots[gap] = self.slots[j];
                gap = j;
            }
        }
        self.slots[gap] = [EMPTY; 2];
        self.len -= 1;
        Some(value)
    }

    /// The entries, in slot order (a function of the keys held, so the same for the same
    /// history).
    pub fn iter(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.slots.iter().filter(|s| s[0] != EMPTY).map(|s| (s[0].wrapping_sub(1), s[1]))
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

/// A key of a `Table`.
pub trait TableKey: Copy + Eq {
    /// A value no entry's key takes: it marks an empty slot.
    const EMPTY: Self;
    /// A hash whose top bits are well mixed (they pick the home slot).
    fn hash(self) -> u64;
}

impl TableKey for u32 {
    const EMPTY: u32 = u32::MAX;
    #[inline]
    fn hash(self) -> u64 {
        u64::from(self).wrapping_mul(FIBONACCI)
    }
}

/// A `u64` key kept as two `u32`s: beside a value of a few bytes its slot takes 12 bytes,
/// where a `u64`'s alignment pads it to 16. It hashes as the `u64` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitU64([u32; 2]);

impl From<u64> for SplitU64 {
    #[inline]
    fn from(v: u64) -> Self {
        SplitU64([v as u32, (v >> 32) as u32])
    }
}

impl SplitU64 {
    #[inline]
    fn get(self) -> u64 {
        u64::from(self.0[0]) | (u64::from(self.0[1]) << 32)
    }
}

impl TableKey for SplitU64 {
    const EMPTY: SplitU64 = SplitU64([u32::MAX; 2]);
    #[inline]
    fn hash(self) -> u64 {
        self.get().wrapping_mul(FIBONACCI)
    }
}

impl TableKey for u64 {
    const EMPTY: u64 = u64::MAX;
    #[inline]
    fn hash(self) -> u64 {
        self.wrapping_mul(FIBONACCI)
    }
}

// A `Table` grows past the same load as a `U32Map` (`LOAD_NUM / LOAD_DEN`), as a `HashMap`
// does, so that it takes no more memory than one: the tables it serves hold an entry per
// message or conversation. Lookups that miss (a first show, a first send) probe to the end
// of their run: at the highest load about (1 + 1/(1 - a)^2) / 2 = 32 slots, adjacent lines
// the hardware prefetcher streams.
//
// It grows by half (`GROWTH_NUM / GROWTH_DEN`), not twice over: the tables that grow with a
// run are caught anywhere in their growth when it ends, and a table that doubles holds
// about 1.65 slots per entry on average there (its load between 7/16 and 7/8), where one
// that grows by half holds 1.41 (between 7/12 and 7/8); while it grows it holds the old
// slots and the new, 2.5 times the old where doubling took 3. Its size is then not a power
// of two: the home slot is the hash's top bits scaled to the size (a multiply-high), and
// an entry moves on average twice as it grows where it moved once.

/// A `Table` grows to this many times its slots.
const GROWTH_NUM: usize = 3;
const GROWTH_DEN: usize = 2;

/// A map from `TableKey`s to `Copy` values, by linear probing (see the module comment).
#[derive(Clone, Debug)]
pub struct Table<K, V> {
    slots: Vec<(K, V)>,
    len: usize,
}

impl<K: TableKey, V: Copy + Default> Default for Table<K, V> {
    fn default() -> Self {
        Table::with_slots(CAPACITY_MIN)
    }
}

impl<K: TableKey, V: Copy + Default> Table<K, V> {
    fn with_slots(n: usize) -> Table<K, V> {
        debug_assert!(n > 0);
        Table { slots: vec![(K::EMPTY, V::default()); n], len: 0 }
    }

    /// A table that holds `n` entries without growing (made for what it will hold, its
    /// load ends near the highest, 7/8, where a table grown to it is caught anywhere
    /// between 7/12 and 7/8).
    pub fn with_capacity(n: usize) -> Table<K, V> {
        Table::with_slots((n * LOAD_DEN).div_ceil(LOAD_NUM).max(CAPACITY_MIN))
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The hash scaled to the slots: its top bits decide.
    #[inline]
    fn home(&self, key: K) -> usize {
        slot_of(key.hash(), self.slots.len())
    }

    /// The slot after `i`, round the end.
    #[inline]
    fn after(&self, i: usize) -> usize {
        next_slot(i, self.slots.len())
    }

    /// The slot holding `key`, or the empty slot where it would go.
    #[inline]
    fn probe(&self, key: K) -> (usize, bool) {
        assert!(key != K::EMPTY, "the empty-slot marker is not a key");
        let mut i = self.home(key);
        loop {
            let k = self.slots[i].0;
            if k == key {
                return (i, true);
            }
            if k == K::EMPTY {
                return (i, false);
            }
            i = self.after(i);
        }
    }

    /// A hint that `key` is looked up soon: its home slot is loaded meanwhile.
    #[inline]
    pub fn prefetch(&self, key: K) {
        crate::prefetch(&self.slots[self.home(key)]);
    }

    #[inline]
    pub fn get(&self, key: K) -> Option<&V> {
        match self.probe(key) {
            (i, true) => Some(&self.slots[i].1),
            _ => None,
        }
    }

    #[inline]
    pub fn get_mut(&mut self, key: K) -> Option<&mut V> {
        match self.probe(key) {
            (i, true) => Some(&mut self.slots[i].1),
            _ => None,
        }
    }

    /// The value of `key`, inserted as `V::default()` if absent.
    #[inline]
    pub fn get_or_insert_default(&mut self, key: K) -> &mut V {
        let mut found = self.probe(key);
        if !found.1 && (self.len + 1) * LOAD_DEN > self.slots.len() * LOAD_NUM {
            self.grow();
            found = self.probe(key);
        }
        let (i, present) = found;
        if !present {
            self.slots[i] = (key, V::default());
            self.len += 1;
        }
        &mut self.slots[i].1
    }

    /// Set `key` to `value`; returns the value it replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let mut found = self.probe(key);
        if found.1 {
            return Some(std::mem::replace(&mut self.slots[found.0].1, value));
        }
        if (self.len + 1) * LOAD_DEN > self.slots.len() * LOAD_NUM {
            self.grow();
            found = self.probe(key);
        }
        self.slots[found.0] = (key, value);
        self.len += 1;
        None
    }

    /// Remove `key`; returns its value. The entries after it in its probe run move back
    /// into the gap when their home allows (as in `U32Map::remove`).
    pub fn remove(&mut self, key: K) -> Option<V> {
        let (mut gap, present) = self.probe(key);
        if !present {
            return None;
        }
        let value = self.slots[gap].1;
        let mut j = gap;
        loop {
            j = self.after(j);
            let k = self.slots[j].0;
            if k == K::EMPTY {
                break;
            }
            if !stays_put(gap, self.home(k), j) {
                self.slots[gap] = self.slots[j];
                gap = j;
            }
        }
        self.slots[gap] = (K::EMPTY, V::default());
        self.len -= 1;
        Some(value)
    }

    /// Keep only the entries for which `keep` holds. The table keeps its size.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        let old = std::mem::replace(self, Table::with_slots(self.slots.len()));
        for (k, mut v) in old.slots {
            if k != K::EMPTY && keep(&k, &mut v) {
                self.place(k, v);
            }
        }
    }

    /// Put an entry known to be absent, without a check on the load.
    fn place(&mut self, key: K, value: V) {
        let (i, present) = self.probe(key);
        debug_assert!(!present);
        self.slots[i] = (key, value);
        self.len += 1;
    }

    fn grow(&mut self) {
        let old = std::mem::replace(self, Table::with_slots(self.slots.len() * GROWTH_NUM / GROWTH_DEN));
        for (k, v) in old.slots {
            if k != K::EMPTY {
                self.place(k, v);
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
    fn a_table_agrees_with_a_hash_map_through_inserts_removals_and_retain() {
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let mut table = Table::<u64, u64>::default();
        let mut reference = HashMap::new();
        for step in 0..200_000u64 {
            let key = rng.random_range(0..3_000u64) << 20;
            match rng.random_range(0..5) {
                0 => assert_eq!(table.insert(key, step), reference.insert(key, step)),
                1 => assert_eq!(table.remove(key), reference.remove(&key)),
                2 => {
                    *table.get_or_insert_default(key) += 1;
                    *reference.entry(key).or_default() += 1;
                }
                3 if step % 1_000 == 0 => {
                    table.retain(|k, v| (k >> 20) % 3 != 0 || *v % 2 == 0);
                    reference.retain(|k, v| (k >> 20) % 3 != 0 || *v % 2 == 0);
                }
                _ => assert_eq!(table.get(key), reference.get(&key)),
            }
            assert_eq!(table.len(), reference.len());
        }
        for key in 0..3_000u64 {
            assert_eq!(table.get(key << 20), reference.get(&(key << 20)), "key {key}");
        }
    }

    #[test]
    fn the_empty_marker_is_never_found_and_never_a_key() {
        let mut map = U32Map::default();
        map.insert(0, 1);
        assert_eq!(map.get(u32::MAX), None, "u32::MAX would read as an empty slot");
        assert!(!map.contains_key(u32::MAX));
        let table: Table<u64, u32> = Table::default();
        assert!(std::panic::catch_unwind(|| table.get(u64::MAX).copied()).is_err(), "the marker is refused");
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
