//! Printing result tables the way pandas prints DataFrames, and as pandas'
//! `to_json(orient="split")`.
//!
//! A result table is an Arrow batch whose first column is the index (e.g.
//! `count, mean, ...` for describe). Float columns are formatted per column
//! as pandas does: fixed `%.6f` with trailing zeros trimmed equally across
//! the column, switching to `%.6e` when the column has values >= 1e6 that
//! would print too wide, or non-zero values below 1e-6.

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type};
use arrow_array::{Array, RecordBatch};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::DataType;
use serde_json::{json, Value};

const PRECISION: usize = 6;

/// Format one float column's values like pandas.
fn format_floats(values: &[Option<f64>]) -> Vec<String> {
    let finite: Vec<f64> = values
        .iter()
        .flatten()
        .copied()
        .filter(|v| v.is_finite())
        .collect();
    let fixed: Vec<String> = finite.iter().map(|v| format!("{v:.PRECISION$}")).collect();
    let too_long = fixed.iter().map(|s| s.len()).max().unwrap_or(0) > PRECISION + 6;
    let large = finite.iter().any(|v| v.abs() >= 1e6);
    let small = finite
        .iter()
        .any(|v| *v != 0.0 && v.abs() < 10f64.powi(-(PRECISION as i32)));
    let scientific = small || (too_long && large);
    let mut out: Vec<Option<String>> = values
        .iter()
        .map(|v| match v {
            Some(v) if v.is_finite() => Some(if scientific {
                pandas_exp(*v)
            } else {
                format!("{v:.PRECISION$}")
            }),
            _ => None,
        })
        .collect();
    if !scientific {
        // Trim trailing zeros while every value ends in '0', keeping one decimal.
        loop {
            let all = out
                .iter()
                .flatten()
                .all(|s| s.ends_with('0') && !s.ends_with(".0"));
            if !all || out.iter().flatten().next().is_none() {
                break;
            }
            for s in out.iter_mut().flatten() {
                s.pop();
            }
        }
    }
    out.into_iter()
        .zip(values)
        .map(|(s, v)| match (s, v) {
            (Some(s), _) => s,
            (None, Some(v)) if v.is_infinite() => if *v > 0.0 { "inf" } else { "-inf" }.to_string(),
            _ => "NaN".to_string(),
        })
        .collect()
}

