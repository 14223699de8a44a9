//! The integration tests, as one test binary: each `tests/*.rs` file would be a binary of its own,
//! linking the whole engine, and a cold build (CI's, on 2 cores) would pay for each.

mod bad_input;
mod cli;
mod common;
mod minhash;
mod opencc_parity;
mod pipelines;
mod scripted_llm;
mod substring;
mod synthesis;
mod tokenize;
