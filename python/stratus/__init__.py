"""Stratus: a distributed dataframe runtime. The Python client.

Dask-shaped and synchronous::

    import stratus

    with stratus.LocalCluster(n_workers=2) as cluster, stratus.Client(cluster) as client:
        df = client.read_parquet("data/isd")
        len(df)
        df = df.assign(date="date_trunc('day', datetime)").persist("isd")
        df.describe()                   # a pandas.DataFrame
        df.groupby("date").mean()       # a pandas.DataFrame indexed by date

Frames are lazy until a result is asked for; results arrive as pandas
objects (or `pyarrow.Table` with `to_arrow()`), through the Arrow C Data
Interface without copying the column buffers. Errors are `StratusError`
subclasses; Ctrl-C cancels the running request on the cluster.
"""

from ._errors import (
    BadInputError,
    CancelledError,
    ConnectionError,
    NotFoundError,
    StratusError,
)
from .client import Client, Run
from .cluster import LocalCluster
from .dataframe import DataFrame, GroupBy

__all__ = [
    "BadInputError",
    "CancelledError",
    "Client",
    "ConnectionError",
    "DataFrame",
    "GroupBy",
    "LocalCluster",
    "NotFoundError",
    "Run",
    "StratusError",
]
