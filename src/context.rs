//! The one `SessionContext` builder: every UDF and every dataset of the catalog. `run`, `sql` and the
//! tests all start here.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use datafusion::execution::config::SessionConfig;
use datafusion::prelude::SessionContext;
use openseek_udfs::{Lexicon, Lexicons};

use crate::catalog::Catalog;
use crate::io::{CorpusTable, OnError, ReadStats, RejectSink};
use crate::pipeline::stage::LexiconKind;

pub struct Engine {
    pub ctx: SessionContext,
    pub lexicons: Lexicons,
}

impl Engine {
    /// A context with all OpenSeek UDFs; `partitions` defaults to the number of cores.
    pub fn new(partitions: Option<usize>) -> Self {
        let mut config = SessionConfig::new().with_information_schema(true);
        if let Some(p) = partitions {
            config = config.with_target_partitions(p.max(1));
        }
        let ctx = SessionContext::new_with_config(config);
        let lexicons = Lexicons::default();
        for udf in openseek_udfs::all_udfs(&lexicons) {
            ctx.register_udf(udf);
        }
        ctx.register_udtf(
            "repeated_spans",
            Arc::new(crate::stages::substring_dedup::repeated_spans::RepeatedSpansFunc),
        );
        Self { ctx, lexicons }
    }

    /// Registers every dataset of the catalog that has files here, as a table named after it (`-` and
    /// `.` become `_`). Returns the names of those skipped for lack of files.
    pub fn register_catalog(
        &self,
        catalog: &Catalog,
        sink: Arc<dyn RejectSink>,
    ) -> Result<Vec<String>> {
        let mut absent = Vec::new();
        for name in catalog.datasets.keys() {
            if catalog.files(name)?.is_empty() {
                absent.push(name.clone());
                continue;
            }
            let spec = catalog.source(name, OnError::Reject, false)?;
            let table =
                CorpusTable::try_new(spec, Arc::clone(&sink), Arc::new(ReadStats::default()))
                    .with_context(|| format!("opening dataset {name}"))?;
            self.ctx
                .register_table(Catalog::table_name(name).as_str(), Arc::new(table))?;
        }
        Ok(absent)
    }

    /// Reads a lexicon file into the registry of its kind, under its path.
    pub fn load_lexicon(&self, kind: LexiconKind, path: &str) -> Result<()> {
        let contents = std::fs::read_to_string(Path::new(path))
            .with_context(|| format!("reading lexicon {path}"))?;
        let lexicon = Lexicon::parse(&contents).with_context(|| format!("lexicon {path}"))?;
        let registry = match kind {
            LexiconKind::Flagged => &self.lexicons.flagged,
            LexiconKind::Stopwords => &self.lexicons.stopwords,
        };
        registry.insert(path, lexicon);
        Ok(())
    }
}
