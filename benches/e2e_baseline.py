"""DuckDB or Polars on the files of `cargo bench --bench e2e` (run by it, not by hand).

python3 benches/e2e_baseline.py '{"engine": "duckdb", "source": DIR, "dest": DIR,
    "reps": 5, "rows": N, "threads": 2, "budget": BYTES, "streaming": false}'

Runs the workflow's steps `reps` times: len (from the Parquet footers), persist (load
with a `date` column: the day of `datetime`), describe (exact, the numeric columns),
groupby(date).mean, sort by date, write year/month (hive-partitioned Parquet), and prints
one JSON object: {"engine", "version", "steps": {step: {"times": [s...], "rss": [bytes...]}},
"skipped": {step: why}}. The peak RSS of a step is this process's VmHWM after resetting it
(`/proc/self/clear_refs`) before the step. A thread watches the RSS: past `budget` bytes it
prints what was measured so far, with the step that did not fit, and exits.

Polars with `"streaming": true` (the bench's default above 24 M rows) does not hold the
frame: each step is a lazy query over the files run by the streaming engine, and persist
(which must hold the frame) comes last.
"""

import json
import os
import re
import shutil
import sys
import threading
import time

cfg = json.loads(sys.argv[1])
threads = int(cfg.get("threads", 2))
os.environ["POLARS_MAX_THREADS"] = str(threads)
engine = cfg["engine"]
src = cfg["source"] + "/year=*/month=*/*.parquet"
dest = cfg["dest"]
reps = int(cfg["reps"])
rows = int(cfg["rows"])
budget = int(cfg.get("budget", 0))
streaming = bool(cfg.get("streaming", False))

result = {"engine": engine, "version": "", "steps": {}, "skipped": {}}
current = {"step": None}
lock = threading.Lock()


def rss_now():
    with open("/proc/self/status") as f:
        m = re.search(r"VmRSS:\s+(\d+) kB", f.read())
    return int(m.group(1)) * 1024 if m else 0


def hwm():
    with open("/proc/self/status") as f:
        m = re.search(r"VmHWM:\s+(\d+) kB", f.read())
    return int(m.group(1)) * 1024 if m else 0


def reset_hwm():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def emit():
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


def guard():
    while budget > 0:
        time.sleep(0.05)
        used = rss_now()
        if used > budget:
            with lock:
                step = current["step"] or "?"
                result["skipped"][step] = (
                    f"out of memory budget: RSS {used / 2**30:.1f} GiB > {budget / 2**30:.1f} GiB"
                )
                emit()
            os._exit(0)


def timed(step, fn):
    """Run fn once as `step`, recording its time and peak RSS."""
    current["step"] = step
    reset_hwm()
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    peak = hwm()
    with lock:
        s = result["steps"].setdefault(step, {"times": [], "rss": []})
        s["times"].append(seconds)
        s["rss"].append(peak)
    current["step"] = None


def duckdb_run():
    import duckdb

    result["version"] = duckdb.__version__
    con = duckdb.connect()
    con.execute(f"SET threads TO {threads}")
    con.execute("SET enable_progress_bar = false")
    scan = f"read_parquet('{src}', hive_partitioning=true)"

    def q(sql):
        return lambda: con.execute(sql).fetchall()

    cols = []
    for _ in range(reps):
        timed("len", q(f"SELECT count(*) FROM {scan}"))
        con.execute("DROP TABLE IF EXISTS isd")
        timed(
            "persist",
            q(f"CREATE TABLE isd AS SELECT *, date_trunc('day', datetime) AS date FROM {scan}"),
        )
        if not cols:
            cols = [
                c
                for (c, ty) in con.execute(
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_name = 'isd'"
                ).fetchall()
                if ty in ("DOUBLE", "INTEGER", "BIGINT")
            ]
        parts = []
        for c in cols:
            f = f"FILTER (WHERE {c} IS NOT NULL AND NOT isnan({c}::DOUBLE))"
            parts += [
                f"count({c}) {f}",
                f"avg({c}) {f}",
                f"stddev_samp({c}) {f}",
                f"min({c}) {f}",
                f"quantile_cont({c}, [0.25, 0.5, 0.75]) {f}",
                f"max({c}) {f}",
            ]
        timed("describe", q("SELECT " + ", ".join(parts) + " FROM isd"))
        means = ", ".join(f"avg({c})" for c in cols)
        timed("groupby", q(f"SELECT date, {means} FROM isd GROUP BY date ORDER BY date"))
        timed("sort", q("CREATE OR REPLACE TABLE sorted AS SELECT * FROM isd ORDER BY date"))
        con.execute("DROP TABLE IF EXISTS sorted")
        shutil.rmtree(dest, ignore_errors=True)
        timed("write", q(f"COPY isd TO '{dest}' (FORMAT parquet, PARTITION_BY (year, month))"))
        shutil.rmtree(dest, ignore_errors=True)


def polars_run():
    import polars as pl
    import polars.selectors as cs

    result["version"] = pl.__version__

    def lazy():
        return pl.scan_parquet(src, hive_partitioning=True).with_columns(
            pl.col("datetime").dt.truncate("1d").alias("date")
        )

    def length():
        n = pl.scan_parquet(src, hive_partitioning=True).select(pl.len()).collect().item()
        assert n == rows, (n, rows)

    def describe_exprs(schema):
        numeric = [c for c, t in schema.items() if t.is_numeric()]
        exprs = []
        for c in numeric:
            col = pl.col(c).fill_nan(None)
            exprs += [
                col.count().alias(f"{c}_count"),
                col.mean().alias(f"{c}_mean"),
                col.std().alias(f"{c}_std"),
                col.min().alias(f"{c}_min"),
                *[col.quantile(q, "linear").alias(f"{c}_{q}") for q in (0.25, 0.5, 0.75)],
                col.max().alias(f"{c}_max"),
            ]
        return exprs

    means = cs.numeric().exclude("date").mean()
    if streaming:
        st = {"engine": "streaming"}
        schema = lazy().collect_schema()
        for _ in range(reps):
            timed("len", length)
            timed("describe", lambda: lazy().select(describe_exprs(schema)).collect(**st))
            timed("groupby", lambda: lazy().group_by("date").agg(means).sort("date").collect(**st))
            timed("sort", lambda: lazy().sort("date").collect(**st))
            shutil.rmtree(dest, ignore_errors=True)
            os.makedirs(dest, exist_ok=True)
            timed(
                "write",
                lambda: lazy().sink_parquet(
                    pl.PartitionBy(dest, key=["year", "month"]), mkdir=True
                ),
            )
            shutil.rmtree(dest, ignore_errors=True)
        for _ in range(reps):
            timed("persist", lambda: lazy().collect(**st))
        return

    df = None
    for _ in range(reps):
        timed("len", length)
        df = None
        holder = {}
        timed("persist", lambda: holder.setdefault("df", lazy().collect()))
        df = holder["df"]
        exprs = describe_exprs(df.schema)
        timed("describe", lambda: df.select(exprs))
        timed("groupby", lambda: df.group_by("date").agg(means).sort("date"))
        timed("sort", lambda: df.sort("date"))
        shutil.rmtree(dest, ignore_errors=True)
        timed("write", lambda: df.write_parquet(dest, partition_by=["year", "month"]))
        shutil.rmtree(dest, ignore_errors=True)


threading.Thread(target=guard, daemon=True).start()
try:
    duckdb_run() if engine == "duckdb" else polars_run()
except Exception as e:  # report what was measured, and why the rest was not
    with lock:
        result["skipped"][current["step"] or "?"] = f"{type(e).__name__}: {e}"[:300]
with lock:
    emit()
