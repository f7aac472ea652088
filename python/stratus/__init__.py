"""Stratus: a distributed dataframe runtime. The Python client.

Work in progress (head start for the Python client issue): `Client` connects
and serves `len`, `head` (a pyarrow.Table) and `persist`.
"""

from ._stratus import Client

__all__ = ["Client"]
