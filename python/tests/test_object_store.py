"""read_parquet of an s3:// URL with storage_options, against moto's S3
server on loopback (skipped when moto or boto3 is not installed): the
options reach the workers with each request, and the results equal DuckDB's
over the same files on disk."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

import stratus
from _util import scalar

boto3 = pytest.importorskip("boto3")
pytest.importorskip("moto.server")

BUCKET = "isd-bucket"
KEY_ID = SECRET = "testing"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory):
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    for _ in range(5):
        port = free_port()
        with open(log_path, "wb") as log:
            server = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "moto.server",
                    "-H",
                    "127.0.0.1",
                    "-p",
                    str(port),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while server.poll() is None and time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        if server.poll() is None and time.monotonic() < deadline:
            break
        server.kill()
        server.wait()
    else:
        pytest.fail(f"moto did not start: {log_path.read_text()[-2000:]}")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="module")
def s3_data(moto_endpoint, isd_dir):
    """year=2019 of the sample data uploaded below s3://isd-bucket/isd/."""
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        region_name=REGION,
    )
    s3.create_bucket(Bucket=BUCKET)
    for path in sorted((isd_dir / "year=2019").rglob("*.parquet")):
        key = "isd/" + path.relative_to(isd_dir).as_posix()
        s3.upload_file(str(path), BUCKET, key)
    return f"s3://{BUCKET}/isd"


def options(endpoint: str) -> dict:
    return {
        "endpoint": endpoint,
        "allow_http": True,
        "aws_access_key_id": KEY_ID,
        "aws_secret_access_key": SECRET,
        "region": REGION,
    }


def test_read_parquet_s3(client, s3_data, moto_endpoint, duck):
    frame = client.read_parquet(s3_data, storage_options=options(moto_endpoint))
    rows = scalar(duck, "SELECT count(*) FROM isd WHERE year = 2019")
    assert len(frame) == rows
    assert len(frame.head(3)) == 3
    described = frame.describe()
    assert described.loc["max", "temperature"] == scalar(
        duck, "SELECT max(temperature) FROM isd WHERE year = 2019"
    )
    by_month = frame.groupby("month").count()
    assert by_month.index.tolist() == list(range(1, 13))
    # Steps keep the options.
    assert len(frame.query("month = 6")) == scalar(
        duck, "SELECT count(*) FROM isd WHERE year = 2019 AND month = 6"
    )


def test_read_parquet_s3_missing_bucket(client, moto_endpoint, s3_data):
    frame = client.read_parquet(
        "s3://no-such-bucket/isd", storage_options=options(moto_endpoint)
    )
    with pytest.raises(stratus.NotFoundError, match="no-such-bucket") as info:
        len(frame)
    assert isinstance(info.value, LookupError)
