"""A campaign's stats snapshots as the series its page plots.

The page draws them in the browser (uPlot, vendored in ``static/vendor``):
the server only hands over columns of numbers.  A campaign snapshots every
5 s, 17,280 times a day; a plot 1,000 pixels wide shows no more than
:data:`MAX_POINTS` of them, so the page asks the store for that many,
evenly thinned, the last one always kept (:meth:`Store.stats_thinned`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine import Kind
from service.models import StatsSnapshot

#: Most points per series a page sends.
MAX_POINTS = 1000


def campaign_series(kept: Sequence[StatsSnapshot]) -> dict[str, Any]:
    """The plots of a campaign page, from the snapshots it shows, oldest first.

    Return: ``{"t": [...], "exec_per_s": [...], "coverage": [...],
    "coverage_unit": unit or None, "corpus_size": [...], "by_kind": {kind:
    [...]}}``, one value per kept snapshot; ``coverage`` is None where a
    snapshot did not measure it (a gap in the plot, not a zero), and
    ``by_kind`` has the kinds any snapshot counted, in :class:`Kind` order.
    """
    kinds = {k for s in kept for k in (s.signatures or {})}
    units = {s.coverage_unit for s in kept if s.coverage_unit is not None}
    return {
        "t": [round(s.t, 3) for s in kept],
        "exec_per_s": [round(s.exec_per_s, 2) for s in kept],
        "coverage": [s.coverage for s in kept],
        "coverage_unit": units.pop().value if len(units) == 1 else None,
        "corpus_size": [s.corpus_size for s in kept],
        "by_kind": {k.value: [int((s.signatures or {}).get(k.value, 0)) for s in kept]
                    for k in Kind if k.value in kinds},
    }
