//! Finding what `substring_dedup` removes: the spans of each document covered by substrings of at least
//! `min_len` symbols that occur more than once in the corpus (`remove_all`), or that occurred before
//! (`keep_first`, in corpus order).
//!
//! The corpus is one text: each document followed by a separator. It is cut into parts of whole
//! documents, each small enough for its suffix array (5 bytes a byte with the text, plus libsais's
//! work space) to fit the memory given; one part needs no merge. With several, every part's suffix array
//! goes to disk, the merge reads them back mapped, and each part is then marked on its own.

use std::io::Write;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use rayon::prelude::*;

use super::bits::Bits;
use super::merge::{CrossFlags, PartView, cross_part_flags};
use super::suffix_array::{Symbol, group_end, group_starts};
use crate::progress::Progress;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Keep the first occurrence in corpus order, remove the later ones.
    KeepFirst,
    /// Remove every occurrence (ExactSubstr's behaviour).
    RemoveAll,
}

impl Policy {
    pub fn name(self) -> &'static str {
        match self {
            Policy::KeepFirst => "keep_first",
            Policy::RemoveAll => "remove_all",
        }
    }
}

#[derive(Debug, Clone)]
pub struct FindOptions {
    pub min_len: usize,
    pub policy: Policy,
    /// The most symbols of one part (a longer document is a part of its own).
    pub max_part_len: usize,
    pub threads: usize,
}

/// Symbols `[start, end)` of document `doc` are to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span {
    pub doc: u32,
    pub start: u32,
    pub end: u32,
}

/// The corpus as one sequence: each document followed by `sep`, which no document contains.
#[derive(Clone, Copy)]
pub struct Corpus<'a, T> {
    pub text: &'a [T],
    /// Each document's first position, then the text's length.
    pub starts: &'a [u64],
    pub sep: T,
    /// Symbols (the separator included) are below this.
    pub alphabet: u32,
}

#[derive(Debug, Default)]
pub struct Found {
    /// Symbols indexed, separators included.
    pub symbols: u64,
    /// In document order, then position; never overlapping or touching.
    pub spans: Vec<Span>,
    pub parts: usize,
    pub seconds_suffix_arrays: f64,
    pub seconds_merge: f64,
    pub seconds_mark: f64,
}

/// The documents of each part: consecutive, each part at most `max_len` symbols unless one document
/// alone is longer. `starts` holds each document's first position, then the text's length.
pub fn plan_parts(starts: &[u64], max_len: usize) -> Vec<Range<usize>> {
    let docs = starts.len().saturating_sub(1);
    let mut parts = Vec::new();
    let mut first = 0;
    for d in 0..docs {
        if d > first && starts[d + 1] - starts[first] > max_len as u64 {
            parts.push(first..d);
            first = d;
        }
    }
    if docs > first {
        parts.push(first..docs);
    }
    parts
}

