//! Evaluating plan expressions and frame steps on Arrow record batches.
//!
//! Every operation works on whole arrays with arrow's compute kernels
//! (arithmetic, comparison, boolean, cast, zip, filter); nothing loops over
//! rows through dynamic dispatch. Types were checked by
//! `stratus_plan::steps_schema` before any task ran; errors here are still
//! clear (they name the expression) rather than panics.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use arrow_array::{
    new_null_array, Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch,
    RecordBatchOptions, Scalar, StringArray,
};
use arrow_schema::{ArrowError, DataType, Field, Schema, TimeUnit};
use stratus_plan::{BinaryOp, DatePart, Expr, Literal, Step, TruncUnit};

use crate::error::EngineError;
use crate::Result;

fn fail(expr: &Expr, e: impl std::fmt::Display) -> EngineError {
    EngineError::Argument(format!("{expr}: {e}"))
}

fn arrow_err(expr: &Expr) -> impl Fn(ArrowError) -> EngineError + '_ {
    move |e| fail(expr, e)
}

/// A column value: a whole array, or a literal broadcast to every row.
enum Value {
    Array(ArrayRef),
    Scalar(ArrayRef),
}

impl Value {
    fn data_type(&self) -> DataType {
        match self {
            Value::Array(a) | Value::Scalar(a) => a.data_type().clone(),
        }
    }

    fn cast(self, to: &DataType) -> std::result::Result<Value, ArrowError> {
        let cast = |a: ArrayRef| -> std::result::Result<ArrayRef, ArrowError> {
            if a.data_type() == to {
                Ok(a)
            } else {
                arrow_cast::cast(&a, to)
            }
        };
        Ok(match self {
            Value::Array(a) => Value::Array(cast(a)?),
            Value::Scalar(a) => Value::Scalar(cast(a)?),
        })
    }

    fn datum(&self) -> Box<dyn arrow_array::Datum + '_> {
        match self {
            Value::Array(a) => Box::new(a.as_ref()),
            Value::Scalar(a) => Box::new(Scalar::new(a.clone())),
        }
    }

    fn into_array(self, rows: usize) -> std::result::Result<ArrayRef, ArrowError> {
        match self {
            Value::Array(a) => Ok(a),
            Value::Scalar(a) => {
                if a.is_null(0) {
                    return Ok(new_null_array(a.data_type(), rows));
                }
                let indices = arrow_array::UInt32Array::from(vec![0u32; rows]);
                arrow_select::take::take(&a, &indices, None)
            }
        }
    }
}

fn literal(l: &Literal) -> ArrayRef {
    match l {
        Literal::Null => new_null_array(&DataType::Null, 1),
        Literal::Bool(b) => Arc::new(BooleanArray::from(vec![*b])),
        Literal::Int(i) => Arc::new(Int64Array::from(vec![*i])),
        Literal::Float(x) => Arc::new(Float64Array::from(vec![*x])),
        Literal::Str(s) => Arc::new(StringArray::from(vec![s.as_str()])),
    }
}

/// Strings are held dictionary-encoded; compute on their values.
fn plain(a: ArrayRef) -> std::result::Result<ArrayRef, ArrowError> {
    match a.data_type() {
        DataType::Dictionary(_, v) => arrow_cast::cast(&a, v),
        _ => Ok(a),
    }
}

/// Evaluate an expression over a batch into an array of `batch.num_rows()`.
/// The expression's size and depth are checked first (without recursion).
pub fn evaluate(expr: &Expr, batch: &RecordBatch) -> Result<ArrayRef> {
    stratus_plan::check_expr(expr).map_err(|e| EngineError::Argument(e.to_string()))?;
    let value = eval(expr, batch)?;
    value.into_array(batch.num_rows()).map_err(arrow_err(expr))
}

fn common_numeric(l: &DataType, r: &DataType) -> DataType {
    if l.is_floating() || r.is_floating() {
        DataType::Float64
    } else if l == r {
        l.clone()
    } else {
        DataType::Int64
    }
}

