"""Boot a real kernel under qemu with a suite of test programs, and collect what they print.

qemu runs under TCG: on the machines this was built on ``/dev/kvm`` exists
but the CPU has no vmx/svm, and KVM dies in the kernel's decompressor
(real-kernel-probe.md).  One boot with a few tests takes 3-6 s on two
cores, of which 2-2.5 s of guest time reach /init.

A boot that does not reach the end of the suite is reported by its
:class:`~service.conform.console.BootStatus`, never as test results: the
tests it did not finish are MISSING, and :meth:`SuiteResult.require_ok`
turns such a boot into a :class:`~service.conform.errors.BootError` for
callers that need figures.
"""

from __future__ import annotations

import dataclasses
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from service.conform.console import BootStatus, CaseResult, console_lines, parse_console
from service.conform.errors import BootError, InvalidTestError
from service.conform.host import require_tool
from service.conform.images import KernelImage, fetch
from service.conform.initramfs import build_initramfs
from service.conform.kernels import KernelSpec

QEMU = "qemu-system-x86_64"
#: Guest memory: the seed workloads map up to 256 MiB at once.
MEMORY_MIB = 1024
#: The kernel command line: serial console, reboot at once on panic (which
#: -no-reboot turns into qemu's exit), and only warnings on the console.  No
#: transparent_hugepage=: Debian builds default to "always", and the tests set
#: the per-size policies they need through sysfs.
APPEND = "console=ttyS0 panic=-1 quiet"


class Named(Protocol):
    """A kernel to boot as results name it: a catalogue entry, or an image with its engine."""

    @property
    def name(self) -> str: ...

    @property
    def engine(self) -> str: ...


@dataclasses.dataclass
class KernelBoot:
    """One kernel's boot as a result reports it: which kernel (the Debian
    package and its version, so that a later run can be set beside this one
    when Debian updates the series), the engine that models it, and how the
    boot ended.  :class:`KernelConformance` and :class:`SeedKernel` add what
    the boot gave.
    """

    kernel: str
    engine: str
    package_version: str
    uname: str | None
    boot: BootStatus
    seconds: float
    package: str = ""
    image_sha256: str = ""

    @classmethod
    def of(cls, kernel: Named, suite: SuiteResult, **fields: Any):
        """The result of booting @kernel (a catalogue entry, or any kernel with a
        name and an engine), as @suite ran; @fields: the subclass's own."""
        return cls(kernel.name, kernel.engine, suite.package_version, suite.uname, suite.status,
                   suite.seconds, suite.package, suite.image.sha256, **fields)

    @property
    def identity(self) -> str:
        """What names the exact kernel booted: its Debian package version, or
        ``sha256:<hash>`` for an image given by path."""
        return self.package_version or f"sha256:{self.image_sha256}"

    def boot_dict(self) -> dict[str, Any]:
        """The boot's fields as JSON values."""
        return {"kernel": self.kernel, "engine": self.engine, "package": self.package,
                "package_version": self.package_version, "image_sha256": self.image_sha256,
                "uname": self.uname, "boot": self.boot.value, "seconds": round(self.seconds, 2)}


