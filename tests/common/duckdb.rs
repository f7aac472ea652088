//! DuckDB, the independent oracle of the analysis tests: Python's `duckdb`
//! (installed by scripts/test) run on the same Parquet files as the cluster.

use std::process::Command;

/// Python prelude: DuckDB for the data, and pandas' (numpy's) linear
/// interpolation applied to DuckDB's sorted values for the quantiles. DuckDB's
/// own `quantile_cont` computes `lo + (hi - lo) * t`, which can differ from
/// numpy's two-sided formula in the last bit; pandas is the reference.
const PRELUDE: &str = r#"
import duckdb, json, math
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
def pandas_quantile(v, q):
    n = len(v)
    if n == 0:
        return None
    p = q * (n - 1)
    lo = math.floor(p)
    hi = min(lo + 1, n - 1)
    t = p - lo
    a, b = float(v[lo]), float(v[hi])
    d = b - a
    return a + d * t if t < 0.5 else b - d * (1 - t)
def clean(x):
    return None if (isinstance(x, float) and x != x) else x
"#;

/// Run a DuckDB query from Python; rows as JSON arrays (NaN as null).
pub fn duckdb(sql: &str) -> Vec<Vec<serde_json::Value>> {
    python(&format!(
        "rows = con.execute({sql:?}).fetchall()\nprint(json.dumps([[clean(v) for v in r] for r in rows], default=str))"
    ))
}

/// Run Python `body` after [`PRELUDE`] (`con` is a DuckDB connection;
/// `pandas_quantile` and `clean` are defined); it prints rows as JSON arrays.
pub fn python(body: &str) -> Vec<Vec<serde_json::Value>> {
    let script = format!("{PRELUDE}\n{body}");
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 (with duckdb: pip install duckdb) runs");
    assert!(
        out.status.success(),
        "duckdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
