//! Pipelines: a YAML file of stages, planned over one `SessionContext` and run restartably.

pub mod plan;
pub mod run;
pub mod sink;
pub mod spec;
pub mod stage;

pub use run::{RunOptions, run_pipeline};
pub use spec::{PipelineSpec, tokenize_pipeline};
