"""A kernel image given by path: its release, its build configuration, and what the runner needs of it.

``foliodiff conform --kernel-image PATH`` boots a bzImage the developer
built, exactly as a catalogue kernel is booted (:func:`service.conform.run_suite`).
Before the boot it reads what it can about the image:

- the release (``uname -r``) from the x86 boot header's ``kernel_version``
  string, so that a file that is no bzImage is refused before qemu runs;
- the build configuration, from (in this order) the file the caller names,
  a Debian-style ``config-<release>`` beside the image, the ``.config`` of the
  kernel tree the image sits in (``arch/x86/boot/bzImage``), or the copy
  ``CONFIG_IKCONFIG`` embeds (scripts/extract-ikconfig's method: decompress
  the payload, find ``IKCFG_ST``, gunzip what follows);
- which of :data:`REQUIRED` (the suite cannot run without them) and
  :data:`FEATURES` (some scenarios need them) the configuration lacks.

Without a configuration the check says so and the boot goes ahead: the tests
themselves report a missing feature (exit 2, "unsupported").
"""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import hashlib
import lzma
import os
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

from service.conform.errors import ImageError

#: Options without which the suite cannot run at all, and why.
REQUIRED: dict[str, str] = {
    "X86_64": "the runner boots qemu-system-x86_64",
    "BLK_DEV_INITRD": "the tests arrive in an initramfs",
    "RD_GZIP": "the initramfs is gzip-compressed",
    "BINFMT_SCRIPT": "/init is a busybox shell script",
    "BINFMT_ELF": "the tests are static ELF programs",
    "DEVTMPFS": "/init mounts devtmpfs for /dev/console",
    "PROC_FS": "the tests read /proc/vmstat and /proc/self/maps",
    "SYSFS": "the tests set THP policies in /sys/kernel/mm/transparent_hugepage",
    "SERIAL_8250": "results are read from the serial console (console=ttyS0)",
    "SERIAL_8250_CONSOLE": "results are read from the serial console (console=ttyS0)",
    "PRINTK": "kernel warnings and BUGs are read from the console",
    "TRANSPARENT_HUGEPAGE": "every scenario maps THPs or mTHPs (per-size sysfs policies since v6.8)",
    "VM_EVENT_COUNTERS": "the observables include /proc/vmstat events (pglazyfree, thp_*)",
    "PROC_PAGE_MONITOR": "the observables include smaps and pagemap",
}

#: Options that some scenarios need (the others still run), and why.
FEATURES: dict[str, str] = {
    "IO_URING": "pins by io_uring fixed buffers and DMA writes through them (pin: io_uring)",
    "SWAP": "the models reclaim anon memory as a swap-capable kernel with no swap area",
}

#: Where the boot protocol's fields sit in a bzImage (Documentation/arch/x86/boot.rst).
_SETUP_SECTS, _HEADER_MAGIC, _KERNEL_VERSION = 0x1F1, 0x202, 0x20E
_PAYLOAD_OFFSET = 0x248
_IKCONFIG_START, _IKCONFIG_END = b"IKCFG_ST", b"IKCFG_ED"


@dataclasses.dataclass(frozen=True)
class ConfigCheck:
    """What a kernel's configuration says about running the suite on it.

    @source: where the configuration came from (a path, or "embedded IKCONFIG");
        None when none was found.
    @missing_required: options of :data:`REQUIRED` the configuration lacks, with why.
    @missing_features: options of :data:`FEATURES` it lacks, with what needs them.
    """

    source: str | None
    missing_required: dict[str, str]
    missing_features: dict[str, str]

    def lines(self) -> list[str]:
        """What to tell the user, one line each; empty when nothing is missing."""
        if self.source is None:
            return ["no kernel configuration found (pass --kernel-config, keep config-<release> "
                    "beside the image, or build with CONFIG_IKCONFIG): not checked"]
        return ([f"CONFIG_{o} missing (required: {why})" for o, why in self.missing_required.items()]
                + [f"CONFIG_{o} missing (scenarios that need it fail: {why})"
                   for o, why in self.missing_features.items()])


@dataclasses.dataclass(frozen=True)
class ImageFile:
    """A bzImage given by path.

    @path: the file, resolved.
    @release: ``uname -r`` as the boot header names it, e.g. ``6.16.12+deb13-amd64``.
    @sha256: the file's hash: what a stored result names the kernel by.
    @banner: the header's whole version string (release, builder, build number).
    """

    path: Path
    release: str
    sha256: str
    banner: str


