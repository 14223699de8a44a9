//! Near-duplicates of real documents at chosen Jaccard levels, for the MinHash tests and the MinHash
//! quality benchmark (`benches/minhash/quality.rs`): one generator, so that both measure the same
//! kinds of edits.

/// A small deterministic generator (SplitMix64), so the variants are the same on every run.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edit {
    Substitute,
    Insert,
    Delete,
    Reorder,
    HeaderFooter,
}

pub const EDITS: [Edit; 5] = [
    Edit::Substitute,
    Edit::Insert,
    Edit::Delete,
    Edit::Reorder,
    Edit::HeaderFooter,
];

/// The units a variant edits: words for English, characters for Chinese.
pub fn split_units(text: &str, cjk: bool) -> Vec<String> {
    if cjk {
        text.chars().map(String::from).collect()
    } else {
        text.split_whitespace().map(String::from).collect()
    }
}

pub fn join_units(units: &[String], cjk: bool) -> String {
    if cjk { units.concat() } else { units.join(" ") }
}

/// A variant of `text` aiming at Jaccard similarity `target`: units substituted, inserted or deleted
/// (from `donor`, another real document), paragraphs reordered, or a header and a footer added. The
/// true similarity is measured afterwards; the target only spreads the variants over [0, 1].
pub fn variant(
    text: &str,
    donor: &str,
    cjk: bool,
    edit: Edit,
    target: f64,
    rng: &mut Rng,
) -> String {
    let units = split_units(text, cjk);
    let pool = split_units(donor, cjk);
    // A unit edit rate s leaves a 5-gram intact with probability q = (1 − s)^5, and J ≈ q / (2 − q).
    let q = 2.0 * target / (1.0 + target);
    let rate = 1.0 - q.powf(0.2);
    let pick = |rng: &mut Rng| pool[rng.below(pool.len())].clone();
    // Each unit replaced by one of the donor's with probability `p`.
    let substitute = |units: &[String], p: f64, rng: &mut Rng| -> String {
        let out: Vec<String> = units
            .iter()
            .map(|u| if rng.unit() < p { pick(rng) } else { u.clone() })
            .collect();
        join_units(&out, cjk)
    };
    match edit {
        Edit::Substitute => substitute(&units, rate, rng),
        Edit::Insert => {
            let mut out = Vec::with_capacity(units.len() * 2);
            for u in &units {
                out.push(u.clone());
                if rng.unit() < rate {
                    out.push(pick(rng));
                }
            }
            join_units(&out, cjk)
        }
        Edit::Delete => {
            let out: Vec<String> = units
                .iter()
                .filter(|_| rng.unit() >= rate)
                .cloned()
                .collect();
            join_units(&out, cjk)
        }
        Edit::Reorder => {
            let sep = if text.matches("\n\n").count() >= 3 {
                "\n\n"
            } else {
                "\n"
            };
            let mut paras: Vec<&str> = text.split(sep).collect();
            for i in (1..paras.len()).rev() {
                paras.swap(i, rng.below(i + 1));
            }
            // Light substitutions on top, so that reordering covers more than the top bin.
            let reordered = split_units(&paras.join(sep), cjk);
            substitute(&reordered, rate / 3.0, rng)
        }
        Edit::HeaderFooter => {
            // Adding a share h of new units on each side gives J ≈ 1 / (1 + 2h).
            let h = ((1.0 / target.max(0.05) - 1.0) / 2.0).min(4.0);
            let n = ((units.len() as f64) * h) as usize;
            let header: Vec<String> = (0..n).map(|_| pick(rng)).collect();
            let footer: Vec<String> = (0..n).map(|_| pick(rng)).collect();
            let sep = if cjk { "\n" } else { "\n\n" };
            format!(
                "{}{sep}{text}{sep}{}",
                join_units(&header, cjk),
                join_units(&footer, cjk)
            )
        }
    }
}
