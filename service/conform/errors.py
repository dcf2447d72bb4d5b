"""Exceptions of the real-kernel runner: one small hierarchy, values in messages.

Every error the runner raises on purpose is a :class:`ConformError`, so that
a thin edge (the ``foliodiff conform`` command) turns all of them into clean
messages with one ``except``.  A kernel that does not boot is not an error
of the runner: :func:`service.conform.run_suite` reports it in its result,
and only :meth:`service.conform.SuiteResult.require_ok` (for callers that
need figures, not a verdict) raises :class:`BootError`.
"""

from __future__ import annotations

from engine import FoliodiffError


class ConformError(FoliodiffError):
    """Base of every error the real-kernel runner raises on purpose."""


class UnknownKernelError(ConformError, LookupError):
    """A kernel name that the catalogue does not hold."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        super().__init__(f"kernels: unknown kernel {name!r} (known: {', '.join(known)})")


class ToolMissingError(ConformError):
    """A host program the runner needs is absent: names it and the Debian package to install."""

    def __init__(self, tool: str, package: str, reason: str = "not found on PATH") -> None:
        self.tool = tool
        self.package = package
        super().__init__(f"{tool}: {reason} (apt-get install {package})")


class FetchError(ConformError):
    """A kernel image could not be resolved, downloaded or unpacked: names the package."""

    def __init__(self, package: str, reason: str) -> None:
        self.package = package
        self.reason = reason
        super().__init__(f"fetching {package}: {reason}")


class InvalidTestError(ConformError, ValueError):
    """A test handed to the runner is unusable (bad name, empty suite): names it."""

    def __init__(self, test: str, reason: str) -> None:
        self.test = test
        self.reason = reason
        super().__init__(f"test {test!r}: {reason}")


class BuildError(ConformError):
    """A test program did not compile: names the test and carries gcc's message."""

    def __init__(self, test: str, stderr: str) -> None:
        self.test = test
        self.stderr = stderr
        super().__init__(f"test {test!r} does not compile:\n{stderr.rstrip()}")


class BootError(ConformError):
    """A kernel did not run a suite to its end: names the kernel, the status, and shows why."""

    def __init__(self, kernel: str, status: str, detail: str) -> None:
        self.kernel = kernel
        self.status = status
        super().__init__(f"kernel {kernel}: {status}; the console ends with:\n{detail}")


class BenchmarkError(ConformError):
    """A seed benchmark ran but gave no figures: names the kernel, the test and why."""

    def __init__(self, kernel: str, test: str, reason: str) -> None:
        self.kernel = kernel
        self.test = test
        self.reason = reason
        super().__init__(f"kernel {kernel}, benchmark {test!r}: {reason}")


class ImageError(ConformError, ValueError):
    """A kernel image or configuration given by path is unusable: names the path and why."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"kernel image {path!r}: {reason}")


class ConfigMissingError(ConformError):
    """A kernel's configuration lacks options the suite cannot run without: names each."""

    def __init__(self, kernel: str, missing: dict[str, str]) -> None:
        self.kernel = kernel
        self.missing = missing
        super().__init__(f"kernel {kernel}: its configuration lacks "
                         + "; ".join(f"CONFIG_{o} ({why})" for o, why in missing.items()))
