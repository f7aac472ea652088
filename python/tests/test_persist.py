"""Persisted frames: persist(name), client.list(), client.get(name) from a
second connection, client.unpersist(name), persist() without a name released
when the frame object is collected, replace=, and frames derived from a
persisted one."""

from __future__ import annotations

import gc

import pytest

import stratus
from _util import frame_names, scalar


@pytest.fixture
def second_client(cluster):
    with stratus.Client(cluster) as c:
        yield c


def test_persist_named_is_listed(client, df, duck):
    frame = df.query("month = 3").persist("march")
    try:
        assert frame.name == "march"
        assert len(frame) == scalar(duck, "SELECT count(*) FROM isd WHERE month = 3")
        listed = frame_names(client)["march"]
        assert listed["rows"] == len(frame)
        assert listed["bytes"] > 0
        assert listed["partitions"] >= 1
        assert listed["partitions_held"] == listed["partitions"]
    finally:
        client.unpersist("march")
    assert "march" not in frame_names(client)


def test_get_from_a_second_client(client, second_client, df, duck):
    df[["temperature", "month"]].persist("shared")
    try:
        assert second_client.address == client.address
        shared = second_client.get("shared")
        assert shared.name == "shared"
        assert shared.columns.tolist() == ["temperature", "month"]
        assert len(shared) == scalar(duck, "SELECT count(*) FROM isd")
        got = shared.describe().loc["max", "temperature"]
        assert got == scalar(duck, "SELECT max(temperature) FROM isd")
        assert "shared" in frame_names(second_client)
    finally:
        second_client.unpersist("shared")
    assert "shared" not in frame_names(client)


def test_unpersist_then_get_raises_not_found(client, df):
    frame = df[["usaf"]].persist("short-lived")
    client.unpersist(frame)  # a DataFrame works as well as its name
    assert "short-lived" not in frame_names(client)
    with pytest.raises(stratus.NotFoundError, match="short-lived") as info:
        client.get("short-lived")
    assert isinstance(info.value, LookupError)
    # The stale object fails the same way on the cluster.
    with pytest.raises(stratus.NotFoundError, match="short-lived"):
        len(frame)
    with pytest.raises(stratus.NotFoundError, match="short-lived"):
        client.unpersist("short-lived")


def test_persist_taken_name_is_bad_input_and_replace_works(client, df):
    df[["usaf"]].persist("taken")
    try:
        with pytest.raises(stratus.BadInputError, match="taken") as info:
            df[["wban"]].persist("taken")
        assert isinstance(info.value, ValueError)
        assert client.get("taken").columns.tolist() == ["usaf"]
        df[["wban"]].persist("taken", replace=True)
        assert client.get("taken").columns.tolist() == ["wban"]
    finally:
        client.unpersist("taken")


def test_persist_without_name_released_on_collection(client, df):
    frame = df[["temperature"]].persist()
    name = frame.name
    assert name is not None and name in frame_names(client)
    derived = frame.query("temperature > 0")  # keeps the persisted frame alive
    del frame
    gc.collect()
    assert name in frame_names(client)
    assert len(derived) > 0
    del derived
    gc.collect()
    assert name not in frame_names(client)


def test_steps_on_a_persisted_frame(persisted, duck):
    frame = persisted.query("temperature > 20").assign(f="temperature * 9 / 5 + 32")
    assert frame.name is None  # steps pending: not itself persisted
    expected = scalar(duck, "SELECT count(*) FROM isd WHERE temperature > 20")
    assert len(frame) == expected
    got = frame.describe().loc["min", "f"]
    assert got == scalar(
        duck, "SELECT min(temperature * 9 / 5 + 32) FROM isd WHERE temperature > 20"
    )
