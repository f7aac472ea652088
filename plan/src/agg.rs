//! Aggregate functions of a group-by ([`AggFunc`]): what a request names, what a task
//! carries and what the engine computes.

use rkyv::{Archive, Deserialize, Serialize};

/// Aggregate functions (pandas semantics: nulls and NaN skipped; count counts non-null
/// non-NaN values).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AggFunc {
    /// Number of non-null, non-NaN values (any column type: non-null values).
    Count,
    /// Sum of the values, as Float64.
    Sum,
    /// Arithmetic mean, as Float64.
    Mean,
    /// Minimum, in the input type.
    Min,
    /// Maximum, in the input type.
    Max,
    /// Sample standard deviation (`ddof = 1`), as Float64.
    Std,
    /// Sample variance (`ddof = 1`), as Float64.
    Var,
}

impl AggFunc {
    /// The lower-case name used in output column names (`"mean"`, `"max"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            AggFunc::Count => "count",
            AggFunc::Sum => "sum",
            AggFunc::Mean => "mean",
            AggFunc::Min => "min",
            AggFunc::Max => "max",
            AggFunc::Std => "std",
            AggFunc::Var => "var",
        }
    }
}
