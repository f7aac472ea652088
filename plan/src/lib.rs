//! The plan IR: expressions ([`Expr`]) and frame steps ([`Step`]) that travel
//! in requests and tasks (rkyv archives), and their type checking against an
//! Arrow schema ([`expr_type`], [`steps_schema`]) so that a bad plan is a clear
//! error before any task runs. Evaluation lives in `stratus-engine`; parsing
//! SQL expression text lives in the `stratus` CLI.
//!
//! It also owns the plain data that the wire messages and the engine share, defined once:
//! - [`source`]: Parquet files, their row groups and the partitions cut from them;
//! - [`agg`]: the aggregate functions of a group-by;
//! - [`moments`]: mergeable moments of a column (count, mean, M2, min, max);
//! - [`describe`]: what a distributed `describe()` asks workers and what they answer.

pub mod agg;
pub mod describe;
pub mod moments;
pub mod source;
pub mod wire;

pub use agg::AggFunc;
pub use describe::{ColumnRanges, ColumnSummary, DistinctKeys, KeyRange, RangeHistogram};
pub use moments::Moments;
pub use source::{FilePart, FileRef, ParquetPartition, RowGroupMeta, StagedFile};
pub use wire::{check_expr, ExprNode, FlatExpr, MAX_EXPR_DEPTH, MAX_EXPR_NODES};

use std::fmt;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use rkyv::{Archive, Deserialize, Serialize};

/// A literal value.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Literal {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

/// Binary operators.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    And,
    Or,
}

/// Calendar units for `date_trunc`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TruncUnit {
    Day,
    Month,
    Year,
}

/// Parts of a timestamp for `year()`, `month()`, `day()`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatePart {
    Year,
    Month,
    Day,
}

/// Types an expression can be cast to.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum CastType {
    Int32,
    Int64,
    Float64,
    Utf8,
    Boolean,
    Date32,
    TimestampMicros,
}

impl CastType {
    /// The Arrow type.
    pub fn data_type(self) -> DataType {
        match self {
            CastType::Int32 => DataType::Int32,
            CastType::Int64 => DataType::Int64,
            CastType::Float64 => DataType::Float64,
            CastType::Utf8 => DataType::Utf8,
            CastType::Boolean => DataType::Boolean,
            CastType::Date32 => DataType::Date32,
            CastType::TimestampMicros => DataType::Timestamp(TimeUnit::Microsecond, None),
        }
    }
}

/// An expression over the columns of one row.
///
/// Not an rkyv type itself: on the wire an expression is flat (see
/// [`wire`]), so no peer can make a receiver recurse; an `Expr` from the
/// wire is at most [`MAX_EXPR_DEPTH`] deep.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Column(String),
    Literal(Literal),
    Binary {
        op: BinaryOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    Negate(Box<Expr>),
    Not(Box<Expr>),
    IsNull(Box<Expr>),
    IsNotNull(Box<Expr>),
    /// First non-null argument.
    Coalesce(Vec<Expr>),
    Cast {
        expr: Box<Expr>,
        to: CastType,
    },
    /// Floor a timestamp to the start of its day, month or year (same type out).
    DateTrunc {
        unit: TruncUnit,
        expr: Box<Expr>,
    },
    /// Year, month or day of month of a timestamp or date, as Int32.
    DatePart {
        part: DatePart,
        expr: Box<Expr>,
    },
}

/// Build expressions in Rust: `col("temperature") * lit(9.0) / lit(5.0) + lit(32.0)`.
pub fn col(name: &str) -> Expr {
    Expr::Column(name.to_string())
}

/// A literal: `lit(1.5)`, `lit(3)`, `lit("x")`, `lit(true)`.
pub fn lit(value: impl Into<Literal>) -> Expr {
    Expr::Literal(value.into())
}