fn eval(expr: &Expr, batch: &RecordBatch) -> Result<Value> {
    let ae = arrow_err(expr);
    Ok(match expr {
        Expr::Column(name) => {
            let column = batch
                .column_by_name(name)
                .ok_or_else(|| EngineError::Argument(format!("no column named '{name}'")))?;
            Value::Array(column.clone())
        }
        Expr::Literal(l) => Value::Scalar(literal(l)),
        Expr::Binary { op, left, right } => {
            let l = eval(left, batch)?;
            let r = eval(right, batch)?;
            binary(expr, *op, l, r, batch.num_rows())?
        }
        Expr::Negate(e) => {
            let v = eval(e, batch)?;
            let rows = batch.num_rows();
            let a = v.into_array(rows).map_err(&ae)?;
            Value::Array(arrow_arith::numeric::neg(&a).map_err(&ae)?)
        }
        Expr::Not(e) => {
            let a = eval(e, batch)?.into_array(batch.num_rows()).map_err(&ae)?;
            let b = a
                .as_boolean_opt()
                .ok_or_else(|| fail(expr, "NOT needs a boolean"))?;
            Value::Array(Arc::new(arrow_arith::boolean::not(b).map_err(&ae)?))
        }
        Expr::IsNull(e) | Expr::IsNotNull(e) => {
            let a = eval(e, batch)?.into_array(batch.num_rows()).map_err(&ae)?;
            let out = if matches!(expr, Expr::IsNull(_)) {
                arrow_arith::boolean::is_null(&a)
            } else {
                arrow_arith::boolean::is_not_null(&a)
            }
            .map_err(&ae)?;
            Value::Array(Arc::new(out))
        }
        Expr::Coalesce(args) => {
            let rows = batch.num_rows();
            let mut values = Vec::with_capacity(args.len());
            for a in args {
                values.push(plain(eval(a, batch)?.into_array(rows).map_err(&ae)?).map_err(&ae)?);
            }
            let mut target = DataType::Null;
            for v in &values {
                let t = v.data_type();
                if target == DataType::Null {
                    target = t.clone();
                } else if t != &DataType::Null && t != &target {
                    target = common_numeric(&target, t);
                }
            }
            let mut out: Option<ArrayRef> = None;
            for v in values {
                let v = arrow_cast::cast(&v, &target).map_err(&ae)?;
                out = Some(match out {
                    None => v,
                    Some(acc) => {
                        let keep = arrow_arith::boolean::is_not_null(&acc).map_err(&ae)?;
                        arrow_select::zip::zip(&keep, &acc, &v).map_err(&ae)?
                    }
                });
            }
            Value::Array(out.ok_or_else(|| fail(expr, "coalesce() needs an argument"))?)
        }
        Expr::Cast { expr: e, to } => {
            let v = eval(e, batch)?;
            let v = match v {
                Value::Array(a) => Value::Array(plain(a).map_err(&ae)?),
                s => s,
            };
            v.cast(&to.data_type()).map_err(&ae)?
        }
        Expr::DateTrunc { unit, expr: e } => {
            let a = eval(e, batch)?.into_array(batch.num_rows()).map_err(&ae)?;
            Value::Array(date_trunc(expr, *unit, &a)?)
        }
        Expr::DatePart { part, expr: e } => {
            let a = eval(e, batch)?.into_array(batch.num_rows()).map_err(&ae)?;
            let part = match part {
                DatePart::Year => arrow_arith::temporal::DatePart::Year,
                DatePart::Month => arrow_arith::temporal::DatePart::Month,
                DatePart::Day => arrow_arith::temporal::DatePart::Day,
            };
            Value::Array(arrow_arith::temporal::date_part(&a, part).map_err(&ae)?)
        }
    })
}

