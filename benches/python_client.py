#!/usr/bin/env python3
"""The notebook workflow through the Python client, against the same through
the Rust client, the `stratus` command line, and Dask, on one machine.

    cargo build --release --workspace --bins     # the cluster and the CLI
    pip install ./python                         # or PYTHONPATH=python with the
                                                 # native module copied in
    pip install "dask[distributed,dataframe]==2026.8.0"   # unless --no-dask
    python3 benches/python_client.py [--rows 12000000] [--reps 5] [--dask-reps 2] [--no-dask]

The binaries are found as `stratus.LocalCluster` finds them
(`STRATUS_BIN_DIR`, a `stratus` on PATH, then target/release and
target/debug). Sample data is generated once per size into
target/bench-data/py-<rows> (`stratus datagen isd`) and reused.

On a LocalCluster of 2 workers x 1 thread, each step of the workflow (len
on Parquet, persist with a date column, describe, groupby(date).mean,
memory_usage, groupby([year, month]).count, set_index(date), prepare and
to_parquet) is timed best-of-reps:

- Python: the wall time of the Python call, results as pandas objects;
- Rust client: the Rust client's own time for that call
  (`client._native.last_request_seconds`, measured inside Rust from the
  request to the decoded Arrow answer);
- Python overhead: the median over reps of Python - Rust client (plan
  building from Python objects, the GIL, Arrow to pyarrow to pandas);
- CLI: `stratus <command>` as a subprocess against the same cluster
  (process start, connecting, printing included);
- Dask: the same step with dask.dataframe on a distributed.LocalCluster of
  2 workers x 1 thread over the same files (best of --dask-reps), run after
  the Stratus cluster is stopped.

Also: the time from the daily means' Arrow table (4,383 x 16) to the pandas
DataFrame the client returns, and the per-call overhead of a tiny request
(`len` of a persisted frame, 200 times). Prints one Markdown table and
writes it with the raw numbers to target/bench-python.{md,json}.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
try:
    import stratus
except ImportError:  # a checkout without pip install (the native module copied in)
    sys.path.insert(0, str(REPO / "python"))
    import stratus
from stratus.cluster import find_binaries  # noqa: E402

PREPARED = [
    "date",
    "latitude",
    "longitude",
    "elevation",
    "windAngle",
    "windSpeed",
    "temperature",
    "seaLvlPressure",
    "precipDepth",
    "year",
    "month",
]
STEPS = [
    ("len", "len on Parquet"),
    ("persist", "persist with date"),
    ("describe", "describe"),
    ("daily_means", "groupby(date).mean"),
    ("memory_usage", "memory_usage"),
    ("year_month_counts", "groupby([year, month]).count"),
    ("set_index", "set_index(date)"),
    ("write", "prepare + to_parquet"),
]


def ms(seconds):
    return None if seconds is None else seconds * 1000.0


def fmt_ms(value):
    if value is None:
        return "–"
    if value >= 10_000:
        return f"{value / 1000:.1f} s"
    if value >= 100:
        return f"{value:.0f} ms"
    if value >= 1:
        return f"{value:.1f} ms"
    return f"{value:.3f} ms"


def generate(stratus_bin: Path, rows: int, data: Path) -> None:
    if any(data.rglob("*.parquet")):
        print(f"using the sample data in {data}")
        return
    data.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    subprocess.run(
        [str(stratus_bin), "datagen", "isd", "--rows", str(rows), "--out", str(data)],
        check=True,
    )
    print(f"generated {rows:,} rows in {time.perf_counter() - start:.1f} s")


# -- Stratus: Python, Rust client, CLI -----------------------------------


def python_step(client, reps, call, before=None, warm_up=False):
    """Best-of-reps wall time of `call()` (through the Python API), the Rust
    client's time of the same request, and the median difference. A
    read-only call is made once untimed first (`warm_up`), so that first-use
    costs in Python (imports, pandas' caches) stay out of the median."""
    walls, rust = [], []
    if warm_up:
        call()
    for _ in range(reps):
        if before is not None:
            before()
        gc.collect()
        start = time.perf_counter()
        result = call()
        wall = time.perf_counter() - start
        took = client._native.last_request_seconds
        walls.append(wall)
        rust.append(took)
        del result
    overheads = [w - r for w, r in zip(walls, rust)]
    return {
        "python_s": min(walls),
        "rust_client_s": min(rust),
        "overhead_s": statistics.median(overheads),
        "python_all_s": walls,
        "rust_client_all_s": rust,
    }


def cli_step(stratus_bin, env, reps, commands, before=None):
    """Best-of-reps wall time of running `commands` (one or more `stratus`
    invocations) one after the other."""
    walls = []
    for _ in range(reps):
        if before is not None:
            before()
        start = time.perf_counter()
        for args in commands:
            done = subprocess.run(
                [str(stratus_bin), *args],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            if done.returncode != 0:
                raise RuntimeError(f"stratus {' '.join(args)}: {done.stderr.strip()}")
        walls.append(time.perf_counter() - start)
    return {"cli_s": min(walls), "cli_all_s": walls}


def bench_stratus(args, stratus_bin: Path, data: Path, work: Path) -> dict:
    results: dict = {step: {} for step, _ in STEPS}
    micro: dict = {}
    reps = args.reps
    out_py = work / "out-python"
    out_cli = work / "out-cli"
    start = time.perf_counter()
    cluster = stratus.LocalCluster(
        n_workers=2, threads_per_worker=1, data_dir=work / "stratus-data", data_roots=[data.parent]
    )
    client = stratus.Client(cluster)
    print(f"{cluster!r} in {time.perf_counter() - start:.1f} s")
    env = dict(os.environ, STRATUS_SCHEDULER_FILE=cluster.scheduler_file)
    for name in ("STRATUS_SCHEDULER", "STRATUS_RUN"):
        env.pop(name, None)
    native = client._native
    source = str(data.resolve())
    try:
        df = client.read_parquet(source)
        state = {}

        def report(step):
            r = results[step]
            print(
                f"  {step}: python {fmt_ms(ms(r.get('python_s')))}, rust client "
                f"{fmt_ms(ms(r.get('rust_client_s')))}, overhead "
                f"{fmt_ms(ms(r.get('overhead_s')))}, cli {fmt_ms(ms(r.get('cli_s')))}",
                flush=True,
            )

        # len on Parquet (footers).
        results["len"].update(python_step(client, reps, lambda: len(df), warm_up=True))
        results["len"].update(cli_step(stratus_bin, env, reps, [["len", source]]))
        report("len")

        # persist with a date column (replacing the frame each time).
        def persist():
            state["isd"] = df.assign(date="date_trunc('day', datetime)").persist(
                "isd", replace=True
            )

        def drop_isd():
            state["isd"] = None

        results["persist"].update(python_step(client, reps, persist, before=drop_isd))
        results["persist"].update(
            cli_step(
                stratus_bin,
                env,
                reps,
                [["persist", source, "--as", "isd_cli", "--replace",
                  "--with-column", "date=date_trunc('day', datetime)"]],
            )
        )
        native.unpersist("isd_cli")
        report("persist")
        isd = state["isd"]
        assert len(isd) == args.rows, (len(isd), args.rows)

        results["describe"].update(python_step(client, reps, isd.describe, warm_up=True))
        results["describe"].update(cli_step(stratus_bin, env, reps, [["describe", "isd"]]))
        report("describe")

        daily = isd.groupby("date")
        results["daily_means"].update(python_step(client, reps, daily.mean, warm_up=True))
        results["daily_means"].update(
            cli_step(stratus_bin, env, reps, [["groupby", "isd", "--by", "date", "--agg", "mean"]])
        )
        report("daily_means")

        results["memory_usage"].update(python_step(client, reps, isd.memory_usage, warm_up=True))
        results["memory_usage"].update(cli_step(stratus_bin, env, reps, [["memory", "isd"]]))
        report("memory_usage")

        counts = isd.groupby(["year", "month"])
        results["year_month_counts"].update(python_step(client, reps, counts.count, warm_up=True))
        results["year_month_counts"].update(
            cli_step(
                stratus_bin, env, reps, [["groupby", "isd", "--by", "year,month", "--agg", "count"]]
            )
        )
        report("year_month_counts")

        # set_index: the sorted frame of the previous rep is released before
        # the next one is timed.
        def set_index():
            state["sorted"] = isd.set_index("date")

        def drop_sorted():
            # Releases the previous rep's sorted frame (an unpersist request).
            state.pop("sorted", None)

        results["set_index"].update(python_step(client, reps, set_index, before=drop_sorted))
        state.pop("sorted", None)
        gc.collect()

        def drop_sorted_cli():
            if any(f["name"] == "isd_sorted" for f in native.list()):
                native.unpersist("isd_sorted")

        results["set_index"].update(
            cli_step(
                stratus_bin,
                env,
                reps,
                [["sort", "isd", "--by", "date", "--as", "isd_sorted"]],
                before=drop_sorted_cli,
            )
        )
        drop_sorted_cli()
        report("set_index")

        prepared = (
            isd.assign(temperature="temperature * 9 / 5 + 32").fillna(0)[PREPARED]
        )
        results["write"].update(
            python_step(
                client,
                reps,
                lambda: prepared.to_parquet(out_py, partition_on=["year", "month"], overwrite=True),
            )
        )
        # The command line writes persisted frames only: persist the
        # prepared frame, then write it (two commands).
        results["write"].update(
            cli_step(
                stratus_bin,
                env,
                reps,
                [
                    ["persist", "isd", "--as", "prepared_cli", "--replace",
                     "--with-column", "temperature=temperature * 9 / 5 + 32",
                     "--fillna", "0", "--select", ",".join(PREPARED)],
                    ["write", "prepared_cli", str(out_cli), "--partition-by", "year,month",
                     "--overwrite"],
                ],
            )
        )
        native.unpersist("prepared_cli")
        report("write")

        # Micro 1: the daily means' Arrow table to the pandas frame the
        # client returns (GroupBy._run's to_pandas().set_index).
        table = native.groupby(isd, ["date"], "mean")
        conversions = []
        for _ in range(max(20, reps)):
            start = time.perf_counter()
            frame = table.to_pandas().set_index(["date"])
            conversions.append(time.perf_counter() - start)
        micro["daily_means_shape"] = [frame.shape[0], frame.shape[1]]
        micro["arrow_to_pandas_best_s"] = min(conversions)
        micro["arrow_to_pandas_median_s"] = statistics.median(conversions)

        # Micro 2: a tiny request, 200 times: len of the persisted frame.
        walls, rust = [], []
        for _ in range(200):
            start = time.perf_counter()
            len(isd)
            walls.append(time.perf_counter() - start)
            rust.append(native.last_request_seconds)
        overheads = sorted(w - r for w, r in zip(walls, rust))
        micro["tiny_len_python_median_s"] = statistics.median(walls)
        micro["tiny_len_rust_client_median_s"] = statistics.median(rust)
        micro["tiny_len_overhead_median_s"] = statistics.median(overheads)
        micro["tiny_len_overhead_p90_s"] = overheads[int(len(overheads) * 0.9)]
        tiny_cli = cli_step(stratus_bin, env, min(reps, 10), [["len", "isd"]])
        micro["tiny_len_cli_best_s"] = tiny_cli["cli_s"]
    finally:
        state = None  # noqa: F841
        gc.collect()
        client.close()
        cluster.close()
    return {"steps": results, "micro": micro}


# -- Dask ------------------------------------------------------------------


def bench_dask(args, data: Path, work: Path) -> dict:
    import pyarrow as pa
    import pyarrow.dataset as pds

    import dask
    import dask.dataframe as dd
    import distributed
    from distributed import Client, LocalCluster, wait

    reps = args.dask_reps
    results: dict = {}
    start = time.perf_counter()
    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        silence_logs=logging.ERROR,
    )
    client = Client(cluster)
    print(f"dask {dask.__version__} / distributed {distributed.__version__}: "
          f"{len(cluster.workers)} workers in {time.perf_counter() - start:.1f} s")
    # The sample data has `year` inside its files and `month` only in the
    # directory names (as the Azure ISD dataset): Dask refuses a hive
    # partitioning partly written in the files, so only month is taken
    # from the paths.
    partitioning = pds.partitioning(pa.schema([("month", pa.int32())]), flavor="hive")

    def read():
        return dd.read_parquet(str(data), dataset={"partitioning": partitioning})

    def forget(name):
        """Release a collection persisted by an earlier rep and wait until the
        scheduler has forgotten its tasks, and drop dask-expr's cache of
        computed divisions: each rep computes afresh (a persist of the same
        graph would otherwise reuse the keys still held)."""
        previous = state.pop(name, None)
        if previous is not None:
            client.cancel(previous)
            del previous
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            held = client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))
            if held <= len(state.get("ddf_keys", ())):
                break
            time.sleep(0.05)
        try:
            from dask.dataframe.dask_expr._shuffle import divisions_lru

            divisions_lru.clear()
        except ImportError:  # another dask layout: nothing cached there
            pass

    def timed(step, call, before=None):
        walls = []
        for _ in range(reps):
            if before is not None:
                before()
            start = time.perf_counter()
            call()
            walls.append(time.perf_counter() - start)
        results[step] = {"dask_s": min(walls), "dask_all_s": walls}
        print(f"  dask {step}: {fmt_ms(ms(min(walls)))}", flush=True)

    state = {}
    try:
        timed("len", lambda: len(read()))

        def persist():
            raw = read()
            ddf = raw.assign(date=raw.datetime.dt.floor("D")).persist()
            wait(ddf)
            state["ddf"] = ddf

        timed("persist", persist, before=lambda: forget("ddf"))
        ddf = state["ddf"]
        state["ddf_keys"] = ddf.__dask_keys__()
        assert len(ddf) == args.rows
        timed("describe", lambda: ddf.describe().compute())
        timed("daily_means", lambda: ddf.groupby("date").mean(numeric_only=True).compute())
        timed("memory_usage", lambda: ddf.memory_usage().compute())
        timed("year_month_counts", lambda: ddf.groupby(["year", "month"]).count().compute())

        def set_index():
            s = ddf.set_index("date").persist()
            wait(s)
            state["sorted"] = s

        timed("set_index", set_index, before=lambda: forget("sorted"))
        forget("sorted")

        numeric = [c for c in PREPARED if c != "date"]

        def write():
            prep = ddf[PREPARED]
            prep = prep.assign(temperature=prep.temperature * 9 / 5 + 32)
            prep = prep.fillna({c: 0 for c in numeric})
            prep.to_parquet(str(work / "out-dask"), partition_on=["year", "month"],
                            overwrite=True, write_index=False)

        timed("write", write)
    finally:
        state.clear()
        # Workers still heartbeating while the scheduler stops log errors.
        logging.getLogger("distributed").setLevel(logging.CRITICAL)
        client.close()
        cluster.close()
    return {"steps": results, "versions": {"dask": dask.__version__,
                                           "distributed": distributed.__version__}}