/// `1.371894e+09` as C's `%.6e` prints it.
fn pandas_exp(v: f64) -> String {
    let s = format!("{v:.PRECISION$e}");
    match s.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

fn column_strings(array: &dyn Array) -> Vec<String> {
    match array.data_type() {
        DataType::Float64 => format_floats(
            &array
                .as_primitive::<Float64Type>()
                .iter()
                .collect::<Vec<_>>(),
        ),
        DataType::Float32 => format_floats(
            &array
                .as_primitive::<Float32Type>()
                .iter()
                .map(|v| v.map(f64::from))
                .collect::<Vec<_>>(),
        ),
        dt => {
            let options = FormatOptions::default().with_null("NaN");
            let mut values: Vec<String> = match ArrayFormatter::try_new(array, &options) {
                Ok(f) => (0..array.len()).map(|i| f.value(i).to_string()).collect(),
                Err(_) => vec![String::new(); array.len()],
            };
            // Timestamps that are all midnight are dates: print YYYY-MM-DD.
            let midnight = |s: &String| s.ends_with("T00:00:00") || s == "NaN";
            if matches!(dt, DataType::Timestamp(_, None)) && values.iter().all(midnight) {
                for v in values.iter_mut() {
                    v.truncate(v.len().min(10));
                }
            }
            values
        }
    }
}

/// A table printed like pandas: index left-aligned, columns right-aligned,
/// two spaces between columns. `index_columns` leading columns form the index.
pub fn pandas_table(batch: &RecordBatch, index_columns: usize) -> String {
    let schema = batch.schema();
    let cols: Vec<Vec<String>> = batch.columns().iter().map(|c| column_strings(c)).collect();
    let rows = batch.num_rows();
    let mut widths: Vec<usize> = schema
        .fields()
        .iter()
        .zip(&cols)
        .map(|(f, c)| {
            c.iter()
                .map(|s| s.len())
                .max()
                .unwrap_or(0)
                .max(f.name().len())
        })
        .collect();
    for w in widths.iter_mut().take(index_columns) {
        *w = (*w).max(1);
    }
    let mut out = String::new();
    let header: Vec<String> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if i < index_columns {
                " ".repeat(widths[i])
            } else {
                format!("{:>w$}", f.name(), w = widths[i])
            }
        })
        .collect();
    out.push_str(header.join("  ").trim_end());
    out.push('\n');
    if index_columns > 0
        && schema.fields()[..index_columns]
            .iter()
            .any(|f| !f.name().is_empty())
    {
        let names: Vec<String> = schema.fields()[..index_columns]
            .iter()
            .enumerate()
            .map(|(i, f)| format!("{:<w$}", f.name(), w = widths[i]))
            .collect();
        out.push_str(names.join("  ").trim_end());
        out.push('\n');
    }
    for r in 0..rows {
        let line: Vec<String> = cols
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i < index_columns {
                    format!("{:<w$}", c[r], w = widths[i])
                } else {
                    format!("{:>w$}", c[r], w = widths[i])
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn json_value(array: &dyn Array, row: usize) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    match array.data_type() {
        DataType::Float64 => {
            let v = array.as_primitive::<Float64Type>().value(row);
            if v.is_finite() {
                json!(v)
            } else {
                Value::Null
            }
        }
        DataType::Float32 => {
            let v = array.as_primitive::<Float32Type>().value(row) as f64;
            if v.is_finite() {
                json!(v)
            } else {
                Value::Null
            }
        }
        dt if dt.is_integer() => {
            let s = arrow_cast::cast(&array.slice(row, 1), &DataType::Int64)
                .ok()
                .map(|a| a.as_primitive::<arrow_array::types::Int64Type>().value(0));
            s.map_or(Value::Null, |v| json!(v))
        }
        DataType::Boolean => json!(array.as_boolean().value(row)),
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 => {
            let text = column_strings(&array.slice(row, 1))
                .pop()
                .unwrap_or_default();
            // Midnight timestamps are dates: print them as YYYY-MM-DD.
            let text = text
                .strip_suffix("T00:00:00")
                .map(str::to_string)
                .unwrap_or(text);
            json!(text)
        }
        _ => json!(column_strings(&array.slice(row, 1))
            .pop()
            .unwrap_or_default()),
    }
}

/// pandas' `to_json(orient="split")`: the first `index_columns` columns form
/// the index (a list of lists when there are several).
pub fn split_json(batch: &RecordBatch, index_columns: usize) -> Value {
    let schema = batch.schema();
    let columns: Vec<&str> = schema.fields()[index_columns..]
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    let index: Vec<Value> = (0..batch.num_rows())
        .map(|r| {
            let keys: Vec<Value> = (0..index_columns)
                .map(|c| json_value(batch.column(c).as_ref(), r))
                .collect();
            if keys.len() == 1 {
                keys.into_iter().next().expect("one key")
            } else {
                Value::Array(keys)
            }
        })
        .collect();
    let data: Vec<Value> = (0..batch.num_rows())
        .map(|r| {
            Value::Array(
                (index_columns..batch.num_columns())
                    .map(|c| json_value(batch.column(c).as_ref(), r))
                    .collect(),
            )
        })
        .collect();
    json!({ "columns": columns, "index": index, "data": data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_like_pandas() {
        assert_eq!(
            format_floats(&[Some(60000.0), Some(12.03456), None]),
            vec!["60000.00000", "12.03456", "NaN"]
        );
        assert_eq!(
            format_floats(&[Some(1_371_894_000.0), Some(12.024)]),
            vec!["1.371894e+09", "1.202400e+01"]
        );
        assert_eq!(format_floats(&[Some(1.5), Some(2.0)]), vec!["1.5", "2.0"]);
        assert_eq!(pandas_exp(1e-7), "1.000000e-07");
    }
}