fn binary(expr: &Expr, op: BinaryOp, l: Value, r: Value, rows: usize) -> Result<Value> {
    use arrow_arith::numeric;
    use arrow_ord::cmp;
    let ae = arrow_err(expr);
    let scalar_out = matches!((&l, &r), (Value::Scalar(_), Value::Scalar(_)));
    let (l, r) = match (l, r) {
        (Value::Array(a), r) => (Value::Array(plain(a).map_err(&ae)?), r),
        other => other,
    };
    let (l, r) = match (l, r) {
        (l, Value::Array(a)) => (l, Value::Array(plain(a).map_err(&ae)?)),
        other => other,
    };
    let (lt, rt) = (l.data_type(), r.data_type());
    let out: ArrayRef = match op {
        BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div => {
            let target = stratus_plan::arithmetic_type(op, &lt, &rt);
            let l = l.cast(&target).map_err(&ae)?;
            let r = r.cast(&target).map_err(&ae)?;
            let (l, r) = (l.datum(), r.datum());
            match op {
                BinaryOp::Add => numeric::add(l.as_ref(), r.as_ref()),
                BinaryOp::Sub => numeric::sub(l.as_ref(), r.as_ref()),
                BinaryOp::Mul => numeric::mul(l.as_ref(), r.as_ref()),
                _ => numeric::div(l.as_ref(), r.as_ref()),
            }
            .map_err(&ae)?
        }
        BinaryOp::And | BinaryOp::Or => {
            let l = l.into_array(rows).map_err(&ae)?;
            let r = r.into_array(rows).map_err(&ae)?;
            let l = arrow_cast::cast(&l, &DataType::Boolean).map_err(&ae)?;
            let r = arrow_cast::cast(&r, &DataType::Boolean).map_err(&ae)?;
            let (l, r) = (l.as_boolean(), r.as_boolean());
            let out = if op == BinaryOp::And {
                arrow_arith::boolean::and_kleene(l, r)
            } else {
                arrow_arith::boolean::or_kleene(l, r)
            }
            .map_err(&ae)?;
            return Ok(Value::Array(Arc::new(out)));
        }
        _ => {
            // Bring both sides to one type: numbers to a common numeric type,
            // strings compared with timestamps parse as timestamps.
            let target =
                if (lt.is_integer() || lt.is_floating()) && (rt.is_integer() || rt.is_floating()) {
                    common_numeric(&lt, &rt)
                } else if lt == DataType::Null || (lt == DataType::Utf8 && rt != DataType::Null) {
                    rt.clone()
                } else {
                    lt.clone()
                };
            let l = l.cast(&target).map_err(&ae)?;
            let r = r.cast(&target).map_err(&ae)?;
            let (l, r) = (l.datum(), r.datum());
            let out = match op {
                BinaryOp::Eq => cmp::eq(l.as_ref(), r.as_ref()),
                BinaryOp::NotEq => cmp::neq(l.as_ref(), r.as_ref()),
                BinaryOp::Lt => cmp::lt(l.as_ref(), r.as_ref()),
                BinaryOp::LtEq => cmp::lt_eq(l.as_ref(), r.as_ref()),
                BinaryOp::Gt => cmp::gt(l.as_ref(), r.as_ref()),
                _ => cmp::gt_eq(l.as_ref(), r.as_ref()),
            }
            .map_err(&ae)?;
            Arc::new(out)
        }
    };
    Ok(if scalar_out {
        Value::Scalar(out)
    } else {
        Value::Array(out)
    })
}

const SECONDS_PER_DAY: i64 = 86_400;

