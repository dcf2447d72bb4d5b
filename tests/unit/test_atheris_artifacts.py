"""libFuzzer's crash-*, slow-unit-*, timeout-* and leak-* files never land in the working directory.

libFuzzer writes them to ``-artifact_prefix``, by default the working
directory (often a source tree): a campaign points it beside its corpus or
into its scratch directory, and the target itself gives it a scratch
directory when its caller names none.
"""

from __future__ import annotations

from pathlib import Path

import pytest

# Before the target, which instruments the engine modules it is the first to
# import: this process does not fuzz.
import engine  # noqa: F401
from fuzz.atheris_target import with_artifact_prefix
from service.campaign import Campaign, CampaignConfig, create
from service.store import Store


def _prefix(args: list[str]) -> Path:
    (arg,) = [a for a in args if a.startswith("-artifact_prefix=")]
    return Path(arg.split("=", 1)[1])


def _campaign(tmp_path: Path, **config: object) -> Campaign:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with Store.open(url) as store:
        cid = create(store, CampaignConfig(fuzzer="atheris", engine_a="v6.14", engine_b="v6.15",
                                           seconds=5, **config))
    return Campaign(url, cid)


@pytest.mark.parametrize("kept", [False, True], ids=["scratch", "beside-corpus"])
def test_a_campaign_points_the_artifacts_away_from_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kept: bool) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    campaign = _campaign(tmp_path, corpus="kept" if kept else None)
    try:
        prefix = _prefix(campaign._atheris_args())
        assert prefix.is_absolute() and prefix.is_dir()
        if kept:        # the campaign's own directory, beside its corpus
            assert prefix == cwd / "kept" / "atheris-atheris-artifacts"
        else:
            assert not prefix.is_relative_to(cwd)
    finally:
        campaign.store.close()


def test_the_target_gives_libfuzzer_a_scratch_directory_unless_told(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    told = ["target", "corpus", f"-artifact_prefix={tmp_path}/mine/"]
    assert with_artifact_prefix(told) == told
    args = with_artifact_prefix(["target", "corpus"])
    assert args[:2] == ["target", "corpus"]
    prefix = _prefix(args)
    assert prefix.is_dir() and not prefix.is_relative_to(tmp_path)
    assert args[-1].endswith("/")       # libFuzzer prepends the prefix as it is
    prefix.rmdir()
