//! Validation of client requests against the frames they name, as pure
//! functions: each returns what the job needs or the error the client gets,
//! before any task runs.

use std::sync::Arc;

use arrow_schema::{DataType, Schema, SchemaRef};
use stratus_protocol::messages::{AggFunc, GroupBySpec, Step};

/// The error for a step that needs a persisted frame.
pub fn not_persisted(source: &str) -> String {
    format!(
        "no persisted frame named '{source}': this step runs on a frame in the workers' RAM (stratus persist SOURCE --as {source})"
    )
}

/// A frame name: letters, digits, `_`, `-` and `.`.
pub fn check_frame_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid frame name '{name}': use letters, digits, '_', '-' and '.'"
        ))
    }
}

/// Schema of a frame read with an optional projection and derived by steps.
pub fn frame_schema(
    dataset: &SchemaRef,
    columns: Option<&[String]>,
    steps: &[Step],
) -> Result<SchemaRef, String> {
    let projected = match columns {
        Some(cols) => {
            let mut fields = Vec::with_capacity(cols.len());
            for c in cols {
                let f = dataset
                    .field_with_name(c)
                    .map_err(|_| format!("no column named '{c}' in the source"))?;
                fields.push(f.clone());
            }
            Arc::new(Schema::new(fields))
        }
        None => dataset.clone(),
    };
    stratus_plan::steps_schema(&projected, steps).map_err(|e| e.to_string())
}

/// The columns `describe` covers (every numeric one by default) with their
/// types; a named column that is missing or not a number is an error.
pub fn describe_columns(
    schema: &Schema,
    source: &str,
    columns: Option<Vec<String>>,
) -> Result<(Vec<String>, Vec<DataType>), String> {
    let columns = match columns {
        Some(c) => c,
        None => schema
            .fields()
            .iter()
            .filter(|f| stratus_plan::is_numeric(f.data_type()))
            .map(|f| f.name().clone())
            .collect(),
    };
    let mut types = Vec::with_capacity(columns.len());
    for c in &columns {
        match schema.field_with_name(c) {
            Ok(f) if stratus_plan::is_numeric(f.data_type()) => types.push(f.data_type().clone()),
            Ok(f) => {
                return Err(format!(
                    "describe: column '{c}' is {}, not a number",
                    f.data_type()
                ))
            }
            Err(_) => return Err(format!("describe: no column named '{c}' in '{source}'")),
        }
    }
    if columns.is_empty() {
        return Err(format!("describe: '{source}' has no numeric columns"));
    }
    Ok((columns, types))
}

/// A group-by's spec: `aggs`, plus `all_numeric`'s function over every
/// eligible non-key column (pandas: `count()` covers every column, the
/// others numeric ones), checked against the schema.
pub fn groupby_spec(
    schema: &SchemaRef,
    source: &str,
    keys: Vec<String>,
    mut aggs: Vec<(String, AggFunc)>,
    all_numeric: Option<AggFunc>,
) -> Result<GroupBySpec, String> {
    if let Some(func) = all_numeric {
        for f in schema.fields() {
            let eligible = func == AggFunc::Count || stratus_plan::is_numeric(f.data_type());
            if eligible && !keys.contains(f.name()) {
                aggs.push((f.name().clone(), func));
            }
        }
    }
    let spec = GroupBySpec { keys, aggs };
    let engine_spec = stratus_engine::groupby::GroupBy {
        keys: spec.keys.clone(),
        aggs: spec
            .aggs
            .iter()
            .map(|(c, f)| stratus_engine::groupby::AggSpec::new(c.clone(), *f))
            .collect(),
    };
    engine_spec
        .partial_schema(schema)
        .map_err(|e| format!("group-by on '{source}': {e}"))?;
    Ok(spec)
}

/// The sort key must be a column of the frame.
pub fn check_sort_key(schema: &Schema, source: &str, by: &str) -> Result<(), String> {
    schema
        .field_with_name(by)
        .map(|_| ())
        .map_err(|_| format!("sort: no column named '{by}' in '{source}'"))
}

/// Every partition column of a write must be a column of the frame.
pub fn check_partition_by(schema: &Schema, source: &str, by: &[String]) -> Result<(), String> {
    match by.iter().find(|c| schema.field_with_name(c).is_err()) {
        Some(missing) => Err(format!(
            "write: '{source}' has no column '{missing}' to partition by"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_schema::Field;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("city", DataType::Utf8, true),
            Field::new("temperature", DataType::Float64, true),
            Field::new("year", DataType::Int32, true),
        ]))
    }

    #[test]
    fn frame_names_are_letters_digits_and_a_few_marks() {
        assert!(check_frame_name("isd_2024-v1.0").is_ok());
        for bad in ["", "a b", "../x", "a/b", "é"] {
            assert!(check_frame_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn describe_takes_numeric_columns_and_names_a_bad_one() {
        let (cols, types) = describe_columns(&schema(), "t", None).unwrap();
        assert_eq!(cols, ["temperature", "year"]);
        assert_eq!(types, [DataType::Float64, DataType::Int32]);
        let err = describe_columns(&schema(), "t", Some(vec!["city".into()])).unwrap_err();
        assert!(err.contains("'city' is Utf8"), "{err}");
        let err = describe_columns(&schema(), "t", Some(vec!["nope".into()])).unwrap_err();
        assert!(err.contains("no column named 'nope' in 't'"), "{err}");
        let only_text = Schema::new(vec![Field::new("city", DataType::Utf8, true)]);
        assert!(describe_columns(&only_text, "t", None)
            .unwrap_err()
            .contains("no numeric columns"));
    }

    #[test]
    fn groupby_all_numeric_skips_keys_and_text_except_for_count() {
        let mean = groupby_spec(
            &schema(),
            "t",
            vec!["year".into()],
            vec![],
            Some(AggFunc::Mean),
        )
        .unwrap();
        assert_eq!(mean.aggs, vec![("temperature".to_string(), AggFunc::Mean)]);
        let count = groupby_spec(
            &schema(),
            "t",
            vec!["year".into()],
            vec![],
            Some(AggFunc::Count),
        )
        .unwrap();
        assert_eq!(count.aggs.len(), 2);
        let err = groupby_spec(&schema(), "t", vec!["nope".into()], vec![], None).unwrap_err();
        assert!(err.starts_with("group-by on 't'"), "{err}");
    }

    #[test]
    fn sort_and_write_name_the_missing_column() {
        assert!(check_sort_key(&schema(), "t", "year").is_ok());
        assert!(check_sort_key(&schema(), "t", "day")
            .unwrap_err()
            .contains("no column named 'day' in 't'"));
        assert!(check_partition_by(&schema(), "t", &["year".into()]).is_ok());
        assert!(
            check_partition_by(&schema(), "t", &["year".into(), "month".into()])
                .unwrap_err()
                .contains("'month' to partition by")
        );
    }
}