/// Days since 1970-01-01 of the first day of the month/year holding `days`
/// (proleptic Gregorian; the civil-from-days algorithm).
fn trunc_days(days: i64, unit: TruncUnit) -> i64 {
    if unit == TruncUnit::Day {
        return days;
    }
    let (y, m, _) = civil_from_days(days);
    match unit {
        TruncUnit::Month => days_from_civil(y, m, 1),
        _ => days_from_civil(y, 1, 1),
    }
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn date_trunc(expr: &Expr, unit: TruncUnit, a: &ArrayRef) -> Result<ArrayRef> {
    let per_second = |u: &TimeUnit| match u {
        TimeUnit::Second => 1i64,
        TimeUnit::Millisecond => 1_000,
        TimeUnit::Microsecond => 1_000_000,
        TimeUnit::Nanosecond => 1_000_000_000,
    };
    let out: ArrayRef = match a.data_type() {
        DataType::Timestamp(u, tz) => {
            let per_day = per_second(u) * SECONDS_PER_DAY;
            let f = move |v: i64| trunc_days(v.div_euclid(per_day), unit) * per_day;
            let tz = tz.clone();
            match u {
                TimeUnit::Second => Arc::new(
                    a.as_primitive::<TimestampSecondType>()
                        .unary::<_, TimestampSecondType>(f)
                        .with_timezone_opt(tz),
                ),
                TimeUnit::Millisecond => Arc::new(
                    a.as_primitive::<TimestampMillisecondType>()
                        .unary::<_, TimestampMillisecondType>(f)
                        .with_timezone_opt(tz),
                ),
                TimeUnit::Microsecond => Arc::new(
                    a.as_primitive::<TimestampMicrosecondType>()
                        .unary::<_, TimestampMicrosecondType>(f)
                        .with_timezone_opt(tz),
                ),
                TimeUnit::Nanosecond => Arc::new(
                    a.as_primitive::<TimestampNanosecondType>()
                        .unary::<_, TimestampNanosecondType>(f)
                        .with_timezone_opt(tz),
                ),
            }
        }
        DataType::Date32 => Arc::new(
            a.as_primitive::<arrow_array::types::Date32Type>()
                .unary::<_, arrow_array::types::Date32Type>(|d| trunc_days(d as i64, unit) as i32),
        ),
        other => {
            return Err(fail(
                expr,
                format!("date_trunc needs a timestamp or date, got {other}"),
            ))
        }
    };
    Ok(out)
}

/// Replace nulls and NaN of every numeric column by `value` (integer columns
/// only when `value` is integral; strings and timestamps are left alone).
fn fill_na(batch: &RecordBatch, value: f64) -> Result<RecordBatch> {
    let err = |e: ArrowError| EngineError::Argument(format!("fillna({value}): {e}"));
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let dt = field.data_type();
        let filled: ArrayRef = if dt.is_floating() {
            let nan_or_null: BooleanArray = match dt {
                DataType::Float64 => {
                    let a = column.as_primitive::<Float64Type>();
                    BooleanArray::from_unary(a, |v| v.is_nan())
                }
                DataType::Float32 => {
                    let a = column.as_primitive::<Float32Type>();
                    BooleanArray::from_unary(a, |v| v.is_nan())
                }
                _ => BooleanArray::from(vec![false; column.len()]),
            };
            // from_unary keeps nulls as nulls: treat them as "fill" too.
            let mask: BooleanArray = nan_or_null
                .iter()
                .map(|b| Some(b.unwrap_or(true)))
                .collect();
            if mask.true_count() == 0 {
                column.clone()
            } else {
                let fill =
                    arrow_cast::cast(&(Arc::new(Float64Array::from(vec![value])) as ArrayRef), dt)
                        .map_err(err)?;
                arrow_select::zip::zip(&mask, &Scalar::new(fill), column).map_err(err)?
            }
        } else if dt.is_integer() && value.fract() == 0.0 && column.null_count() > 0 {
            let mask = arrow_arith::boolean::is_null(column).map_err(err)?;
            let fill = arrow_cast::cast(
                &(Arc::new(Int64Array::from(vec![value as i64])) as ArrayRef),
                dt,
            )
            .map_err(err)?;
            arrow_select::zip::zip(&mask, &Scalar::new(fill), column).map_err(err)?
        } else {
            column.clone()
        };
        columns.push(filled);
    }
    let fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .zip(&columns)
        .map(|(f, c)| {
            f.as_ref()
                .clone()
                .with_nullable(f.is_nullable() || c.null_count() > 0)
        })
        .collect();
    RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
    .map_err(err)
}

