"""Fixtures shared by the Stratus client tests.

Everything is real: the `stratus` binaries (found by
`stratus.cluster.find_binaries`, so `STRATUS_BIN_DIR` or a `stratus` on
`PATH`), a session-scoped `LocalCluster` of two workers talking QUIC on
loopback, Parquet written by `stratus datagen isd`, and DuckDB reading the
same files as the independent oracle. pandas results for comparison come
from pyarrow reading the same files.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

import stratus
from stratus.cluster import find_binaries

ROWS = 300_000


@pytest.fixture(scope="session")
def launcher() -> Path:
    """The `stratus` binary (with `stratus-scheduler` and `stratus-worker`
    beside it)."""
    try:
        return find_binaries()
    except stratus.StratusError as e:
        pytest.exit(
            f"the Stratus binaries are needed for these tests: set STRATUS_BIN_DIR "
            f"to the folder holding stratus, stratus-scheduler and stratus-worker "
            f"(or put them on PATH). {e}",
            returncode=4,
        )


@pytest.fixture(scope="session")
def isd_dir(launcher: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hive-partitioned sample dataset: year=YYYY/month=M/*.parquet."""
    out = tmp_path_factory.mktemp("isd")
    subprocess.run(
        [str(launcher), "datagen", "isd", "--rows", str(ROWS), "--out", str(out)],
        check=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=120,
    )
    assert list(out.glob("year=*/month=*/*.parquet")), "datagen wrote no files"
    return out


def hive_partitioning() -> ds.Partitioning:
    """The datagen files' hive keys. The files also hold a `year` column
    (int32), so pyarrow's inferred partitioning (dictionary) would clash."""
    return ds.partitioning(
        pa.schema([("year", pa.int32()), ("month", pa.int32())]), flavor="hive"
    )


@pytest.fixture(scope="session")
def pdf(isd_dir: Path) -> pd.DataFrame:
    """The sample data as pandas reads it (through pyarrow)."""
    return pd.read_parquet(isd_dir, partitioning=hive_partitioning())


@pytest.fixture(scope="session")
def pdf_dated(pdf: pd.DataFrame) -> pd.DataFrame:
    """`pdf` with the `date` column the tests assign in Stratus."""
    return pdf.assign(date=pdf["datetime"].dt.floor("D"))


@pytest.fixture(scope="session")
def duck(isd_dir: Path) -> duckdb.DuckDBPyConnection:
    """DuckDB with the sample data as the view `isd`."""
    con = duckdb.connect()
    glob = str(isd_dir / "**" / "*.parquet").replace("'", "''")
    con.execute(
        "CREATE VIEW isd AS SELECT * FROM "
        f"read_parquet('{glob}', hive_partitioning=true)"
    )
    return con


@pytest.fixture(scope="session")
def cluster(launcher: Path, tmp_path_factory: pytest.TempPathFactory):
    data_dir = tmp_path_factory.mktemp("stratus-data")
    with stratus.LocalCluster(
        n_workers=2,
        data_dir=data_dir,
        dashboard_address="127.0.0.1:0",
        bin_dir=launcher.parent,
    ) as c:
        yield c


@pytest.fixture(scope="session")
def client(cluster: stratus.LocalCluster):
    with stratus.Client(cluster, run="pytest") as c:
        yield c


@pytest.fixture(scope="session")
def df(client: stratus.Client, isd_dir: Path) -> stratus.DataFrame:
    """The sample data as a lazy Stratus frame over Parquet."""
    return client.read_parquet(isd_dir)


@pytest.fixture(scope="session")
def persisted(df: stratus.DataFrame) -> stratus.DataFrame:
    """The sample data with `date`, persisted as `isd-dated`."""
    return df.assign(date="date_trunc('day', datetime)").persist("isd-dated")
