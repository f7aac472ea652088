//! The `stratus` Python package's native part (`stratus._stratus`): a
//! synchronous client over the Rust [`stratus::Client`], on its own tokio
//! runtime. It owns three things the Python layer must not do itself:
//!
//! - **Waiting.** Every request runs with the GIL released; every 50 ms the
//!   wait takes the GIL back just long enough to check for signals, so a
//!   Ctrl-C (`KeyboardInterrupt`) drops the request, which cancels it on the
//!   cluster, and then raises.
//! - **Results as Arrow.** Tables cross into Python through the Arrow C Data
//!   Interface (arrow-pyarrow): pyarrow takes over the column buffers the
//!   client decoded, without a copy.
//! - **Errors as exception classes** (`stratus.StratusError` and its
//!   subclasses, defined in `stratus/_errors.py`), chosen by
//!   [`stratus::client::ErrorKind`].
//!
//! A lazy frame arrives as the Python `DataFrame` object itself: its
//! `_source`, `_persisted`, `_columns`, `_steps` and `_storage` attributes
//! are read into a [`stratus::DataFrame`] here (SQL expression strings
//! parsed by [`stratus::sql`]). The Dask-shaped API, pandas results and
//! `LocalCluster` are Python, in `stratus/__init__.py`.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arrow_array::{RecordBatch, RecordBatchIterator, RecordBatchReader};
use arrow_pyarrow::{IntoPyArrow, ToPyArrow};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use stratus::client::ErrorKind;
use stratus::{Agg, ClientError, DataFrame, Step};
use stratus_protocol::messages::FrameSummary;

/// How often a waiting request checks for Ctrl-C.
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

/// The exception class of `kind`, from `stratus._errors`.
fn exception(py: Python<'_>, class: &str, message: String) -> PyErr {
    match py
        .import("stratus._errors")
        .and_then(|m| m.getattr(class))
        .and_then(|c| c.call1((message.clone(),)))
    {
        Ok(value) => PyErr::from_value(value),
        Err(e) => e,
    }
}

fn client_error(py: Python<'_>, e: ClientError) -> PyErr {
    let class = match e.kind() {
        ErrorKind::Connection => "ConnectionError",
        ErrorKind::NotFound => "NotFoundError",
        ErrorKind::BadInput => "BadInputError",
        ErrorKind::Cancelled => "CancelledError",
        ErrorKind::Other => "StratusError",
    };
    exception(py, class, e.to_string())
}

fn bad_input(py: Python<'_>, message: impl std::fmt::Display) -> PyErr {
    exception(py, "BadInputError", message.to_string())
}

/// A lazy frame as the Python `DataFrame` describes it.
struct Plan {
    source: String,
    persisted: bool,
    columns: Option<Vec<String>>,
    steps: Vec<Step>,
    storage: Vec<(String, String)>,
}

/// One step from its Python tuple: `("with_column", name, expr)`,
/// `("filter", expr)`, `("select", [cols])`, `("drop", [cols])`,
/// `("fillna", value)`.
fn step(py: Python<'_>, item: &Bound<'_, PyAny>) -> PyResult<Step> {
    let kind: String = item.get_item(0)?.extract()?;
    let arg = |i: usize| item.get_item(i);
    let expr = |text: String| stratus::sql::parse_expr(&text).map_err(|e| bad_input(py, e));
    Ok(match kind.as_str() {
        "with_column" => Step::WithColumn {
            name: arg(1)?.extract()?,
            expr: expr(arg(2)?.extract()?)?,
        },
        "filter" => Step::Filter(expr(arg(1)?.extract()?)?),
        "select" => Step::Select(arg(1)?.extract()?),
        "drop" => Step::Drop(arg(1)?.extract()?),
        "fillna" => Step::FillNa(arg(1)?.extract()?),
        other => return Err(bad_input(py, format!("unknown step '{other}'"))),
    })
}

fn plan(py: Python<'_>, frame: &Bound<'_, PyAny>) -> PyResult<Plan> {
    let steps: Vec<Bound<'_, PyAny>> = frame.getattr("_steps")?.extract()?;
    Ok(Plan {
        source: frame.getattr("_source")?.extract()?,
        persisted: frame.getattr("_persisted")?.extract()?,
        columns: frame.getattr("_columns")?.extract()?,
        steps: steps.iter().map(|s| step(py, s)).collect::<PyResult<_>>()?,
        storage: frame.getattr("_storage")?.extract()?,
    })
}

impl Plan {
    /// The Rust lazy frame over `client`.
    fn frame<'c>(&self, client: &'c stratus::Client) -> DataFrame<'c> {
        let mut frame = if self.persisted {
            client.frame(&self.source)
        } else {
            client.read_parquet(&stratus::client::normalize_source(&self.source))
        };
        if let Some(columns) = &self.columns {
            let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
            frame = frame.select(&columns);
        }
        for step in &self.steps {
            frame = frame.with_step(step.clone());
        }
        frame
    }
}

