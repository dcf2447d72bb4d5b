"""The kernel catalogue and the fetch cache, without the Debian archive.

Package names below are real ones from bookworm, trixie and trixie-backports.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from service.conform import (
    CACHE_ENV,
    KERNELS,
    AptSource,
    FetchError,
    KernelSpec,
    ToolMissingError,
    UnknownKernelError,
    cache_root,
    fetch,
    kernel_spec,
)
from service.conform.images import _compare_versions, _PrivateApt

needs_dpkg = pytest.mark.skipif(shutil.which("dpkg") is None, reason="dpkg is not installed")

MATCHES = {
    "deb-6.1": ("linux-image-6.1.0-56-amd64-unsigned",
                ["linux-image-6.1.0-56-amd64", "linux-image-6.1.0-56-cloud-amd64-unsigned",
                 "linux-image-6.1.0-56-rt-amd64-unsigned"]),
    "deb-6.12": ("linux-image-6.12.117+deb13-amd64-unsigned",
                 ["linux-image-6.12.117+deb13-amd64", "linux-image-6.12.117+deb13-cloud-amd64-unsigned",
                  "linux-image-6.12.117+deb12-amd64-unsigned", "linux-image-6.12-amd64",
                  "linux-image-6.12.117+deb13-amd64-unsigned-dbg"]),
    "deb-6.16": ("linux-image-6.16.12+deb13-amd64",
                 ["linux-image-6.16.12+deb13-rt-amd64", "linux-image-6.16.12+deb13-amd64-dbg",
                  "linux-image-6.17.13+deb13-amd64", "linux-image-6.161.1+deb13-amd64"]),
    "deb-6.19": ("linux-binary-6.19.14+deb13-amd64",
                 ["linux-image-6.19.14+deb13-amd64", "linux-binary-unsigned-6.19.14+deb13-amd64",
                  "linux-binary-6.19.14+deb13-cloud-amd64"]),
    "deb-7.3": ("linux-binary-7.3.4+deb13-amd64",
                ["linux-binary-unsigned-7.3.4+deb13-amd64", "linux-binary-7.3.4+deb13-rt-amd64",
                 "linux-binary-7.2.12+deb13-amd64", "linux-image-7.3.4+deb13-amd64"]),
}


@pytest.mark.parametrize("name", sorted(MATCHES))
def test_specs_match_their_flavour_only(name):
    spec = kernel_spec(name)
    good, bad = MATCHES[name]
    assert spec.matches(good)
    assert not [b for b in bad if spec.matches(b)]
    assert good.startswith(spec.name_prefix)


def test_catalogue_engines():
    assert {s.name: s.engine for s in KERNELS} == {
        "deb-6.1": "v5.18", "deb-6.12": "v6.12", "deb-6.16": "v6.16", "deb-6.17": "v6.16",
        "deb-6.18": "v6.16", "deb-6.19": "v6.19.y", "deb-7.3": "v7.3"}
    assert [s.suite for s in kernel_spec("deb-6.12").sources] == ["trixie"]
    assert [s.suite for s in kernel_spec("deb-6.16").sources] == ["trixie-backports"]
    with pytest.raises(UnknownKernelError, match=r"'deb-9.9'.*deb-6.12"):
        kernel_spec("deb-9.9")


@needs_dpkg
def test_debian_version_order():
    # "6.16.12" > "6.16.3" and "~bpo" sorts low: Debian's order, not the strings'.
    assert _compare_versions("6.16.3-1~bpo13+1", "6.16.12-1~bpo13+1") == -1
    assert _compare_versions("6.1.192-2", "6.1.192-1") == 1
    assert _compare_versions("6.12.117-1~bpo13+1", "6.12.117-1") == -1
    assert _compare_versions("6.12.117-1", "6.12.117-1") == 0


def _cached_image(root: Path, spec: KernelSpec, payload: bytes) -> Path:
    base = root / spec.name
    d = base / "linux-image-6.12.117+deb13-amd64-unsigned_6.12.117-1"
    d.mkdir(parents=True)
    (d / "vmlinuz-6.12.117+deb13-amd64").write_bytes(payload)
    (base / "image.json").write_text(json.dumps({
        "package": "linux-image-6.12.117+deb13-amd64-unsigned", "version": "6.12.117-1",
        "vmlinuz": f"{d.name}/vmlinuz-6.12.117+deb13-amd64", "config": None,
        "sha256": hashlib.sha256(payload).hexdigest()}))
    return d / "vmlinuz-6.12.117+deb13-amd64"


def test_cache_hit_runs_nothing(tmp_path, monkeypatch):
    spec = kernel_spec("deb-6.12")
    vmlinuz = _cached_image(tmp_path, spec, b"bzImage" * 100)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no apt-get, no dpkg: nothing may run
    image = fetch(spec, cache=tmp_path)
    assert image.cache_hit and image.vmlinuz == vmlinuz
    assert (image.package, image.version, image.spec) == (
        "linux-image-6.12.117+deb13-amd64-unsigned", "6.12.117-1", spec)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    assert cache_root() == tmp_path and fetch("deb-6.12").cache_hit


def test_damaged_cache_is_fetched_again(tmp_path, monkeypatch):
    spec = kernel_spec("deb-6.12")
    vmlinuz = _cached_image(tmp_path, spec, b"bzImage" * 100)
    vmlinuz.write_bytes(b"truncated")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ToolMissingError, match=r"apt-get: not found on PATH \(apt-get install apt\)"):
        fetch(spec, cache=tmp_path)


def test_private_apt_state(tmp_path):
    spec = kernel_spec("deb-6.1")
    apt = _PrivateApt(spec, tmp_path)
    opts = "[arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]"
    assert (apt.dir / "sources.list").read_text().splitlines() == [
        f"deb {opts} http://deb.debian.org/debian bookworm main",
        f"deb {opts} http://deb.debian.org/debian-security bookworm-security main"]
    conf = (apt.dir / "apt.conf").read_text()
    for key in ("Dir::State::Lists", "Dir::State::status", "Dir::Etc::SourceList", "Dir::Cache"):
        assert f'{key} "{apt.dir.resolve()}/' in conf
    assert 'Dir::Etc::SourceParts "/dev/null"' in conf


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="apt-get is not installed")
def test_unreachable_archive_names_the_package_and_why(tmp_path, monkeypatch):
    monkeypatch.setattr("service.conform.images.APT_RETRIES", 0)  # refused is refused: no backoff
    spec = KernelSpec(name="deb-nowhere", series="6.12",
                      package_regex=r"linux-image-6\.12\.[0-9]+\+deb13-amd64-unsigned",
                      sources=(AptSource("http://127.0.0.1:9/debian", "trixie"),), engine="v6.12")
    with pytest.raises(FetchError, match=r"(?s)linux-image-6.*no package of that name in trixie.*"
                                         r"127\.0\.0\.1:9") as e:
        fetch(spec, cache=tmp_path)
    assert e.value.package == spec.package_regex
