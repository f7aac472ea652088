"""Errors as Python exceptions: the StratusError classes (and the built-in
ones they also derive from) for bad expressions (raised before any request),
unknown columns, missing frames and files, unreachable clusters, closed
clients; and messages that name the thing at fault."""

from __future__ import annotations

import json

import pytest

import stratus

COLUMN = "no_such_column"


@pytest.fixture
def closed_frame(cluster, isd_dir):
    """A frame whose client is closed: anything that reaches for the
    cluster raises ConnectionError, so other errors prove no request."""
    c = stratus.Client(cluster)
    frame = c.read_parquet(isd_dir)
    c.close()
    return frame


def test_exception_hierarchy():
    assert issubclass(stratus.ConnectionError, stratus.StratusError)
    assert issubclass(stratus.ConnectionError, OSError)
    assert issubclass(stratus.NotFoundError, LookupError)
    assert issubclass(stratus.BadInputError, ValueError)
    assert issubclass(stratus.CancelledError, stratus.StratusError)
    for cls in (stratus.NotFoundError, stratus.BadInputError, stratus.CancelledError):
        assert issubclass(cls, stratus.StratusError)


@pytest.mark.parametrize(
    "make",
    [
        lambda f: f.assign(x="temperature +"),
        lambda f: f.assign(x="(temperature"),
        lambda f: f.query("temperature >"),
        lambda f: f.query("temperature > > 0"),
    ],
    ids=["assign-trailing-op", "assign-paren", "query-trailing-op", "query-double-op"],
)
def test_bad_expression_raises_before_any_request(closed_frame, make):
    with pytest.raises(stratus.BadInputError, match="cannot parse") as info:
        make(closed_frame)
    assert "temperature" in str(info.value)  # the expression is quoted


def test_bad_assign_value_type(df):
    with pytest.raises(stratus.BadInputError, match="list"):
        df.assign(x=[1, 2])


@pytest.mark.parametrize(
    "run",
    [
        lambda df: df[[COLUMN]].head(),
        lambda df: df.query(f"{COLUMN} > 0").head(),
        lambda df: df.assign(x=f"{COLUMN} + 1").head(1),
        lambda df: df.drop(columns=[COLUMN]).head(1),
        lambda df: df.groupby(COLUMN).mean(),
        lambda df: df.query("temperature > 0")[[COLUMN]].describe(),
    ],
    ids=["select", "query", "assign", "drop", "groupby", "select-after-step"],
)
def test_unknown_column_is_bad_input(df, run):
    with pytest.raises(stratus.BadInputError, match=COLUMN) as info:
        run(df)
    assert isinstance(info.value, ValueError)


def test_unknown_column_on_persisted_frame(persisted):
    with pytest.raises(stratus.BadInputError, match=COLUMN):
        persisted[[COLUMN]].head()


def test_len_of_unknown_column_is_bad_input(df):
    with pytest.raises(stratus.BadInputError, match=COLUMN):
        len(df[[COLUMN]])


def test_sort_unknown_column_is_bad_input(df):
    with pytest.raises(stratus.BadInputError, match=COLUMN):
        df.sort_values(COLUMN)


def test_sort_unknown_column_names_it(df):
    with pytest.raises(stratus.StratusError, match=COLUMN):
        df.sort_values(COLUMN)


def test_type_error_in_expression_is_bad_input(df):
    with pytest.raises(stratus.BadInputError, match="temperature"):
        df.assign(x="temperature + 'a'").head(1)


def test_missing_frame_is_not_found(client):
    with pytest.raises(stratus.NotFoundError, match="'never-persisted'") as info:
        client.get("never-persisted")
    assert isinstance(info.value, LookupError)
    with pytest.raises(stratus.NotFoundError, match="never-persisted"):
        client.unpersist("never-persisted")


def test_missing_file_is_not_found(client, tmp_path):
    missing = tmp_path / "nothing-here"
    frame = client.read_parquet(missing)  # lazy: nothing asked yet
    with pytest.raises(stratus.NotFoundError, match="nothing-here") as info:
        len(frame)
    assert isinstance(info.value, LookupError)
    with pytest.raises(stratus.NotFoundError, match="nothing-here"):
        frame.head()


def test_missing_scheduler_file_is_connection_error(tmp_path):
    missing = tmp_path / "no-scheduler.json"
    with pytest.raises(stratus.ConnectionError, match="no-scheduler.json") as info:
        stratus.Client(missing)
    assert isinstance(info.value, OSError)


def test_unreachable_address_is_connection_error(cluster, tmp_path):
    with open(cluster.scheduler_file) as f:
        info = json.load(f)
    paths = {}
    for key in ("tls_ca", "tls_cert", "tls_key"):
        paths[key] = tmp_path / f"{key}.pem"
        paths[key].write_text(info[key])
    with pytest.raises(stratus.ConnectionError) as err:
        stratus.Client(
            address="quic://127.0.0.1:1",
            tls_ca=str(paths["tls_ca"]),
            tls_cert=str(paths["tls_cert"]),
            tls_key=str(paths["tls_key"]),
        )
    assert "127.0.0.1:1" in str(err.value)


def test_missing_certificate_file_is_connection_error(tmp_path):
    with pytest.raises(stratus.ConnectionError, match="missing-ca.pem"):
        stratus.Client(
            address="quic://127.0.0.1:1",
            tls_ca=str(tmp_path / "missing-ca.pem"),
            tls_cert=str(tmp_path / "missing-cert.pem"),
            tls_key=str(tmp_path / "missing-key.pem"),
        )


def test_closed_client_is_connection_error(cluster, isd_dir):
    c = stratus.Client(cluster)
    frame = c.read_parquet(isd_dir)
    assert len(frame) > 0
    c.close()
    c.close()  # twice is fine
    for call in (lambda: len(frame), c.list, lambda: c.get("x"), frame.describe):
        with pytest.raises(stratus.ConnectionError, match="closed"):
            call()
    assert "closed" in repr(c)