impl From<f64> for Literal {
    fn from(v: f64) -> Self {
        Literal::Float(v)
    }
}
impl From<i64> for Literal {
    fn from(v: i64) -> Self {
        Literal::Int(v)
    }
}
impl From<i32> for Literal {
    fn from(v: i32) -> Self {
        Literal::Int(v as i64)
    }
}
impl From<bool> for Literal {
    fn from(v: bool) -> Self {
        Literal::Bool(v)
    }
}
impl From<&str> for Literal {
    fn from(v: &str) -> Self {
        Literal::Str(v.to_string())
    }
}

impl Expr {
    fn binary(self, op: BinaryOp, right: Expr) -> Expr {
        Expr::Binary {
            op,
            left: Box::new(self),
            right: Box::new(right),
        }
    }
    /// `self = other`
    pub fn eq(self, other: Expr) -> Expr {
        self.binary(BinaryOp::Eq, other)
    }
    /// `self <> other`
    pub fn not_eq(self, other: Expr) -> Expr {
        self.binary(BinaryOp::NotEq, other)
    }
    /// `self < other`
    pub fn lt(self, other: Expr) -> Expr {
        self.binary(BinaryOp::Lt, other)
    }
    /// `self <= other`
    pub fn lt_eq(self, other: Expr) -> Expr {
        self.binary(BinaryOp::LtEq, other)
    }
    /// `self > other`
    pub fn gt(self, other: Expr) -> Expr {
        self.binary(BinaryOp::Gt, other)
    }
    /// `self >= other`
    pub fn gt_eq(self, other: Expr) -> Expr {
        self.binary(BinaryOp::GtEq, other)
    }
    /// `self AND other`
    pub fn and(self, other: Expr) -> Expr {
        self.binary(BinaryOp::And, other)
    }
    /// `self OR other`
    pub fn or(self, other: Expr) -> Expr {
        self.binary(BinaryOp::Or, other)
    }
    /// `self IS NULL`
    pub fn is_null(self) -> Expr {
        Expr::IsNull(Box::new(self))
    }
    /// `self IS NOT NULL`
    pub fn is_not_null(self) -> Expr {
        Expr::IsNotNull(Box::new(self))
    }
    /// `CAST(self AS to)`
    pub fn cast(self, to: CastType) -> Expr {
        Expr::Cast {
            expr: Box::new(self),
            to,
        }
    }
    /// `date_trunc(unit, self)`: pandas' `dt.floor('D')` for `TruncUnit::Day`.
    pub fn floor(self, unit: TruncUnit) -> Expr {
        Expr::DateTrunc {
            unit,
            expr: Box::new(self),
        }
    }
    /// `year(self)`, `month(self)`, `day(self)`.
    pub fn part(self, part: DatePart) -> Expr {
        Expr::DatePart {
            part,
            expr: Box::new(self),
        }
    }
}

macro_rules! arith {
    ($trait:ident, $method:ident, $op:ident) => {
        impl std::ops::$trait for Expr {
            type Output = Expr;
            fn $method(self, rhs: Expr) -> Expr {
                self.binary(BinaryOp::$op, rhs)
            }
        }
    };
}
arith!(Add, add, Add);
arith!(Sub, sub, Sub);
arith!(Mul, mul, Mul);
arith!(Div, div, Div);

impl std::ops::Neg for Expr {
    type Output = Expr;
    fn neg(self) -> Expr {
        Expr::Negate(Box::new(self))
    }
}

impl std::ops::Not for Expr {
    type Output = Expr;
    fn not(self) -> Expr {
        Expr::Not(Box::new(self))
    }
}

