//! The `stratus` Python package's native part (`stratus._stratus`): a
//! synchronous client over the Rust `stratus::Client`, run on its own tokio
//! runtime with the GIL released while it waits; results cross into
//! Python as pyarrow tables through the Arrow C Data Interface (the column
//! buffers are not copied). The Dask-shaped API (`DataFrame`, `LocalCluster`,
//! pandas results) is Python on top, in `stratus/__init__.py`.
//!
//! Status: work in progress for the Python client issue (head start): the
//! connection, `len`, `head` and `persist` are here; the rest of the API,
//! errors as exception classes, Ctrl-C cancelling, the notebook and the
//! tests come next.

use std::path::PathBuf;

use arrow_pyarrow::ToPyArrow;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use stratus_protocol::scheduler_file::Locator;

fn error(e: impl std::fmt::Display) -> PyErr {
    PyRuntimeError::new_err(e.to_string())
}

/// A connection to a Stratus cluster.
#[pyclass(module = "stratus._stratus")]
struct Client {
    runtime: tokio::runtime::Runtime,
    inner: Option<stratus::Client>,
}

impl Client {
    fn client(&self) -> PyResult<&stratus::Client> {
        self.inner
            .as_ref()
            .ok_or_else(|| error("the client is closed"))
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
        let env = |name: &str| std::env::var_os(name).map(PathBuf::from);
        let locator = Locator {
            scheduler_file: scheduler_file.or_else(|| env("STRATUS_SCHEDULER_FILE")),
            scheduler: address.or_else(|| std::env::var("STRATUS_SCHEDULER").ok()),
            tls_ca: tls_ca.or_else(|| env("STRATUS_TLS_CA")),
            tls_cert: tls_cert.or_else(|| env("STRATUS_TLS_CERT")),
            tls_key: tls_key.or_else(|| env("STRATUS_TLS_KEY")),
        };
        let target = locator.resolve().map_err(error)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(error)?;
        let run = run.or_else(stratus::client::env_run_name);
        let inner = py
            .detach(|| {
                runtime.block_on(stratus::Client::connect_with(&target, run.as_deref()))
            })
            .map_err(error)?;
        Ok(Client {
            runtime,
            inner: Some(inner),
        })
    }

    /// Rows of a persisted frame or a Parquet source (path, glob or URL).
    fn len(&self, py: Python<'_>, source: &str) -> PyResult<u64> {
        let client = self.client()?;
        py.detach(|| self.runtime.block_on(client.len(source)))
            .map_err(error)
    }

    /// The first `n` rows as a `pyarrow.Table`.
    #[pyo3(signature = (source, n=5, columns=None))]
    fn head<'py>(
        &self,
        py: Python<'py>,
        source: &str,
        n: u64,
        columns: Option<Vec<String>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let client = self.client()?;
        let batches = py
            .detach(|| self.runtime.block_on(client.head(source, n, columns)))
            .map_err(error)?;
        let list: Vec<Bound<'py, PyAny>> = batches
            .iter()
            .map(|b| b.to_pyarrow(py))
            .collect::<PyResult<_>>()?;
        let pyarrow = py.import("pyarrow")?;
        pyarrow
            .getattr("Table")?
            .call_method1("from_batches", (list,))
    }

    /// Read a source into the workers' RAM as `name`; returns (rows, bytes,
    /// partitions).
    #[pyo3(signature = (source, name, replace=false))]
    fn persist(
        &self,
        py: Python<'_>,
        source: &str,
        name: &str,
        replace: bool,
    ) -> PyResult<(u64, u64, u32)> {
        let client = self.client()?;
        let summary = py
            .detach(|| {
                self.runtime.block_on(client.persist(
                    source,
                    name,
                    replace,
                    None,
                    Vec::new(),
                    &mut |_, _, _| {},
                ))
            })
            .map_err(error)?;
        Ok((summary.rows, summary.bytes, summary.partitions))
    }

    /// Close the connection.
    fn close(&mut self, py: Python<'_>) {
        if let Some(client) = self.inner.take() {
            py.detach(|| self.runtime.block_on(client.close()));
        }
    }
}

#[pymodule]
fn _stratus(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Client>()?;
    Ok(())
}
