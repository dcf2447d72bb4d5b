"""Fetch Debian kernel images with apt-get, into a cache outside git.

apt runs with private state: its own sources file, package lists, archive
cache and an empty dpkg status, given in a configuration file of its own
(``apt-get -c``), so the host's apt configuration and lists are never read
for sources nor changed.  Network settings in /etc/apt/apt.conf.d (a proxy)
still apply, since they are read before ``-c``; the update hooks there are
cleared, as they would act on the host.

Layout of the cache (``$FOLIODIFF_KERNEL_CACHE``, by default
``~/.cache/foliodiff/kernels``)::

    <root>/apt/<kernel>/            private apt state, while a fetch runs
    <root>/<kernel>/image.json      what was fetched: package, version, files, sha256
    <root>/<kernel>/<package>_<version>/vmlinuz-*, config-*

Only the kernel and its config are kept; the .deb and its modules are
deleted once unpacked.  A second :func:`fetch` of the same kernel reads
image.json, checks the file's hash and touches no network.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from service.conform.errors import FetchError, ToolMissingError
from service.conform.host import require_tool
from service.conform.kconfig import ImageFile
from service.conform.kernels import DEBIAN_KEYRING, KernelSpec, kernel_spec

#: Environment variable naming the cache directory.
CACHE_ENV = "FOLIODIFF_KERNEL_CACHE"

#: Attempts apt makes per file after the first (its own default): a flaky mirror costs seconds, not a CI run.
APT_RETRIES = 3


@dataclasses.dataclass(frozen=True)
class KernelImage:
    """A bootable kernel image on disk.

    @spec: the catalogue entry it was fetched for; None for a file given by path.
    @package: the Debian package it came from ("" for a file given by path).
    @version: the package version resolved, e.g. ``6.12.117-1``.
    @vmlinuz: the bzImage to hand to ``qemu -kernel``.
    @config: the kernel's build configuration, when the package had one.
    @cache_hit: True when nothing was downloaded to produce it.
    @seconds: wall time :func:`fetch` spent.
    @sha256: the kernel file's hash ("" when not known).
    """

    spec: KernelSpec | None
    package: str
    version: str
    vmlinuz: Path
    config: Path | None = None
    cache_hit: bool = False
    seconds: float = 0.0
    sha256: str = ""

    @property
    def name(self) -> str:
        """The catalogue name, or the file name for an image given by path."""
        return self.spec.name if self.spec is not None else self.vmlinuz.name

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> KernelImage:
        """An image from a file that did not come from the catalogue, unchecked
        (whatever it holds, qemu's refusal is a boot status)."""
        return cls(spec=None, package="", version="", vmlinuz=Path(path))

    @classmethod
    def from_bzimage(cls, image: ImageFile) -> KernelImage:
        """An image from a bzImage whose boot header :func:`read_image` read."""
        return cls(spec=None, package="", version="", vmlinuz=image.path, sha256=image.sha256)


def cache_root() -> Path:
    """The kernel cache directory: ``$FOLIODIFF_KERNEL_CACHE`` or ``~/.cache/foliodiff/kernels``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/foliodiff/kernels").expanduser()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(functools.partial(f.read, 1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on @path: two processes fetching one kernel take turns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class _PrivateApt:
    """apt-get and apt-cache confined to one directory of their own.

    Context: the caller holds the kernel's cache lock.
    """

    def __init__(self, spec: KernelSpec, root: Path) -> None:
        self.spec = spec
        self.dir = root / "apt" / spec.name
        self.warnings: list[str] = []
        if not Path(DEBIAN_KEYRING).is_file():
            # Without it apt only warns ("not signed") and finds no package.
            raise ToolMissingError(DEBIAN_KEYRING, "debian-archive-keyring", "not found")
        for sub in ("lists/partial", "cache/archives/partial"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "status").touch()
        (self.dir / "sources.list").write_text(
            "".join(s.line() + "\n" for s in spec.sources))
        d = self.dir.resolve()
        # The Dir:: settings keep every file apt reads or writes in self.dir;
        # the #clear lines drop hooks from the host's apt.conf.d (appstream's
        # refresh) that would otherwise run after our update.
        (self.dir / "apt.conf").write_text(f"""\
Dir::State::Lists "{d}/lists";
Dir::State::status "{d}/status";
Dir::State::extended_states "{d}/extended_states";
Dir::Etc::SourceList "{d}/sources.list";
Dir::Etc::SourceParts "/dev/null";
Dir::Etc::Preferences "/dev/null";
Dir::Etc::PreferencesParts "/dev/null";
Dir::Cache "{d}/cache";
Dir::Cache::pkgcache "pkgcache.bin";
Dir::Cache::srcpkgcache "srcpkgcache.bin";
APT::Architecture "amd64";
APT::Architectures {{ "amd64"; }};
Acquire::Languages "none";
Acquire::Retries "{APT_RETRIES}";
APT::Sandbox::User "root";
#clear APT::Update::Pre-Invoke;
#clear APT::Update::Post-Invoke;
#clear APT::Update::Post-Invoke-Success;
""")

    def _run(self, argv: list[str], what: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        tool = argv[0]
        require_tool(tool)
        r = subprocess.run([tool, "-c", str(self.dir / "apt.conf"), *argv[1:]],
                           cwd=cwd, capture_output=True, text=True, check=False,
                           env={**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"})
        if r.returncode != 0:
            raise FetchError(what, f"{' '.join(argv)} exited with {r.returncode}: "
                                   f"{_tail(r.stderr or r.stdout)}")
        return r

    def update(self) -> None:
        """Download the package lists of the spec's sources.

        apt-get update exits 0 when a source cannot be reached, with a
        warning; the warnings are kept for the message of a failed lookup.
        """
        r = self._run(["apt-get", "-q", "update"], self.spec.package_regex)
        self.warnings = [line for line in r.stderr.splitlines() if line.startswith(("W:", "E:"))]

    def newest(self) -> tuple[str, str]:
        """The newest package matching the spec, and its version.

        Return: ``(package, version)``.  Raises :class:`FetchError` when none matches.
        """
        names = [n for n in self._run(["apt-cache", "pkgnames", self.spec.name_prefix],
                                      self.spec.package_regex).stdout.split()
                 if self.spec.matches(n)]
        if not names:
            why = "".join(f"\n{w}" for w in self.warnings[-4:])
            raise FetchError(self.spec.package_regex,
                             f"no package of that name in {self.spec.suites}{why}")
        # madison: "pkg | version | uri suite/component arch Packages", one line per source.
        found: list[tuple[str, str]] = []
        for line in self._run(["apt-cache", "madison", *names],
                              self.spec.package_regex).stdout.splitlines():
            fields = [f.strip() for f in line.split("|")]
            if len(fields) >= 3 and fields[0] in names:
                found.append((fields[0], fields[1]))
        if not found:
            raise FetchError(self.spec.package_regex,
                             f"apt-cache madison gave no versions for {', '.join(names)}")
        newest = functools.cmp_to_key(_compare_versions)
        return max(found, key=lambda name_version: newest(name_version[1]))

    def download(self, package: str, version: str, into: Path) -> Path:
        """Download ``package=version`` into @into; return the .deb's path."""
        self._run(["apt-get", "-q", "download", f"{package}={version}"], package, cwd=into)
        debs = sorted(into.glob(f"{package}_*.deb"))
        if len(debs) != 1:
            raise FetchError(package, f"apt-get download left {len(debs)} .deb files in {into}")
        return debs[0]


def _compare_versions(a: str, b: str) -> int:
    """Debian version order (dpkg --compare-versions): -1, 0 or 1."""
    dpkg = require_tool("dpkg")
    if subprocess.run([dpkg, "--compare-versions", a, "lt", b], check=False).returncode == 0:
        return -1
    return 0 if a == b else 1


def _tail(text: str, lines: int = 8) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _unpack(package: str, deb: Path, dest: Path) -> tuple[Path, Path | None]:
    """Unpack @deb with ``dpkg-deb -x`` and keep only its kernel and config in @dest,
    named ``vmlinuz-<release>`` and ``config-<release>``.

    Debian ships them as /boot/vmlinuz-<release> and /boot/config-<release>; from
    7.3 on the ``linux-binary-*`` package has /usr/lib/modules/<release>/vmlinuz
    (and its config, when there is one, beside it) instead.
    """
    dpkg_deb = require_tool("dpkg-deb")
    tree = deb.parent / "tree"
    r = subprocess.run([dpkg_deb, "-x", str(deb), str(tree)], capture_output=True, text=True,
                       check=False)
    if r.returncode != 0:
        raise FetchError(package, f"dpkg-deb -x {deb.name} exited with {r.returncode}: {_tail(r.stderr)}")
    kernels = {k.name.removeprefix("vmlinuz-"): k for k in (tree / "boot").glob("vmlinuz-*")}
    kernels |= {k.parent.name: k for k in (tree / "usr/lib/modules").glob("*/vmlinuz")}
    if len(kernels) != 1:
        found = sorted(str(k.relative_to(tree)) for k in kernels.values())
        raise FetchError(package, f"expected one boot/vmlinuz-* or usr/lib/modules/*/vmlinuz in "
                                  f"{deb.name}, found {found}")
    ((release, kernel),) = kernels.items()
    dest.mkdir(parents=True, exist_ok=True)
    vmlinuz = dest / f"vmlinuz-{release}"
    shutil.move(str(kernel), vmlinuz)
    config = None
    for beside in (tree / "boot" / f"config-{release}", tree / "usr/lib/modules" / release / "config"):
        if beside.is_file():
            config = dest / f"config-{release}"
            shutil.move(str(beside), config)
            break
    return vmlinuz, config


def _cached(spec: KernelSpec, manifest: Path, seconds_from: float) -> KernelImage | None:
    """The image image.json records, if its kernel file is intact; else None."""
    try:
        data = json.loads(manifest.read_text())
        base = manifest.parent
        vmlinuz = base / data["vmlinuz"]
        if not vmlinuz.is_file() or _sha256(vmlinuz) != data["sha256"]:
            return None
        config = base / data["config"] if data.get("config") else None
        return KernelImage(spec=spec, package=data["package"], version=data["version"],
                           vmlinuz=vmlinuz, config=config, cache_hit=True,
                           seconds=time.monotonic() - seconds_from, sha256=data["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def fetch(spec: KernelSpec | str, *, cache: str | os.PathLike[str] | None = None,
          refresh: bool = False) -> KernelImage:
    """Fetch the newest image of @spec, or return the one already cached.

    @spec: a catalogue entry or its name (``"deb-6.12"``).
    @cache: the cache directory; by default :func:`cache_root`.
    @refresh: resolve the newest version again even when an image is cached
        (a cached image of that same version is reused).

    Context: takes the kernel's lock in the cache, so concurrent fetches of one
    kernel download it once.  Without @refresh a cached image costs no network.
    Return: the :class:`KernelImage`.  Raises :class:`FetchError` naming the
    package, :class:`ToolMissingError` naming the host program.
    """
    t0 = time.monotonic()
    spec = kernel_spec(spec)
    root = Path(cache).expanduser() if cache is not None else cache_root()
    base = root / spec.name
    manifest = base / "image.json"
    with _locked(root / f"{spec.name}.lock"):
        if not refresh:
            hit = _cached(spec, manifest, t0)
            if hit is not None:
                return hit
        apt = _PrivateApt(spec, root)
        apt.update()
        package, version = apt.newest()
        if refresh:
            hit = _cached(spec, manifest, t0)
            if hit is not None and (hit.package, hit.version) == (package, version):
                return hit
        base.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=base) as tmp:
            deb = apt.download(package, version, Path(tmp))
            dest = base / f"{package}_{version}"
            if dest.exists():
                shutil.rmtree(dest)
            vmlinuz, config = _unpack(package, deb, dest)
        sha256 = _sha256(vmlinuz)
        data = {"package": package, "version": version,
                "vmlinuz": str(vmlinuz.relative_to(base)),
                "config": str(config.relative_to(base)) if config else None,
                "sha256": sha256, "sources": [s.line() for s in spec.sources]}
        tmp_manifest = manifest.with_suffix(".json.tmp")
        tmp_manifest.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp_manifest, manifest)
        for old in base.iterdir():  # images of versions a refresh replaced
            if old.is_dir() and old != dest and not old.name.startswith("."):
                shutil.rmtree(old)
        # The lists (about 100 MB for trixie) serve nothing until the next
        # refresh, which downloads them again anyway.
        shutil.rmtree(apt.dir, ignore_errors=True)
        return KernelImage(spec=spec, package=package, version=version, vmlinuz=vmlinuz,
                           config=config, cache_hit=False, seconds=time.monotonic() - t0,
                           sha256=sha256)