impl fmt::Display for BinaryOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BinaryOp::Add => "+",
            BinaryOp::Sub => "-",
            BinaryOp::Mul => "*",
            BinaryOp::Div => "/",
            BinaryOp::Eq => "=",
            BinaryOp::NotEq => "<>",
            BinaryOp::Lt => "<",
            BinaryOp::LtEq => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::GtEq => ">=",
            BinaryOp::And => "AND",
            BinaryOp::Or => "OR",
        })
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Column(c) => write!(f, "{c}"),
            Expr::Literal(Literal::Null) => write!(f, "NULL"),
            Expr::Literal(Literal::Bool(b)) => write!(f, "{b}"),
            Expr::Literal(Literal::Int(i)) => write!(f, "{i}"),
            Expr::Literal(Literal::Float(x)) => write!(f, "{x:?}"),
            Expr::Literal(Literal::Str(s)) => write!(f, "'{s}'"),
            Expr::Binary { op, left, right } => write!(f, "({left} {op} {right})"),
            Expr::Negate(e) => write!(f, "-{e}"),
            Expr::Not(e) => write!(f, "NOT {e}"),
            Expr::IsNull(e) => write!(f, "{e} IS NULL"),
            Expr::IsNotNull(e) => write!(f, "{e} IS NOT NULL"),
            Expr::Coalesce(args) => {
                let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
                write!(f, "coalesce({})", args.join(", "))
            }
            Expr::Cast { expr, to } => write!(f, "CAST({expr} AS {to:?})"),
            Expr::DateTrunc { unit, expr } => {
                write!(
                    f,
                    "date_trunc('{}', {expr})",
                    format!("{unit:?}").to_lowercase()
                )
            }
            Expr::DatePart { part, expr } => {
                write!(f, "{}({expr})", format!("{part:?}").to_lowercase())
            }
        }
    }
}

/// A step that derives a frame from another, partition by partition.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Step {
    /// Add or replace a column.
    WithColumn {
        name: String,
        #[rkyv(with = FlatExpr)]
        expr: Expr,
    },
    /// Keep these columns, in this order.
    Select(Vec<String>),
    /// Remove these columns.
    Drop(Vec<String>),
    /// Keep rows where the predicate is true (null counts as false).
    Filter(#[rkyv(with = FlatExpr)] Expr),
    /// Replace nulls (and NaN) in every numeric column by this value.
    FillNa(f64),
    /// Sort each partition by this column (the sort's fast path, when the
    /// partitions already range the key).
    SortWithin(String),
}

/// A plan error: names the expression or column at fault.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanError(pub String);

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PlanError {}

fn err<T>(message: String) -> Result<T, PlanError> {
    Err(PlanError(message))
}

/// Whether a type is an integer or float the kernels compute on (every
/// integer width, Float32, Float64; not Float16 or decimals). The one
/// definition of "numeric" for describe, group-by and fillna.
pub fn is_numeric(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Float32
            | DataType::Float64
    )
}

fn is_temporal(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64
    )
}

/// The type a numeric binary operation yields (Float64 if either side is a
/// float or the operator is `/`, else Int64; Int32 op Int32 stays Int32 for
/// `+ - *`).
pub fn arithmetic_type(op: BinaryOp, l: &DataType, r: &DataType) -> DataType {
    if op == BinaryOp::Div || l.is_floating() || r.is_floating() {
        DataType::Float64
    } else if l == &DataType::Int32 && r == &DataType::Int32 {
        DataType::Int32
    } else {
        DataType::Int64
    }
}

/// Result type of an expression over `schema`, or a clear error. The
/// expression's size and depth are checked first (without recursion).
pub fn expr_type(expr: &Expr, schema: &Schema) -> Result<DataType, PlanError> {
    check_expr(expr)?;
    checked_expr_type(expr, schema)
}

