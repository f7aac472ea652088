"""Runs: client.run, run.log(name, value) and run.log_image(name, figure /
PNG bytes / PNG path), checked through the scheduler's HTTP run API
(`/api/runs/<id>` and `/api/runs/<id>/artifacts/<name>`) on loopback."""

from __future__ import annotations

import io
import urllib.error
import urllib.request

import pytest

import stratus
from _util import get_json

matplotlib = pytest.importorskip("matplotlib")
from matplotlib.figure import Figure  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def figure() -> Figure:
    fig = Figure(figsize=(3, 2))
    ax = fig.add_subplot()
    ax.plot([1, 2, 3], [3, 1, 2])
    return fig


def fetch(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.headers.get("Content-Type"), r.read()


def test_run_is_named(client):
    run = client.run
    assert isinstance(run, stratus.Run)
    assert run.name == "pytest"
    assert client.run is run


def test_log_metric_served_by_the_run_api(client, df):
    rows = len(df)
    run = client.run
    run_id = run.log("rows", rows)
    assert run_id and run.id == run_id
    assert run.url == client.dashboard_link.rstrip("/") + f"/api/runs/{run_id}"
    detail = get_json(run.url)
    assert detail["id"] == run_id
    assert detail["name"] == "pytest"
    assert detail["latest"]["rows"] == rows
    logged = [m for m in detail["metrics"] if m["name"] == "rows"]
    assert logged and logged[-1]["value"] == rows
    run.log("rows", rows + 1)
    assert get_json(run.url)["latest"]["rows"] == rows + 1
    listed = get_json(client.dashboard_link.rstrip("/") + "/api/runs")
    assert run_id in [r["id"] for r in listed]


def test_log_image_figure(client):
    run = client.run
    run_id = run.log_image("plot", figure())
    detail = get_json(run.url)
    assert detail["id"] == run_id
    artifacts = {a["name"]: a for a in detail["artifacts"]}
    assert artifacts["plot.png"]["content_type"] == "image/png"
    content_type, body = fetch(f"{run.url}/artifacts/plot.png")
    assert content_type == "image/png"
    assert body.startswith(PNG)
    assert len(body) == artifacts["plot.png"]["bytes"]


def test_log_image_bytes_and_path(client, tmp_path):
    buffer = io.BytesIO()
    figure().savefig(buffer, format="png")
    png = buffer.getvalue()
    run = client.run
    run.log_image("raw", png)
    assert fetch(f"{run.url}/artifacts/raw.png")[1] == png
    path = tmp_path / "from-file.png"
    path.write_bytes(png)
    run.log_image("from-file.png", str(path))
    assert fetch(f"{run.url}/artifacts/from-file.png")[1] == png


def test_log_image_refuses_what_is_not_png(client):
    with pytest.raises(stratus.BadInputError, match="not a PNG"):
        client.run.log_image("text", b"hello")
    with pytest.raises(stratus.BadInputError, match="expected a matplotlib figure"):
        client.run.log_image("number", 42)


def test_missing_artifact_is_404(client):
    run_id = client.run.log("touch", 1)
    with pytest.raises(urllib.error.HTTPError) as info:
        fetch(f"{client.run.url}/artifacts/nothing.png")
    assert info.value.code == 404
    assert run_id


def test_client_without_run(cluster, monkeypatch):
    monkeypatch.delenv("STRATUS_RUN", raising=False)
    with stratus.Client(cluster) as c:
        assert c.run is None
