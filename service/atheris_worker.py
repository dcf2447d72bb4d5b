#!/usr/bin/env python3
"""A campaign's atheris worker: libFuzzer on :mod:`fuzz.atheris_target`, findings to the store.

:meth:`service.campaign.Campaign.run` starts one such process per worker,
with the store's URL and the campaign id in the environment
(:func:`service.campaign.atheris_env`); its config names the engine pair.
Every report goes to a :class:`fuzz.sink.FindingSink` on the store; after
each commit that stored a new finding the worker prints ``foliodiff-stored
{json}`` on stderr (and ``foliodiff-harness {json}`` for a new harness
error), which the campaign reads.
"""

from __future__ import annotations

import atexit
import json
import sys
from typing import Any

# First: the target instruments the engine modules as it imports them, so
# nothing may import the engine before it.
from fuzz import atheris_target
from fuzz.throughput import fuzzing_gc
from service.campaign import campaign_from_env, open_sink
from service.store import Store


def _stored(found: list[Any]) -> None:
    for f in found:
        print("foliodiff-stored " + json.dumps(vars(f)), file=sys.stderr, flush=True)


def main() -> None:
    db_url, campaign_id = campaign_from_env()
    sink, config = open_sink(Store.open(db_url), campaign_id, _stored, flush_every=0.5)
    atexit.register(sink.flush)
    fuzzing_gc()
    atheris_target.fuzz(sink.add, config.engine_a, config.engine_b)


if __name__ == "__main__":
    main()
