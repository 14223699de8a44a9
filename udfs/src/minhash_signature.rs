//! `minhash_signature(text[, unit[, ngram[, bands[, rows[, seed[, normalize]]]]]])`: the MinHash
//! signature of a document, `bands × rows` 64-bit values (datatrove's defaults: 5-grams, 14 × 8), as a
//! list; an empty list for a text too short for one shingle. `minhash_dedup` is built on it, and SQL can
//! use it to look at clusters (`minhash_jaccard`).

use std::sync::{Arc, LazyLock};

use arrow::array::{ArrayRef, ListBuilder, UInt64Builder};
use arrow::datatypes::{DataType, Field};
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use crate::args::{DOC_SECTION, coerce_text_args, literal_i64, literal_str, string_iter};
use crate::minhash::{MinHasher, MinhashConfig};
use crate::text_normalize::Normalization;

/// The type of a signature (and of band keys): a list of non-null `UInt64`.
pub fn signature_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::UInt64, false)))
}

/// A list builder whose field matches [`signature_type`].
pub fn signature_builder(rows: usize, values: usize) -> ListBuilder<UInt64Builder> {
    ListBuilder::with_capacity(UInt64Builder::with_capacity(values), rows)
        .with_field(Field::new_list_field(DataType::UInt64, false))
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct MinhashSignatureFunc {
    signature: Signature,
}

impl Default for MinhashSignatureFunc {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION,
        "MinHash signature (bands × rows UInt64 values) of the normalised text's shingles; empty when the \
         text is shorter than one shingle.",
        "minhash_signature(text[, unit[, ngram[, bands[, rows[, seed[, normalize]]]]]])",
    )
    .with_argument("text", "The document text.")
    .with_argument(
        "unit",
        "'word' (default, datatrove's) or 'char' (for Chinese). The minhash_dedup stage's 'auto' is \
         decided over its whole input and named in its report; give that unit here.",
    )
    .with_argument("ngram", "Units per shingle (default 5).")
    .with_argument("bands", "LSH bands (default 14).")
    .with_argument("rows", "Hashes per band (default 8).")
    .with_argument("seed", "Seed of the shingle hashes (default 1).")
    .with_argument(
        "normalize",
        "'default' (lowercase, digits, punctuation, whitespace, accents, as datatrove), 'none', or a \
         comma-separated list of those steps.",
    )
    .with_sql_example(
        "SELECT a.id, b.id, minhash_jaccard(minhash_signature(a.text), minhash_signature(b.text)) \
         FROM sample_en a, sample_en b WHERE a.id < b.id LIMIT 5",
    )
    .build()
});

/// The config named by the constant arguments after the text.
fn config_from_args(args: &[ColumnarValue]) -> Result<MinhashConfig> {
    const NAME: &str = "minhash_signature";
    let mut c = MinhashConfig::default();
    let int = |i: usize, what: &str| -> Result<Option<i64>> {
        args.get(i).map(|a| literal_i64(NAME, what, a)).transpose()
    };
    if let Some(a) = args.get(1) {
        c.unit = literal_str(NAME, "unit", a)?
            .parse()
            .or_else(|e: String| exec_err!("{NAME}: {e}"))?;
    }
    for (i, what, slot) in [
        (2, "ngram", &mut c.ngram),
        (3, "bands", &mut c.bands),
        (4, "rows", &mut c.rows),
    ] {
        if let Some(v) = int(i, what)? {
            if v < 1 {
                return exec_err!("{NAME}: {what} must be at least 1, got {v}");
            }
            *slot = v as usize;
        }
    }
    if let Some(v) = int(5, "seed")? {
        c.seed = v as u64;
    }
    if let Some(a) = args.get(6) {
        c.normalization = Normalization::parse(literal_str(NAME, "normalize", a)?)
            .or_else(|e| exec_err!("{NAME}: {e}"))?;
    }
    Ok(c)
}

impl ScalarUDFImpl for MinhashSignatureFunc {
    fn name(&self) -> &str {
        "minhash_signature"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        use DataType::{Int64, Utf8};
        coerce_text_args(self.name(), args, &[Utf8, Int64, Int64, Int64, Int64, Utf8])
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(signature_type())
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let config = config_from_args(&args.args)?;
        let hasher = MinHasher::new(config).or_else(|e| exec_err!("{e}"))?;
        let texts = args.args[0].to_array(args.number_rows)?;
        let mut out = signature_builder(texts.len(), texts.len() * hasher.config().hashes());
        for text in string_iter(&texts)? {
            match text {
                None => out.append_null(),
                Some(t) => {
                    if let Some(sig) = hasher.signature(t) {
                        out.values().append_slice(&sig);
                    }
                    out.append(true);
                }
            }
        }
        let out: ArrayRef = Arc::new(out.finish());
        Ok(ColumnarValue::Array(out))
    }
    fn documentation(&self) -> Option<&Documentation> {
        Some(&DOC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::test_util::invoke;
    use arrow::array::{Array, AsArray};
    use datafusion::common::ScalarValue;

    #[test]
    fn signatures_of_a_column() {
        let text = "one two three four five six seven eight nine ten";
        let out = invoke(
            &MinhashSignatureFunc::default(),
            &[Some(text), None, Some("too short")],
            vec![],
        );
        let list = out.as_list::<i32>();
        assert_eq!(list.value(0).len(), 112);
        assert!(list.is_null(1));
        assert_eq!(list.value(2).len(), 0);
        // Explicit arguments: 4 bands of 2 rows over word 3-grams.
        let out = invoke(
            &MinhashSignatureFunc::default(),
            &[Some(text)],
            vec![
                ScalarValue::from("word"),
                ScalarValue::Int64(Some(3)),
                ScalarValue::Int64(Some(4)),
                ScalarValue::Int64(Some(2)),
                ScalarValue::Int64(Some(7)),
                ScalarValue::from("none"),
            ],
        );
        assert_eq!(out.as_list::<i32>().value(0).len(), 8);
    }
}
