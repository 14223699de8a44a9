//! Across parts: which k-gram groups of a part also occur in an earlier part, or in any other.
//!
//! ExactSubstr merges the parts' suffix arrays into one, on one thread, comparing whole suffixes. Here
//! the merge walks groups, not suffixes, compares at most k symbols, and is cut by splitter keys into
//! independent ranges that all cores take in turn: a range holds the same keys in every part, so no
//! group is split between two ranges.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::bits::Bits;
use super::suffix_array::{AHEAD, Symbol, cmp_keys, group_end, is_kgram, key, prefetch};

/// One part as the merge sees it.
pub struct PartView<'a> {
    /// The part's first position in the joined text.
    pub base: usize,
    pub sa: &'a [i32],
    pub groups: &'a Bits,
}

/// What the merge learnt about one part, one bit per group (set at its first suffix-array index).
pub struct CrossFlags {
    /// The group's k-gram occurs in an earlier part.
    pub earlier: Bits,
    /// The group's k-gram occurs in another part.
    pub elsewhere: Bits,
}

/// Flags every group of every part whose k-gram occurs in another part. Returns the flags and the number
/// of ranges the work was cut into; `done` counts the ranges as they finish.
pub fn cross_part_flags<T: Symbol>(
    text: &[T],
    parts: &[PartView<'_>],
    k: usize,
    sep: T,
    threads: usize,
    done: &AtomicU64,
) -> (Vec<CrossFlags>, usize) {
    let flags: Vec<CrossFlags> = parts
        .iter()
        .map(|p| CrossFlags {
            earlier: Bits::new(p.sa.len()),
            elsewhere: Bits::new(p.sa.len()),
        })
        .collect();
    let bounds = range_bounds(text, parts, k, sep, threads * 16);
    let ranges = bounds.len() - 1;
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                loop {
                    let r = next.fetch_add(1, Ordering::Relaxed);
                    if r >= ranges {
                        return;
                    }
                    merge_range(text, parts, &bounds[r], &bounds[r + 1], k, sep, &flags);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    (flags, ranges)
}

/// Suffix-array indices, per part, where each range starts (and, last, where all end): the lower
/// bounds of splitter keys taken at even steps of the largest part.
fn range_bounds<T: Symbol>(
    text: &[T],
    parts: &[PartView<'_>],
    k: usize,
    sep: T,
    ranges: usize,
) -> Vec<Vec<usize>> {
    let largest = parts
        .iter()
        .max_by_key(|p| p.sa.len())
        .expect("at least one part");
    let n = largest.sa.len();
    let ranges = ranges.clamp(1, n.max(1));
    let mut bounds = vec![vec![0; parts.len()]];
    for c in 1..ranges {
        let splitter = largest.base + largest.sa[n * c / ranges] as usize;
        let row: Vec<usize> = parts
            .iter()
            .map(|p| {
                p.sa.partition_point(|&x| {
                    cmp_keys(text, p.base + x as usize, splitter, k, sep).is_lt()
                })
            })
            .collect();
        bounds.push(row);
    }
    bounds.push(parts.iter().map(|p| p.sa.len()).collect());
    bounds
}

/// The first group at or after index `from` (below `end`) of `part` whose suffixes start with a k-gram.
fn next_group<T: Symbol>(
    text: &[T],
    part: &PartView<'_>,
    from: usize,
    end: usize,
    k: usize,
    sep: T,
) -> Option<usize> {
    let mut at = from;
    loop {
        let s = part.groups.next_set(at, end)?;
        // Groups of two or more share a k-gram by construction; one suffix alone may not start one.
        if group_end(part.groups, s) - s > 1
            || is_kgram(text, part.base + part.sa[s] as usize, k, sep)
        {
            return Some(s);
        }
        at = s + 1;
    }
}

/// Merges one range: the heads of all parts advance group by group in key order, and the groups whose
/// key is at the head of two parts or more at once are flagged.
fn merge_range<T: Symbol>(
    text: &[T],
    parts: &[PartView<'_>],
    lo: &[usize],
    hi: &[usize],
    k: usize,
    sep: T,
    flags: &[CrossFlags],
) {
    let mut heads: Vec<Option<usize>> = parts
        .iter()
        .enumerate()
        .map(|(j, p)| next_group(text, p, lo[j], hi[j], k, sep))
        .collect();
    let pos = |j: usize, s: usize| parts[j].base + parts[j].sa[s] as usize;
    let mut equal: Vec<usize> = Vec::with_capacity(parts.len());
    loop {
        // The parts whose head holds the least k-gram.
        equal.clear();
        let mut least: Option<&[T]> = None;
        for (j, h) in heads.iter().enumerate() {
            let Some(s) = *h else { continue };
            let p = pos(j, s);
            let gram = &text[p..p + k];
            match least.map(|l| gram.cmp(l)) {
                None | Some(std::cmp::Ordering::Less) => {
                    least = Some(gram);
                    equal.clear();
                    equal.push(j);
                }
                Some(std::cmp::Ordering::Equal) => equal.push(j),
                Some(std::cmp::Ordering::Greater) => {}
            }
        }
        if least.is_none() {
            return;
        }
        debug_assert!(equal.iter().all(|&j| {
            let p = pos(j, heads[j].expect("head"));
            key(text, p, k, sep).len() == k
        }));
        if equal.len() > 1 {
            for (i, &j) in equal.iter().enumerate() {
                let s = heads[j].expect("head");
                flags[j].elsewhere.set(s);
                if i > 0 {
                    flags[j].earlier.set(s);
                }
            }
        }
        for &j in &equal {
            let s = heads[j].expect("head");
            heads[j] = next_group(
                text,
                &parts[j],
                group_end(parts[j].groups, s),
                hi[j],
                k,
                sep,
            );
            if let Some(&ahead) = heads[j].and_then(|s| parts[j].sa.get(s + AHEAD)) {
                prefetch(text, parts[j].base + ahead as usize);
            }
        }
    }
}
