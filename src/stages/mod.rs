//! Corpus-wide stages: those that need every row before deciding about one (near-duplicate removal),
//! or that write one ordered output for the whole corpus (tokenization into shards), or that stream the
//! whole input through an LLM endpoint (synthesis).

pub mod minhash_dedup;
pub mod substring_dedup;
pub mod synth;
pub mod tag_taxonomy;
pub mod tokenize;
pub mod union_find;
pub mod units;
