//! Maximal repeats: every substring of at least k bytes, inside documents, that occurs twice or more
//! and cannot be extended left or right without losing an occurrence, with its occurrences. This is
//! what `repeated_spans` lists; the stage itself needs less (whether each k-gram came before, see
//! [`super::suffix_array`]), which is what lets it work in parts.
//!
//! The lcp-interval walk over a suffix array and its LCP array (both from libsais), as in Abouelhoda,
//! Kurtz and Ohlebusch, "Replacing suffix trees with enhanced suffix arrays" (2004): each interval of
//! suffixes sharing a prefix longer than their neighbours share is a right-maximal repeat; it is
//! left-maximal when its suffixes are not all preceded by the same byte.

use anyhow::{Result, anyhow, bail};
use libsais::{SuffixArrayConstruction, ThreadCount};
use rayon::prelude::*;

use super::bits::Bits;
use super::find::Corpus;

/// A repeat of `len` bytes at the positions `sa[lb..=rb]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repeat {
    pub len: u32,
    pub lb: u32,
    pub rb: u32,
}

impl Repeat {
    pub fn occurrences(&self) -> u64 {
        u64::from(self.rb - self.lb) + 1
    }
}

pub struct Repeats {
    /// The suffix array the repeats point into.
    pub sa: Vec<i32>,
    pub repeats: Vec<Repeat>,
}

/// The maximal repeats of at least `k` bytes of `corpus`, which must fit one 32-bit suffix array.
/// Memory: 13 bytes a byte while the LCP array is built, 9 after.
pub fn maximal_repeats(corpus: &Corpus<'_, u8>, k: usize, threads: usize) -> Result<Repeats> {
    let text = corpus.text;
    let (n, sep, starts) = (text.len(), corpus.sep, corpus.starts);
    if n > i32::MAX as usize {
        bail!("{n} bytes are over the 2^31 − 1 a 32-bit suffix array holds");
    }
    if n == 0 {
        return Ok(Repeats {
            sa: Vec::new(),
            repeats: Vec::new(),
        });
    }
    let threads = ThreadCount::fixed(threads.clamp(1, u16::MAX as usize) as u16);
    let (sa, mut lcp, _, _) = SuffixArrayConstruction::for_text(text)
        .in_owned_buffer32()
        .multi_threaded(threads)
        .run()
        .map_err(|e| anyhow!("libsais: {e}"))?
        .plcp_construction()
        .multi_threaded(threads)
        .run()
        .map_err(|e| anyhow!("libsais: {e}"))?
        .lcp_construction()
        .multi_threaded(threads)
        .run()
        .map_err(|e| anyhow!("libsais: {e}"))?
        .into_parts();

    // No repeat crosses a separator: each LCP is cut at the end of its suffix's document (two
    // suffixes that share a separator share it at the same offset, so cutting one cuts both).
    lcp.par_iter_mut().enumerate().for_each(|(i, l)| {
        let p = sa[i] as usize;
        let d = starts.partition_point(|&s| s as usize <= p) - 1;
        let end = starts[d + 1] as usize - 1;
        *l = (*l).min((end - p) as i32);
    });
    // Where the byte before a suffix differs from the one before its neighbour, or where either is a
    // document start (a start extends to the left as nothing else does).
    let before = |j: usize| -> Option<u8> {
        let p = sa[j] as usize;
        (p > 0 && text[p - 1] != sep).then(|| text[p - 1])
    };
    let differs = Bits::new(n);
    (1..n).into_par_iter().for_each(|j| {
        let c = before(j);
        if c.is_none() || c != before(j - 1) {
            differs.set(j);
        }
    });

    let mut repeats = Vec::new();
    let mut stack: Vec<(i32, usize)> = vec![(0, 0)];
    // Index n closes every open interval.
    for (i, &h) in lcp.iter().chain([&0]).enumerate().skip(1) {
        let mut lb = i - 1;
        while h < stack.last().expect("the root stays").0 {
            let (len, b) = stack.pop().expect("checked");
            let rb = i - 1;
            if len as usize >= k && differs.next_set(b + 1, rb + 1).is_some() {
                repeats.push(Repeat {
                    len: len as u32,
                    lb: b as u32,
                    rb: rb as u32,
                });
            }
            lb = b;
        }
        if h > stack.last().expect("the root stays").0 {
            stack.push((h, lb));
        }
    }
    Ok(Repeats { sa, repeats })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// Every substring of at least `k` bytes inside a document with two occurrences or more, kept when
    /// no one-byte extension to either side keeps all its occurrences: (text, occurrences).
    fn brute_force(docs: &[&[u8]], k: usize) -> BTreeSet<(Vec<u8>, usize)> {
        let mut at: BTreeMap<&[u8], Vec<(usize, usize)>> = BTreeMap::new();
        for (d, doc) in docs.iter().enumerate() {
            for a in 0..doc.len() {
                for b in a + k..=doc.len() {
                    at.entry(&doc[a..b]).or_default().push((d, a));
                }
            }
        }
        let mut out = BTreeSet::new();
        for (w, occ) in &at {
            if occ.len() < 2 {
                continue;
            }
            let side = |left: bool| -> bool {
                let first = occ.iter().map(|&(d, a)| {
                    let doc = docs[d];
                    if left {
                        (a > 0).then(|| doc[a - 1])
                    } else {
                        doc.get(a + w.len()).copied()
                    }
                });
                let v: Vec<Option<u8>> = first.collect();
                v.iter().any(Option::is_none) || v.iter().any(|c| *c != v[0])
            };
            if side(true) && side(false) {
                out.insert((w.to_vec(), occ.len()));
            }
        }
        out
    }

    #[test]
    fn matches_brute_force() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        for seed in 0..200 {
            let mut rng = StdRng::seed_from_u64(seed);
            let docs: Vec<Vec<u8>> = (0..rng.random_range(1..6))
                .map(|_| {
                    (0..rng.random_range(0..40))
                        .map(|_| b"abc"[rng.random_range(0..if seed % 2 == 0 { 2 } else { 3 })])
                        .collect()
                })
                .collect();
            let refs: Vec<&[u8]> = docs.iter().map(Vec::as_slice).collect();
            let k = rng.random_range(1..6);
            let (mut text, mut starts) = (Vec::new(), Vec::new());
            for d in &docs {
                starts.push(text.len() as u64);
                text.extend_from_slice(d);
                text.push(0xFF);
            }
            starts.push(text.len() as u64);
            let corpus = Corpus {
                text: &text,
                starts: &starts,
                sep: 0xFF,
                alphabet: 256,
            };
            let found = maximal_repeats(&corpus, k, 2).unwrap();
            let got: BTreeSet<(Vec<u8>, usize)> = found
                .repeats
                .iter()
                .map(|r| {
                    let p = found.sa[r.lb as usize] as usize;
                    (
                        text[p..p + r.len as usize].to_vec(),
                        r.occurrences() as usize,
                    )
                })
                .collect();
            assert_eq!(got, brute_force(&refs, k), "seed {seed}, k {k}");
        }
    }
}