/// [`expr_type`] of an expression within the limits (recursive).
fn checked_expr_type(expr: &Expr, schema: &Schema) -> Result<DataType, PlanError> {
    Ok(match expr {
        Expr::Column(name) => match schema.field_with_name(name) {
            Ok(f) => match f.data_type() {
                DataType::Dictionary(_, v) => v.as_ref().clone(),
                other => other.clone(),
            },
            Err(_) => {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                return err(format!(
                    "no column named '{name}' (columns: {})",
                    names.join(", ")
                ));
            }
        },
        Expr::Literal(l) => match l {
            Literal::Null => DataType::Null,
            Literal::Bool(_) => DataType::Boolean,
            Literal::Int(_) => DataType::Int64,
            Literal::Float(_) => DataType::Float64,
            Literal::Str(_) => DataType::Utf8,
        },
        Expr::Binary { op, left, right } => {
            let l = checked_expr_type(left, schema)?;
            let r = checked_expr_type(right, schema)?;
            match op {
                BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div => {
                    let ok = |t: &DataType| is_numeric(t) || t == &DataType::Null;
                    if !ok(&l) || !ok(&r) {
                        return err(format!(
                            "{expr}: arithmetic needs numbers, got {l} {op} {r}"
                        ));
                    }
                    arithmetic_type(*op, &l, &r)
                }
                BinaryOp::And | BinaryOp::Or => {
                    for t in [&l, &r] {
                        if t != &DataType::Boolean && t != &DataType::Null {
                            return err(format!("{expr}: {op} needs booleans, got {t}"));
                        }
                    }
                    DataType::Boolean
                }
                _ => {
                    let comparable = (is_numeric(&l) && is_numeric(&r))
                        || l == r
                        || l == DataType::Null
                        || r == DataType::Null
                        || (is_temporal(&l) && r == DataType::Utf8)
                        || (is_temporal(&r) && l == DataType::Utf8);
                    if !comparable {
                        return err(format!("{expr}: cannot compare {l} with {r}"));
                    }
                    DataType::Boolean
                }
            }
        }
        Expr::Negate(e) => {
            let t = checked_expr_type(e, schema)?;
            if !is_numeric(&t) {
                return err(format!("{expr}: cannot negate {t}"));
            }
            t
        }
        Expr::Not(e) => {
            let t = checked_expr_type(e, schema)?;
            if t != DataType::Boolean {
                return err(format!("{expr}: NOT needs a boolean, got {t}"));
            }
            t
        }
        Expr::IsNull(e) | Expr::IsNotNull(e) => {
            checked_expr_type(e, schema)?;
            DataType::Boolean
        }
        Expr::Coalesce(args) => {
            let mut out = DataType::Null;
            for a in args {
                let t = checked_expr_type(a, schema)?;
                if out == DataType::Null {
                    out = t;
                } else if t != DataType::Null && t != out {
                    if is_numeric(&t) && is_numeric(&out) {
                        out = DataType::Float64;
                    } else {
                        return err(format!("{expr}: arguments mix {out} and {t}"));
                    }
                }
            }
            if args.is_empty() {
                return err("coalesce() needs at least one argument".into());
            }
            out
        }
        Expr::Cast { expr: e, to } => {
            checked_expr_type(e, schema)?;
            to.data_type()
        }
        Expr::DateTrunc { expr: e, .. } => {
            let t = checked_expr_type(e, schema)?;
            match t {
                DataType::Timestamp(_, _) | DataType::Date32 => t,
                other => {
                    return err(format!(
                        "{expr}: date_trunc needs a timestamp or date, but {e} is {other}"
                    ))
                }
            }
        }
        Expr::DatePart { expr: e, .. } => {
            let t = checked_expr_type(e, schema)?;
            if !matches!(t, DataType::Timestamp(_, _) | DataType::Date32) {
                return err(format!("{expr}: needs a timestamp or date, but {e} is {t}"));
            }
            DataType::Int32
        }
    })
}