/// The client with a frame's `storage_options` on top of its own (from
/// the settings).
fn scoped(client: &stratus::Client, frame: &[(String, String)]) -> stratus::Client {
    let mut options: Vec<(String, String)> = client
        .storage_options()
        .iter()
        .filter(|(k, _)| !frame.iter().any(|(f, _)| f == k))
        .cloned()
        .collect();
    options.extend(frame.iter().cloned());
    client.with_storage_options(options)
}

/// Batches as one `pyarrow.Table` (one C stream; buffers not copied).
fn table<'py>(
    py: Python<'py>,
    batches: Vec<RecordBatch>,
    schema: arrow_schema::SchemaRef,
) -> PyResult<Bound<'py, PyAny>> {
    let reader: Box<dyn RecordBatchReader + Send> = Box::new(RecordBatchIterator::new(
        batches.into_iter().map(Ok),
        schema,
    ));
    reader.into_pyarrow(py)?.call_method0("read_all")
}

fn one_table<'py>(py: Python<'py>, batch: RecordBatch) -> PyResult<Bound<'py, PyAny>> {
    let schema = batch.schema();
    table(py, vec![batch], schema)
}

fn summary<'py>(py: Python<'py>, s: &FrameSummary) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("name", &s.name)?;
    d.set_item("source", &s.source)?;
    d.set_item("rows", s.rows)?;
    d.set_item("bytes", s.bytes)?;
    d.set_item("partitions", s.partitions)?;
    d.set_item("partitions_held", s.partitions_held)?;
    Ok(d)
}

fn agg(py: Python<'_>, name: &str) -> PyResult<Agg> {
    Ok(match name {
        "count" => Agg::Count,
        "sum" => Agg::Sum,
        "mean" => Agg::Mean,
        "min" => Agg::Min,
        "max" => Agg::Max,
        "std" => Agg::Std,
        "var" => Agg::Var,
        other => return Err(bad_input(py, format!("unknown aggregation '{other}'"))),
    })
}

/// A connection to a Stratus cluster.
#[pyclass(module = "stratus._stratus")]
struct Client {
    runtime: tokio::runtime::Runtime,
    inner: Option<stratus::Client>,
    /// How long the last request took inside the Rust client (f64 seconds
    /// as bits), so a benchmark can tell the Python layer's share.
    last_request: AtomicU64,
}

