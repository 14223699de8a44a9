//! Row stages as DataFusion expressions.
//!
//! A segment of row stages becomes one projection chain over the input, so it streams and runs on every
//! core. Rows are never filtered out inside the chain: each row carries `__os_stage` (the index of the
//! stage that rejected it, NULL while alive), `__os_reason` and `__os_value`, and later stages only
//! evaluate their function on live rows (`CASE WHEN alive THEN f(text) END`). The sink splits the
//! result into output and rejects and counts each stage from these columns, so counts always add up.
//! `__os_bytes_K` holds the text bytes after stage K rewrote the text (K = read for the input).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use arrow::datatypes::DataType;
use datafusion::common::{Column, ScalarValue};
use datafusion::execution::FunctionRegistry;
use datafusion::functions::expr_fn::octet_length;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    cast, col, lit, when,
};
use datafusion::prelude::{DataFrame, SessionContext};

use super::stage::{Stage, StageKind};

pub const STAGE_COL: &str = "__os_stage";
pub const REASON_COL: &str = "__os_reason";
pub const VALUE_COL: &str = "__os_value";
const TMP_VALUE: &str = "__os_v";

/// The column holding text bytes after stage `idx` (`None` = as read).
pub fn bytes_col(idx: Option<usize>) -> String {
    match idx {
        None => "__os_bytes_in".to_string(),
        Some(i) => format!("__os_bytes_{i}"),
    }
}

pub fn is_internal(name: &str) -> bool {
    name.starts_with("__os_")
}

/// Bytes of the text as Int64 (`octet_length` gives Int32 for Utf8).
fn text_bytes() -> Expr {
    cast(octet_length(column("text")), DataType::Int64)
}

fn column(name: &str) -> Expr {
    Expr::Column(Column::from_name(name))
}

/// Adds the bookkeeping columns to a DataFrame of documents.
pub fn start(df: DataFrame) -> Result<DataFrame> {
    Ok(df
        .with_column(STAGE_COL, lit(ScalarValue::Int32(None)))?
        .with_column(REASON_COL, lit(ScalarValue::Utf8(None)))?
        .with_column(VALUE_COL, lit(ScalarValue::Float64(None)))?
        .with_column(&bytes_col(None), text_bytes())?)
}

/// Applies row stages `stages` (with their pipeline indexes) to `df`. `timers` receives, per stage, the
/// nanoseconds spent inside its function.
pub fn apply(
    ctx: &SessionContext,
    mut df: DataFrame,
    stages: &[(usize, &Stage)],
    timers: &[Arc<AtomicU64>],
) -> Result<DataFrame> {
    let alive = || column(STAGE_COL).is_null();
    for (&(idx, stage), timer) in stages.iter().zip(timers) {
        let gate = match &stage.where_ {
            Some(w) => {
                let pred = ctx
                    .parse_sql_expr(w, df.schema())
                    .with_context(|| format!("{}: where: {w}", stage.label))?;
                alive().and(pred)
            }
            None => alive(),
        };
        match &stage.kind {
            StageKind::Filter(f) => {
                let value = timed_call(ctx, f.function, &f.args, timer)?;
                if f.annotate {
                    df = df.with_column(&f.column, when(gate, value).end()?)?;
                    continue;
                }
                let v = when(gate, cast(value, DataType::Float64)).end()?;
                df = df.with_column(TMP_VALUE, v)?;
                let below = f.min.map(|m| column(TMP_VALUE).lt(lit(m)));
                let above = f.max.map(|m| column(TMP_VALUE).gt(lit(m)));
                let fails = match (&below, &above) {
                    (Some(b), Some(a)) => b.clone().or(a.clone()),
                    (Some(b), None) => b.clone(),
                    (None, Some(a)) => a.clone(),
                    (None, None) => lit(false),
                };
                let mut reason =
                    datafusion::logical_expr::conditional_expressions::CaseBuilder::new(
                        None,
                        vec![],
                        vec![],
                        None,
                    );
                if let (Some(b), Some(m)) = (&below, f.min) {
                    reason = reason.when(
                        alive().and(b.clone()),
                        lit(format!("{} < {}", stage.label, fmt_num(m))),
                    );
                }
                if let (Some(a), Some(m)) = (&above, f.max) {
                    reason = reason.when(
                        alive().and(a.clone()),
                        lit(format!("{} > {}", stage.label, fmt_num(m))),
                    );
                }
                let rejected = alive().and(fails);
                let replacements = vec![
                    (
                        STAGE_COL,
                        when(rejected.clone(), lit(idx as i32)).otherwise(column(STAGE_COL))?,
                    ),
                    (REASON_COL, reason.otherwise(column(REASON_COL))?),
                    (
                        VALUE_COL,
                        when(rejected, column(TMP_VALUE)).otherwise(column(VALUE_COL))?,
                    ),
                ];
                df = replace_columns(df, replacements, &[TMP_VALUE])?;
            }
            StageKind::Map(m) => {
                if let Some((col_name, function)) = &m.annotate {
                    let value = timed_call(ctx, function, &m.args, timer)?;
                    df = df.with_column(col_name, when(gate.clone(), value).end()?)?;
                }
                let rewritten = timed_call(ctx, m.function, &m.args, timer)?;
                df = df.with_column("text", when(gate, rewritten).otherwise(column("text"))?)?;
                df = df.with_column(&bytes_col(Some(idx)), when(alive(), text_bytes()).end()?)?;
            }
            StageKind::Sql(_)
            | StageKind::MinhashDedup(_)
            | StageKind::SubstringDedup(_)
            | StageKind::Tokenize(_)
            | StageKind::Synth(_)
            | StageKind::TagTaxonomy(_) => {
                unreachable!("corpus stages split segments")
            }
        }
    }
    Ok(df)
}

