"""Lazy frames over Parquet: len, columns, dtypes, head, to_arrow, and the
steps (assign, column selection, drop, query, fillna), checked against
DuckDB and pandas reading the same files."""

from __future__ import annotations

import math

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import stratus
from _util import numeric_columns, scalar

KEYS = ["usaf", "wban", "datetime"]


def duck_except(duck, left_table: pa.Table, left_sql: str, right_sql: str) -> int:
    """Rows in one side and not the other (both ways, as multisets)."""
    duck.register("left_table", left_table)
    try:
        one = scalar(duck, f"SELECT count(*) FROM ({left_sql} EXCEPT ALL {right_sql})")
        two = scalar(duck, f"SELECT count(*) FROM ({right_sql} EXCEPT ALL {left_sql})")
    finally:
        duck.unregister("left_table")
    return one + two


def test_len_parquet_matches_duckdb(df, duck):
    assert len(df) == scalar(duck, "SELECT count(*) FROM isd")


def test_len_persisted(persisted, duck):
    assert len(persisted) == scalar(duck, "SELECT count(*) FROM isd")


def test_columns_as_pandas(df, pdf):
    assert isinstance(df.columns, pd.Index)
    assert df.columns.tolist() == pdf.columns.tolist()


def test_dtypes_as_pandas(df, pdf):
    dtypes = df.dtypes
    assert isinstance(dtypes, pd.Series)
    assert dtypes.index.tolist() == pdf.dtypes.index.tolist()
    # Categories differ in content (the schema has none), not in kind.
    assert dtypes.astype(str).tolist() == pdf.dtypes.astype(str).tolist()
    for column in pdf.columns:
        assert type(dtypes[column]) is type(pdf.dtypes[column]), column


def test_head_is_pandas_with_n_rows_from_the_data(df, pdf):
    head = df.head(7)
    assert isinstance(head, pd.DataFrame)
    assert len(head) == 7
    assert head.columns.tolist() == pdf.columns.tolist()
    assert head.dtypes.astype(str).tolist() == pdf.dtypes.astype(str).tolist()
    # Every row is one of the data's rows, whole.
    for _, row in head.iterrows():
        match = pdf[
            (pdf["usaf"] == row["usaf"])
            & (pdf["wban"] == row["wban"])
            & (pdf["datetime"] == row["datetime"])
        ]
        assert len(match) >= 1
        expected = match.iloc[0]
        for column in pdf.columns:
            a, b = row[column], expected[column]
            assert (pd.isna(a) and pd.isna(b)) or a == b, (column, a, b)


def test_head_default_and_large_n(df, persisted):
    assert len(df.head()) == 5
    assert len(persisted.head(10)) == 10


def test_to_arrow_equals_the_files(df, duck):
    table = df.to_arrow()
    assert isinstance(table, pa.Table)
    assert table.num_rows == scalar(duck, "SELECT count(*) FROM isd")
    assert table.column_names == [
        d[0] for d in duck.execute("SELECT * FROM isd LIMIT 0").description
    ]
    assert (
        duck_except(duck, table, "SELECT * FROM left_table", "SELECT * FROM isd") == 0
    )


def test_to_arrow_n_rows(df):
    table = df.to_arrow(11)
    assert table.num_rows == 11


def test_assign_date_trunc(df, duck, pdf_dated):
    dated = df.assign(date="date_trunc('day', datetime)")
    assert dated.columns.tolist() == pdf_dated.columns.tolist()
    assert str(dated.dtypes["date"]) == str(pdf_dated.dtypes["date"])
    table = dated[KEYS + ["date"]].to_arrow()
    sql = "SELECT usaf, wban, datetime, date_trunc('day', datetime) FROM isd"
    assert duck_except(duck, table, "SELECT * FROM left_table", sql) == 0
    # The frame it came from is unchanged (steps are immutable).
    assert "date" not in df.columns


def test_assign_replaces_a_column(df, duck):
    fahrenheit = df.assign(temperature="temperature * 9 / 5 + 32")
    assert fahrenheit.columns.tolist() == df.columns.tolist()
    table = fahrenheit[KEYS + ["temperature"]].to_arrow()
    sql = "SELECT usaf, wban, datetime, temperature * 9 / 5 + 32 FROM isd"
    assert duck_except(duck, table, "SELECT * FROM left_table", sql) == 0
    # Nulls stay null.
    nulls = scalar(duck, "SELECT count(*) FROM isd WHERE temperature IS NULL")
    assert nulls > 0
    assert table.column("temperature").null_count == nulls


