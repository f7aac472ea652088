//! Group-by aggregation (being written).
