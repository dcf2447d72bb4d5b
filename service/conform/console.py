"""Read a suite's serial console back: did the kernel boot, and what did each test say.

The console is whatever qemu's ``-nographic`` serial port carried: SeaBIOS's
banner, terminal resets, the kernel's warnings (``quiet`` keeps the rest
back) and the markers /init prints (:mod:`service.conform.initramfs`).
Terminal escape sequences and lone carriage returns are read as line
breaks: SeaBIOS clears the screen without a newline, so /init's first
marker can follow its banner on one line, and in one boot out of a few
dozen its last progress dot lands after the clear, followed by a CR and the
marker.  The markers are also looked for anywhere in a line, in case some
firmware writes without either; a test's figures must start their line.

A test's figures are its lines that start with ``FOLIODIFF `` followed by
JSON.  A line whose JSON does not parse becomes an error in that test's
result, never an exception: a half-written line is what a crashing test
leaves.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
from collections.abc import Iterable
from typing import Any

#: Escape sequences (CSI ..., ESC c and the other two-byte ones) and lone carriage returns.
_ESCAPES = re.compile(r"\x1b(?:\[[0-9;?]*[ -/]*[@-~]|[@-Z\\-_a-z])")
#: /init's markers, found anywhere in a line (see the module's docstring).
_MARK = r"(?<![\w-])FOLIODIFF-"
_INIT = re.compile(_MARK + r"INIT (\S+)(?: ([0-9.]+))?")
_BEGIN = re.compile(_MARK + r"BEGIN (\S+)")
_END = re.compile(_MARK + r"END (\S+) (-?[0-9]+)")
_DONE = re.compile(_MARK + r"DONE(?: ([0-9.]+))?")
_RECORD = "FOLIODIFF "
#: What the kernel prints when it panics: with panic=-1 it reboots, and -no-reboot ends qemu.
_PANIC = re.compile(r"Kernel panic - not syncing")
#: Kernel reports worth keeping next to the results (a WARN during a test is a finding).
_KERNEL_REPORT = re.compile(r"(?:^|\] )(?:WARNING:|BUG:|Oops|general protection fault|"
                            r"Kernel panic - not syncing|Call Trace:)")
#: Shell exit statuses above this are 128 + the signal that killed the test.
_SIGNAL_BASE = 128


class BootStatus(enum.Enum):
    """How a boot ended.

    @OK: /init ran every test and reached the end of the suite.
    @TIMEOUT: the time limit ran out first (qemu was killed).
    @NO_BOOT: qemu ended and /init was never reached (no kernel, a junk
        image, a kernel that stopped before userspace without a panic).
    @PANIC: the kernel panicked, before /init or during the suite.
    @INCOMPLETE: /init ran, then qemu ended without a panic before the
        suite's end (qemu itself failed or was killed from outside).
    """

    OK = "ok"
    TIMEOUT = "timeout"
    NO_BOOT = "no-boot"
    PANIC = "panic"
    INCOMPLETE = "incomplete"


class CaseStatus(enum.Enum):
    """How one test program ended.

    @OK: it exited with status 0.
    @CRASHED: it exited with another status or was killed by a signal.
    @MISSING: its END marker never came (the boot timed out, panicked or
        never reached it).
    """

    OK = "ok"
    CRASHED = "crashed"
    MISSING = "missing"


@dataclasses.dataclass(frozen=True)
class CaseResult:
    """What one test program did in one boot.

    @name: the test's name.
    @status: how it ended.
    @exit_status: the shell's ``$?`` (None when MISSING).
    @signal: the signal that killed it, when ``$?`` was 128 + N.
    @records: the JSON values of its ``FOLIODIFF`` lines, in order.
    @errors: one message per ``FOLIODIFF`` line whose JSON did not parse.
    @output: every console line between its BEGIN and END markers.
    """

    name: str
    status: CaseStatus
    exit_status: int | None = None
    signal: int | None = None
    records: tuple[Any, ...] = ()
    errors: tuple[str, ...] = ()
    output: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether it exited with 0 and every figure line parsed."""
        return self.status is CaseStatus.OK and not self.errors