impl Client {
    /// Run the request `make` builds with the GIL released, checking for
    /// signals while it waits; a signal (Ctrl-C) drops the request, which
    /// cancels it on the cluster, and raises the signal's exception.
    fn wait<'c, T, F, Fut>(&'c self, py: Python<'_>, make: F) -> PyResult<T>
    where
        F: FnOnce(&'c stratus::Client) -> Fut + Send,
        Fut: Future<Output = stratus::client::Result<T>>,
        T: Send,
    {
        let client = self
            .inner
            .as_ref()
            .ok_or_else(|| exception(py, "ConnectionError", "the client is closed".into()))?;
        let outcome: PyResult<stratus::client::Result<T>> = py.detach(|| {
            self.runtime.block_on(async {
                let started = std::time::Instant::now();
                let request = async {
                    let result = make(client).await;
                    let took = started.elapsed().as_secs_f64();
                    self.last_request.store(took.to_bits(), Ordering::Relaxed);
                    result
                };
                tokio::pin!(request);
                let start = tokio::time::Instant::now() + SIGNAL_CHECK;
                let mut ticks = tokio::time::interval_at(start, SIGNAL_CHECK);
                loop {
                    tokio::select! {
                        biased;
                        result = &mut request => return Ok(result),
                        _ = ticks.tick() => {
                            Python::attach(|py| py.check_signals())?;
                        }
                    }
                }
            })
        });
        // On a signal the request's future has been dropped, and with it its
        // stream: the connection's driver (on the runtime's thread) resets
        // it, and the scheduler cancels the request.
        outcome?.map_err(|e| client_error(py, e))
    }
}

#[pymethods]
impl Client {
    /// Connect as the CLI does: a scheduler file, or an address with the
    /// certificate files; with nothing given, `STRATUS_SCHEDULER_FILE` and
    /// the other variables the CLI reads.
    #[new]
    #[pyo3(signature = (scheduler_file=None, address=None, tls_ca=None, tls_cert=None, tls_key=None, run=None))]
    fn new(
        py: Python<'_>,
        scheduler_file: Option<PathBuf>,
        address: Option<String>,
        tls_ca: Option<PathBuf>,
        tls_cert: Option<PathBuf>,
        tls_key: Option<PathBuf>,
        run: Option<String>,
    ) -> PyResult<Client> {
        // As the command line: the arguments, then the flat variables
        // (STRATUS_SCHEDULER_FILE, ...), STRATUS_CLIENT__* and the user's
        // client.toml.
        let flags = stratus::settings::ClientFlags {
            scheduler_file,
            scheduler: address,
            tls_ca,
            tls_cert,
            tls_key,
            run,
            ..Default::default()
        };
        let settings =
            stratus::settings::ClientSettings::load(None, &flags).map_err(|e| bad_input(py, e))?;
        let target = settings
            .locator()
            .resolve()
            .map_err(|e| exception(py, "ConnectionError", e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("stratus-client")
            .enable_all()
            .build()
            .map_err(|e| exception(py, "StratusError", e.to_string()))?;
        let run = stratus::client::run_name(settings.run.clone());
        let mut inner = py
            .detach(|| runtime.block_on(stratus::Client::connect_with(&target, run.as_deref())))
            .map_err(|e| client_error(py, e))?;
        inner.set_storage_options(settings.storage_options());
        Ok(Client {
            runtime,
            inner: Some(inner),
            last_request: AtomicU64::new(0),
        })
    }

    /// The scheduler's address (`quic://HOST:PORT`).
    #[getter]
    fn address(&self) -> Option<String> {
        self.inner.as_ref().map(|c| c.address().to_string())
    }

    /// The run this client logs to, if any.
    #[getter]
    fn run(&self) -> Option<String> {
        self.inner
            .as_ref()
            .and_then(|c| c.run().map(str::to_string))
    }

    /// Seconds the last request took in the Rust client, from the call to
    /// its decoded answer (before any conversion to Python objects).
    #[getter]
    fn last_request_seconds(&self) -> f64 {
        f64::from_bits(self.last_request.load(Ordering::Relaxed))
    }

    /// Whether `close` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_none()
    }

    /// The cluster: address, dashboard, workers, threads, memory_limit,
    /// memory_used.
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let info = self.wait(py, |c| c.info())?;
        let d = PyDict::new(py);
        d.set_item("address", info.address)?;
        d.set_item("dashboard", info.dashboard)?;
        d.set_item("workers", info.workers)?;
        d.set_item("threads", info.threads)?;
        d.set_item("memory_limit", info.memory_limit)?;
        d.set_item("memory_used", info.memory_used)?;
        Ok(d)
    }

    /// Wait until `n` workers are registered.
    fn wait_for_workers(&self, py: Python<'_>, n: u32, timeout: f64) -> PyResult<()> {
        let timeout = Duration::from_secs_f64(timeout.max(0.0));
        self.wait(py, |c| c.wait_for_workers(n, timeout))
            .map(|_| ())
    }

