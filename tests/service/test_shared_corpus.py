"""A campaign's shared corpus in the store, on a real SQLite file and a real PostgreSQL database.

Workers on several machines push the inputs they keep and pull the others'
(docs/distributed.md): an input is stored once per campaign however many
workers push it, concurrently or not, and bad input names its field and
leaves what was stored alone.
"""

from __future__ import annotations

import hashlib
import threading

import pytest

from service.errors import InvalidValueError, NotFoundError
from service.store import Store


@pytest.fixture
def store(url: str):
    with Store.open(url) as s:
        yield s


@pytest.fixture
def campaign(store: Store) -> int:
    return store.create_campaign("v6.14", "v6.15", "random", {}).id


def test_pushed_inputs_come_back_once_in_order(store: Store, campaign: int) -> None:
    assert store.push_corpus(campaign, [(b"a", ["x:1", "v:ok"]), (b"b", [])], "random-0") == 2
    # Another worker keeps b again, and c: only c is new; b keeps its first worker.
    assert store.push_corpus(campaign, [(b"b", ["y"]), (b"c", ("z",)), (b"c", ("z",))],
                             "random-1") == 1
    got = store.pull_corpus(campaign)
    assert [(e.data, e.features, e.worker, e.sha1) for e in got] == [
        (b"a", ["v:ok", "x:1"], "random-0", hashlib.sha1(b"a").hexdigest()),
        (b"b", [], "random-0", hashlib.sha1(b"b").hexdigest()),
        (b"c", ["z"], "random-1", hashlib.sha1(b"c").hexdigest())]
    # Paging by the last id seen.
    assert [e.data for e in store.pull_corpus(campaign, after=got[0].id, limit=1)] == [b"b"]
    assert store.pull_corpus(campaign, after=got[-1].id) == []


def test_corpora_of_two_campaigns_are_apart(store: Store, campaign: int) -> None:
    other = store.create_campaign("v6.15", "v6.16", "random", {}).id
    store.push_corpus(campaign, [(b"same", [])], "random-0")
    assert store.push_corpus(other, [(b"same", [])], "random-0") == 1
    assert [e.campaign_id for e in store.pull_corpus(other)] == [other]


@pytest.mark.parametrize(("entries", "worker", "field"), [
    ([(b"", [])], "w", "entries[0].data"),
    ([("text", [])], "w", "entries[0].data"),
    ([(b"ok", [])], "", "worker"),
    ([(b"ok", [])], "w" * 65, "worker"),
    ([(b"ok", []), (b"x", "features")], "w", "entries[1].features"),
    ([(b"ok", [1])], "w", "entries[0].features"),
    ([(b"ok", ["a\x00b"])], "w", "entries[0].features"),
    ([b"bare"], "w", "entries[0]"),
])
def test_bad_pushes_name_the_field_and_store_nothing(store: Store, campaign: int, entries,
                                                     worker, field) -> None:
    store.push_corpus(campaign, [(b"kept", ["f"])], "random-0")
    with pytest.raises(InvalidValueError) as err:
        store.push_corpus(campaign, entries, worker)
    assert err.value.field == field
    assert [e.data for e in store.pull_corpus(campaign)] == [b"kept"]


def test_unknown_campaign_and_bad_paging(store: Store, campaign: int) -> None:
    with pytest.raises(NotFoundError):
        store.push_corpus(campaign + 1, [(b"a", [])], "random-0")
    with pytest.raises(NotFoundError):
        store.pull_corpus(campaign + 1)
    for kw, field in (({"after": -1}, "after"), ({"limit": 0}, "limit"),
                      ({"limit": 10_001}, "limit"), ({"after": "1"}, "after")):
        with pytest.raises(InvalidValueError) as err:
            store.pull_corpus(campaign, **kw)
        assert err.value.field == field


def test_concurrent_pushes_store_each_input_once(url: str) -> None:
    """Four writers, each with its own connection, push overlapping inputs at once:
    every input is stored once, and the writers' counts of new ones add up."""
    with Store.open(url) as first:
        campaign = first.create_campaign("v6.14", "v6.15", "random", {}).id
    inputs = [bytes([i % 256, i // 256]) for i in range(400)]
    new: list[int] = []
    start = threading.Barrier(4)

    def push(worker: int) -> None:
        with Store.open(url) as store:
            start.wait()
            # Each writer pushes every input, in batches, from its own offset.
            mine = inputs[worker * 100:] + inputs[:worker * 100]
            count = 0
            for k in range(0, len(mine), 25):
                count += store.push_corpus(campaign, [(d, [f"w{worker}"]) for d in mine[k:k + 25]],
                                           f"random-{worker}")
            new.append(count)

    threads = [threading.Thread(target=push, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(new) == len(inputs)
    with Store.open(url) as store:
        stored = store.pull_corpus(campaign, limit=10_000)
    assert sorted(e.data for e in stored) == sorted(inputs)
