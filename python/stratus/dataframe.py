"""`stratus.DataFrame`: a lazy frame, Dask-shaped.

A frame is where its data comes from (Parquet, or a frame persisted in the
workers' RAM) plus the steps to apply (`assign`, `query`, column selection,
`drop`, `fillna`). Nothing runs until a result is asked for: `len`, `head`,
`describe`, `groupby(...).mean()`, `memory_usage`, `to_parquet`, `persist`,
`set_index`/`sort_values`. Results come back as pandas objects shaped as
pandas shapes them (converted by pyarrow from the Arrow tables the cluster
answers with); `to_arrow` gives the `pyarrow.Table`.

Frames persisted without a name (and the sorted frames `set_index` makes)
belong to the Python objects that refer to them: they are released from the
workers' RAM when the last such object is gone, as Dask releases a persisted
collection's futures. Frames persisted with a name stay until `unpersist`.
"""

from __future__ import annotations

import html
import itertools
import os
import weakref
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Union

from . import _stratus
from ._errors import BadInputError

if TYPE_CHECKING:  # pragma: no cover
    import pandas
    import pyarrow

    from .client import Client

_names = itertools.count()


def _fresh_name(kind: str) -> str:
    return f"_py-{os.getpid()}-{next(_names)}-{kind}"


class _Owned:
    """A frame persisted under a generated name: released when the last
    DataFrame holding this object is gone (or at exit)."""

    def __init__(self, client: "Client", name: str):
        self.name = name
        self._finalizer = weakref.finalize(self, _release, client._native, name)


def _release(native: Any, name: str) -> None:
    if native.closed:
        return
    try:
        native.unpersist(name)
    except Exception:  # noqa: BLE001 - gone already, or the cluster is
        pass


