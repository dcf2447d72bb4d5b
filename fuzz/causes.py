"""Causes of divergences, found in a process whose model is not instrumented.

The differential groups a data loss or a broken invariant by the kernel
decision behind it, which :func:`engine.cause_of` finds by replaying the run
under ``sys.setprofile`` (engine/execution/provenance.py).  In the atheris
worker the engine's modules are instrumented (atheris rewrites their
bytecode for coverage), and on CPython 3.11 the profile function is handed
frames of such generators that crash the interpreter when read: the worker
died of SIGSEGV on the seed corpus of v6.14,v6.15 within seconds (the seeds
hold the mprotect'd batch restore, an invariant whose cause is looked for).
The same class of crash is known for the frames of Cython code
(cython/cython#5222).

:class:`OutOfProcessCauses` answers :data:`engine.CauseOf` from a second
process, ``python -m fuzz.causes``, which imports the engine plainly (not
multiprocessing: its spawned child would import the worker's main module,
and with it the instrumentation).  One such process serves a campaign's
worker, with the pair's plugin engines registered as in the worker; runs are
deterministic, so a cause is asked for once per (program, engine, end of
run) and kept.  Requests and answers are pickles, length-prefixed, on the
child's stdin and stdout.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import traceback
from collections import OrderedDict
from typing import IO, Any

from engine import MUTANTS, Cause, Crash, Program, cause_of, register_mutants
from engine.kernels import identities, load_identities

#: Causes kept per worker (a campaign meets the same few findings again and again).
CACHE_SIZE = 4096
_LEN = struct.Struct("<Q")


class CauseServerError(RuntimeError):
    """The cause process failed: its traceback, or how it ended."""


def _send(out: IO[bytes], obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_LEN.pack(len(data)) + data)
    out.flush()


def _recv(inp: IO[bytes]) -> Any:
    head = inp.read(_LEN.size)
    if len(head) < _LEN.size:
        raise EOFError
    return pickle.loads(inp.read(_LEN.unpack(head)[0]))


class OutOfProcessCauses:
    """:func:`engine.cause_of`, run in a process that does not instrument the
    engine.  Pass it as ``differential(..., causes=...)``.

    @engines: the engines whose runs it will be asked about (their plugins, if
        any, are registered in the cause process, and the mutants if one of
        them is a mutant).
    """

    def __init__(self, engines: list[str]) -> None:
        self._engines = (identities(engines), any(e in MUTANTS for e in engines))
        self._child: subprocess.Popen[bytes] | None = None
        self._known: OrderedDict[tuple[Any, ...], Cause | None] = OrderedDict()

    def __call__(self, program: Program, engine: str, crash: Crash) -> Cause | None:
        key = (program.model_dump_json(), engine, crash.kind, crash.field, crash.message,
               crash.op_index, crash.step)
        if key in self._known:
            self._known.move_to_end(key)
            return self._known[key]
        cause = self._ask(program, engine, crash)
        self._known[key] = cause
        if len(self._known) > CACHE_SIZE:
            self._known.popitem(last=False)
        return cause

    def _ask(self, program: Program, engine: str, crash: Crash) -> Cause | None:
        child = self._child
        if child is None or child.poll() is not None:
            child = self._child = subprocess.Popen([sys.executable, "-m", "fuzz.causes"],
                                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            assert child.stdin is not None
            _send(child.stdin, self._engines)
        assert child.stdin is not None and child.stdout is not None
        try:
            _send(child.stdin, (program, engine, crash))
            ok, answer = _recv(child.stdout)
        except (EOFError, BrokenPipeError) as exc:
            raise CauseServerError(f"the cause process ended (exit status {child.wait()})") from exc
        if not ok:
            raise CauseServerError(f"cause_of({engine!r}) failed in the cause process:\n{answer}")
        return answer

    def close(self) -> None:
        """End the cause process, if one runs."""
        if self._child is not None:
            if self._child.stdin is not None:
                self._child.stdin.close()
            self._child.wait()
            self._child = None


def serve(inp: IO[bytes], out: IO[bytes]) -> None:
    """The cause process: the plugins to register and whether to register the
    mutants, then (program, engine, crash) requests, each answered
    (True, cause) or (False, traceback), until EOF."""
    plugins, mutants = _recv(inp)
    load_identities(plugins)
    if mutants:
        register_mutants()
    while True:
        try:
            program, engine, crash = _recv(inp)
        except EOFError:
            return
        try:
            _send(out, (True, cause_of(program, engine, crash)))
        except Exception:  # noqa: BLE001 - the asking worker reports it, with this traceback
            _send(out, (False, traceback.format_exc()))


def main() -> None:
    """``python -m fuzz.causes``: answers on the stdout it was started with; what
    anything else prints goes to stderr, so that it cannot garble an answer."""
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(sys.stdin.buffer, answers)


if __name__ == "__main__":
    main()