/// The spans to remove from the documents of `corpus`. `work_dir` holds the parts' suffix arrays while
/// they merge.
pub fn find_repeats<T: Symbol>(
    corpus: &Corpus<'_, T>,
    opts: &FindOptions,
    work_dir: &Path,
    progress: &Progress,
    label: &str,
) -> Result<Found> {
    let Corpus {
        text,
        starts,
        sep,
        alphabet,
    } = *corpus;
    let k = opts.min_len;
    if k == 0 {
        bail!("the minimum length must be at least 1");
    }
    if starts.len() <= 1 {
        return Ok(Found::default());
    }
    let threads = opts.threads.max(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("starting the substring_dedup threads")?;
    let parts = plan_parts(starts, opts.max_part_len);
    let mut found = Found {
        symbols: text.len() as u64,
        parts: parts.len(),
        ..Found::default()
    };
    let bounds = |docs: &Range<usize>| starts[docs.start] as usize..starts[docs.end] as usize;

    if parts.len() <= 1 {
        let t = Instant::now();
        progress.phase(
            format!("{label}: suffix array of {} symbols", text.len()),
            None,
        );
        let sa = T::suffix_array(text, alphabet, threads)?;
        let groups = pool.install(|| group_starts(text, &sa, k, sep));
        found.seconds_suffix_arrays = t.elapsed().as_secs_f64();
        let t = Instant::now();
        progress.phase(format!("{label}: marking repeats"), None);
        let dup = pool.install(|| mark_part(&sa, &groups, None, opts.policy, text.len()));
        drop((sa, groups));
        found.spans = sweep(&dup, 0, starts, 0..starts.len() - 1, k);
        found.seconds_mark = t.elapsed().as_secs_f64();
        return Ok(found);
    }

    // Each part's suffix array, to disk; its groups, kept (a bit a symbol).
    let t = Instant::now();
    std::fs::create_dir_all(work_dir)
        .with_context(|| format!("creating {}", work_dir.display()))?;
    let done = progress.phase(
        format!("{label}: suffix arrays of {} parts", parts.len()),
        Some(parts.len() as u64),
    );
    let mut groups = Vec::with_capacity(parts.len());
    let mut files = Vec::with_capacity(parts.len());
    for (j, docs) in parts.iter().enumerate() {
        let part_text = &text[bounds(docs)];
        let sa = T::suffix_array(part_text, alphabet, threads)
            .with_context(|| format!("suffix array of part {j}"))?;
        groups.push(pool.install(|| group_starts(part_text, &sa, k, sep)));
        let path = work_dir.join(format!("part-{j:04}.sa"));
        write_sa(&path, &sa)?;
        files.push(path);
        done.fetch_add(1, Ordering::Relaxed);
    }
    found.seconds_suffix_arrays = t.elapsed().as_secs_f64();

    // The merge, over the arrays mapped back.
    let t = Instant::now();
    let maps = files
        .iter()
        .map(|f| map_sa(f))
        .collect::<Result<Vec<_>>>()?;
    let views: Vec<PartView<'_>> = parts
        .iter()
        .zip(&maps)
        .zip(&groups)
        .map(|((docs, map), groups)| PartView {
            base: bounds(docs).start,
            sa: sa_of(map),
            groups,
        })
        .collect();
    let done = progress.phase(format!("{label}: merging {} parts", parts.len()), None);
    let (flags, _) = cross_part_flags(text, &views, k, sep, threads, &done);
    found.seconds_merge = t.elapsed().as_secs_f64();

    // Each part marked with what the merge found.
    let t = Instant::now();
    let done = progress.phase(
        format!("{label}: marking repeats"),
        Some(parts.len() as u64),
    );
    for (j, docs) in parts.iter().enumerate() {
        let view = &views[j];
        let len = bounds(docs).len();
        let dup =
            pool.install(|| mark_part(view.sa, view.groups, Some(&flags[j]), opts.policy, len));
        found
            .spans
            .extend(sweep(&dup, view.base, starts, docs.clone(), k));
        done.fetch_add(1, Ordering::Relaxed);
    }
    found.seconds_mark = t.elapsed().as_secs_f64();
    drop(views);
    drop(maps);
    for f in files {
        let _ = std::fs::remove_file(f);
    }
    Ok(found)
}

/// The positions of a part where a k-gram to remove starts, from its groups (and the merge's flags).
fn mark_part(
    sa: &[i32],
    groups: &Bits,
    flags: Option<&CrossFlags>,
    policy: Policy,
    len: usize,
) -> Bits {
    let dup = Bits::new(len);
    const CHUNK: usize = 1 << 16;
    (0..sa.len().div_ceil(CHUNK)).into_par_iter().for_each(|c| {
        let (lo, hi) = (c * CHUNK, ((c + 1) * CHUNK).min(sa.len()));
        for s in groups.ones(lo, hi) {
            let e = group_end(groups, s);
            let (earlier, elsewhere) =
                flags.map_or((false, false), |f| (f.earlier.get(s), f.elsewhere.get(s)));
            let members = &sa[s..e];
            // A group of one with no flag is a k-gram seen once (or no k-gram at all).
            match policy {
                Policy::KeepFirst if earlier => members.iter().for_each(|&m| dup.set(m as usize)),
                Policy::KeepFirst if members.len() > 1 => {
                    let first = *members.iter().min().expect("non-empty");
                    for &m in members.iter().filter(|&&m| m != first) {
                        dup.set(m as usize);
                    }
                }
                Policy::RemoveAll if elsewhere || members.len() > 1 => {
                    members.iter().for_each(|&m| dup.set(m as usize))
                }
                _ => {}
            }
        }
    });
    dup
}

/// The spans covered by the k-grams starting at `dup`'s positions (a part starting at `base`, holding
/// documents `docs`), merged where they overlap or touch. A k-gram never leaves its document.
fn sweep(dup: &Bits, base: usize, starts: &[u64], docs: Range<usize>, k: usize) -> Vec<Span> {
    let mut spans = Vec::new();
    let mut d = docs.start;
    let mut push = |(a, b): (usize, usize)| {
        while starts[d + 1] as usize <= a {
            d += 1;
        }
        let s = starts[d] as usize;
        spans.push(Span {
            doc: d as u32,
            start: (a - s) as u32,
            end: (b - s) as u32,
        });
    };
    let mut current: Option<(usize, usize)> = None;
    for p in dup.ones(0, dup.len()) {
        let p = base + p;
        current = match current {
            Some((a, b)) if p <= b => Some((a, b.max(p + k))),
            other => {
                if let Some(span) = other {
                    push(span);
                }
                Some((p, p + k))
            }
        };
    }
    if let Some(span) = current {
        push(span);
    }
    spans
}

fn write_sa(path: &Path, sa: &[i32]) -> Result<()> {
    let mut f = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    // SAFETY: i32 has no padding and any byte pattern of its size is valid; this reinterprets the slice.
    let bytes = unsafe { std::slice::from_raw_parts(sa.as_ptr().cast::<u8>(), size_of_val(sa)) };
    f.write_all(bytes)
        .and_then(|_| f.flush())
        .with_context(|| format!("writing {}", path.display()))
}

fn map_sa(path: &Path) -> Result<memmap2::Mmap> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: the file is ours, in the stage's work directory, and nothing writes it while mapped.
    unsafe { memmap2::Mmap::map(&f) }.with_context(|| format!("mapping {}", path.display()))
}