def test_assign_number_literal(df):
    table = df.assign(one=1, half=0.5, yes=True)[["one", "half", "yes"]].to_arrow(3)
    assert table.column("one").to_pylist() == [1, 1, 1]
    assert table.column("half").to_pylist() == [0.5, 0.5, 0.5]
    assert table.column("yes").to_pylist() == [True, True, True]


@pytest.mark.parametrize("persist_first", [False, True], ids=["parquet", "persisted"])
def test_select_columns(df, persisted, persist_first, pdf):
    frame = persisted if persist_first else df
    picked = frame[["temperature", "usaf"]]
    assert picked.columns.tolist() == ["temperature", "usaf"]
    head = picked.head(4)
    assert head.columns.tolist() == ["temperature", "usaf"]
    assert head.dtypes.astype(str).tolist() == ["float64", "category"]
    assert len(picked) == len(pdf)


def test_drop_columns(df, pdf):
    dropped = df.drop(columns=["usaf", "temperature"])
    expected = pdf.drop(columns=["usaf", "temperature"])
    assert dropped.columns.tolist() == expected.columns.tolist()
    head = dropped.head(3)
    assert head.columns.tolist() == expected.columns.tolist()
    assert dropped.dtypes.astype(str).tolist() == expected.dtypes.astype(str).tolist()


def test_query_counts_as_duckdb(df, duck, pdf):
    warm = df.query("temperature > 0")
    expected = scalar(duck, "SELECT count(*) FROM isd WHERE temperature > 0")
    assert 0 < expected < len(pdf)
    assert len(warm) == expected
    assert expected == int((pdf["temperature"] > 0).sum())
    assert warm.dtypes.astype(str).tolist() == df.dtypes.astype(str).tolist()
    temperatures = warm[["temperature"]].to_arrow().column("temperature")
    assert temperatures.null_count == 0
    assert pc.min(temperatures).as_py() > 0


def test_query_after_assign(df, duck):
    frame = df.assign(f="temperature * 9 / 5 + 32").query("f > 50 AND month = 7")
    expected = scalar(
        duck,
        "SELECT count(*) FROM isd WHERE temperature * 9 / 5 + 32 > 50 AND month = 7",
    )
    assert expected > 0
    assert len(frame) == expected


def test_fillna_leaves_no_numeric_nulls(df, pdf):
    filled = df.fillna(0)
    numeric = numeric_columns(pdf)
    assert any(pdf[c].isna().any() for c in numeric), "the sample data has no nulls"
    table = filled[numeric].to_arrow()
    for column in numeric:
        values = table.column(column)
        assert values.null_count == 0, column
        if pa.types.is_floating(values.type):
            assert not pc.any(pc.is_nan(values)).as_py(), column
    assert filled.dtypes.astype(str).tolist() == df.dtypes.astype(str).tolist()


def test_fillna_sums_match_duckdb_coalesce(df, duck, pdf):
    columns = [c for c in numeric_columns(pdf) if c not in ("year", "month")]
    sums = df.fillna(0).groupby("year").sum()
    select = ", ".join(f'sum(coalesce("{c}", 0)) AS "{c}"' for c in columns)
    expected = duck.execute(
        f"SELECT year, {select} FROM isd GROUP BY year ORDER BY year"
    ).df()
    expected = expected.set_index("year")
    assert sums.index.tolist() == expected.index.tolist()
    for column in columns:
        for got, want in zip(sums[column], expected[column]):
            assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9), (
                column,
                got,
                want,
            )


def test_fillna_rejects_non_numbers(df):
    with pytest.raises(stratus.BadInputError, match="fillna"):
        df.fillna("x")


def test_read_parquet_columns(client, isd_dir, duck):
    frame = client.read_parquet(isd_dir, columns=["temperature", "month"])
    assert frame.columns.tolist() == ["temperature", "month"]
    assert frame.dtypes.astype(str).tolist() == ["float64", "int32"]
    assert len(frame) == scalar(duck, "SELECT count(*) FROM isd")
    got = frame.groupby("month").count()["temperature"].tolist()
    expected = duck.execute(
        "SELECT count(temperature) FROM isd GROUP BY month ORDER BY month"
    ).fetchall()
    assert got == [n for (n,) in expected]


def test_persisted_dtypes_as_pandas(persisted, pdf_dated):
    assert persisted.columns.tolist() == pdf_dated.columns.tolist()
    got = persisted.dtypes.astype(str).tolist()
    assert got == pdf_dated.dtypes.astype(str).tolist()