/// Apply one step to a batch.
pub fn apply_step(batch: &RecordBatch, step: &Step) -> Result<RecordBatch> {
    let schema = batch.schema();
    let rebuild = |fields: Vec<Field>, columns: Vec<ArrayRef>| {
        RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        )
        .map_err(|e| EngineError::Argument(format!("{step:?}: {e}")))
    };
    let index = |name: &str| {
        schema
            .index_of(name)
            .map_err(|_| EngineError::Argument(format!("no column named '{name}'")))
    };
    match step {
        Step::WithColumn { name, expr } => {
            let mut array = evaluate(expr, batch)?;
            if array.data_type() == &DataType::Null {
                array = new_null_array(&DataType::Float64, batch.num_rows());
            }
            let field = Field::new(name, array.data_type().clone(), true);
            let mut fields: Vec<Field> =
                schema.fields().iter().map(|f| f.as_ref().clone()).collect();
            let mut columns = batch.columns().to_vec();
            match schema.index_of(name) {
                Ok(i) => {
                    fields[i] = field;
                    columns[i] = array;
                }
                Err(_) => {
                    fields.push(field);
                    columns.push(array);
                }
            }
            rebuild(fields, columns)
        }
        Step::Select(cols) => {
            let indices = cols.iter().map(|c| index(c)).collect::<Result<Vec<_>>>()?;
            batch
                .project(&indices)
                .map_err(|e| EngineError::Argument(e.to_string()))
        }
        Step::Drop(cols) => {
            for c in cols {
                index(c)?;
            }
            let indices: Vec<usize> = (0..schema.fields().len())
                .filter(|&i| !cols.contains(schema.field(i).name()))
                .collect();
            batch
                .project(&indices)
                .map_err(|e| EngineError::Argument(e.to_string()))
        }
        Step::Filter(expr) => {
            let mask = evaluate(expr, batch)?;
            let mask = mask
                .as_boolean_opt()
                .ok_or_else(|| fail(expr, "a filter needs a boolean"))?;
            arrow_select::filter::filter_record_batch(batch, mask).map_err(arrow_err(expr))
        }
        Step::FillNa(value) => fill_na(batch, *value),
        Step::SortWithin(key) => {
            let mut sorted = crate::sort::sort_batches(std::slice::from_ref(batch), key)?;
            match sorted.len() {
                1 => Ok(sorted.pop().expect("one batch")),
                _ => Ok(batch.slice(0, 0)),
            }
        }
    }
}

/// Apply steps to a partition. Row-wise steps run batch by batch (batches
/// keep their boundaries; empty results after a filter are dropped); a
/// `SortWithin` sorts the whole partition.
pub fn apply_steps(batches: Vec<RecordBatch>, steps: &[Step]) -> Result<Vec<RecordBatch>> {
    let mut batches = batches;
    let mut pending: Vec<&Step> = Vec::new();
    for step in steps {
        if let Step::SortWithin(key) = step {
            batches = apply_row_steps(batches, &pending)?;
            pending.clear();
            batches = crate::sort::sort_batches(&batches, key)?;
        } else {
            pending.push(step);
        }
    }
    apply_row_steps(batches, &pending)
}