def _as_expr(value: Any) -> str:
    """An `assign` value as SQL text: a string is an expression
    (`"temperature * 9 / 5 + 32"`); a number or bool is a literal."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, float)):
        return repr(float(value)) if isinstance(value, float) else str(value)
    raise BadInputError(
        f"assign: expected an SQL expression string or a number, not {type(value).__name__}"
    )


class DataFrame:
    """A lazy frame on a Stratus cluster (see the module doc)."""

    def __init__(
        self,
        client: "Client",
        source: str,
        persisted: bool,
        columns: Optional[List[str]],
        steps: List[tuple],
        storage: List[tuple],
        index: Optional[str] = None,
        owner: Optional[_Owned] = None,
    ):
        self._client = client
        # Read by the native layer (python/src/lib.rs: `plan`).
        self._source = source
        self._persisted = persisted
        self._columns = columns
        self._steps = steps
        self._storage = storage
        # The column set_index sorted by: head() shows it as the index.
        self._index = index
        # Keeps a generated persisted frame alive while this frame lives.
        self._owner = owner
        self._schema: Optional["pyarrow.Schema"] = None

    def _then(self, step: tuple, index: Optional[str] = "keep") -> "DataFrame":
        return DataFrame(
            self._client,
            self._source,
            self._persisted,
            self._columns,
            self._steps + [step],
            self._storage,
            index=self._index if index == "keep" else index,
            owner=self._owner,
        )

    # -- what it is --------------------------------------------------------

    @property
    def name(self) -> Optional[str]:
        """The persisted frame's name, when this frame is one as it stands
        (persisted, no step pending)."""
        if self._persisted and not self._steps:
            return self._source
        return None

    @property
    def schema(self) -> "pyarrow.Schema":
        """The Arrow schema, from the source's and the steps' types (reads one
        row, computes nothing)."""
        if self._schema is None:
            self._schema = self._client._native.schema(self)
        return self._schema

    @property
    def columns(self) -> "pandas.Index":
        """Column names, as pandas' `df.columns`."""
        import pandas

        names = list(self.schema.names)
        if self._index is not None and self._index in names:
            names.remove(self._index)
        return pandas.Index(names, dtype="object")

    @property
    def dtypes(self) -> "pandas.Series":
        """The pandas dtype of every column, as pandas' `df.dtypes` (what
        `head()` and `compute()` give)."""
        empty = self.schema.empty_table().to_pandas()
        if self._index is not None and self._index in empty.columns:
            empty = empty.set_index(self._index)
        return empty.dtypes

    @property
    def index(self) -> Optional[str]:
        """The column this frame was `set_index`-ed by, if any."""
        return self._index

    def __len__(self) -> int:
        return self._client._native.len(self)

    def __repr__(self) -> str:
        what = f"persisted '{self._source}'" if self._persisted else self._source
        steps = f", {len(self._steps)} steps pending" if self._steps else ""
        index = f", index={self._index}" if self._index else ""
        return f"<stratus.DataFrame: {what}{steps}{index}>"

    def _repr_html_(self) -> str:
        try:
            dtypes = self.dtypes
        except Exception as e:  # noqa: BLE001 - a repr must not raise
            return f"<p>{html.escape(repr(self))}<br>({html.escape(str(e))})</p>"
        header = "".join(f"<th>{html.escape(str(c))}</th>" for c in dtypes.index)
        types = "".join(f"<td>{html.escape(str(t))}</td>" for t in dtypes.values)
        return (
            f"<div><b>{html.escape(repr(self))}</b>"
            f"<table><tr>{header}</tr><tr>{types}</tr></table></div>"
        )

    # -- steps (lazy) ------------------------------------------------------

    def assign(self, **columns: Any) -> "DataFrame":
        """Add or replace columns computed from SQL expressions, in order:
        `df.assign(date="date_trunc('day', datetime)")`,
        `df.assign(temperature="temperature * 9 / 5 + 32")`. A bad expression
        raises `BadInputError` at once."""
        frame = self
        for name, value in columns.items():
            text = _as_expr(value)
            _stratus.check_expr(text)
            frame = frame._then(("with_column", str(name), text))
        return frame

    def query(self, expr: str) -> "DataFrame":
        """Keep the rows where the SQL predicate holds: `df.query("temperature > 0")`."""
        _stratus.check_expr(expr)
        return self._then(("filter", expr))

    def __getitem__(self, key: Union[str, Sequence[str]]) -> "DataFrame":
        """`df[["a", "b"]]`: these columns, in this order."""
        if isinstance(key, str):
            key = [key]
        columns = [str(c) for c in key]
        if not self._persisted and not self._steps:
            # Read only these columns from Parquet (projection push-down).
            return DataFrame(
                self._client,
                self._source,
                False,
                columns,
                [],
                self._storage,
                index=self._index if self._index in columns else None,
                owner=self._owner,
            )
        return self._then(
            ("select", columns), index=self._index if self._index in columns else None
        )

    def drop(self, columns: Union[str, Sequence[str], None] = None) -> "DataFrame":
        """Remove columns: `df.drop(columns=["a", "b"])`."""
        if columns is None:
            raise BadInputError("drop: name the columns (drop(columns=[...]))")
        if isinstance(columns, str):
            columns = [columns]
        columns = [str(c) for c in columns]
        index = None if self._index in columns else self._index
        return self._then(("drop", columns), index=index)

    def fillna(self, value: float) -> "DataFrame":
        """Replace nulls (and NaN) in every numeric column by `value`."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BadInputError(f"fillna: expected a number, not {value!r}")
        return self._then(("fillna", float(value)))

    # -- results -----------------------------------------------------------

    def _pandas(self, table: "pyarrow.Table") -> "pandas.DataFrame":
        frame = table.to_pandas()
        if self._index is not None and self._index in frame.columns:
            frame = frame.set_index(self._index)
        return frame

    def head(self, n: int = 5) -> "pandas.DataFrame":
        """The first `n` rows as a pandas DataFrame (partition order; after
        `set_index`, the smallest keys)."""
        return self._pandas(self._client._native.head(self, int(n)))

    def to_arrow(self, n: Optional[int] = None) -> "pyarrow.Table":
        """The frame's rows (all, or the first `n`) as a `pyarrow.Table`, the
        column buffers handed over from Rust without a copy. All rows come
        to this process: mind the size."""
        if n is None:
            n = 2**63 - 1
        return self._client._native.head(self, int(n))

    def compute(self) -> "pandas.DataFrame":
        """Every row as a pandas DataFrame (Dask's `compute`)."""
        return self._pandas(self.to_arrow())

    def describe(self) -> "pandas.DataFrame":
        """count, mean, std, min, 25%, 50%, 75%, max of every numeric column
        (quantiles exact), as pandas' `describe()`."""
        frame = self._client._native.describe(self).to_pandas()
        frame = frame.set_index(frame.columns[0])
        frame.index.name = None
        if self._index is not None and self._index in frame.columns:
            frame = frame.drop(columns=[self._index])
        return frame

    def memory_usage(self, index: bool = True, deep: bool = False) -> "pandas.Series":
        """Bytes of Arrow buffers held per column, as pandas'
        `memory_usage()` (an int64 Series by column; `Index` first when
        `index`: Stratus frames keep no separate index, so it holds 0 bytes
        unless `set_index` made one of a column). `deep` is accepted for
        pandas' signature: Arrow buffers are always counted whole."""
        import pandas

        del deep
        table = self._client._native.memory_usage(self)
        names = table.column("column").to_pylist()
        sizes = table.column("bytes").to_pylist()
        by_column = {n: int(b) for n, b in zip(names, sizes) if n != "total"}
        series = {}
        if index:
            series["Index"] = by_column.pop(self._index, 0) if self._index else 0
        elif self._index:
            by_column.pop(self._index, None)
        series.update(by_column)
        return pandas.Series(series, dtype="int64")

    def groupby(self, by: Union[str, Sequence[str]]) -> "GroupBy":
        """Group by one key or several: `df.groupby("date").mean()`,
        `df.groupby(["year", "month"]).count()`."""
        keys = [by] if isinstance(by, str) else [str(k) for k in by]
        if not keys:
            raise BadInputError("groupby: name at least one key column")
        return GroupBy(self, keys)

    # -- persisted frames --------------------------------------------------

    def persist(self, name: Optional[str] = None, replace: bool = False) -> "DataFrame":
        """Load into the workers' RAM (Dask's `persist`). With a `name`, any
        client can `get` it until it is unpersisted (`replace` overwrites a
        frame of that name); without one, it lives as long as the returned
        frame (and frames derived from it) do."""
        generated = name is None
        if generated:
            name = _fresh_name("persist")
        self._client._native.persist(self, name, bool(replace))
        owner = _Owned(self._client, name) if generated else None
        return DataFrame(
            self._client, name, True, None, [], self._storage, index=self._index, owner=owner
        )

    def _sorted(self, by: str, name: Optional[str], index: Optional[str]) -> "DataFrame":
        generated = name is None
        if generated:
            name = _fresh_name("sorted")
        self._client._native.sort(self, str(by), name)
        owner = _Owned(self._client, name) if generated else None
        return DataFrame(self._client, name, True, None, [], self._storage, index=index, owner=owner)

    def set_index(self, key: str, name: Optional[str] = None) -> "DataFrame":
        """A persisted frame sorted by `key` across partitions (a shuffle
        between workers), with `key` as its index (`head()` shows it so).
        This frame is left as it is. `name` persists the result under that
        name; otherwise it lives as long as the returned frame."""
        return self._sorted(key, name, index=str(key))

    def sort_values(self, by: str, name: Optional[str] = None) -> "DataFrame":
        """A persisted frame sorted by the column `by` (see `set_index`)."""
        return self._sorted(by, name, index=None)

    def to_parquet(
        self,
        path: Union[str, os.PathLike],
        partition_on: Optional[Sequence[str]] = None,
        overwrite: bool = False,
        storage_options: Optional[Mapping[str, Any]] = None,
    ) -> Dict[str, int]:
        """Write as a (hive-partitioned, with `partition_on`) Parquet dataset
        at a local path or URL: each worker writes its partitions, and the
        dataset appears whole (`_SUCCESS` last) or not at all. An existing
        dataset is refused unless `overwrite`. Returns rows and files."""
        from .client import _storage_pairs

        path = os.fspath(path)
        if "://" not in path:
            path = os.path.abspath(path)
        frame = self
        if storage_options is not None:
            frame = DataFrame(
                self._client,
                self._source,
                self._persisted,
                self._columns,
                self._steps,
                _storage_pairs(storage_options),
                index=self._index,
                owner=self._owner,
            )
        rows, files = self._client._native.to_parquet(
            frame, path, [str(c) for c in (partition_on or [])], bool(overwrite)
        )
        return {"rows": rows, "files": files}


class GroupBy:
    """A frame grouped by key columns, waiting for its aggregation. Every
    aggregation covers every numeric non-key column (`count` every column),
    as pandas' `groupby(keys).mean()`; the result is indexed by the keys
    (a MultiIndex for several), sorted."""

    def __init__(self, frame: DataFrame, keys: List[str]):
        self._frame = frame
        self._keys = keys

    def _run(self, function: str) -> "pandas.DataFrame":
        import pandas

        table = self._frame._client._native.groupby(self._frame, self._keys, function)
        # The index is built from the key columns directly (set_index would
        # convert them, then move them: twice the work on a small result).
        keys = [table.column(k).to_pandas() for k in self._keys]
        if len(keys) == 1:
            index = pandas.Index(keys[0], name=self._keys[0])
        else:
            index = pandas.MultiIndex.from_arrays(keys, names=self._keys)
        result = table.drop_columns(self._keys).to_pandas()
        result.index = index
        return result

    def mean(self) -> "pandas.DataFrame":
        return self._run("mean")

    def sum(self) -> "pandas.DataFrame":
        """Sums as pandas gives them: a group with no values sums to 0, and
        integer columns keep their dtype (the cluster sums in float64, exact
        up to 2**53)."""
        result = self._run("sum").fillna(0)
        dtypes = self._frame.dtypes
        for column in result.columns:
            dtype = dtypes.get(column)
            if dtype is not None and dtype.kind in "iu":
                result[column] = result[column].astype(dtype)
        return result

    def count(self) -> "pandas.DataFrame":
        return self._run("count")

    def min(self) -> "pandas.DataFrame":
        return self._run("min")

    def max(self) -> "pandas.DataFrame":
        return self._run("max")

    def std(self) -> "pandas.DataFrame":
        """Sample standard deviation (ddof=1), as pandas."""
        return self._run("std")

    def var(self) -> "pandas.DataFrame":
        """Sample variance (ddof=1), as pandas."""
        return self._run("var")

    def __repr__(self) -> str:
        return f"<stratus.GroupBy: {self._frame!r} by {self._keys}>"
