//! Corpus-wide stages: those that need every row before deciding about one (near-duplicate removal).

pub mod minhash_dedup;
pub mod union_find;
