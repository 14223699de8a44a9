//! One part of the corpus indexed: its suffix array (libsais, chosen in BENCHMARKS.md "Suffix array
//! construction") and the groups of that array, runs of suffixes that start with the same k-gram.
//!
//! Why k-grams: a symbol lies in a repeated substring of at least k symbols exactly when it lies in a
//! repeated k-gram (the k-grams of a repeat cover it), and it lies in a *later* occurrence of one exactly
//! when it lies in a k-gram that occurred before. So the whole stage needs, for each k-gram of the
//! corpus, only whether it is the first of its kind: the groups of one suffix array answer it within a
//! part, and a merge of the parts' groups ([`super::merge`]) across parts.

use std::cmp::Ordering;

use anyhow::{Result, anyhow, bail};
use libsais::{SuffixArrayConstruction, ThreadCount};
use rayon::prelude::*;

use super::bits::Bits;

/// A symbol of the joined corpus: a byte, or a token id. The separator between documents is a symbol no
/// document contains (0xFF, never in UTF-8; one past the vocabulary for tokens).
pub trait Symbol: Copy + Ord + Eq + Send + Sync + std::fmt::Debug + 'static {
    /// The suffix array of `text`, whose symbols are below `alphabet`.
    fn suffix_array(text: &[Self], alphabet: u32, threads: usize) -> Result<Vec<i32>>;
}

fn thread_count(threads: usize) -> ThreadCount {
    ThreadCount::fixed(threads.clamp(1, u16::MAX as usize) as u16)
}

impl Symbol for u8 {
    fn suffix_array(text: &[u8], _alphabet: u32, threads: usize) -> Result<Vec<i32>> {
        check_len(text.len())?;
        let sa = SuffixArrayConstruction::for_text(text)
            .in_owned_buffer32()
            .multi_threaded(thread_count(threads))
            .run()
            .map_err(|e| anyhow!("libsais: {e}"))?;
        Ok(sa.into_vec())
    }
}

impl Symbol for u32 {
    fn suffix_array(text: &[u32], alphabet: u32, threads: usize) -> Result<Vec<i32>> {
        check_len(text.len())?;
        if alphabet > i32::MAX as u32 {
            bail!("an alphabet of {alphabet} symbols is too large");
        }
        // libsais's large-alphabet entry takes non-negative i32 symbols, in a text it may reorder
        // while it works (and restores): a copy of the part.
        let mut symbols: Vec<i32> = text.iter().map(|&s| s as i32).collect();
        if let Some(&s) = text.iter().find(|&&s| s >= alphabet) {
            bail!("symbol {s} is outside the alphabet of {alphabet}");
        }
        // SAFETY: every symbol was just checked to lie in [0, alphabet).
        let construction = unsafe {
            SuffixArrayConstruction::for_text_mut(&mut symbols)
                .in_owned_buffer32()
                .multi_threaded(thread_count(threads))
                .with_alphabet_size(libsais::suffix_array::AlphabetSize::new(alphabet as i32))
        };
        let sa = construction.run().map_err(|e| anyhow!("libsais: {e}"))?;
        Ok(sa.into_vec())
    }
}

fn check_len(len: usize) -> Result<()> {
    if len > i32::MAX as usize {
        bail!("a part of {len} symbols is over the 2^31 − 1 a 32-bit suffix array holds");
    }
    Ok(())
}

/// Whether the `k` symbols at `p` are a k-gram of one document: inside the text, no separator.
#[inline]
pub fn is_kgram<T: Symbol>(text: &[T], p: usize, k: usize, sep: T) -> bool {
    p + k <= text.len() && !text[p..p + k].contains(&sep)
}

/// Whether `a` and `b` start with the same k-gram of a document.
#[inline]
pub fn same_kgram<T: Symbol>(text: &[T], a: usize, b: usize, k: usize, sep: T) -> bool {
    a + k <= text.len()
        && b + k <= text.len()
        && text[a..a + k] == text[b..b + k]
        && !text[b..b + k].contains(&sep)
}