fn apply_row_steps(batches: Vec<RecordBatch>, steps: &[&Step]) -> Result<Vec<RecordBatch>> {
    if steps.is_empty() {
        return Ok(batches);
    }
    let mut out = Vec::with_capacity(batches.len());
    for batch in batches {
        let mut b = batch;
        for step in steps {
            b = apply_step(&b, step)?;
        }
        if b.num_rows() > 0 || out.is_empty() {
            out.push(b);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int32Array, TimestampMicrosecondArray};
    use stratus_plan::{col, lit, CastType};

    fn batch() -> RecordBatch {
        // 2019-03-15T13:45:00 and 2008-12-31T23:59:59.999999, and a null.
        let ts = TimestampMicrosecondArray::from(vec![
            Some(1_552_657_500_000_000),
            Some(1_230_767_999_999_999),
            None,
        ]);
        RecordBatch::try_from_iter([
            ("datetime", Arc::new(ts) as ArrayRef),
            (
                "temperature",
                Arc::new(Float64Array::from(vec![Some(20.0), None, Some(f64::NAN)])) as ArrayRef,
            ),
            (
                "year",
                Arc::new(Int32Array::from(vec![Some(2019), Some(2008), None])) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    #[test]
    fn calendar_round_trips() {
        for days in [-800_000i64, -1, 0, 1, 17_970, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(17_970), (2019, 3, 15));
    }

    #[test]
    fn date_trunc_and_parts() {
        let b = batch();
        let day = evaluate(&col("datetime").floor(TruncUnit::Day), &b).unwrap();
        let day = day.as_primitive::<TimestampMicrosecondType>();
        assert_eq!(day.value(0), 1_552_608_000_000_000); // 2019-03-15
        assert_eq!(day.value(1), 1_230_681_600_000_000); // 2008-12-31
        assert!(day.is_null(2));
        let month = evaluate(&col("datetime").floor(TruncUnit::Month), &b).unwrap();
        assert_eq!(
            month.as_primitive::<TimestampMicrosecondType>().value(0),
            1_551_398_400_000_000
        );
        let year = evaluate(&col("datetime").floor(TruncUnit::Year), &b).unwrap();
        assert_eq!(
            year.as_primitive::<TimestampMicrosecondType>().value(1),
            1_199_145_600_000_000
        );
        let d = evaluate(&col("datetime").part(DatePart::Day), &b).unwrap();
        assert_eq!(
            d.as_primitive::<arrow_array::types::Int32Type>().value(1),
            31
        );
        let err = evaluate(&col("temperature").floor(TruncUnit::Day), &b).unwrap_err();
        assert!(err.to_string().contains("date_trunc"), "{err}");
    }

    #[test]
    fn arithmetic_comparison_and_steps() {
        let b = batch();
        let f = evaluate(&(col("temperature") * lit(9.0) / lit(5.0) + lit(32)), &b).unwrap();
        let f = f.as_primitive::<Float64Type>();
        assert_eq!(f.value(0), 68.0);
        assert!(f.is_null(1));
        let y = evaluate(&(col("year") + lit(1)), &b).unwrap();
        assert_eq!(y.data_type(), &DataType::Int64);
        let filtered = apply_step(&b, &Step::Filter(col("year").gt_eq(lit(2010)))).unwrap();
        assert_eq!(filtered.num_rows(), 1);
        let filled = apply_step(&b, &Step::FillNa(0.0)).unwrap();
        let t = filled.column(1).as_primitive::<Float64Type>();
        assert_eq!(t.values().to_vec(), vec![20.0, 0.0, 0.0]);
        assert_eq!(t.null_count(), 0);
        assert_eq!(filled.column(2).null_count(), 0);
        let c = evaluate(&Expr::Coalesce(vec![col("temperature"), lit(-1.0)]), &b).unwrap();
        assert_eq!(c.as_primitive::<Float64Type>().value(1), -1.0);
        let s = evaluate(&col("year").cast(CastType::Utf8), &b).unwrap();
        assert_eq!(s.as_string::<i32>().value(0), "2019");
        let nulls = evaluate(&col("temperature").is_null(), &b).unwrap();
        assert_eq!(nulls.as_boolean().true_count(), 1);
        let after = evaluate(&col("datetime").gt(lit("2010-01-01T00:00:00")), &b).unwrap();
        assert_eq!(after.as_boolean().true_count(), 1);
    }
}