fn sa_of(map: &memmap2::Mmap) -> &[i32] {
    // SAFETY: a mapping starts on a page boundary and the file holds whole i32s written by `write_sa`.
    let (head, sa, tail) = unsafe { map.align_to::<i32>() };
    assert!(
        head.is_empty() && tail.is_empty(),
        "a suffix array file holds whole i32s"
    );
    sa
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// Joins documents as the stage does.
    fn join<T: Symbol>(docs: &[Vec<T>], sep: T) -> (Vec<T>, Vec<u64>) {
        let mut text = Vec::new();
        let mut starts = Vec::new();
        for d in docs {
            starts.push(text.len() as u64);
            text.extend_from_slice(d);
            text.push(sep);
        }
        starts.push(text.len() as u64);
        (text, starts)
    }

    /// The reference, by direct comparison of every pair of positions: a symbol goes when it lies in a
    /// substring of at least `k` symbols that also occurs elsewhere (`remove_all`) or earlier in corpus
    /// order (`keep_first`).
    fn brute_force<T: Symbol>(docs: &[Vec<T>], k: usize, policy: Policy) -> Vec<Vec<bool>> {
        let positions: Vec<(usize, usize)> = docs
            .iter()
            .enumerate()
            .flat_map(|(d, doc)| (0..doc.len()).map(move |p| (d, p)))
            .collect();
        let mut removed: Vec<Vec<bool>> = docs.iter().map(|d| vec![false; d.len()]).collect();
        for (i, &(d, p)) in positions.iter().enumerate() {
            for (j, &(e, q)) in positions.iter().enumerate() {
                if i == j || (policy == Policy::KeepFirst && j > i) {
                    continue;
                }
                let common = docs[d][p..]
                    .iter()
                    .zip(&docs[e][q..])
                    .take_while(|(a, b)| a == b)
                    .count();
                if common >= k {
                    removed[d][p..p + common].iter_mut().for_each(|r| *r = true);
                }
            }
        }
        removed
    }

    fn masks(docs: usize, lens: &[usize], spans: &[Span]) -> Vec<Vec<bool>> {
        let mut m: Vec<Vec<bool>> = (0..docs).map(|d| vec![false; lens[d]]).collect();
        for s in spans {
            m[s.doc as usize][s.start as usize..s.end as usize]
                .iter_mut()
                .for_each(|r| *r = true);
        }
        m
    }

    /// Documents over a small alphabet, with pieces of earlier documents copied in so that long repeats
    /// occur within and across documents (and parts).
    fn random_docs(rng: &mut StdRng, alphabet: &[u32]) -> Vec<Vec<u32>> {
        let n = rng.random_range(1..10);
        let mut docs: Vec<Vec<u32>> = Vec::new();
        for _ in 0..n {
            let len = rng.random_range(0..120);
            let mut d: Vec<u32> = (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            for _ in 0..rng.random_range(0..4) {
                let src = if docs.is_empty() || rng.random_bool(0.3) {
                    d.clone()
                } else {
                    docs[rng.random_range(0..docs.len())].clone()
                };
                if src.is_empty() {
                    continue;
                }
                let a = rng.random_range(0..src.len());
                let b = rng.random_range(a..=src.len().min(a + 40));
                let at = rng.random_range(0..=d.len());
                d.splice(at..at, src[a..b].iter().copied());
            }
            docs.push(d);
        }
        docs
    }

    fn check<T: Symbol>(docs: &[Vec<T>], sep: T, alphabet: u32, k: usize, seed: u64) {
        let (text, starts) = join(docs, sep);
        let lens: Vec<usize> = docs.iter().map(Vec::len).collect();
        let dir = tempfile::tempdir().unwrap();
        for policy in [Policy::KeepFirst, Policy::RemoveAll] {
            let expected = brute_force(docs, k, policy);
            for max_part_len in [usize::MAX, 150, 40, 1] {
                for threads in [1, 2] {
                    let opts = FindOptions {
                        min_len: k,
                        policy,
                        max_part_len,
                        threads,
                    };
                    let corpus = Corpus {
                        text: &text,
                        starts: &starts,
                        sep,
                        alphabet,
                    };
                    let found =
                        find_repeats(&corpus, &opts, dir.path(), &Progress::default(), "test")
                            .unwrap();
                    assert_eq!(
                        masks(docs.len(), &lens, &found.spans),
                        expected,
                        "seed {seed}, k {k}, {policy:?}, parts of {max_part_len}, {threads} threads"
                    );
                    assert!(
                        found
                            .spans
                            .windows(2)
                            .all(|w| (w[0].doc, w[0].end) < (w[1].doc, w[1].start))
                    );
                }
            }
        }
    }

    #[test]
    fn matches_brute_force_on_bytes_in_one_part_and_many() {
        for seed in 0..60 {
            let mut rng = StdRng::seed_from_u64(seed);
            let alphabet: Vec<u32> = if seed % 2 == 0 {
                vec![97, 98]
            } else {
                (97..101).collect()
            };
            let docs: Vec<Vec<u8>> = random_docs(&mut rng, &alphabet)
                .into_iter()
                .map(|d| d.into_iter().map(|s| s as u8).collect())
                .collect();
            let k = rng.random_range(1..14);
            check(&docs, 0xff, 256, k, seed);
        }
    }

    #[test]
    fn matches_brute_force_on_tokens() {
        for seed in 100..130 {
            let mut rng = StdRng::seed_from_u64(seed);
            let docs = random_docs(&mut rng, &[0, 7, 300, 301]);
            let k = rng.random_range(2..10);
            check(&docs, 302, 303, k, seed);
        }
    }

    #[test]
    fn parts_hold_whole_documents() {
        let starts = [0, 10, 15, 40, 41, 50];
        assert_eq!(plan_parts(&starts, 20), vec![0..2, 2..3, 3..5]);
        assert_eq!(plan_parts(&starts, 1000), vec![0..5]);
        assert_eq!(plan_parts(&starts, 1), vec![0..1, 1..2, 2..3, 3..4, 4..5]);
        assert!(plan_parts(&[0], 10).is_empty());
    }
}