/// The sort key of the suffix at `p` cut at k symbols or just after its first separator. Keys are in
/// the order of every part's suffix array (a part ends with a separator, so what follows it does not
/// matter), which lets a binary search over one part use positions of another.
#[inline]
pub fn key<T: Symbol>(text: &[T], p: usize, k: usize, sep: T) -> &[T] {
    let w = &text[p..(p + k).min(text.len())];
    match w.iter().position(|&s| s == sep) {
        Some(i) => &w[..=i],
        None => w,
    }
}

#[inline]
pub fn cmp_keys<T: Symbol>(text: &[T], a: usize, b: usize, k: usize, sep: T) -> Ordering {
    key(text, a, k, sep).cmp(key(text, b, k, sep))
}

/// Suffixes ahead of the one being compared whose text is asked for early (see [`prefetch`]).
pub const AHEAD: usize = 16;

/// Starts loading the cache line of `text` at `p`. The suffix array visits the text in random order,
/// one cache miss a suffix; a load started [`AHEAD`] suffixes early overlaps its latency with the
/// comparisons in between. Written by hand: the standard library has no stable prefetch.
#[inline(always)]
pub fn prefetch<T>(text: &[T], p: usize) {
    #[cfg(target_arch = "x86_64")]
    if p < text.len() {
        // SAFETY: a prefetch is a hint that never faults; the address is inside `text`, and SSE is
        // part of every x86_64 target.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                text.as_ptr().add(p).cast::<i8>(),
            )
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (text, p);
}

/// The groups of suffix array `sa` of `text`: bit i is set where suffix `sa[i]` does not share a k-gram
/// with `sa[i - 1]`. Suffixes with a separator in their first k symbols are groups of one.
pub fn group_starts<T: Symbol>(text: &[T], sa: &[i32], k: usize, sep: T) -> Bits {
    let bits = Bits::new(sa.len());
    const CHUNK: usize = 1 << 16;
    sa.par_chunks(CHUNK).enumerate().for_each(|(c, chunk)| {
        let first = c * CHUNK;
        for (j, &p) in chunk.iter().enumerate() {
            let i = first + j;
            if let Some(&ahead) = sa.get(i + AHEAD) {
                prefetch(text, ahead as usize);
            }
            if i == 0 || !same_kgram(text, sa[i - 1] as usize, p as usize, k, sep) {
                bits.set(i);
            }
        }
    });
    bits
}

/// The end (exclusive) of the group that starts at suffix-array index `s`.
#[inline]
pub fn group_end(groups: &Bits, s: usize) -> usize {
    groups.next_set(s + 1, groups.len()).unwrap_or(groups.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_sa<T: Symbol>(text: &[T]) -> Vec<i32> {
        let mut sa: Vec<i32> = (0..text.len() as i32).collect();
        sa.sort_by(|&a, &b| text[a as usize..].cmp(&text[b as usize..]));
        sa
    }

    #[test]
    fn suffix_arrays_match_sorting_for_bytes_and_tokens() {
        let text = "banana\u{ff}ananas\u{ff}".bytes().collect::<Vec<u8>>();
        assert_eq!(u8::suffix_array(&text, 256, 2).unwrap(), naive_sa(&text));
        let tokens: Vec<u32> = vec![5, 3, 5, 3, 9, 1, 5, 3, 5, 9, 2, 9];
        assert_eq!(
            u32::suffix_array(&tokens, 10, 1).unwrap(),
            naive_sa(&tokens)
        );
        assert!(u32::suffix_array(&tokens, 9, 1).is_err());
    }

    #[test]
    fn groups_are_runs_of_one_kgram_without_separators() {
        let text = b"abcab\xffabcx\xff".to_vec();
        let sa = u8::suffix_array(&text, 256, 1).unwrap();
        let g = group_starts(&text, &sa, 3, 0xff);
        // The only repeated 3-gram is "abc" (at 0 and 6).
        let groups: Vec<Vec<i32>> = g
            .ones(0, sa.len())
            .map(|s| sa[s..group_end(&g, s)].to_vec())
            .filter(|m| m.len() > 1)
            .collect();
        assert_eq!(groups, vec![vec![0, 6]]);
        // "ab\xff" at 3 is not a k-gram, so it groups with nothing.
        assert!(!is_kgram(&text, 3, 3, 0xff));
        assert!(is_kgram(&text, 6, 3, 0xff));
    }
}
