"""examples/isd.ipynb runs whole in a real Jupyter kernel (nbclient +
ipykernel), as a notebook user runs it, on 200,000 generated rows in a
temporary working directory.

Needs `pip install nbclient==0.11.0 ipykernel==7.4.0 nbformat==5.11.1
matplotlib==3.11.2` and the Stratus binaries (`STRATUS_BIN_DIR`, or
`stratus.cluster.find_binaries`' search). About 10 s with debug binaries.
"""

from __future__ import annotations

import json
import os
import re
import urllib.parse
import urllib.request
from pathlib import Path

import nbformat
import pyarrow.dataset as ds
from nbclient import NotebookClient

import stratus
from stratus.cluster import find_binaries

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "isd.ipynb"
ROWS = 200_000
RUN = f"notebook-test-{os.getpid()}"
STEPS = ("len", "persist", "describe", "daily_means", "plots", "memory_usage",
         "year_month_counts", "set_index", "write")


def _text(cell) -> str:
    """A code cell's printed text and plain-text results."""
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append(output.get("text", ""))
        elif "data" in output:
            parts.append(output["data"].get("text/plain", ""))
    return "\n".join(parts)


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200, url
        return response.read()


def _kernel_env() -> dict:
    env = dict(os.environ)
    # The kernel imports the package this test imports (a source checkout
    # with the native module copied in, or the pip-installed one).
    package_root = str(Path(stratus.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (package_root, env.get("PYTHONPATH")) if p
    )
    # The binaries this test would use, found the same way.
    # Absolute: the kernel runs in a directory of its own.
    env["STRATUS_BIN_DIR"] = str(find_binaries().parent.resolve())
    env["STRATUS_NOTEBOOK_ROWS"] = str(ROWS)
    env["STRATUS_RUN"] = RUN
    env["MPLBACKEND"] = "Agg"
    for name in ("STRATUS_SCHEDULER_FILE", "STRATUS_SCHEDULER", "STRATUS_DATA_ROOTS"):
        env.pop(name, None)
    return env


def test_isd_notebook_runs_whole(tmp_path: Path) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    # The committed notebook carries no outputs.
    assert all(not nb.cells[i].outputs and nb.cells[i].execution_count is None for i in code)

    client = NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    last = code[-1]  # closes the client and the cluster
    with client.setup_kernel(env=_kernel_env(), cwd=str(tmp_path)):
        # Every cell but the last (a failing cell raises CellExecutionError).
        for index, cell in enumerate(nb.cells[:last]):
            client.execute_cell(cell, index)

        # The cluster still runs: the run is served by its dashboard.
        printed = "\n".join(_text(nb.cells[i]) for i in code)
        found = re.search(rf"run '{RUN}': (http://\S+/api/runs/(\w+))", printed)
        assert found, printed[-2000:]
        url, run_id = found.group(1), found.group(2)
        assert urllib.parse.urlparse(url).hostname == "127.0.0.1", url
        run = json.loads(_get(url))
        assert run["name"] == RUN and run["id"] == run_id
        latest = run["latest"]
        for step in STEPS:
            assert latest[f"workflow.{step}.seconds"] > 0, step
        assert latest["workflow.len.rows"] == ROWS
        assert latest["workflow.persist.rows"] == ROWS
        assert latest["workflow.daily_means.days"] == 4383
        assert latest["workflow.write.rows"] == ROWS
        images = {a["name"] for a in run["artifacts"] if a["content_type"] == "image/png"}
        # One figure per numeric column of the daily means, and the stations.
        assert {"temperature.png", "windSpeed.png", "stations.png"} <= images, images
        assert len(images) == 17, images
        png = _get(url.rstrip("/") + "/artifacts/temperature.png")
        assert png.startswith(b"\x89PNG\r\n\x1a\n")

        client.execute_cell(nb.cells[last], last)

    # The client's HTML repr, the grid of daily means, the closed cluster.
    outputs = [o for i in code for o in nb.cells[i].outputs]
    assert any("Stratus Client" in o.get("data", {}).get("text/html", "") for o in outputs)
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert "status=closed" in _text(nb.cells[last])
    assert f"{ROWS:,} rows" in printed

    # The sample data it generated and the dataset it wrote.
    assert list((tmp_path / "stratus-sample-data").rglob("*.parquet"))
    out = tmp_path / "stratus-sample-data-prepared"
    assert (out / "_SUCCESS").exists()
    files = list(out.glob("year=*/month=*/*.parquet"))
    assert len(files) == latest["workflow.write.files"], len(files)
    written = ds.dataset(out, format="parquet", partitioning="hive").to_table()
    assert written.num_rows == ROWS
    assert {"date", "temperature", "year", "month"} <= set(written.column_names)
    # Fahrenheit, nulls filled: no null temperature, and none below -100 °F.
    temperature = written.column("temperature")
    assert temperature.null_count == 0
    assert min(v for v in temperature.to_pylist()) > -100
