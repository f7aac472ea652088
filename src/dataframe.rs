//! A lazy `DataFrame` handle: where its data comes from (a Parquet path/glob
//! or a persisted frame) plus the steps to apply. Nothing runs until a result
//! is asked for; results that need the data in RAM (`describe`,
//! `memory_usage`) on a frame with pending steps persist it under a temporary
//! name first and release it afterwards.

use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::RecordBatch;
use stratus_plan::{Expr, Step};
use stratus_protocol::messages::{AggFunc, FrameSummary};

use crate::client::{Client, ClientError, Result};

/// A lazy frame.
#[derive(Clone, Debug)]
pub struct DataFrame<'c> {
    client: &'c Client,
    source: String,
    /// Read only these columns from Parquet.
    columns: Option<Vec<String>>,
    steps: Vec<Step>,
    /// Whether `source` names a persisted frame (known after persist).
    persisted: bool,
}

impl Client {
    /// A frame over Parquet files: a file, a directory, or a glob such as
    /// `DIR/year=*/month=*/*.parquet`. Hive `key=value` directories become columns.
    pub fn read_parquet(&self, path: &str) -> DataFrame<'_> {
        DataFrame {
            client: self,
            source: path.to_string(),
            columns: None,
            steps: Vec::new(),
            persisted: false,
        }
    }

    /// A frame already persisted under `name`.
    pub fn frame(&self, name: &str) -> DataFrame<'_> {
        DataFrame {
            persisted: true,
            ..self.read_parquet(name)
        }
    }
}

impl<'c> DataFrame<'c> {
    /// Keep only these columns, in this order.
    pub fn select(mut self, columns: &[&str]) -> Self {
        let columns: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
        if self.persisted || !self.steps.is_empty() {
            self.steps.push(Step::Select(columns));
        } else {
            self.columns = Some(columns);
        }
        self
    }

    /// Add or replace a column computed from an expression.
    pub fn with_column(mut self, name: &str, expr: Expr) -> Self {
        self.steps.push(Step::WithColumn {
            name: name.to_string(),
            expr,
        });
        self
    }

    /// Keep rows where `predicate` is true.
    pub fn filter(mut self, predicate: Expr) -> Self {
        self.steps.push(Step::Filter(predicate));
        self
    }

    /// Remove columns.
    pub fn drop(mut self, columns: &[&str]) -> Self {
        self.steps
            .push(Step::Drop(columns.iter().map(|c| c.to_string()).collect()));
        self
    }

    /// Replace nulls and NaN in every numeric column by `value`.
    pub fn fillna(mut self, value: f64) -> Self {
        self.steps.push(Step::FillNa(value));
        self
    }

    /// Add any plan step (`select` keeps its projection push-down).
    pub fn with_step(mut self, step: Step) -> Self {
        match step {
            Step::Select(columns) => {
                self.select(&columns.iter().map(String::as_str).collect::<Vec<_>>())
            }
            step => {
                self.steps.push(step);
                self
            }
        }
    }

    /// Where the data comes from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Number of rows (`len(df)`): footers only for Parquet, metadata for a
    /// persisted frame.
    pub async fn len(&self) -> Result<u64> {
        if self.steps.is_empty() {
            if let (false, Some(columns)) = (self.persisted, &self.columns) {
                // Footers give the count; a first row checks the selection.
                self.client
                    .head(&self.source, 1, Some(columns.clone()))
                    .await?;
            }
            self.client.len(&self.source).await
        } else {
            self.with_temporary(|client, name| async move { client.len(&name).await })
                .await
        }
    }

    /// The first `n` rows.
    pub async fn head(&self, n: u64) -> Result<Vec<RecordBatch>> {
        if self.steps.is_empty() {
            self.client
                .head(&self.source, n, self.columns.clone())
                .await
        } else {
            self.with_temporary(|client, name| async move { client.head(&name, n, None).await })
                .await
        }
    }

    /// `describe()`: count, mean, std, min, 25%, 50%, 75%, max of every numeric
    /// column, exact.
    pub async fn describe(&self) -> Result<RecordBatch> {
        self.on_persisted(|client, name| async move { client.describe(&name, None).await })
            .await
    }

    /// Bytes of Arrow buffers held per column (and in total).
    pub async fn memory_usage(&self) -> Result<RecordBatch> {
        self.on_persisted(|client, name| async move { client.memory_usage(&name).await })
            .await
    }

