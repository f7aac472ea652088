"""set_index and sort_values (persisted frames sorted across partitions,
with their NaN/null placement), and to_parquet with partition_on read back
by DuckDB and pyarrow, overwrite=False refused and overwrite=True."""

from __future__ import annotations

import gc

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

import stratus
from _util import frame_names, scalar


def is_sorted(values: np.ndarray) -> bool:
    return bool((values[1:] >= values[:-1]).all())


def test_set_index_date(persisted, client, duck, pdf_dated):
    before_columns = persisted.columns.tolist()
    indexed = persisted.set_index("date")
    assert indexed.index == "date"
    assert indexed.columns.tolist() == [c for c in before_columns if c != "date"]
    assert "date" not in indexed.dtypes.index
    assert frame_names(client)[indexed.name]["rows"] == len(pdf_dated)

    head = indexed.head(20)
    assert head.index.name == "date"
    assert isinstance(head.index, pd.DatetimeIndex)
    assert head.index.is_monotonic_increasing
    smallest = duck.execute(
        "SELECT date_trunc('day', datetime) AS d FROM isd ORDER BY d LIMIT 20"
    ).df()["d"]
    assert (head.index.values == smallest.values).all()
    assert head.columns.tolist() == indexed.columns.tolist()

    # Sorted across all partitions, in partition order.
    dates = indexed[["date"]].to_arrow().column("date").to_numpy()
    assert len(dates) == len(pdf_dated)
    assert is_sorted(dates)

    # The index is not described and counts as the Index in memory_usage.
    assert "date" not in indexed.describe().columns
    usage = indexed.memory_usage()
    assert usage["Index"] > 0 and "date" not in usage.index

    # The frame it came from is as it was.
    assert persisted.index is None
    assert persisted.columns.tolist() == before_columns
    assert persisted.head(3).index.tolist() == [0, 1, 2]
    assert persisted.name == "isd-dated"


def test_set_index_frame_released_on_collection(client, persisted):
    indexed = persisted[["date", "temperature"]].set_index("date")
    name = indexed.name
    assert name in frame_names(client)
    del indexed
    gc.collect()
    assert name not in frame_names(client)


def test_sort_values_temperature(df, duck):
    # `t` is NaN in January (0 / 0) and null where the temperature is.
    frame = df.assign(t="temperature * (month - 1) / (month - 1)")[["t", "month"]]
    ordered = frame.sort_values("t")
    assert ordered.index is None
    column = ordered.to_arrow().column("t")
    nulls = scalar(duck, "SELECT count(*) FROM isd WHERE temperature IS NULL")
    nans = scalar(
        duck, "SELECT count(*) FROM isd WHERE month = 1 AND temperature IS NOT NULL"
    )
    assert nulls > 0 and nans > 0
    assert len(column) == scalar(duck, "SELECT count(*) FROM isd")
    assert column.null_count == nulls
    is_nan = pc.fill_null(pc.is_nan(column), False).to_numpy(zero_copy_only=False)
    assert is_nan.sum() == nans

    # Numbers first, ascending; NaN and null after them all (pandas'
    # na_position="last", where both are NaN).
    values = column.to_numpy(zero_copy_only=False)  # null -> NaN
    numbers = len(values) - nulls - nans
    assert not np.isnan(values[:numbers]).any()
    assert np.isnan(values[numbers:]).all()
    assert is_sorted(values[:numbers])
    expected = duck.execute(
        "SELECT temperature * (month - 1) / (month - 1) AS t FROM isd "
        "WHERE month <> 1 AND temperature IS NOT NULL ORDER BY t"
    ).fetchnumpy()["t"]
    np.testing.assert_array_equal(values[:numbers], expected)

    head = ordered.head(5)
    assert head["t"].tolist() == expected[:5].tolist()


def test_sort_values_persisted_named(persisted, client, duck):
    ordered = persisted.sort_values("temperature", name="by-temperature")
    try:
        assert ordered.name == "by-temperature"
        head = ordered.head(3)
        assert head.index.tolist() == [0, 1, 2]
        lowest = duck.execute(
            "SELECT temperature FROM isd ORDER BY temperature NULLS LAST LIMIT 3"
        ).fetchall()
        assert head["temperature"].tolist() == [t for (t,) in lowest]
    finally:
        client.unpersist("by-temperature")


def test_to_parquet_partitioned_round_trip(persisted, duck, tmp_path):
    dest = tmp_path / "written"
    result = persisted.to_parquet(dest, partition_on=["year", "month"])
    assert result["rows"] == scalar(duck, "SELECT count(*) FROM isd")
    assert result["files"] >= 144
    assert (dest / "_SUCCESS").exists()
    folders = sorted(
        p.relative_to(dest).as_posix() for p in dest.glob("year=*/month=*")
    )
    assert len(folders) == 144
    assert "year=2008/month=1" in folders and "year=2019/month=12" in folders

    table = ds.dataset(dest, format="parquet", partitioning="hive").to_table()
    assert table.num_rows == result["rows"]

    names = [f'"{c}"' for c in persisted.columns]
    glob = str(dest / "**" / "*.parquet").replace("'", "''")
    written = (
        f"SELECT {', '.join(names)} FROM read_parquet('{glob}', hive_partitioning=true)"
    )
    computed = [n if n != '"date"' else "date_trunc('day', datetime)" for n in names]
    original = f"SELECT {', '.join(computed)} FROM isd"
    for a, b in ((written, original), (original, written)):
        assert scalar(duck, f"SELECT count(*) FROM ({a} EXCEPT ALL {b})") == 0


def test_to_parquet_overwrite(df, tmp_path):
    dest = tmp_path / "twice"
    first = df.query("month = 2")[["temperature", "year", "month"]]
    assert first.to_parquet(dest, partition_on=["year", "month"])["files"] == 12
    second = df.query("month = 5")[["temperature", "year", "month"]]
    with pytest.raises(stratus.StratusError, match="twice"):
        second.to_parquet(dest, partition_on=["year", "month"])
    # Refused: the first dataset is still there, whole.
    months = {p.name for p in dest.glob("year=*/month=*")}
    assert months == {"month=2"}

    result = second.to_parquet(dest, partition_on=["year", "month"], overwrite=True)
    assert result["rows"] == len(second)
    assert {p.name for p in dest.glob("year=*/month=*")} == {"month=5"}
    table = ds.dataset(dest, format="parquet", partitioning="hive").to_table()
    assert table.num_rows == len(second)


def test_to_parquet_existing_is_bad_input(df, tmp_path):
    dest = tmp_path / "existing"
    df[["month", "temperature"]].to_parquet(dest)
    with pytest.raises(stratus.BadInputError, match="overwrite=True"):
        df[["month", "temperature"]].to_parquet(dest)
