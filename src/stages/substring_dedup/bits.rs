//! A fixed-size bit set that threads set concurrently: the group starts, cross-part flags and
//! duplicate starts of `substring_dedup`, one bit per suffix or per position, where a `Vec<bool>` would
//! cost eight times the memory.

use std::sync::atomic::{AtomicU64, Ordering};

pub struct Bits {
    words: Vec<AtomicU64>,
    len: usize,
}

impl Bits {
    pub fn new(len: usize) -> Self {
        Self {
            words: (0..len.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            len,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sets bit `i`; safe from any thread (chunks of work meet inside words).
    pub fn set(&self, i: usize) {
        debug_assert!(i < self.len);
        self.words[i / 64].fetch_or(1 << (i % 64), Ordering::Relaxed);
    }

    pub fn get(&self, i: usize) -> bool {
        self.words[i / 64].load(Ordering::Relaxed) & (1 << (i % 64)) != 0
    }

    /// The first set bit in `[from, end)`.
    pub fn next_set(&self, from: usize, end: usize) -> Option<usize> {
        let end = end.min(self.len);
        if from >= end {
            return None;
        }
        let mut w = from / 64;
        let mut word = self.words[w].load(Ordering::Relaxed) & (!0u64 << (from % 64));
        loop {
            if word != 0 {
                let i = w * 64 + word.trailing_zeros() as usize;
                return (i < end).then_some(i);
            }
            w += 1;
            if w * 64 >= end {
                return None;
            }
            word = self.words[w].load(Ordering::Relaxed);
        }
    }

    /// The set bits in `[from, end)`, in increasing order.
    pub fn ones(&self, from: usize, end: usize) -> impl Iterator<Item = usize> + '_ {
        let mut at = from;
        std::iter::from_fn(move || {
            let i = self.next_set(at, end)?;
            at = i + 1;
            Some(i)
        })
    }

    pub fn count_ones(&self) -> u64 {
        self.words
            .iter()
            .map(|w| u64::from(w.load(Ordering::Relaxed).count_ones()))
            .sum()
    }

    /// Heap bytes held.
    pub fn bytes(&self) -> usize {
        self.words.len() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_set_bits_across_words() {
        let b = Bits::new(200);
        for i in [0, 63, 64, 130, 199] {
            b.set(i);
        }
        assert_eq!(
            b.ones(0, 200).collect::<Vec<_>>(),
            vec![0, 63, 64, 130, 199]
        );
        assert_eq!(b.ones(1, 130).collect::<Vec<_>>(), vec![63, 64]);
        assert_eq!(b.next_set(131, 199), None);
        assert_eq!(b.next_set(131, 200), Some(199));
        assert_eq!(b.count_ones(), 5);
        assert!(b.get(130) && !b.get(131));
    }
}