@dataclasses.dataclass(frozen=True)
class Console:
    """A console log read back.

    @status: how the boot ended.
    @uname: ``uname -r`` as /init printed it (None if /init never ran).
    @init_uptime: guest seconds from kernel start to /init.
    @done_uptime: guest seconds at the end of the suite.
    @cases: one result per expected test, in the order given.
    @kernel_reports: kernel warnings, BUGs, oopses and panics seen.
    """

    status: BootStatus
    uname: str | None
    init_uptime: float | None
    done_uptime: float | None
    cases: tuple[CaseResult, ...]
    kernel_reports: tuple[str, ...]


def console_lines(text: str) -> list[str]:
    """@text split into lines: escape sequences and lone carriage returns read as line breaks."""
    text = _ESCAPES.sub("\n", text).replace("\r\n", "\n").replace("\r", "\n")
    return text.split("\n")


def parse_record(line: str, lineno: int) -> tuple[Any, str | None]:
    """The JSON value after ``FOLIODIFF `` on @line, or None and a message saying why not."""
    payload = line[len(_RECORD):]
    try:
        return json.loads(payload), None
    except json.JSONDecodeError as e:
        return None, (f"console line {lineno}: malformed JSON after 'FOLIODIFF ' "
                      f"({e}): {payload!r}")


def _case(name: str, end: int | None, lines: list[str], first: int) -> CaseResult:
    records: list[Any] = []
    errors: list[str] = []
    for i, line in enumerate(lines):
        if line.startswith(_RECORD):
            value, error = parse_record(line, first + i)
            if error is None:
                records.append(value)
            else:
                errors.append(error)
    if end is None:
        status, signal = CaseStatus.MISSING, None
    else:
        status = CaseStatus.OK if end == 0 else CaseStatus.CRASHED
        signal = end - _SIGNAL_BASE if end > _SIGNAL_BASE else None
    return CaseResult(name=name, status=status, exit_status=end, signal=signal,
                      records=tuple(records), errors=tuple(errors), output=tuple(lines))


def parse_console(text: str, names: Iterable[str], *, timed_out: bool = False) -> Console:
    """Read back the console @text of a boot that was to run the tests @names.

    @timed_out: qemu was killed at the time limit.

    A test whose END marker is missing is MISSING, whatever it printed
    before.  The boot status is PANIC if the kernel panicked, else TIMEOUT if
    the limit ran out, else NO_BOOT if /init never ran, else OK if the suite
    reached its end, else INCOMPLETE.
    Return: the :class:`Console`.
    """
    names = list(names)
    uname = init_up = done_up = None
    done = False
    begun: dict[str, tuple[int, list[str]]] = {}
    ended: dict[str, int] = {}
    current: str | None = None
    reports: list[str] = []
    panic = False
    for lineno, line in enumerate(console_lines(text), start=1):
        if _KERNEL_REPORT.search(line):
            reports.append(line)
        if _PANIC.search(line):
            panic = True
        if m := _INIT.search(line):
            uname = m.group(1)
            init_up = float(m.group(2)) if m.group(2) else None
        elif m := _BEGIN.search(line):
            current = m.group(1)
            begun[current] = (lineno + 1, [])
        elif (m := _END.search(line)) and current is not None and m.group(1) == current:
            ended[current] = int(m.group(2))
            current = None
        elif m := _DONE.search(line):
            done = True
            done_up = float(m.group(1)) if m.group(1) else None
        elif current is not None:
            begun[current][1].append(line)
    cases = []
    for name in names:
        first, lines = begun.get(name, (0, []))
        cases.append(_case(name, ended.get(name), lines, first))
    if panic:
        status = BootStatus.PANIC
    elif timed_out:
        status = BootStatus.TIMEOUT
    elif uname is None:
        status = BootStatus.NO_BOOT
    elif done:
        status = BootStatus.OK
    else:
        status = BootStatus.INCOMPLETE
    return Console(status=status, uname=uname, init_uptime=init_up, done_uptime=done_up,
                   cases=tuple(cases), kernel_reports=tuple(reports))
