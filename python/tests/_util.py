"""Helpers for the Stratus client tests (imported by the test modules)."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any, Callable, Dict

import pandas as pd

import stratus


def numeric_columns(frame: pd.DataFrame) -> list:
    """The columns pandas counts as numeric (not datetimes or categories)."""
    return list(frame.select_dtypes("number").columns)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, step: float = 0.05):
    """Poll `predicate` until it answers something true; that answer, or
    AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {predicate}")
        time.sleep(step)


def frame_names(client: stratus.Client) -> Dict[str, Dict[str, Any]]:
    return {f["name"]: f for f in client.list()}


def scalar(con, sql: str) -> Any:
    """The one value a DuckDB query answers (the result fully fetched)."""
    rows = con.execute(sql).fetchall()
    assert len(rows) == 1 and len(rows[0]) == 1, rows
    return rows[0][0]
