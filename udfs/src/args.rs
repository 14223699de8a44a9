//! Shared plumbing for the UDFs: coercion of the text argument and the loops that map a string column to
//! a numeric or string column, so that each function file holds only its own text logic.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, StringArray};
use arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue, exec_err, plan_err};
use datafusion::logical_expr::{ColumnarValue, DocSection};

/// The documentation section every OpenSeek function is listed under.
pub(crate) const DOC_SECTION: DocSection = DocSection {
    include: true,
    label: "OpenSeek text functions",
    description: Some("Row functions of the OpenSeek data engine: rule filters and text maps."),
};

/// Coerces `(text, extra…)`: the first argument must be a string type (kept as is), the others are cast to
/// the given types. Used from `ScalarUDFImpl::coerce_types` with `Signature::user_defined`.
pub(crate) fn coerce_text_args(
    name: &str,
    args: &[DataType],
    extra: &[DataType],
) -> Result<Vec<DataType>> {
    if args.is_empty() || args.len() > 1 + extra.len() {
        return plan_err!(
            "{name} takes the text and at most {} more argument(s), got {}",
            extra.len(),
            args.len()
        );
    }
    let text = match &args[0] {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => args[0].clone(),
        DataType::Null => DataType::Utf8,
        other => return plan_err!("{name}: the first argument must be a string, got {other}"),
    };
    let mut out = vec![text];
    out.extend(extra.iter().take(args.len() - 1).cloned());
    Ok(out)
}

/// Applies `f` to every non-null string of a string column (or scalar), giving `Float64`.
pub(crate) fn map_to_f64(arg: &ColumnarValue, f: impl Fn(&str) -> f64) -> Result<ColumnarValue> {
    Ok(match arg {
        ColumnarValue::Array(a) => ColumnarValue::Array(Arc::new(Float64Array::from_iter(
            string_iter(a)?.map(|s| s.map(&f)),
        ))),
        ColumnarValue::Scalar(s) => {
            ColumnarValue::Scalar(ScalarValue::Float64(scalar_str(s)?.map(f)))
        }
    })
}

/// As [`map_to_f64`], giving `Int64`.
pub(crate) fn map_to_i64(arg: &ColumnarValue, f: impl Fn(&str) -> i64) -> Result<ColumnarValue> {
    Ok(match arg {
        ColumnarValue::Array(a) => ColumnarValue::Array(Arc::new(Int64Array::from_iter(
            string_iter(a)?.map(|s| s.map(&f)),
        ))),
        ColumnarValue::Scalar(s) => {
            ColumnarValue::Scalar(ScalarValue::Int64(scalar_str(s)?.map(f)))
        }
    })
}

/// As [`map_to_f64`], giving `Utf8`: used by the functions that rewrite the text.
pub(crate) fn map_to_string(
    arg: &ColumnarValue,
    f: impl Fn(&str) -> String,
) -> Result<ColumnarValue> {
    Ok(match arg {
        ColumnarValue::Array(a) => {
            let out: ArrayRef =
                Arc::new(StringArray::from_iter(string_iter(a)?.map(|s| s.map(&f))));
            ColumnarValue::Array(out)
        }
        ColumnarValue::Scalar(s) => ColumnarValue::Scalar(ScalarValue::Utf8(scalar_str(s)?.map(f))),
    })
}

/// The values of any string column (Utf8, LargeUtf8, Utf8View), nulls as `None`.
pub fn string_iter(array: &ArrayRef) -> Result<Box<dyn Iterator<Item = Option<&str>> + '_>> {
    Ok(match array.data_type() {
        DataType::Utf8 => Box::new(array.as_string::<i32>().iter()),
        DataType::LargeUtf8 => Box::new(array.as_string::<i64>().iter()),
        DataType::Utf8View => Box::new(array.as_string_view().iter()),
        DataType::Null => Box::new(std::iter::repeat_n(None, array.len())),
        other => return exec_err!("expected a string column, got {other}"),
    })
}

/// The string inside a string scalar (None for NULL).
pub(crate) fn scalar_str(s: &ScalarValue) -> Result<Option<&str>> {
    match s {
        ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v) => {
            Ok(v.as_deref())
        }
        ScalarValue::Null => Ok(None),
        other => exec_err!("expected a string, got {}", other.data_type()),
    }
}

/// A constant string argument such as a mode or a lexicon name; it must be a literal, not a column.
pub(crate) fn literal_str<'a>(fname: &str, what: &str, arg: &'a ColumnarValue) -> Result<&'a str> {
    match arg {
        ColumnarValue::Scalar(s) => match scalar_str(s)? {
            Some(v) => Ok(v),
            None => exec_err!("{fname}: {what} must not be NULL"),
        },
        ColumnarValue::Array(_) => exec_err!("{fname}: {what} must be a constant, not a column"),
    }
}

/// A constant integer argument, e.g. an n-gram size.
pub(crate) fn literal_i64(fname: &str, what: &str, arg: &ColumnarValue) -> Result<i64> {
    match arg {
        ColumnarValue::Scalar(ScalarValue::Int64(Some(v))) => Ok(*v),
        ColumnarValue::Scalar(s) => match s.cast_to(&DataType::Int64)? {
            ScalarValue::Int64(Some(v)) => Ok(v),
            _ => exec_err!("{fname}: {what} must be an integer"),
        },
        ColumnarValue::Array(_) => exec_err!("{fname}: {what} must be a constant, not a column"),
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::*;
    use datafusion::arrow::datatypes::Field;
    use datafusion::config::ConfigOptions;
    use datafusion::logical_expr::{ScalarFunctionArgs, ScalarUDFImpl};

    /// Calls a UDF on a string column (plus constant arguments) as DataFusion would.
    pub fn invoke(
        udf: &dyn ScalarUDFImpl,
        texts: &[Option<&str>],
        consts: Vec<ScalarValue>,
    ) -> ArrayRef {
        let text: ArrayRef = Arc::new(StringArray::from(texts.to_vec()));
        let mut args = vec![ColumnarValue::Array(text)];
        let mut types = vec![DataType::Utf8];
        for c in consts {
            types.push(c.data_type());
            args.push(ColumnarValue::Scalar(c));
        }
        let arg_fields = types
            .iter()
            .enumerate()
            .map(|(i, t)| Arc::new(Field::new(format!("a{i}"), t.clone(), true)))
            .collect();
        let ret = udf.return_type(&types).unwrap();
        let out = udf
            .invoke_with_args(ScalarFunctionArgs {
                args,
                arg_fields,
                number_rows: texts.len(),
                return_field: Arc::new(Field::new("out", ret, true)),
                config_options: Arc::new(ConfigOptions::default()),
            })
            .unwrap();
        out.into_array(texts.len()).unwrap()
    }

    pub fn f64s(a: &ArrayRef) -> Vec<Option<f64>> {
        a.as_primitive::<arrow::datatypes::Float64Type>()
            .iter()
            .collect()
    }
    pub fn i64s(a: &ArrayRef) -> Vec<Option<i64>> {
        a.as_primitive::<arrow::datatypes::Int64Type>()
            .iter()
            .collect()
    }
    pub fn strs(a: &ArrayRef) -> Vec<Option<String>> {
        a.as_string::<i32>()
            .iter()
            .map(|s| s.map(str::to_string))
            .collect()
    }
}
