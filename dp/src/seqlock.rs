//! A seqlock over a fixed group of atomic words, in safe Rust: the building block of the tables
//! all workers share ([`crate::expect`], [`crate::names`]).
//!
//! - A writer claims the cell by moving its even sequence number to odd with a compare-exchange
//!   (so writers never wait for each other: a lost race is reported and the caller tries again
//!   or elsewhere), issues a release fence, stores the words, and publishes with the next even
//!   number (release).
//! - A reader loads the sequence number (acquire), the words (relaxed), issues an acquire fence
//!   and loads the number again: an odd or changed number means the copy may be torn and is
//!   discarded (after H.-J. Boehm, "Can seqlocks get along with programming language memory
//!   models?", 2012).
//!
//! Nothing allocates, nothing blocks: a reader gives up after [`READ_RETRIES`] attempts on a
//! cell a writer keeps busy.

use std::sync::atomic::{fence, AtomicU64, Ordering};

/// Times a reader retries a cell a writer holds before giving up.
pub const READ_RETRIES: usize = 16;

/// `N` words under one sequence number.
pub struct SeqCell<const N: usize> {
    seq: AtomicU64,
    w: [AtomicU64; N],
}

impl<const N: usize> Default for SeqCell<N> {
    fn default() -> Self {
        SeqCell { seq: AtomicU64::new(0), w: std::array::from_fn(|_| AtomicU64::new(0)) }
    }
}

impl<const N: usize> SeqCell<N> {
    /// A consistent copy of the first `M` words (`M` ≤ `N`) and the sequence number it was read
    /// at; `None` when a writer kept the cell busy.
    pub fn read<const M: usize>(&self) -> Option<(u64, [u64; M])> {
        for _ in 0..READ_RETRIES {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let mut w = [0u64; M];
            for (dst, src) in w.iter_mut().zip(&self.w) {
                *dst = src.load(Ordering::Relaxed);
            }
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s1 {
                return Some((s1, w));
            }
        }
        None
    }

    /// Writes `words` over the first words (all of them, or only a prefix, e.g. to clear a
    /// tag) if the cell is still at sequence `seq` (from [`Self::read`]); false when another
    /// writer got there first.
    pub fn write(&self, seq: u64, words: &[u64]) -> bool {
        self.write_then(seq, words, || {})
    }

    /// As [`Self::write`], and runs `during` while the cell is still claimed (before the new
    /// words are published): stores it makes to other atomics are ordered between this write
    /// and the next writer's, and visible to whoever reads the published words.
    pub fn write_then(&self, seq: u64, words: &[u64], during: impl FnOnce()) -> bool {
        if self.seq.compare_exchange(seq, seq.wrapping_add(1), Ordering::Acquire, Ordering::Relaxed).is_err() {
            return false;
        }
        fence(Ordering::Release);
        for (dst, src) in self.w.iter().zip(words) {
            dst.store(*src, Ordering::Relaxed);
        }
        during();
        self.seq.store(seq.wrapping_add(2), Ordering::Release);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_needs_the_sequence_it_read() {
        let c = SeqCell::<3>::default();
        let (s, w) = c.read::<3>().unwrap();
        assert_eq!((s, w), (0, [0, 0, 0]));
        assert!(c.write(s, &[1, 2, 3]));
        assert!(!c.write(s, &[9]), "a stale sequence must not write");
        let (s2, w) = c.read::<2>().unwrap();
        assert_eq!((s2, w), (2, [1, 2]));
        assert!(c.write(s2, &[7]));
        assert_eq!(c.read::<3>().unwrap().1, [7, 2, 3], "a prefix write keeps the rest");
    }
}
