//! A lazy `DataFrame` handle: it names where its data comes from (a Parquet
//! path/glob or a persisted frame) and runs nothing until asked for a result.

use arrow_array::RecordBatch;
use stratus_protocol::messages::FrameSummary;

use crate::client::{Client, Result};

/// A lazy frame over a source: a Parquet path/glob, or a persisted frame's name.
#[derive(Clone, Debug)]
pub struct DataFrame<'c> {
    client: &'c Client,
    source: String,
    columns: Option<Vec<String>>,
}

impl Client {
    /// A frame over Parquet files: a file, a directory, or a glob such as
    /// `DIR/year=*/month=*/*.parquet`. Hive `key=value` directories become columns.
    pub fn read_parquet(&self, path: &str) -> DataFrame<'_> {
        DataFrame {
            client: self,
            source: path.to_string(),
            columns: None,
        }
    }

    /// A frame already persisted under `name`.
    pub fn frame(&self, name: &str) -> DataFrame<'_> {
        self.read_parquet(name)
    }
}

impl<'c> DataFrame<'c> {
    /// Keep only these columns.
    pub fn select(mut self, columns: &[&str]) -> Self {
        self.columns = Some(columns.iter().map(|c| c.to_string()).collect());
        self
    }

    /// Where the data comes from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Number of rows (`len(df)`): footers only for Parquet, metadata for a
    /// persisted frame.
    pub async fn len(&self) -> Result<u64> {
        self.client.len(&self.source).await
    }

    /// The first `n` rows.
    pub async fn head(&self, n: u64) -> Result<Vec<RecordBatch>> {
        self.client
            .head(&self.source, n, self.columns.clone())
            .await
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
                &mut |_, _, _| {},
            )
            .await?;
        Ok((self.client.frame(name), summary))
    }
}