/// Schema after applying `steps` to `schema`, or the first step's error.
pub fn steps_schema(schema: &Schema, steps: &[Step]) -> Result<SchemaRef, PlanError> {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    for step in steps {
        let current = Schema::new(fields.clone());
        let missing = |name: &str| -> Result<(), PlanError> {
            if current.field_with_name(name).is_err() {
                let names: Vec<&str> = current.fields().iter().map(|f| f.name().as_str()).collect();
                return err(format!(
                    "no column named '{name}' (columns: {})",
                    names.join(", ")
                ));
            }
            Ok(())
        };
        match step {
            Step::WithColumn { name, expr } => {
                let t = expr_type(expr, &current)?;
                let t = if t == DataType::Null {
                    DataType::Float64
                } else {
                    t
                };
                let field = Field::new(name, t, true);
                match fields.iter().position(|f| f.name() == name) {
                    Some(i) => fields[i] = field,
                    None => fields.push(field),
                }
            }
            Step::Select(cols) => {
                let mut out = Vec::with_capacity(cols.len());
                for c in cols {
                    missing(c)?;
                    out.push(current.field_with_name(c).expect("checked").clone());
                }
                fields = out;
            }
            Step::Drop(cols) => {
                for c in cols {
                    missing(c)?;
                }
                fields.retain(|f| !cols.contains(f.name()));
            }
            Step::Filter(expr) => {
                let t = expr_type(expr, &current)?;
                if t != DataType::Boolean {
                    return err(format!("filter {expr}: needs a boolean, got {t}"));
                }
            }
            Step::FillNa(_) => {}
            Step::SortWithin(key) => missing(key)?,
        }
    }
    Ok(Arc::new(Schema::new(fields)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema::new(vec![
            Field::new(
                "datetime",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                true,
            ),
            Field::new("temperature", DataType::Float64, true),
            Field::new("year", DataType::Int32, true),
            Field::new(
                "usaf",
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                true,
            ),
        ])
    }

    #[test]
    fn types_and_errors() {
        let s = schema();
        let f = col("temperature") * lit(9.0) / lit(5.0) + lit(32.0);
        assert_eq!(expr_type(&f, &s).unwrap(), DataType::Float64);
        assert_eq!(
            expr_type(&(col("year") + col("year")), &s).unwrap(),
            DataType::Int32
        );
        let day = col("datetime").floor(TruncUnit::Day);
        assert_eq!(
            expr_type(&day, &s).unwrap(),
            DataType::Timestamp(TimeUnit::Nanosecond, None)
        );
        let bad = col("temperature").floor(TruncUnit::Day);
        let e = expr_type(&bad, &s).unwrap_err().to_string();
        assert!(
            e.contains("date_trunc") && e.contains("temperature is Float64"),
            "{e}"
        );
        let e = expr_type(&col("nope"), &s).unwrap_err().to_string();
        assert!(e.contains("no column named 'nope'"), "{e}");
        assert_eq!(
            expr_type(&col("usaf").eq(lit("010010")), &s).unwrap(),
            DataType::Boolean
        );
        assert!(expr_type(&(col("usaf") + lit(1)), &s).is_err());
    }

    #[test]
    fn steps_change_the_schema() {
        let s = schema();
        let steps = vec![
            Step::WithColumn {
                name: "date".into(),
                expr: col("datetime").floor(TruncUnit::Day),
            },
            Step::Drop(vec!["usaf".into()]),
            Step::Filter(col("temperature").gt(lit(0.0))),
            Step::Select(vec!["date".into(), "temperature".into()]),
        ];
        let out = steps_schema(&s, &steps).unwrap();
        let names: Vec<&str> = out.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, vec!["date", "temperature"]);
        let e = steps_schema(&s, &[Step::Select(vec!["usaf".into(), "x".into()])]).unwrap_err();
        assert!(e.to_string().contains("'x'"));
        let e = steps_schema(&s, &[Step::Filter(col("temperature"))]).unwrap_err();
        assert!(e.to_string().contains("needs a boolean"));
    }

    #[test]
    fn recursive_expressions_roundtrip_through_rkyv() {
        let e = (col("a") + lit(1)) * -col("b");
        let bytes =
            rkyv::to_bytes::<rkyv::rancor::Error>(&Step::Filter(e.clone().gt(lit(0)))).unwrap();
        let archived = rkyv::access::<ArchivedStep, rkyv::rancor::Error>(&bytes).unwrap();
        let back: Step = rkyv::deserialize::<Step, rkyv::rancor::Error>(archived).unwrap();
        assert_eq!(back, Step::Filter(e.gt(lit(0))));
    }
}
