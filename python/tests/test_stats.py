"""describe, groupby aggregations and memory_usage: values against DuckDB
over the same files (exact where the statistic is exact, 1e-9 relative for
means and deviations), and index, columns and dtypes against what pandas
gives for the same data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from _util import numeric_columns

DUCK = {
    "count": "count",
    "mean": "avg",
    "sum": "sum",
    "min": "min",
    "max": "max",
    "std": "stddev_samp",
    "var": "var_samp",
}
EXACT = {"count", "min", "max"}


@pytest.fixture(params=["parquet", "persisted"])
def frame(request, df, persisted):
    return df if request.param == "parquet" else persisted


def assert_close(got, want, exact: bool, what: str):
    got = np.asarray(got, dtype="float64")
    want = np.asarray(want, dtype="float64")
    if exact:
        np.testing.assert_array_equal(got, want, err_msg=what)
    else:
        np.testing.assert_allclose(
            got, want, rtol=1e-9, atol=0, equal_nan=True, err_msg=what
        )


# -- describe ---------------------------------------------------------------


def test_describe_shaped_as_pandas(frame, pdf):
    got = frame.describe()
    # pandas' describe() of numeric columns (pandas >= 2 would also describe
    # the datetime column by default; Stratus describes numbers only).
    expected = pdf.describe(include="number")
    assert isinstance(got, pd.DataFrame)
    assert got.index.tolist() == expected.index.tolist()
    assert got.index.tolist() == [
        "count",
        "mean",
        "std",
        "min",
        "25%",
        "50%",
        "75%",
        "max",
    ]
    assert got.columns.tolist() == expected.columns.tolist()
    assert (got.dtypes == "float64").all()
    pd.testing.assert_frame_equal(got, expected, rtol=1e-9)


def test_describe_matches_duckdb(frame, duck, pdf):
    got = frame.describe()
    for column in numeric_columns(pdf):
        c = f'"{column}"'
        row = duck.execute(
            f"SELECT count({c}), min({c}), quantile_cont({c}, 0.25), "
            f"quantile_cont({c}, 0.5), quantile_cont({c}, 0.75), max({c}), "
            f"avg({c}), stddev_samp({c}) FROM isd"
        ).fetchall()[0]
        exact = got.loc[["count", "min", "25%", "50%", "75%", "max"], column]
        assert_close(exact, row[:6], exact=True, what=column)
        assert_close(
            got.loc[["mean", "std"], column], row[6:], exact=False, what=column
        )


def test_describe_after_query(df, duck):
    got = df.query("temperature > 0").describe()
    row = duck.execute(
        "SELECT count(temperature), min(temperature), max(temperature), "
        "quantile_cont(temperature, 0.5) FROM isd WHERE temperature > 0"
    ).fetchall()[0]
    assert_close(got.loc[["count", "min", "max", "50%"], "temperature"], row, True, "t")


# -- groupby ----------------------------------------------------------------


def duck_groupby(duck, keys_sql: str, keys: list, columns: list, function: str):
    select = ", ".join(f'{DUCK[function]}("{c}") AS "{c}"' for c in columns)
    result = duck.execute(
        f"SELECT {keys_sql}, {select} FROM isd GROUP BY ALL ORDER BY ALL"
    ).df()
    return result.set_index(keys)


def pandas_groupby(pdf_dated, keys, function):
    grouped = pdf_dated.groupby(keys)
    if function == "count":
        return grouped.count()
    return getattr(grouped, function)(numeric_only=True)


def test_groupby_date_mean(persisted, duck, pdf_dated):
    got = persisted.groupby("date").mean()
    expected = pandas_groupby(pdf_dated, "date", "mean")
    assert isinstance(got, pd.DataFrame)
    assert got.index.name == "date"
    assert isinstance(got.index, pd.DatetimeIndex)
    assert got.index.equals(expected.index)
    assert got.columns.tolist() == expected.columns.tolist()
    assert got.dtypes.equals(expected.dtypes)
    pd.testing.assert_frame_equal(got, expected, rtol=1e-9)

    oracle = duck_groupby(
        duck, "date_trunc('day', datetime) AS date", ["date"], got.columns, "mean"
    )
    assert len(oracle) == len(got) == 4383
    assert (oracle.index.values == got.index.values).all()
    for column in got.columns:
        assert_close(got[column], oracle[column], exact=False, what=column)


@pytest.mark.parametrize("function", ["sum", "count", "min", "max", "std", "var"])
def test_groupby_date_aggregations_match_duckdb(persisted, duck, function):
    got = getattr(persisted.groupby("date"), function)()
    oracle = duck_groupby(
        duck, "date_trunc('day', datetime) AS date", ["date"], got.columns, function
    )
    assert got.index.name == "date"
    assert (oracle.index.values == got.index.values).all()
    for column in got.columns:
        want = oracle[column]
        if function == "sum":
            # SQL sums an all-null group to NULL; pandas (and Stratus) to 0.
            want = want.fillna(0)
        assert_close(got[column], want, function in EXACT, column)


@pytest.mark.parametrize("function", ["sum", "count", "min", "max", "std", "var"])
def test_groupby_date_aggregations_shaped_as_pandas(persisted, pdf_dated, function):
    got = getattr(persisted.groupby("date"), function)()
    expected = pandas_groupby(pdf_dated, "date", function)
    assert got.index.equals(expected.index)
    assert got.columns.tolist() == expected.columns.tolist()
    assert got.dtypes.equals(expected.dtypes), (got.dtypes, expected.dtypes)
    pd.testing.assert_frame_equal(got, expected, rtol=1e-9)


def test_groupby_sum_as_pandas(persisted, pdf_dated):
    got = persisted.groupby("date").sum()
    expected = pandas_groupby(pdf_dated, "date", "sum")
    pd.testing.assert_frame_equal(got, expected, rtol=1e-9)


def test_groupby_year_month_count_multiindex(persisted, df, duck, pdf):
    got = persisted.groupby(["year", "month"]).count()
    expected = pdf.groupby(["year", "month"]).count()
    assert isinstance(got.index, pd.MultiIndex)
    assert got.index.names == ["year", "month"]
    assert len(got) == 12 * 12
    assert got.index.equals(expected.index)
    # The persisted frame also has `date`; the Parquet one is pandas' data.
    assert got.columns.tolist() == expected.columns.tolist() + ["date"]
    pd.testing.assert_frame_equal(got.drop(columns=["date"]), expected)

    from_parquet = df.groupby(["year", "month"]).count()
    pd.testing.assert_frame_equal(from_parquet, expected)

    oracle = duck_groupby(
        duck, "year, month", ["year", "month"], expected.columns, "count"
    )
    for column in expected.columns:
        assert_close(got[column], oracle[column], True, column)


def test_groupby_on_parquet_source_with_steps(df, duck):
    got = df.query("temperature > 0").groupby("month").max()
    oracle = duck.execute(
        "SELECT month, max(temperature) FROM isd WHERE temperature > 0 "
        "GROUP BY month ORDER BY month"
    ).fetchall()
    assert got.index.tolist() == [m for m, _ in oracle]
    assert got["temperature"].tolist() == [t for _, t in oracle]


# -- memory_usage -----------------------------------------------------------


def test_memory_usage_shaped_as_pandas(frame, pdf):
    got = frame.memory_usage()
    assert isinstance(got, pd.Series)
    assert got.dtype == "int64"
    assert got.index[0] == "Index"
    assert got.index[1:].tolist() == frame.columns.tolist()
    expected_index = pdf.memory_usage().index.tolist()
    assert got.index.tolist()[: len(expected_index)] == expected_index
    assert got["Index"] == 0  # no set_index: Stratus keeps no index
    sizes = got.drop("Index")
    assert (sizes > 0).all()
    rows = len(pdf)
    for column in pdf.columns:
        dtype = pdf[column].dtype
        if not isinstance(dtype, pd.CategoricalDtype):
            assert sizes[column] >= rows * dtype.itemsize, column

    without_index = frame.memory_usage(index=False)
    assert without_index.index.tolist() == frame.columns.tolist()
    assert without_index.equals(sizes)