    /// Persisted frames, as dicts.
    fn list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let frames = self.wait(py, |c| c.list())?;
        let items = frames
            .iter()
            .map(|s| summary(py, s))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, items)
    }

    fn unpersist(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        self.wait(py, |c| c.unpersist(name))
    }

    /// Rows of the frame.
    fn len(&self, py: Python<'_>, frame: &Bound<'_, PyAny>) -> PyResult<u64> {
        let plan = plan(py, frame)?;
        self.wait(py, |c| async move {
            let c = scoped(c, &plan.storage);
            plan.frame(&c).len().await
        })
    }

    /// The first `n` rows as a `pyarrow.Table`.
    fn head<'py>(
        &self,
        py: Python<'py>,
        frame: &Bound<'_, PyAny>,
        n: u64,
    ) -> PyResult<Bound<'py, PyAny>> {
        let plan = plan(py, frame)?;
        let batches = self.wait(py, |c| async move {
            let c = scoped(c, &plan.storage);
            plan.frame(&c).head(n).await
        })?;
        let schema = match batches.first() {
            Some(b) => b.schema(),
            None => std::sync::Arc::new(arrow_schema::Schema::empty()),
        };
        table(py, batches, schema)
    }

    /// The frame's schema as a `pyarrow.Schema`, from the source's schema
    /// (a Parquet footer, or a persisted frame's) and the steps' types:
    /// only the first row is read.
    fn schema<'py>(
        &self,
        py: Python<'py>,
        frame: &Bound<'_, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mut base = plan(py, frame)?;
        let steps = std::mem::take(&mut base.steps);
        let batches = self.wait(py, |c| async {
            let c = scoped(c, &base.storage);
            // One row: a head of none answers no table, so no schema.
            base.frame(&c).head(1).await
        })?;
        let schema = batches.first().map(|b| b.schema()).ok_or_else(|| {
            exception(
                py,
                "StratusError",
                format!("'{}' answered no schema", base.source),
            )
        })?;
        let schema = stratus_plan::steps_schema(&schema, &steps).map_err(|e| bad_input(py, e))?;
        schema.as_ref().to_pyarrow(py)
    }

    /// Load the frame into the workers' RAM as `name`; a summary dict.
    fn persist<'py>(
        &self,
        py: Python<'py>,
        frame: &Bound<'_, PyAny>,
        name: &str,
        replace: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let plan = plan(py, frame)?;
        let (_, s) = self.wait(py, |c| async move {
            let c = scoped(c, &plan.storage);
            let (_, s) = plan.frame(&c).persist_with(name, replace).await?;
            Ok(((), s))
        })?;
        summary(py, &s)
    }

    /// `describe()` as a table whose first column names the statistic.
    fn describe<'py>(
        &self,
        py: Python<'py>,
        frame: &Bound<'_, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let plan = plan(py, frame)?;
        let batch = self.wait(py, |c| async move {
            let c = scoped(c, &plan.storage);
            plan.frame(&c).describe().await
        })?;
        one_table(py, batch)
    }

    /// Bytes per column, and the total.
    fn memory_usage<'py>(
        &self,
        py: Python<'py>,
        frame: &Bound<'_, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let plan = plan(py, frame)?;
        let batch = self.wait(py, |c| async move {
            let c = scoped(c, &plan.storage);
            plan.frame(&c).memory_usage().await
        })?;
        one_table(py, batch)
    }

    /// `groupby(keys).<function>()` over every (numeric) column, keys first.
    fn groupby<'py>(
        &self,
        py: Python<'py>,
        frame: &Bound<'_, PyAny>,
        keys: Vec<String>,
        function: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let plan = plan(py, frame)?;
        let function = agg(py, function)?;
        let batch = self.wait(py, |c| async move {
            let c = scoped(c, &plan.storage);
            let frame = plan.frame(&c);
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            frame.groupby(&keys).all(function).await
        })?;
        one_table(py, batch)
    }

    /// Sort into the persisted frame `into`; its summary dict.
    fn sort<'py>(
        &self,
        py: Python<'py>,
        frame: &Bound<'_, PyAny>,
        by: &str,
        into: &str,
    ) -> PyResult<Bound<'py, PyDict>> {
        let plan = plan(py, frame)?;
        let s = self.wait(py, |c| async move {
            let c = scoped(c, &plan.storage);
            let (_, s) = plan.frame(&c).sort_by(by, into).await?;
            Ok(s)
        })?;
        summary(py, &s)
    }

    /// Write a hive-partitioned Parquet dataset; (rows, files).
    fn to_parquet(
        &self,
        py: Python<'_>,
        frame: &Bound<'_, PyAny>,
        dest: &str,
        partition_on: Vec<String>,
        overwrite: bool,
    ) -> PyResult<(u64, u64)> {
        let plan = plan(py, frame)?;
        self.wait(py, |c| async move {
            let c = scoped(c, &plan.storage);
            let by: Vec<&str> = partition_on.iter().map(String::as_str).collect();
            plan.frame(&c).to_parquet(dest, &by, overwrite).await
        })
    }

    /// Log numbers to the run; returns the run's id.
    fn log_metrics(&self, py: Python<'_>, metrics: Vec<(String, f64)>) -> PyResult<String> {
        self.wait(py, |c| async move {
            let pairs: Vec<(&str, f64)> = metrics.iter().map(|(n, v)| (n.as_str(), *v)).collect();
            c.log_metrics(&pairs).await
        })
    }

    /// Store a file with the run; returns the run's id.
    fn log_artifact(
        &self,
        py: Python<'_>,
        name: &str,
        content_type: &str,
        data: Vec<u8>,
    ) -> PyResult<String> {
        self.wait(py, |c| c.log_artifact(name, content_type, data))
    }

    /// Close the connection (cancelling anything in flight).
    fn close(&mut self, py: Python<'_>) {
        if let Some(client) = self.inner.take() {
            py.detach(|| self.runtime.block_on(client.close()));
        }
    }
}

/// Check an SQL expression (`assign`, `query`) without running it; raises
/// `BadInputError` naming what is wrong.
#[pyfunction]
fn check_expr(py: Python<'_>, text: &str) -> PyResult<()> {
    stratus::sql::parse_expr(text)
        .map(|_| ())
        .map_err(|e| bad_input(py, e))
}

/// Where this package was built from: the binaries of the same checkout
/// are looked for below `<dir>/../target` when nothing else names them.
#[pyfunction]
fn source_dir() -> &'static str {
    env!("CARGO_MANIFEST_DIR")
}

#[pymodule]
fn _stratus(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Client>()?;
    m.add_function(wrap_pyfunction!(check_expr, m)?)?;
    m.add_function(wrap_pyfunction!(source_dir, m)?)?;
    Ok(())
}
