//! `substring_dedup`: exact-substring removal over the whole input with suffix arrays.

pub mod bits;
pub mod find;
pub mod merge;
pub mod suffix_array;
