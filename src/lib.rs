//! The OpenSeek data engine: corpora from `datasets.yaml`, pipelines of stages planned on Apache
//! DataFusion, and SQL over both. `openseek-udfs` holds the row functions; this crate reads, plans,
//! runs, writes and reports.

pub mod catalog;
pub mod cli;
pub mod context;
pub mod io;
pub mod llm;
pub mod pipeline;
pub mod progress;
pub mod report;
pub mod shards;
pub mod sql;
pub mod stages;

pub use openseek_udfs;
