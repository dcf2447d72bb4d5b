"""The catalogue of real kernels: which Debian image to fetch, and which engine models it.

Each :class:`KernelSpec` names a Debian binary package by a regular
expression over package names (the newest version that matches is fetched)
and the apt sources that carry it.  Debian names its image packages
``linux-image-<uname -r>[-unsigned]``; the ``-cloud-`` and ``-rt-`` flavours
and the ``-dbg`` packages must not match, so the expressions spell the
flavour out instead of using a glob.

trixie-backports carries only signed images from 6.16 on; a signed bzImage
boots unchanged with ``qemu -kernel`` (real-kernel-probe.md).  From 6.19 on
the bzImage is in its own package, ``linux-binary-<uname -r>``, 13 MB
instead of 170: the image package only depends on it and on the modules.
"""

from __future__ import annotations

import dataclasses
import re

from service.conform.errors import UnknownKernelError

#: The Debian archive and its security archive, as deb.debian.org serves them.
DEBIAN = "http://deb.debian.org/debian"
DEBIAN_SECURITY = "http://deb.debian.org/debian-security"
#: The keyring every Debian host has (debian-archive-keyring); bookworm's holds trixie's keys.
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


@dataclasses.dataclass(frozen=True)
class AptSource:
    """One ``deb`` line: an archive, a suite and a component."""

    uri: str
    suite: str
    component: str = "main"

    def line(self, keyring: str = DEBIAN_KEYRING) -> str:
        """The one-line sources.list entry, amd64 only, checked against @keyring."""
        return f"deb [arch=amd64 signed-by={keyring}] {self.uri} {self.suite} {self.component}"


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    """A real kernel: the Debian package that carries it and the engine that models it.

    @name: the catalogue name, ``deb-<series>``.
    @series: the kernel series, ``major.minor``.
    @package_regex: matched in full against package names; the newest version wins.
    @sources: the apt sources searched (and nothing else).
    @engine: the id of the engine whose predictions this kernel is held to.
    """

    name: str
    series: str
    package_regex: str
    sources: tuple[AptSource, ...]
    engine: str

    def matches(self, package: str) -> bool:
        """Return: whether @package is one of this spec's image packages."""
        return re.fullmatch(self.package_regex, package) is not None

    @property
    def name_prefix(self) -> str:
        """The literal start of @package_regex, for ``apt-cache pkgnames``."""
        prefix = re.match(r"[A-Za-z0-9+-]*", self.package_regex)     # matches, if only ""
        return prefix.group(0) if prefix is not None else ""

    @property
    def suites(self) -> str:
        """The suites searched, for messages."""
        return ", ".join(s.suite for s in self.sources)


def _trixie_backports(series: str, engine: str, package: str = "linux-image") -> KernelSpec:
    return KernelSpec(
        name=f"deb-{series}", series=series,
        package_regex=rf"{package}-{re.escape(series)}\.[0-9]+\+deb13-amd64",
        sources=(AptSource(DEBIAN, "trixie-backports"),), engine=engine)


#: Every kernel the runner knows, oldest first.  6.1 predates the series and
#: mTHP (v5.18's engine); 6.12 is the OLD-era build the probe measured (its own
#: engine, since it splits even clean PMD-mapped lazyfree THPs); 6.16 and later
#: carry the series and ddd05742b45b.  6.17 and 6.18 changed nothing the model
#: can observe (docs/kernel-notes.md section 22): v6.16.  6.19.14 is v6.19 (the
#: deferred split scan retries) with the backport of 29f40594a281, which the
#: real kernel showed (section 23): v6.19.y.  7.3 is Debian's newest (7.3.4): 29f40594a281,
#: the list_lru split queue and the 7.3.2 stable removal of the PMD discard (v7.3).
KERNELS: tuple[KernelSpec, ...] = (
    KernelSpec(name="deb-6.1", series="6.1",
               package_regex=r"linux-image-6\.1\.0-[0-9]+-amd64-unsigned",
               sources=(AptSource(DEBIAN, "bookworm"), AptSource(DEBIAN_SECURITY, "bookworm-security")),
               engine="v5.18"),
    KernelSpec(name="deb-6.12", series="6.12",
               package_regex=r"linux-image-6\.12\.[0-9]+\+deb13-amd64-unsigned",
               sources=(AptSource(DEBIAN, "trixie"),), engine="v6.12"),
    _trixie_backports("6.16", "v6.16"),
    _trixie_backports("6.17", "v6.16"),
    _trixie_backports("6.18", "v6.16"),
    # From 6.19 on, linux-image-* is an empty package depending on
    # linux-binary-* (the bzImage alone) and linux-modules-*.
    _trixie_backports("6.19", "v6.19.y", "linux-binary"),
    _trixie_backports("7.3", "v7.3", "linux-binary"),
)


def kernel_spec(name: str | KernelSpec) -> KernelSpec:
    """The catalogue entry called @name (a spec is returned as it is).

    Return: the :class:`KernelSpec`.  Raises :class:`UnknownKernelError` naming @name.
    """
    if isinstance(name, KernelSpec):
        return name
    for spec in KERNELS:
        if spec.name == name:
            return spec
    raise UnknownKernelError(name, [s.name for s in KERNELS])
