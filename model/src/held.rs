//! What a chat server holds per connection until the device answers: the pushes it has not
//! acknowledged, the receipts it has not said it heard.
//!
//! Nearly every push and every ACK touches a device's holding, and the devices of a server
//! number a hundred thousand: a hash map of small vectors cost a miss at its control bytes
//! and another at its bucket, and could not be loaded ahead. Here the first item held for a
//! device sits in its slot of a compact table (`Table`), whose line the serve loop can
//! prefetch; the rare later ones wait in an overflow list.

use crate::ids::DeviceKey;
use crate::table::Table;

/// Items held per device key, each device's in the order held.
#[derive(Clone, Debug)]
pub(crate) struct Held<T: Copy + std::fmt::Debug> {
    heads: Table<u64, Head<T>>,
    /// The items after each device's first: `more[head.more - 1]`.
    more: Vec<Vec<T>>,
    /// Overflow lists no device uses (emptied, their buffers kept), by index.
    free: Vec<u32>,
    len: usize,
}

/// A device's first item, and its overflow list (plus one; 0: none). A slot is in the
/// table only while its device holds something, so `first` is then `Some`.
#[derive(Clone, Copy, Debug)]
struct Head<T> {
    first: Option<T>,
    more: u32,
}

impl<T> Default for Head<T> {
    fn default() -> Self {
        Head { first: None, more: 0 }
    }
}

impl<T: Copy + std::fmt::Debug> Default for Held<T> {
    fn default() -> Self {
        Held { heads: Table::default(), more: Vec::new(), free: Vec::new(), len: 0 }
    }
}

impl<T: Copy + std::fmt::Debug> Held<T> {
    /// Items held, all devices together.
    pub fn len(&self) -> usize {
        self.len
    }

    /// A hint that `key`'s holding is touched soon: its slot is loaded meanwhile.
    #[inline]
    pub fn prefetch(&self, key: DeviceKey) {
        self.heads.prefetch(u64::from(key.0));
    }

    /// Items `key` holds.
    pub fn count(&self, key: DeviceKey) -> usize {
        match self.heads.get(u64::from(key.0)) {
            None => 0,
            Some(head) => 1 + self.more_of(head).map_or(0, Vec::len),
        }
    }

    /// Hold `item` after the others of `key`; returns how many `key` holds now.
    pub fn push(&mut self, key: DeviceKey, item: T) -> usize {
        let Held { heads, more, free, len } = self;
        *len += 1;
        let head = heads.get_or_insert_default(u64::from(key.0));
        if head.first.is_none() {
            head.first = Some(item);
            return 1;
        }
        if head.more == 0 {
            let index = free.pop().unwrap_or_else(|| {
                more.push(Vec::new());
                u32::try_from(more.len() - 1).expect("fewer than 4 billion overflow lists")
            });
            head.more = index + 1;
        }
        let list = &mut more[head.more as usize - 1];
        list.push(item);
        1 + list.len()
    }

    /// Take the oldest item of `key`.
    pub fn pop_front(&mut self, key: DeviceKey) -> Option<T> {
        let mut taken = None;
        self.retain(key, |&item| {
            let oldest = taken.is_none();
            if oldest {
                taken = Some(item);
            }
            !oldest
        });
        taken
    }

    /// Keep only the items of `key` that `keep` accepts, in their order; returns how many
    /// were dropped.
    pub fn retain(&mut self, key: DeviceKey, mut keep: impl FnMut(&T) -> bool) -> usize {
        let k = u64::from(key.0);
        let Some(head) = self.heads.get_mut(k) else { return 0 };
        // A device in the table holds a first item.
        head.first = head.first.filter(|item| keep(item));
        let mut dropped = usize::from(head.first.is_none());
        if head.more > 0 {
            let list = &mut self.more[head.more as usize - 1];
            let held = list.len();
            list.retain(|item| keep(item));
            dropped += held - list.len();
            if head.first.is_none() && !list.is_empty() {
                head.first = Some(list.remove(0));
            }
            if list.is_empty() {
                self.free.push(head.more - 1);
                head.more = 0;
            }
        }
        self.len -= dropped;
        if head.first.is_none() {
            self.heads.remove(k);
        }
        dropped
    }

    /// Call `f` on each item of `key`, in order, which it may change.
    pub fn for_each_mut(&mut self, key: DeviceKey, mut f: impl FnMut(&mut T)) {
        let Some(head) = self.heads.get_mut(u64::from(key.0)) else { return };
        if let Some(first) = head.first.as_mut() {
            f(first);
        }
        if head.more > 0 {
            self.more[head.more as usize - 1].iter_mut().for_each(f);
        }
    }

    /// Take every item of `key`, in order.
    pub fn take(&mut self, key: DeviceKey) -> Vec<T> {
        let Some(head) = self.heads.remove(u64::from(key.0)) else { return Vec::new() };
        let mut items: Vec<T> = head.first.into_iter().collect();
        if head.more > 0 {
            let list = &mut self.more[head.more as usize - 1];
            items.append(list);
            self.free.push(head.more - 1);
        }
        self.len -= items.len();
        items
    }

    fn more_of(&self, head: &Head<T>) -> Option<&Vec<T>> {
        (head.more > 0).then(|| &self.more[head.more as usize - 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model of the holding: a map of vectors.
    type Model = std::collections::BTreeMap<u32, Vec<u32>>;

    fn check(held: &Held<u32>, model: &Model) {
        for key in 0..8 {
            let expected = model.get(&key).cloned().unwrap_or_default();
            assert_eq!(held.count(DeviceKey(key)), expected.len(), "device {key}");
            let mut seen = Vec::new();
            held.clone().for_each_mut(DeviceKey(key), |x| seen.push(*x));
            assert_eq!(seen, expected, "device {key}");
        }
        assert_eq!(held.len(), model.values().map(Vec::len).sum::<usize>());
    }

    #[test]
    fn random_operations_agree_with_a_map_of_vectors() {
        let mut x = 0x5eed_4e1du64;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n) as u32
        };
        let (mut held, mut model) = (Held::<u32>::default(), Model::new());
        for step in 0..20_000u32 {
            let key = next(8);
            let device = DeviceKey(key);
            match next(10) {
                0..=4 => {
                    let n = held.push(device, step);
                    model.entry(key).or_default().push(step);
                    assert_eq!(n, model[&key].len());
                }
                5 | 6 => {
                    let cut = step.saturating_sub(next(40));
                    held.retain(device, |&v| v % 3 != 0 || v > cut);
                    model.entry(key).or_default().retain(|&v| v % 3 != 0 || v > cut);
                }
                7 => {
                    let expected = model.get_mut(&key).filter(|v| !v.is_empty()).map(|v| v.remove(0));
                    assert_eq!(held.pop_front(device), expected, "step {step}");
                }
                8 => assert_eq!(held.take(device), model.remove(&key).unwrap_or_default(), "step {step}"),
                _ => {
                    held.for_each_mut(device, |v| *v += 1);
                    model.entry(key).or_default().iter_mut().for_each(|v| *v += 1);
                }
            }
            model.retain(|_, v| !v.is_empty());
            if step % 97 == 0 {
                check(&held, &model);
            }
        }
        check(&held, &model);
    }
}
