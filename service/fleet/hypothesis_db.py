"""A fleet campaign's Hypothesis example database, in the store.

HypoFuzz runs its workers on one shared database (Redis, or one of your
own); a fleet's hypothesis workers share theirs in the store
(``hypothesis_example``), so an example one worker saved is replayed and
mutated by the others.
"""

from __future__ import annotations

from collections.abc import Iterable

from hypothesis.database import ExampleDatabase

from service.store import Store


class StoreExampleDatabase(ExampleDatabase):
    """Hypothesis' ``ExampleDatabase`` over campaign @campaign_id's rows in @store."""

    def __init__(self, store: Store, campaign_id: int) -> None:
        super().__init__()
        self.store = store
        self.campaign_id = campaign_id

    def save(self, key: bytes, value: bytes) -> None:
        self.store.save_example(self.campaign_id, key, value)

    def fetch(self, key: bytes) -> Iterable[bytes]:
        yield from self.store.fetch_examples(self.campaign_id, key)

    def delete(self, key: bytes, value: bytes) -> None:
        self.store.delete_example(self.campaign_id, key, value)