# -- report ----------------------------------------------------------------


def table(report: dict) -> str:
    steps = report["stratus"]["steps"]
    dask_steps = (report.get("dask") or {}).get("steps", {})
    lines = [
        "| step | Python | Rust client | Python overhead | CLI | Dask | Dask/Python |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for step, label in STEPS:
        r = steps[step]
        d = dask_steps.get(step, {}).get("dask_s")
        ratio = f"{d / r['python_s']:.1f}x" if d is not None and r.get("python_s") else "–"
        cli_label = " (persist + write)" if step == "write" else ""
        lines.append(
            f"| {label} | {fmt_ms(ms(r.get('python_s')))} | {fmt_ms(ms(r.get('rust_client_s')))} "
            f"| {fmt_ms(ms(r.get('overhead_s')))} | {fmt_ms(ms(r.get('cli_s')))}{cli_label} "
            f"| {fmt_ms(ms(d))} | {ratio} |"
        )
    m = report["stratus"]["micro"]
    rows, cols = m["daily_means_shape"]
    lines += [
        "",
        f"- daily means ({rows:,} x {cols}) Arrow table to pandas (to_pandas + set_index): "
        f"best {fmt_ms(ms(m['arrow_to_pandas_best_s']))}, median "
        f"{fmt_ms(ms(m['arrow_to_pandas_median_s']))}",
        f"- tiny request (len of a persisted frame, 200 calls): Python "
        f"{fmt_ms(ms(m['tiny_len_python_median_s']))} median, Rust client "
        f"{fmt_ms(ms(m['tiny_len_rust_client_median_s']))}, overhead "
        f"{fmt_ms(ms(m['tiny_len_overhead_median_s']))} median "
        f"({fmt_ms(ms(m['tiny_len_overhead_p90_s']))} p90); CLI `stratus len` "
        f"{fmt_ms(ms(m['tiny_len_cli_best_s']))} best",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=12_000_000)
    parser.add_argument("--reps", type=int, default=5, help="best of (Python, CLI)")
    parser.add_argument("--dask-reps", type=int, default=2, help="best of (Dask)")
    parser.add_argument("--no-dask", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "target" / "bench-python.json")
    args = parser.parse_args()

    stratus_bin = find_binaries()
    bench_dir = REPO / "target" / "bench-data"
    data = bench_dir / f"py-{args.rows}"
    work = bench_dir / f"py-{args.rows}-work"
    generate(stratus_bin, args.rows, data)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)

    native_module = stratus._stratus.__file__
    print(f"binaries: {stratus_bin.parent}; native module: {native_module}")
    report = {
        "rows": args.rows,
        "reps": args.reps,
        "dask_reps": None if args.no_dask else args.dask_reps,
        "cluster": "2 workers x 1 thread, loopback",
        "binaries": str(stratus_bin.parent),
        "native_module": native_module,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "stratus": bench_stratus(args, stratus_bin, data, work),
    }
    if not args.no_dask:
        report["dask"] = bench_dask(args, data, work)
    shutil.rmtree(work, ignore_errors=True)

    markdown = table(report)
    title = (
        f"Python client vs Rust client vs CLI vs Dask: {args.rows:,} rows, "
        f"best of {args.reps}" + ("" if args.no_dask else f" (Dask best of {args.dask_reps})")
    )
    print()
    print(f"### {title}")
    print()
    print(markdown)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(f"### {title}\n\n{markdown}\n")
    print(f"\nwritten: {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
