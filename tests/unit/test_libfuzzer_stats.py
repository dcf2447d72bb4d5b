"""The campaign reads libFuzzer's status lines, with and without -fork."""

from __future__ import annotations

import pytest

from service.campaign import _LIBFUZZER_STATS


@pytest.mark.parametrize("line, want", [
    ("#1865\tNEW    cov: 779 ft: 1604 corp: 65/2101b lim: 256 exec/s: 93 rss: 120Mb", (1865, 779, 65)),
    ("#4096\tpulse  cov: 913 ft: 2335 corp: 122/4Kb lim: 256 exec/s: 90 rss: 130Mb", (4096, 913, 122)),
    ("#2379: cov: 913 ft: 2335 corp: 122 exec/s 128 oom/timeout/crash: 0/0/0 time: 13s job: 3 "
     "dft_time: 0", (2379, 913, 122)),
])
def test_status_lines_of_both_modes_parse(line: str, want: tuple[int, int, int]) -> None:
    m = _LIBFUZZER_STATS.search(line)
    assert m is not None and tuple(int(g) for g in m.groups()) == want


def test_other_lines_do_not_parse() -> None:
    assert _LIBFUZZER_STATS.search("INFO: -fork=2: fuzzing in separate process(s)") is None
