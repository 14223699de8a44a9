//! `minhash_jaccard(signature_a, signature_b)`: the share of equal positions of two MinHash signatures,
//! the estimate of their documents' Jaccard similarity; NULL when either is NULL or empty (a text too
//! short for a shingle).

use std::sync::{Arc, LazyLock};

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, GenericListArray};
use arrow::datatypes::{DataType, UInt64Type};
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use crate::args::DOC_SECTION;
use crate::minhash::signature_similarity;
use crate::minhash_signature::signature_type;

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct MinhashJaccardFunc {
    signature: Signature,
}

impl Default for MinhashJaccardFunc {
    fn default() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

static DOC: LazyLock<Documentation> = LazyLock::new(|| {
    Documentation::builder(
        DOC_SECTION,
        "Estimated Jaccard similarity of two documents from their minhash_signature values (the share of \
         equal positions).",
        "minhash_jaccard(signature_a, signature_b)",
    )
    .with_argument("signature_a", "A minhash_signature value.")
    .with_argument("signature_b", "A minhash_signature value of the same configuration.")
    .with_sql_example(
        "SELECT minhash_jaccard(minhash_signature('a b c d e f g'), minhash_signature('a b c d e f h'))",
    )
    .build()
});

impl ScalarUDFImpl for MinhashJaccardFunc {
    fn name(&self) -> &str {
        "minhash_jaccard"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        if args.len() != 2 {
            return plan_err!(
                "minhash_jaccard takes two signatures, got {} arguments",
                args.len()
            );
        }
        for t in args {
            if !matches!(
                t,
                DataType::List(_) | DataType::LargeList(_) | DataType::Null
            ) {
                return plan_err!(
                    "minhash_jaccard: arguments must be minhash_signature lists, got {t}"
                );
            }
        }
        Ok(vec![signature_type(), signature_type()])
    }
    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let a = args.args[0].to_array(n)?;
        let b = args.args[1].to_array(n)?;
        let (a, b): (&GenericListArray<i32>, &GenericListArray<i32>) = (a.as_list(), b.as_list());
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            if a.is_null(i) || b.is_null(i) {
                out.push(None);
                continue;
            }
            let (x, y) = (a.value(i), b.value(i));
            let (x, y) = (
                x.as_primitive::<UInt64Type>(),
                y.as_primitive::<UInt64Type>(),
            );
            if x.is_empty() || y.is_empty() {
                out.push(None);
                continue;
            }
            match signature_similarity(x.values(), y.values()) {
                Some(s) => out.push(Some(s)),
                None => {
                    return exec_err!(
                        "minhash_jaccard: signatures of {} and {} values come from different configurations",
                        x.len(),
                        y.len()
                    );
                }
            }
        }
        let out: ArrayRef = Arc::new(Float64Array::from(out));
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
    use crate::minhash_signature::MinhashSignatureFunc;
    use arrow::datatypes::Field;
    use datafusion::config::ConfigOptions;

    #[test]
    fn equal_similar_and_unrelated() {
        let base = "the whale swam far out into the grey northern sea and the men watched it go";
        let near = "the whale swam far out into the grey northern sea and the boys watched it go";
        let other = "rice prices rose in the spring market as farmers held back their last harvest";
        let sigs = invoke(
            &MinhashSignatureFunc::default(),
            &[Some(base), Some(base), Some(base), None],
            vec![],
        );
        let pairs = invoke(
            &MinhashSignatureFunc::default(),
            &[Some(base), Some(near), Some(other), Some(base)],
            vec![],
        );
        let f = MinhashJaccardFunc::default();
        let field = |n: &str| Arc::new(Field::new(n, signature_type(), true));
        let out = f
            .invoke_with_args(ScalarFunctionArgs {
                args: vec![ColumnarValue::Array(sigs), ColumnarValue::Array(pairs)],
                arg_fields: vec![field("a"), field("b")],
                number_rows: 4,
                return_field: Arc::new(Field::new("j", DataType::Float64, true)),
                config_options: Arc::new(ConfigOptions::default()),
            })
            .unwrap()
            .into_array(4)
            .unwrap();
        let j: Vec<Option<f64>> = out
            .as_primitive::<arrow::datatypes::Float64Type>()
            .iter()
            .collect();
        assert_eq!(j[0], Some(1.0));
        // One word of 17 changed: 12 of the 13 + 13 word 5-grams differ in 5 → true Jaccard 8/18 ≈ 0.44.
        assert!(j[1].unwrap() > 0.2 && j[1].unwrap() < 0.7, "{j:?}");
        assert!(j[2].unwrap() < 0.1, "{j:?}");
        assert_eq!(j[3], None);
    }
}