    /// Write as a hive-partitioned Parquet dataset (`to_parquet`); see
    /// [`Client::write_parquet`]. Returns (rows, files).
    pub async fn to_parquet(
        &self,
        dest: &str,
        partition_by: &[&str],
        overwrite: bool,
    ) -> Result<(u64, u64)> {
        let dest = dest.to_string();
        let by: Vec<String> = partition_by.iter().map(|c| c.to_string()).collect();
        self.on_persisted(|client, name| async move {
            client.write_parquet(&name, &dest, by, overwrite).await
        })
        .await
    }

    /// `set_index(key)` / `sort_values(key)`: a persisted frame `into`, sorted
    /// by `key` across partitions (partition i holds keys before partition i+1).
    pub async fn sort_by(&self, key: &str, into: &str) -> Result<(DataFrame<'c>, FrameSummary)> {
        let (key, into) = (key.to_string(), into.to_string());
        let summary = self
            .on_persisted(|client, name| async move { client.sort(&name, &key, Some(&into)).await })
            .await?;
        Ok((self.client.frame(&summary.name), summary))
    }

    /// Group by key columns: `df.groupby(&["date"]).mean()`.
    pub fn groupby(&self, keys: &[&str]) -> GroupedFrame<'_, 'c> {
        GroupedFrame {
            frame: self,
            keys: keys.iter().map(|k| k.to_string()).collect(),
        }
    }

    /// Load into the workers' RAM under `name`; later requests (from any
    /// client) can use the name. Fails if the name is taken.
    pub async fn persist(&self, name: &str) -> Result<(DataFrame<'c>, FrameSummary)> {
        self.persist_with(name, false).await
    }

    /// Like [`DataFrame::persist`], replacing a frame of that name if `replace`.
    pub async fn persist_with(
        &self,
        name: &str,
        replace: bool,
    ) -> Result<(DataFrame<'c>, FrameSummary)> {
        let summary = self
            .client
            .persist(
                &self.source,
                name,
                replace,
                self.columns.clone(),
                self.steps.clone(),
                &mut |_, _, _| {},
            )
            .await?;
        Ok((self.client.frame(name), summary))
    }

    async fn on_persisted<F, Fut, T>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&'c Client, String) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        if self.persisted && self.steps.is_empty() {
            f(self.client, self.source.clone()).await
        } else {
            self.with_temporary(f).await
        }
    }

    /// Persist under a temporary name, run `f` on it, release it.
    async fn with_temporary<F, Fut, T>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&'c Client, String) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        static N: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "_tmp-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        self.persist(&name).await?;
        let result = f(self.client, name.clone()).await;
        let released = self.client.unpersist(&name).await;
        // Errors name the frame the caller knows, not the temporary one.
        let value = result.map_err(|e| match e {
            ClientError::Server(message) => {
                ClientError::Server(message.replace(&name, &self.source))
            }
            other => other,
        })?;
        released?;
        Ok(value)
    }
}

/// A frame grouped by keys, waiting for its aggregation.
#[derive(Debug)]
pub struct GroupedFrame<'f, 'c> {
    frame: &'f DataFrame<'c>,
    keys: Vec<String>,
}

impl GroupedFrame<'_, '_> {
    async fn run(&self, aggs: Vec<(String, AggFunc)>, all: Option<AggFunc>) -> Result<RecordBatch> {
        let keys = self.keys.clone();
        self.frame
            .on_persisted(
                |client, name| async move { client.groupby(&name, keys, aggs, all).await },
            )
            .await
    }

    /// Mean of every numeric column per group.
    pub async fn mean(&self) -> Result<RecordBatch> {
        self.run(Vec::new(), Some(AggFunc::Mean)).await
    }

    /// Non-null count of every column per group.
    pub async fn count(&self) -> Result<RecordBatch> {
        self.run(Vec::new(), Some(AggFunc::Count)).await
    }

    /// Sum of every numeric column per group.
    pub async fn sum(&self) -> Result<RecordBatch> {
        self.run(Vec::new(), Some(AggFunc::Sum)).await
    }

    /// `function` over every numeric non-key column (every column for
    /// `Count`), as pandas' `groupby(keys).mean()`, `.std()`, ...
    pub async fn all(&self, function: AggFunc) -> Result<RecordBatch> {
        self.run(Vec::new(), Some(function)).await
    }

    /// Chosen aggregations: `(column, function)`.
    pub async fn agg(&self, aggs: &[(&str, AggFunc)]) -> Result<RecordBatch> {
        self.run(
            aggs.iter().map(|(c, f)| (c.to_string(), *f)).collect(),
            None,
        )
        .await
    }
}
