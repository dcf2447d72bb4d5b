"""Corpus files: a named program with its expected outcome per kernel version.

A corpus file is JSON::

    {"name": ..., "scenario": "H2", "description": ...,
     "program": {...},
     "expect": {"v6.14": {"verdict": "ok", "counter.nr_lazyfree_fail": 16, ...}, ...},
     "divergences": {"v6.14..v6.15": {"classification": "intended",
                                      "kind": "state", "rules": ["swapbacked-only-if-dirty"]}}}

``expect`` lists, per engine, fields of the outcome (see
:meth:`engine.execution.outcome.Outcome.comparable`) with their exact values; fields not
listed are not checked.  ``divergences`` lists engine pairs and what the
differential runner must say of them.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import pathlib
from typing import Any

from engine.corpus.upgrade import DEFAULT_READING, read_program
from engine.errors import ProgramError, UnknownCorpusProgramError
from engine.program.format import Program

#: The seed corpus: the ``corpus`` package's directory, ``corpus/`` at the top of
#: the source tree, installed beside the engine as package data.  Found, not
#: imported: the corpus is data, and a path a package sits at is where its
#: files are, editable install or not.
CORPUS_DIR = pathlib.Path(str(importlib.resources.files("corpus")))


def program_data(path: str) -> Any:
    """The decoded JSON of the program in a program file or a corpus file.

    Raises :class:`ProgramError` naming the path when it cannot be read or is
    not JSON.
    """
    try:
        with open(path, "rb") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise ProgramError("path", path, exc.strerror or "cannot read") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProgramError("program", str(exc)[:80], f"{path} is not valid JSON") from None
    if isinstance(data, dict) and "program" in data:
        return data["program"]
    return data


def load_any(path: str, reading: str = DEFAULT_READING) -> Program:
    """A program from a program file or from a corpus file, of either format (a
    format-1 schedule is read on engine @reading: see :mod:`engine.corpus.upgrade`)."""
    return read_program(program_data(path), reading)


def corpus_paths(directory: str | os.PathLike = CORPUS_DIR) -> dict[str, pathlib.Path]:
    """The corpus files of @directory by program name (the file name without ``.json``).

    Return: name -> path, sorted by name; empty for a missing directory.
    """
    return {p.stem: p for p in sorted(pathlib.Path(directory).glob("*.json"))}


def corpus_index(directory: str | os.PathLike = CORPUS_DIR) -> list[dict[str, str | None]]:
    """Each corpus file of @directory: its name, and its ``scenario`` and ``description``
    where the file has them as text (None in a file that is not a readable corpus file).

    Return: one dict per file, sorted by name; the programs are not parsed.
    """
    out = []
    for name, path in corpus_paths(directory).items():
        try:
            entry = json.loads(path.read_bytes())
        except (OSError, ValueError):
            entry = None
        fields = entry if isinstance(entry, dict) else {}
        out.append({"name": name, **{k: fields[k] if isinstance(fields.get(k), str) else None
                                     for k in ("scenario", "description")}})
    return out


def corpus_program(name: str, directory: str | os.PathLike = CORPUS_DIR) -> Program:
    """The program of corpus file @name in @directory.

    Names are looked up among the files :func:`corpus_paths` lists, never
    joined into a path, so no name reaches outside @directory.
    Return: the :class:`Program`.  Raises :class:`UnknownCorpusProgramError`
    for a name no file carries, :class:`ProgramError` for a malformed file.
    """
    paths = corpus_paths(directory)
    if name not in paths:
        raise UnknownCorpusProgramError(name, str(directory), list(paths))
    return load_any(str(paths[name]))


def load_entry(path: str, reading: str = DEFAULT_READING) -> dict[str, Any]:
    with open(path, "rb") as fh:
        entry = json.load(fh)
    for key in ("name", "program", "expect"):
        if key not in entry:
            raise ProgramError(key, None, f"corpus file {path} lacks it")
    entry["program"] = read_program(entry["program"], reading)
    return entry


def c_twin_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """The same entry for the C twins: each twin is held to its Python version's
    expectations, and each divergence pair is expected again with twins put in
    for the versions that have one (a twin beside its own version: equal)."""
    from engine.kernels import C_TWINS
    twin_of = {base: twin for twin, base in C_TWINS.items()}
    expect = {twin_of[e]: fields for e, fields in entry["expect"].items() if e in twin_of}
    divergences = {}
    for pair, want in entry.get("divergences", {}).items():
        a, b = pair.split("..")
        if a in twin_of or b in twin_of:
            divergences[f"{twin_of.get(a, a)}..{twin_of.get(b, b)}"] = want
    divergences.update({f"{base}..{twin}": {"classification": "equal"}
                        for base, twin in twin_of.items() if base in entry["expect"]})
    return {**entry, "expect": expect, "divergences": divergences}


def _norm(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_norm(x) for x in v]
    if isinstance(v, list):
        return [_norm(x) for x in v]
    return v


def check_entry(entry: dict[str, Any]) -> list[str]:
    """Replay one corpus entry.  Return: one line per mismatch (empty when it passes)."""
    from engine.diff.differential import differential
    from engine.execution.runner import run
    problems = []
    program: Program = entry["program"]
    for engine, fields in entry["expect"].items():
        got = run(program, engine).comparable()
        for f, want in fields.items():
            have = _norm(got.get(f))
            if have != _norm(want):
                problems.append(f"{entry['name']} on {engine}: {f} is {have!r}, expected {want!r}")
    for pair, want in entry.get("divergences", {}).items():
        a, b = pair.split("..")
        report = differential(program, a, b)
        if want.get("classification") == "equal":
            if not report.equal:
                problems.append(f"{entry['name']} {pair}: expected equal, got "
                                f"{[d.signature for d in report.divergences]}")
            continue
        if report.equal:
            problems.append(f"{entry['name']} {pair}: expected a divergence, runs are equal")
            continue
        d = report.divergences[0]
        if "classification" in want and d.classification.value != want["classification"]:
            problems.append(f"{entry['name']} {pair}: classified {d.classification.value}, "
                            f"expected {want['classification']} ({d.signature})")
        if "kind" in want and d.kind.value != want["kind"]:
            problems.append(f"{entry['name']} {pair}: kind {d.kind.value}, expected {want['kind']}")
        names = {r.name for r in d.rules}
        for r in want.get("rules", []):
            if r not in names:
                problems.append(f"{entry['name']} {pair}: rule {r} did not match ({sorted(names)})")
    return problems