def read_image(path: str | os.PathLike[str]) -> ImageFile:
    """Read @path's boot header.

    Raises :class:`ImageError` naming @path when it is missing, unreadable or no
    x86 bzImage (no ``HdrS`` magic, or no version string).
    """
    p = Path(path).expanduser()
    try:
        data = p.resolve(strict=True).read_bytes()
    except OSError as exc:
        raise ImageError(str(path), f"cannot read it: {exc.strerror or exc}") from exc
    if len(data) < 0x260 or data[_HEADER_MAGIC:_HEADER_MAGIC + 4] != b"HdrS":
        raise ImageError(str(path), "not an x86 bzImage (no 'HdrS' boot header at 0x202)")
    (pointer,) = struct.unpack_from("<H", data, _KERNEL_VERSION)
    banner = data[0x200 + pointer:0x200 + pointer + 256].split(b"\0")[0].decode("ascii", "replace")
    if not pointer or not banner.strip():
        raise ImageError(str(path), "its boot header names no kernel version")
    return ImageFile(path=p.resolve(), release=banner.split()[0],
                     sha256=hashlib.sha256(data).hexdigest(), banner=banner)


def _payload(data: bytes) -> bytes:
    """The compressed kernel inside a bzImage (boot protocol 2.08+)."""
    setup_sects = data[_SETUP_SECTS] or 4
    offset, length = struct.unpack_from("<II", data, _PAYLOAD_OFFSET)
    start = (setup_sects + 1) * 512 + offset
    return data[start:start + length]


def _decompress(payload: bytes) -> bytes | None:
    """@payload decompressed by its magic (gzip, xz, lzma, bzip2; zstd with the zstd tool)."""
    try:
        if payload.startswith(b"\x1f\x8b"):
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(payload)
        if payload.startswith(b"\xfd7zXZ\x00"):
            return lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(payload)
        if payload.startswith(b"\x5d\x00\x00"):
            return lzma.LZMADecompressor(lzma.FORMAT_ALONE).decompress(payload)
        if payload.startswith(b"BZh"):
            return bz2.BZ2Decompressor().decompress(payload)
    except (OSError, EOFError, lzma.LZMAError, zlib.error):
        return None
    if payload.startswith(b"\x28\xb5\x2f\xfd") and shutil.which("zstd"):
        run = subprocess.run(["zstd", "-dcq"], input=payload, capture_output=True, check=False)
        # zstd complains about the padding a bzImage appends after the frame, but writes the frame.
        return run.stdout or None
    return None


def embedded_config(path: Path) -> str | None:
    """The configuration ``CONFIG_IKCONFIG`` embedded in the bzImage @path, or None."""
    kernel = _decompress(_payload(path.read_bytes()))
    if kernel is None:
        return None
    start = kernel.find(_IKCONFIG_START)
    if start < 0:
        return None
    end = kernel.find(_IKCONFIG_END, start)
    try:
        return gzip.decompress(kernel[start + len(_IKCONFIG_START):end]).decode("utf-8", "replace")
    except (OSError, EOFError):
        return None


def find_config(image: ImageFile, explicit: str | os.PathLike[str] | None = None
                ) -> tuple[str, str] | tuple[None, None]:
    """The configuration of @image and where it came from, or (None, None).

    @explicit: a file the user named; it must exist (:class:`ImageError` if not).
    """
    if explicit is not None:
        p = Path(explicit).expanduser()
        try:
            return str(p), p.read_text(errors="replace")
        except OSError as exc:
            raise ImageError(str(explicit), f"--kernel-config: cannot read it: "
                                            f"{exc.strerror or exc}") from exc
    candidates = [image.path.with_name(f"config-{image.release}")]
    # A kernel tree: the image is <tree>/arch/x86/boot/bzImage (or a link to it).
    candidates += [parent / ".config" for parent in image.path.parents[:4]
                   if (parent / "Makefile").is_file()]
    for c in candidates:
        if c.is_file():
            return str(c), c.read_text(errors="replace")
    text = embedded_config(image.path)
    return ("embedded IKCONFIG", text) if text is not None else (None, None)


def enabled(config: str) -> set[str]:
    """The options @config sets to y or m, without their ``CONFIG_`` prefix."""
    return set(re.findall(r"^CONFIG_([A-Za-z0-9_]+)=[ym]\s*$", config, re.MULTILINE))


def check_config(image: ImageFile, explicit: str | os.PathLike[str] | None = None) -> ConfigCheck:
    """Which options the suite needs that @image's configuration lacks."""
    source, text = find_config(image, explicit)
    if text is None:
        return ConfigCheck(None, {}, {})
    on = enabled(text)
    return ConfigCheck(source,
                       {o: why for o, why in REQUIRED.items() if o not in on},
                       {o: why for o, why in FEATURES.items() if o not in on})
