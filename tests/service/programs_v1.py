"""Programs as format 1 stored them (before 0c031c9), for the tests of their upgrade.

Format 1 named preemptions by global step numbers (``[[step, thread], ...]``),
which each engine counts differently; format 2 names places, and a format-1
schedule is read on one engine (:mod:`engine.corpus.upgrade`).
"""

import json
from pathlib import Path

# Corpus H2 as format 1 stored it (before 0c031c9): the shrinker's speculative
# reference taken at global step 20.  Each engine reads step 20 as another place.
H2 = json.loads((Path(__file__).resolve().parents[1] / "data" / "format1" / "h2.json").read_text())
# Corpus H1 as format 1 stored it: no schedule.
H1 = {"version": 1, "threads": H2["threads"][:1],
      "ops": H2["ops"][:4] + [{"thread": "T0", "op": "read", "addr": 2097152, "pages": 16}],
      "schedule": []}
# A DMA through a pin already unpinned: format 1 ran it as -EINVAL, format 2 refuses it.
LATE_DMA = {"version": 1, "threads": [{"name": "T0", "mm": 0}, {"name": "D", "kind": "device"}],
            "ops": [{"thread": "T0", "op": "mmap", "addr": 2097152, "pages": 1},
                    {"thread": "T0", "op": "write", "addr": 2097152, "value": 7},
                    {"thread": "T0", "op": "pin", "addr": 2097152, "pin": "p0"},
                    {"thread": "T0", "op": "unpin", "pin": "p0", "dirty": False},
                    {"thread": "D", "op": "dma_write", "pin": "p0", "value": 9},
                    {"thread": "T0", "op": "read", "addr": 2097152}],
            "schedule": [[3, "D"]]}
# Neither format takes it: its schedule names a thread the program does not have.
UNREADABLE = {**H1, "schedule": [[4, "Z"]]}