@dataclasses.dataclass(frozen=True)
class SuiteResult:
    """One boot of one kernel with a suite of tests.

    @image: the kernel booted (its spec, package and version).
    @uname: ``uname -r`` seen by /init, None if /init never ran.
    @status: how the boot ended.
    @tests: one result per test, in the order run.
    @console: the serial console, as qemu wrote it.
    @qemu_stderr: qemu's own messages (why a junk kernel did not load).
    @seconds: wall time of the qemu run.
    @init_uptime: guest seconds from kernel start to /init.
    @done_uptime: guest seconds at the end of the suite.
    @kernel_reports: kernel warnings, BUGs, oopses, panics seen on the console.
    """

    image: KernelImage
    uname: str | None
    status: BootStatus
    tests: tuple[CaseResult, ...]
    console: str
    qemu_stderr: str
    seconds: float
    init_uptime: float | None = None
    done_uptime: float | None = None
    kernel_reports: tuple[str, ...] = ()

    @property
    def spec(self) -> KernelSpec | None:
        """The catalogue entry booted (None for a kernel file given by path)."""
        return self.image.spec

    @property
    def package_version(self) -> str:
        """The Debian package version booted, e.g. ``6.12.117-1``."""
        return self.image.version

    @property
    def package(self) -> str:
        """The Debian package booted, e.g. ``linux-image-6.12.117+deb13-amd64-unsigned``."""
        return self.image.package

    def test(self, name: str) -> CaseResult:
        """The result of the test called @name; raises :class:`InvalidTestError` if none ran."""
        for case in self.tests:
            if case.name == name:
                return case
        raise InvalidTestError(name, f"not in the suite booted on {self.image.name} "
                                     f"(tests: {', '.join(c.name for c in self.tests)})")

    @classmethod
    def read(cls, image: KernelImage, console: str, names: list[str], *, timed_out: bool = False,
             qemu_stderr: str = "", seconds: float = 0.0) -> SuiteResult:
        """The result of a boot of @image that was to run the tests @names and printed @console.

        @timed_out: qemu was killed at the time limit.
        """
        parsed = parse_console(console, names, timed_out=timed_out)
        return cls(image=image, uname=parsed.uname, status=parsed.status, tests=parsed.cases,
                   console=console, qemu_stderr=qemu_stderr, seconds=seconds,
                   init_uptime=parsed.init_uptime, done_uptime=parsed.done_uptime,
                   kernel_reports=parsed.kernel_reports)

    def require_ok(self) -> SuiteResult:
        """Return self if the suite ran to its end; raise :class:`BootError` otherwise."""
        if self.status is not BootStatus.OK:
            lines = [line for line in console_lines(self.console) if line.strip()]
            panics = [r for r in self.kernel_reports if "Kernel panic" in r]
            headline = panics[:1] or list(self.kernel_reports[:1])
            detail = "\n".join([*(f"first kernel report: {h}" for h in headline), *lines[-10:]])
            if self.qemu_stderr.strip():
                detail += "\nqemu: " + self.qemu_stderr.strip()
            raise BootError(self.image.name, self.status.value, detail)
        return self


def qemu_command(vmlinuz: Path, initrd: Path, append: str = APPEND) -> list[str]:
    """The qemu command line that boots @vmlinuz with @initrd, TCG, one CPU, no network."""
    return [QEMU, "-machine", "accel=tcg", "-m", str(MEMORY_MIB), "-smp", "1",
            "-nographic", "-no-reboot", "-nic", "none",
            "-kernel", str(vmlinuz), "-initrd", str(initrd), "-append", append]


def run_suite(kernel: KernelSpec | KernelImage | str, tests: Mapping[str, str], *,
              timeout: float, append: str = APPEND) -> SuiteResult:
    """Boot @kernel once and run the C programs @tests in order.

    @kernel: a catalogue entry or its name (fetched, or taken from the cache),
        or an image already fetched or given by path.
    @tests: test name -> C source; each is built with ``gcc -static -O2``.
    @timeout: wall-clock seconds allowed for the boot, the tests and the poweroff.
    @append: the kernel command line.

    Context: starts one qemu process and kills it at @timeout.
    Return: the :class:`SuiteResult`, whatever the kernel did.  Raises
    :class:`BuildError` (a test does not compile), :class:`InvalidTestError`,
    :class:`ToolMissingError`, :class:`FetchError`; never for a kernel that
    fails to boot, panics or times out.
    """
    if timeout <= 0:
        raise InvalidTestError("(suite)", f"timeout must be positive (got {timeout!r})")
    image = kernel if isinstance(kernel, KernelImage) else fetch(kernel)
    qemu = require_tool(QEMU)
    with tempfile.TemporaryDirectory(prefix="foliodiff-suite-") as tmp:
        tmpdir = Path(tmp)
        initrd = build_initramfs(tests, tmpdir / "initrd.gz")
        cmd = qemu_command(image.vmlinuz, initrd, append)
        cmd[0] = qemu
        out_path, err_path = tmpdir / "console.log", tmpdir / "qemu.err"
        timed_out = False
        t0 = time.monotonic()
        # Output to files, not pipes: nothing to drain while waiting, and the
        # console is complete even when qemu is killed.
        with out_path.open("wb") as out, err_path.open("wb") as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    start_new_session=True)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                proc.kill()
                proc.wait()
        seconds = time.monotonic() - t0
        console = out_path.read_bytes().decode("utf-8", errors="replace")
        qemu_stderr = err_path.read_bytes().decode("utf-8", errors="replace")
    return SuiteResult.read(image, console, list(tests), timed_out=timed_out,
                            qemu_stderr=qemu_stderr, seconds=seconds)