/// Replaces some columns in place (keeping their position) and drops others, in one projection.
fn replace_columns(
    df: DataFrame,
    replacements: Vec<(&str, Expr)>,
    drop: &[&str],
) -> Result<DataFrame> {
    let mut repl: std::collections::HashMap<&str, Expr> = replacements.into_iter().collect();
    let exprs: Vec<Expr> = df
        .schema()
        .fields()
        .iter()
        .filter(|f| !drop.contains(&f.name().as_str()))
        .map(|f| match repl.remove(f.name().as_str()) {
            Some(e) => e.alias(f.name()),
            None => column(f.name()),
        })
        .collect();
    Ok(df.select(exprs)?)
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// `function(text, args…)`, through a wrapper that adds the time spent to `timer`.
fn timed_call(
    ctx: &SessionContext,
    function: &str,
    args: &[ScalarValue],
    timer: &Arc<AtomicU64>,
) -> Result<Expr> {
    let udf = ctx
        .udf(function)
        .with_context(|| format!("function {function} is not registered"))?;
    let timed = ScalarUDF::new_from_impl(TimedUdf {
        inner: udf,
        nanos: Arc::clone(timer),
    });
    let mut call_args = vec![col("text")];
    call_args.extend(args.iter().cloned().map(lit));
    Ok(Expr::ScalarFunction(ScalarFunction::new_udf(
        Arc::new(timed),
        call_args,
    )))
}

/// Delegates to a UDF and measures the time spent in it, for the per-stage `seconds` of the report.
#[derive(Debug)]
struct TimedUdf {
    inner: Arc<ScalarUDF>,
    nanos: Arc<AtomicU64>,
}

impl PartialEq for TimedUdf {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner && Arc::ptr_eq(&self.nanos, &other.nanos)
    }
}
impl Eq for TimedUdf {}
impl std::hash::Hash for TimedUdf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.inner.name().hash(state);
        (Arc::as_ptr(&self.nanos) as usize).hash(state);
    }
}

impl ScalarUDFImpl for TimedUdf {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn signature(&self) -> &Signature {
        self.inner.signature()
    }
    fn coerce_types(&self, args: &[DataType]) -> datafusion::common::Result<Vec<DataType>> {
        self.inner.coerce_types(args)
    }
    fn return_type(&self, args: &[DataType]) -> datafusion::common::Result<DataType> {
        self.inner.return_type(args)
    }
    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let t = Instant::now();
        let out = self.inner.invoke_with_args(args);
        self.nanos
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        out
    }
    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}
