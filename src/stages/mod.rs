//! Corpus-wide stages: those that need every row before deciding about one (near-duplicate removal),
//! or that write one ordered output for the whole corpus (tokenization into shards).

pub mod minhash_dedup;
pub mod tokenize;
pub mod union_find;
pub mod units;
