"""The ``foliodiff`` command: a thin edge over the engine and the service.

Exit codes of ``run``: 0 equal or intended only, 1 an unexpected
divergence, 2 bad input, 3 a run ended in a harness error (an exception of
foliodiff itself, not a kernel report: printed with its stack).  ``bisect``
exits 0 once it has bisected (whatever it found), 2 and 3 as ``run``.  Of
``fuzz``: 0 finished or paused, 2 bad input or refused (a store that
cannot be opened, a campaign another process runs, a fuzzer whose package
is not installed), 3 harness errors, 4 the campaign failed (a worker died,
or another process took the campaign over).

Commands that read or triage a store open it through :func:`open_store`:
a SQLite file that does not exist is refused by name, not created, unless
the command creates stores (``fuzz``) or is asked to (``serve --create``).
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from engine import FoliodiffError
from engine.kernels import ALIASES, C_TWINS, KERNELS, ORDER, identities, load_engine
from service.settings import DEFAULT_DB_URL, Settings, env_name
from service.triage_cli import app as triage_app

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Differential fuzzing of Linux lazyfree reclaim models.")
# Piped output (a log, CI) gets 140 columns, not rich's 80: the figure tables
# have up to nine columns and are unreadable folded.
console = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 140)

EXIT_OK, EXIT_UNEXPECTED, EXIT_BAD_INPUT, EXIT_HARNESS, EXIT_FAILED = 0, 1, 2, 3, 4
app.add_typer(triage_app, name="triage")
DB_HELP = f"store URL (default ${env_name('db_url')} or {DEFAULT_DB_URL})"


def _engines(spec: str) -> list[str]:
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not 1 <= len(names) <= 2:
        raise typer.BadParameter(f"give one or two engines, got {spec!r}", param_hint="--engines")
    return [load_engine(n) for n in names]


@app.callback()
def _global(plugins: Annotated[str | None, typer.Option(
        "--plugins", envvar=env_name("plugins"),
        help="plugin engines to register first, comma-separated (PATH.py:Class or "
             "module:Class): for the commands that take no --engines (corpus, conform)")]
        = None) -> None:
    """Differential fuzzing of Linux lazyfree reclaim models."""
    try:
        for spec in (plugins or "").split(","):
            if spec.strip():
                load_engine(spec.strip())
    except FoliodiffError as exc:
        _fail(str(exc))


def _fail(message: str) -> NoReturn:
    # Escaped: a message may hold brackets ("pip install 'foliodiff[test]'").
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(EXIT_BAD_INPUT)


def _invalid(exc: ValidationError) -> str:
    """The first error of @exc, naming the field and the value."""
    first = exc.errors()[0]
    return f"{'.'.join(map(str, first['loc']))}: {first['msg']} (got {first.get('input')!r})"


def _store_url(db: str | None) -> str:
    """@db, else the settings' store URL (``$FOLIODIFF_DB_URL``, else the default)."""
    try:
        return db or Settings().db_url
    except ValidationError as exc:
        _fail(_invalid(exc))


def open_store(db: str | None, *, create: bool = False):
    """The store a command's ``--db`` names (else ``$FOLIODIFF_DB_URL``, else the
    default), opened and migrated; every command that reads a store opens it here.

    @create: whether a SQLite file that does not exist is created; without it
        the command fails naming the file, rather than leave an empty store
        behind and then find nothing in it.
    Return: a :class:`service.store.Store` (a context manager), or exit 2 with a
    message naming the URL and why it cannot be opened.
    """
    from service.errors import StoreError
    from service.store import Store
    try:
        return Store.open(_store_url(db), create=create)
    except StoreError as exc:
        _fail(str(exc))


def _load(path: str, reading: str):
    """The program in file @path; a format-1 schedule is read on @reading, and the
    user told what the upgrade did (on stderr: stdout may be JSON or C)."""
    from service.triage import load_program_file
    up = load_program_file(path, reading)
    if up.note:
        err.print(f"{path}: program format 1, upgraded: {up.note}", highlight=False,
                  markup=False)
    return up.program


def _exit_on_harness(outcomes) -> None:
    """Exit 3 when a run ended in a harness error, printing each exception and its stack."""
    from engine import Verdict
    broken = [o for o in outcomes if o.verdict is Verdict.HARNESS]
    if not broken:
        return
    for o in broken:
        err.print(Text(f"harness error on {o.engine}: a defect of foliodiff itself, not a "
                       f"finding about the kernel", style="bold red"))
        c = o.crash
        if c is not None:
            where = f" at ops[{c.op_index}]" if c.op_index is not None else ""
            err.print(f"  {c.field}{where} (thread {c.thread}, step {c.step}): {c.message}",
                      highlight=False, markup=False)
            err.print("  stack, innermost first:", highlight=False)
            for frame in c.stack:
                err.print(f"    {frame}", highlight=False, markup=False)
    raise typer.Exit(EXIT_HARNESS)


def _outcome_table(outcomes) -> Table:
    from engine import COUNTERS
    t = Table(title="outcomes", show_lines=False)
    t.add_column("field")
    for o in outcomes:
        t.add_column(o.engine)
    rows = [("verdict", [o.verdict.value for o in outcomes])]
    rows.append(("crash", [(o.crash.message[:70] if o.crash else "") for o in outcomes]))
    for c in COUNTERS:
        rows.append((c, [str(o.state.get(f"counter.{c}", "")) for o in outcomes]))
    keys = sorted({k for o in outcomes for k in o.state
                   if k.startswith("mthp.") or k.endswith(".flags") or k == "deferred_split_queue"})
    for k in keys:
        rows.append((k, [str(o.state.get(k, "")) for o in outcomes]))
    for f, vals in rows:
        if any(v not in ("", "0") for v in vals):
            style = "bold yellow" if len(set(vals)) > 1 else None
            t.add_row(f, *vals, style=style)
    return t


@app.command()
def run(
    program: Annotated[str, typer.Argument(help="program JSON file (or a corpus file)")],
    engines: Annotated[str, typer.Option(help="one engine, or two to compare")] = "v6.14,v6.15",
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Run a program on one engine, or on two and classify the divergences.

    A format-1 program's schedule is read on the first engine.
    """
    from engine import differential
    from engine import run as run_one
    try:
        names = _engines(engines)
        prog = _load(program, names[0])
    except (FoliodiffError, typer.BadParameter) as exc:
        _fail(str(exc))
    if len(names) == 1:
        outcome = run_one(prog, names[0])
        if as_json:
            print(json.dumps(outcome.to_dict(), default=str))
        else:
            console.print(_outcome_table([outcome]))
        _exit_on_harness([outcome])
        raise typer.Exit(EXIT_OK)
    report = differential(prog, names[0], names[1])
    if as_json:
        print(json.dumps(report.to_dict(), default=str))
    else:
        console.print(_outcome_table([report.a, report.b]))
        if report.equal:
            console.print("[green]equal[/]: no divergence")
        for d in report.divergences:
            color = "green" if d.classification.value == "intended" else "bold red"
            console.print(f"[{color}]{d.classification.value}[/] {d.kind.value} divergence "
                          f"at op {d.first_op}: {d.detail}")
            console.print(f"  signature {d.signature_id}: {d.signature}", highlight=False)
            for r in d.rules:
                console.print(f"  rule [cyan]{r.name}[/]: {r.patch}", highlight=False)
            t = Table(show_header=True)
            for col in ("field", report.a.engine, report.b.engine, "first op"):
                t.add_column(col)
            for f in d.fields[:40]:
                t.add_row(f.field, str(f.a), str(f.b), str(f.first_op))
            if len(d.fields) > 40:
                t.add_row(f"... {len(d.fields) - 40} more", "", "", "")
            console.print(t)
    _exit_on_harness([report.a, report.b])
    raise typer.Exit(EXIT_UNEXPECTED if report.unexpected else EXIT_OK)


_CHANGE_STYLE = {"came_in": "bold red", "went": "bold green", "changed": "yellow",
                 "unknown": "bold magenta"}


@app.command()
def bisect(
    program: Annotated[str, typer.Argument(help="program JSON file (or a corpus file)")],
    engines: Annotated[str | None, typer.Option(
        help="the two engines the divergence was found on, A,B (default: report every "
             "change, bisect none)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Run a program on every version of the version tree and show each edge where its
    behaviour changes: where the pair's divergence came in and where it went, with the
    edge's rules and patches.

    A format-1 program's schedule is read on the first engine.
    """
    from engine import DEFAULT_READING
    from engine import bisect as bisect_program
    try:
        names = _engines(engines) if engines is not None else []
        if engines is not None and len(names) != 2:
            _fail(f"--engines: give the two engines of a divergence, A,B (got {engines!r})")
        prog = _load(program, names[0] if names else DEFAULT_READING)
        result = bisect_program(prog, (names[0], names[1]) if names else None)
    except (FoliodiffError, typer.BadParameter) as exc:
        _fail(str(exc))
    if as_json:
        print(json.dumps(result.to_dict(), default=str))
    else:
        _print_bisection(result)
    _exit_on_harness(result.harness)
    raise typer.Exit(EXIT_OK)


def _patch_id(patch: str) -> str:
    """A rule's patch as a table cell: its commit id, or its title when it has none."""
    first = patch.split()[0] if patch.split() else ""
    if len(first) >= 12 and all(c in "0123456789abcdef" for c in first):
        return first
    return patch if len(patch) <= 50 else patch[:49] + "…"


def _print_bisection(result) -> None:
    """The versions' verdicts, then the edges where the behaviour changes (the ones that
    carry the bisected divergence first in bold)."""
    t = result.target
    if t is not None:
        console.print(f"bisecting the {t.classification.value} {t.kind.value} divergence of "
                      f"{result.engines[0]},{result.engines[1]}: {t.signature}", highlight=False)
    elif result.engines is not None:
        console.print(f"{result.engines[0]},{result.engines[1]}: [green]equal[/], nothing to "
                      f"bisect; every change along the tree follows")
    else:
        console.print("no engine pair given: every change along the tree follows")
    versions = Table(title="versions")
    for col in ("version", "parent", "branch", "verdict", "defect"):
        versions.add_column(col)
    if t is not None and result.nodes[0].present is not None:
        versions.add_column("has it")
    for n in result.nodes:
        row = [n.version, n.parent or "-", n.branch, n.outcome.verdict.value,
               str(n.defect) if n.defect else ""]
        if n.present is not None:
            row.append("yes" if n.present else "no")
        versions.add_row(*row)
    console.print(versions)
    edges = Table(title="edges where the behaviour changes", show_lines=True)
    for col in ("edge", "branch", "change", "on path", "rules (patch)", "detail"):
        edges.add_column(col)
    for e in result.edges:
        change = Text(e.change.value.replace("_", " ") + (" (this)" if e.target else ""),
                      style=_CHANGE_STYLE[e.change.value] if e.target else "")
        rules = "\n".join(f"{r.name} ({_patch_id(r.patch)})" for r in e.rules) \
            or f"none shown; patch: {e.edge.commit}"
        edges.add_row(e.edge.name, e.edge.branch, change, "yes" if e.on_path else "",
                      Text(rules), Text(e.detail))
    console.print(edges)
    if not result.edges:
        console.print("the behaviour is the same on every version")


@app.command()
def corpus(
    directory: Annotated[str, typer.Argument(help="folder of corpus files")] = "corpus",
) -> None:
    """Replay every corpus file against its expected outcome per version (regression run)."""
    import glob
    import os

    from engine import check_entry, load_entry
    paths = sorted(glob.glob(os.path.join(directory, "*.json")))
    if not paths:
        _fail(f"directory: no corpus files (*.json) in {directory!r}")
    t = Table(title=f"corpus {directory}")
    for col in ("scenario", "file", "engines", "result"):
        t.add_column(col)
    failed = 0
    for path in paths:
        try:
            entry = load_entry(path)
            problems = check_entry(entry)
        except FoliodiffError as exc:
            problems = [str(exc)]
            entry = {"scenario": "?", "expect": {}}
        failed += bool(problems)
        t.add_row(entry.get("scenario", ""), os.path.basename(path), ",".join(entry["expect"]),
                  "[green]pass[/]" if not problems else "[red]" + "; ".join(problems)[:200] + "[/]")
    console.print(t)
    console.print(f"{len(paths) - failed} passed, {failed} failed")
    raise typer.Exit(EXIT_UNEXPECTED if failed else EXIT_OK)


@app.command()
def engines() -> None:
    """List the kernel versions the model implements."""
    t = Table(title="engines")
    t.add_column("id")
    t.add_column("aliases")
    t.add_column("what it models")
    for name in [*ORDER, *C_TWINS]:
        k = KERNELS[name]
        aliases = ",".join(a for a, v in ALIASES.items() if v == name)
        doc = " ".join((sys.modules[k.__module__].__doc__ or "").split("\n\n")[0].split())
        if name in C_TWINS:
            doc = f"{(k.__doc__ or '').rstrip('.')} (C twin of {C_TWINS[name]})"
        t.add_row(name, aliases, doc)
    console.print(t)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the program format."""
    from engine import program_json_schema
    print(json.dumps(program_json_schema(), indent=2, sort_keys=True))


def _figures(title: str, res: dict, digits: int, out: str | None) -> None:
    """Print benchmark figures as a table (nested dicts as lines) and save them as JSON."""
    t = Table(title=title)
    for col in ("measure", "value"):
        t.add_column(col)
    nested = {k: v for k, v in res.items() if isinstance(v, dict)}
    for k, v in res.items():
        if k not in nested:
            t.add_row(k, f"{v:,.{digits}f}" if isinstance(v, float) else str(v))
    console.print(t)
    for k, v in nested.items():
        console.print(f"[bold]{k}[/]: {v}", highlight=False)
    _save(res, out)


def _save(res: dict, out: str | None) -> None:
    if out:
        with open(out, "w") as fh:
            json.dump(res, fh, indent=2)


@app.command()
def bench(
    engines: Annotated[str, typer.Option(help="engine pair")] = "v6.14,v6.15",
    programs: Annotated[int, typer.Option(help="distinct programs")] = 200,
    repeat: Annotated[int, typer.Option(help="timed repetitions (the median is reported)")] = 5,
    seed: Annotated[int, typer.Option(help="seed of the program generator")] = 1,
    campaign_inputs: Annotated[int, typer.Option(
        min=0, help="programs of a recorded random campaign to time too (0: none)")] = 600,
    out: Annotated[str | None, typer.Option(help="write the figures as JSON here")] = None,
) -> None:
    """Differential executions per second on one core: typical generated programs, and the
    inputs a random campaign from the seed corpus runs, with where their time goes."""
    from engine import bench_differential, bench_page_cost
    from fuzz.throughput import bench_campaign_inputs, fuzzing_gc
    try:
        names = _engines(engines)
    except (FoliodiffError, typer.BadParameter) as exc:
        _fail(str(exc))
    if len(names) != 2:
        _fail("--engines: bench compares two engines")
    fuzzing_gc()             # as a campaign's worker runs
    res = bench_differential(names[0], names[1], programs=programs, repeat=repeat, seed=seed)
    res.update(bench_page_cost(names[0], names[1], repeat=repeat))
    if campaign_inputs > 0:
        res.update(bench_campaign_inputs(names[0], names[1], count=campaign_inputs,
                                         repeat=repeat, seed=seed))
    _figures(f"differential executions, {names[0]} vs {names[1]}", res, 1, out)


@app.command("bench-c")
def bench_c(
    repeat: Annotated[int, typer.Option(help="timed passes (medians are reported)")] = 5,
    mthp_mib: Annotated[int, typer.Option(help="MiB of 64 KiB lazyfree mTHPs (3/4 workload)")] = 128,
    pmd_thps: Annotated[int, typer.Option(help="redirtied lazyfree PMD THPs (4/4 workload)")] = 64,
    out: Annotated[str | None, typer.Option(help="write the figures as JSON here")] = None,
) -> None:
    """The C batched path: v6.14 per PTE against v6.15 batched, and C against Python."""
    from engine import bench_c as run_bench
    res = run_bench(repeat=repeat, mthp_mib=mthp_mib, pmd_thps=pmd_thps)
    _figures(f"lazyfree unmap, medians of {repeat} passes (ms; ratios from this run)", res, 3,
             out)


@app.command("bench-store")
def bench_store(
    n: Annotated[int, typer.Option(help="divergences to store")] = 100_000,
    batch: Annotated[int, typer.Option(help="records per upsert batch")] = 1_000,
    requests: Annotated[int, typer.Option(help="list requests to time")] = 1_000,
    out: Annotated[str | None, typer.Option(help="write the figures as JSON here")] = None,
) -> None:
    """Store benchmark: batched upserts/s, then list latency from a real server."""
    import tempfile

    from service.bench import bench_ingest, bench_list_latency
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/bench.db"
        res = {**bench_ingest(n=n, batch=batch, path=path),
               **bench_list_latency(path, requests=requests)}
    _save(res, out)


@app.command("bench-fleet")
def bench_fleet(
    db: Annotated[str, typer.Option(help="a PostgreSQL store URL (campaigns are added to it)")],
    workers: Annotated[str, typer.Option(help="worker counts to run")] = "1,2,4",
    seconds: Annotated[float, typer.Option(help="seconds each share fuzzes")] = 20.0,
    out: Annotated[str | None, typer.Option(help="write the figures as JSON here")] = None,
) -> None:
    """Fleet benchmark: executions/s with N local workers, store transactions/s per
    worker, the store's capacity, and the ceiling that gives at 16 and 64 workers."""
    from service.fleet.bench import bench_fleet as run
    from service.fleet.queue import conninfo
    try:
        counts = [int(w) for w in workers.split(",") if w.strip()]
        if not counts or min(counts) < 1 or max(counts) > 64:
            raise ValueError(workers)
    except ValueError:
        _fail(f"--workers: worker counts from 1 to 64, comma-separated (got {workers!r})")
    try:
        conninfo(db)
        open_store(db).close()
        res = run(db, counts, seconds)
    except FoliodiffError as exc:
        _fail(str(exc))
    t = Table(title=f"fleet: random v6.14,v6.15, {seconds:.0f} s per share, workers here")
    for col in ("workers", "executions (by share)", "exec/s", "cores busy", "wall s",
                "store tx/s per worker", "finished"):
        t.add_column(col)
    for r in res["scaling"]:
        t.add_row(str(r["workers"]),
                  f"{r['execs']:,} ({', '.join(f'{e:,}' for e in r['share_execs'])})",
                  f"{r['exec_per_s']:,.1f}", f"{r['cores_busy']:.2f}",
                  f"{r['wall_s']:.1f}", f"{r['commits_per_s_per_worker']:,.1f}",
                  str(r["finished"]))
    console.print(t)
    console.print("cores busy: the workers' CPU seconds over the wall time. Each share is a "
                  "stream of its own, several times lighter or heavier than another, so "
                  "executions do not compare across worker counts", highlight=False)
    c = Table(title="store capacity: processes doing a worker's sync cycle flat out")
    for col in ("processes", "tx/s"):
        c.add_column(col)
    for r in res["capacity"]:
        c.add_row(str(r["processes"]), f"{r['ops_per_s']:,.0f}")
    console.print(c)
    for n, ceiling in res["ceiling"].items():
        console.print(f"{n} workers: would load the store to {ceiling['store_load']:.0%} of what "
                      f"it carried here; {ceiling['exec_per_s_if_cores']:,.0f} exec/s if each "
                      f"had a core of its own", highlight=False)
    _save(res, out)
    if not all(r["finished"] and not any(r["worker_exits"]) for r in res["scaling"]):
        err.print("error: a campaign did not finish, or a worker failed")
        raise typer.Exit(EXIT_FAILED)


def _enum_list(option: str, text: str, cls):
    """Comma-separated members of enum ``cls``, or a clean error naming ``option``."""
    try:
        return [cls(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        _fail(f"{option}: {exc} (known: {', '.join(m.value for m in cls)})")


@app.command("bench-fuzz")
def bench_fuzz(
    fuzzers: Annotated[str, typer.Option(
        help="comma-separated fuzzers")] = "atheris,hypothesis,pct,exhaustive,random",
    targets: Annotated[str, typer.Option(help="comma-separated targets")] = (
        "dma-data-loss,shrinker-swapbacked,pmd-redirty-split,oob-batch,vma-bound"),
    seeds: Annotated[int, typer.Option(min=1, help="trials per (fuzzer, target), seeds 0..N-1")] = 5,
    cap: Annotated[float, typer.Option(min=1, help="seconds before a trial counts as not found")] = 60.0,
    seed_corpus: Annotated[str, typer.Option(
        help="seed programs (*.json), each target's own detections left out; 'none' starts cold")] = "corpus",
    reduce: Annotated[bool, typer.Option(help="minimize, store and replay each detection")] = True,
    out: Annotated[str | None, typer.Option(help="write the figures and trials as JSON here")] = None,
) -> None:
    """Time to first detection of five known divergences, per fuzzer, one trial at a time."""
    from pathlib import Path

    from fuzz.bench import Target
    from fuzz.sources import Fuzzer
    from service.bench import bench_fuzz as run_bench
    fz, tg = _enum_list("--fuzzers", fuzzers, Fuzzer), _enum_list("--targets", targets, Target)
    seed_dir = None if seed_corpus == "none" else Path(seed_corpus)
    if seed_dir is not None and not any(seed_dir.glob("*.json")):
        _fail(f"--seed-corpus: no seed programs (*.json) in {seed_corpus!r}")

    def show(t) -> None:
        what = (f"found in {t.seconds:.1f} s, {t.execs:,} execs" if t.found
                else f"not found in {t.seconds:.0f} s ({t.execs:,} execs)")
        if t.ops_minimized is not None:
            what += (f"; {t.ops_found} -> {t.ops_minimized} ops, replay "
                     f"{'same signature' if t.replay_same_signature else 'DIFFERS'}")
        if t.error:
            what += f"; error: {t.error}"
        console.print(f"{t.target:20} {t.fuzzer:10} seed {t.seed}: {what}", highlight=False)

    res = run_bench(fz, tg, list(range(seeds)), cap, seed_corpus=seed_dir, reduce=reduce,
                    on_trial=show)
    t = Table(title=f"time to first detection, {seeds} seeds, one trial at a time, cap {cap:g} s, "
              f"seed corpus {seed_corpus}")
    for col in ("target", "fuzzer", "found", "median s", "min s", "max s", "execs (median)",
                "minimized ops (median)", "replays", "failed"):
        t.add_column(col)
    for target, rows in res["summary"].items():
        for fuzzer, row in rows.items():
            t.add_row(target, fuzzer, row["found"], str(row["median_s"]), str(row["min_s"]),
                      str(row["max_s"]), f"{row['execs_median']:,.0f}",
                      str(row.get("minimized_ops_median", "-")),
                      row.get("replays_same_signature", "-"), str(row["failed"]))
    console.print(t)
    console.print(f"median minimized reproducer over all detections: "
                  f"{res['minimized_ops_median_all']} ops; replays with the same signature: "
                  f"{res['replays_same_signature_all']}", highlight=False)
    _save(res, out)
    failed = [tr for tr in res["trials"] if tr["error"] is not None]
    if failed:
        err.print(f"[bold red]error:[/] {len(failed)} of {len(res['trials'])} trials failed "
                  f"(foliodiff's errors, neither detections nor misses; each says why above)",
                  highlight=False)
        raise typer.Exit(EXIT_FAILED)


@app.command()
def conform(
    kernels: Annotated[str | None, typer.Option(
        help="comma-separated catalogue kernels (deb-6.1, deb-6.12, deb-6.16 ... deb-6.19, "
             "deb-7.3); "
             "default deb-6.12,deb-6.16, or none with --kernel-image")] = None,
    kernel_image: Annotated[str | None, typer.Option(
        help="a bzImage you built (or fetched), booted as catalogue kernels are")] = None,
    engine: Annotated[str | None, typer.Option(
        help="the engine --kernel-image is held to (a built-in id or a plugin)")] = None,
    kernel_config: Annotated[str | None, typer.Option(
        help="--kernel-image's build configuration (default: config-<release> beside it, the "
             "kernel tree's .config, or the image's own CONFIG_IKCONFIG copy)")] = None,
    scenarios: Annotated[str | None, typer.Option(
        help="comma-separated scenario names (default: all)")] = None,
    program: Annotated[list[str] | None, typer.Option(
        help="a program file (corpus entry or program JSON) to run instead of the "
             "scenarios; repeatable")] = None,
    divergence: Annotated[int | None, typer.Option(
        help="a stored divergence's reproducer to run instead of the scenarios; each "
             "result also says which engine of its pair the kernel matched")] = None,
    pin: Annotated[str, typer.Option(help="how --program's pins take references "
                                          "(io_uring or vmsplice)")] = "io_uring",
    sides: Annotated[str | None, typer.Option(
        help="more engines to compare each kernel's observations with, comma-separated "
             "(e.g. the parent and your plugin): each result says which it matched")] = None,
    job: Annotated[int | None, typer.Option(
        help="run the queued conformance job with this id (what the API starts)")] = None,
    db: Annotated[str | None, typer.Option(help=DB_HELP)] = None,
    store: Annotated[bool, typer.Option(help="keep the results in the store")] = True,
    timeout: Annotated[float, typer.Option(min=1, help="seconds per boot")] = 300.0,
    out: Annotated[str | None, typer.Option(help="write the results as JSON here")] = None,
) -> None:
    """Boot real kernels under qemu and compare each scenario with the kernel's model.

    Kernels: catalogue names (Debian's images, fetched once), and/or your own
    bzImage with --kernel-image and --engine.  Programs: the built-in
    scenarios, or --program files, or a stored --divergence.  Results are
    kept in the store (--no-store to skip) and printed field by field.
    """
    from service.conform.check import conform as run_conform
    from service.conform.check import records
    from service.conform.jobs import check_divergence, run_job
    if job is not None:
        if any(x is not None for x in (kernels, kernel_image, scenarios, program, divergence,
                                       sides)):
            _fail("--job: runs the stored job as queued; give only --db (and --timeout is the job's)")
        with open_store(db) as st:
            try:
                results = run_job(st, job)
            except FoliodiffError as exc:
                _fail(f"job {job}: {exc}")
        _conform_report(results, out)
        return
    targets = _conform_targets(kernels, kernel_image, engine, kernel_config)
    if divergence is not None:
        if program or scenarios or sides:
            _fail("--divergence: give it alone, without --program, --scenarios or --sides "
                  "(its sides are its engine pair)")
        with open_store(db) as st:
            try:
                results = check_divergence(st, divergence, targets, timeout=timeout, keep=store)
            except FoliodiffError as exc:
                _fail(str(exc))
        _conform_report(results, out)
        return
    chosen = _conform_scenarios(scenarios, program, pin)
    try:
        also = tuple(load_engine(e.strip()) for e in (sides or "").split(",") if e.strip())
        results = run_conform(targets, chosen, timeout=timeout, sides=also)
        if store:
            with open_store(db, create=True) as st:
                for kc in results:
                    st.add_conformance(records(kc, chosen))
    except FoliodiffError as exc:
        _fail(str(exc))
    _conform_report(results, out)


def _conform_targets(kernels: str | None, image: str | None, engine: str | None,
                     config: str | None) -> list:
    """The kernels a ``conform`` run boots: catalogue names, then the image given by path."""
    from service.conform.check import KernelTarget
    from service.conform.errors import ConfigMissingError
    from service.conform.kconfig import check_config, read_image
    if image is None and (engine is not None or config is not None):
        _fail("--engine and --kernel-config go with --kernel-image")
    names = [k.strip() for k in (kernels if kernels is not None else
                                 "" if image else "deb-6.12,deb-6.16").split(",") if k.strip()]
    try:
        targets = [KernelTarget.of(n) for n in names]
        if image is not None:
            if engine is None:
                _fail("--kernel-image: name the engine that models it with --engine "
                      "(a built-in id such as v6.16, or a plugin)")
            held_to = load_engine(engine)
            bz = read_image(image)
            check = check_config(bz, config)
            for line in check.lines():
                err.print(f"[yellow]{bz.path.name}[/]: {escape(line)}", highlight=False)
            if check.missing_required:
                raise ConfigMissingError(str(bz.path), check.missing_required)
            targets.append(KernelTarget.from_image(bz, held_to))
    except FoliodiffError as exc:
        _fail(str(exc))
    if not targets:
        _fail("--kernels: no kernel to boot (give catalogue names or --kernel-image)")
    return targets


def _conform_scenarios(scenarios: str | None, programs: list[str] | None, pin: str) -> dict:
    """The scenarios a ``conform`` run runs: the named built-in ones, or the program files."""
    from engine import DEFAULT_READING, Scenario, conformance
    if programs:
        if scenarios:
            _fail("--program: give programs or --scenarios, not both")
        if pin not in ("io_uring", "vmsplice"):
            _fail(f"--pin: must be io_uring or vmsplice (got {pin!r})")
        out = {}
        for path in programs:
            name = Path(path).stem
            if name in out:
                _fail(f"--program: two programs named {name!r}")
            try:
                out[name] = Scenario(name, _load(path, DEFAULT_READING), {"pin": pin},
                                     description=f"program file {path}")
            except FoliodiffError as exc:
                _fail(f"--program {path}: {exc}")
        return out
    chosen = dict(conformance())
    if scenarios:
        names = [n.strip() for n in scenarios.split(",") if n.strip()]
        unknown = [n for n in names if n not in chosen]
        if unknown:
            _fail(f"--scenarios: unknown scenario {unknown[0]!r} (known: {', '.join(chosen)})")
        chosen = {n: chosen[n] for n in names}
    return chosen


def _side_cell(side) -> str:
    """One engine's column of a ``conform`` table: its verdict, and what differed."""
    if side is None:
        return "-"
    if not side.differences:
        return f"{side.verdict.value}: {side.detail}" if side.detail else side.verdict.value
    return f"{side.verdict.value}: " + "; ".join(
        f"{d.field}: {d.predicted} -> {d.observed}" for d in side.differences)


def _conform_report(results: list, out: str | None) -> None:
    """Print each kernel's verdicts and the summary, save them to @out; exit 1 unless all conform."""
    from service.conform.check import Verdict
    for kc in results:
        title = (f"{kc.kernel} ({kc.package or 'image'} {kc.identity}, uname {kc.uname}) "
                 f"against {kc.engine}: boot {kc.boot.value}, {kc.seconds:.1f} s")
        if not kc.results:
            console.print(f"[bold red]{escape(title)}[/]: no conformance results "
                          f"({escape(kc.boot_detail)})", highlight=False)
            continue
        t = Table(title=escape(title))
        sides = list(dict.fromkeys(e for r in kc.results for e in r.sides))
        for col in ("scenario", "verdict", "differences (field: model -> kernel)",
                    *(f"as {e}?" for e in sides)):
            t.add_column(col)
        for r in kc.results:
            diffs = "; ".join(f"{d.field}: {d.predicted} -> {d.observed}" for d in r.differences)
            colour = {Verdict.EQUAL: "green", Verdict.UNSUPPORTED: "yellow",
                      Verdict.NOT_EXPRESSIBLE: "yellow"}.get(r.verdict, "red")
            t.add_row(r.scenario, f"[{colour}]{r.verdict.value}[/]", escape(diffs or r.detail),
                      *(_side_cell(r.sides.get(e)) for e in sides))
        console.print(t)
    summary = Table(title="summary: the kernel each was (Debian package, or image hash), and the verdicts")
    verdicts = [v.value for v in Verdict]
    for col in ("kernel", "package", "version", "uname", "engine", "boot", *verdicts):
        summary.add_column(col)
    for kc in results:
        counts = kc.counts()
        summary.add_row(kc.kernel, kc.package, kc.identity, str(kc.uname), kc.engine,
                        kc.boot.value, *(str(counts[v]) if kc.results else "-" for v in verdicts))
    console.print(summary)
    _save({"kernels": [kc.to_dict() for kc in results]}, out)
    if not all(kc.conforms for kc in results):
        raise typer.Exit(1)


def _seed_table(bench, workload) -> Table:
    """One workload of a ``seed-bench``: a row per kernel, its figures beside its model's."""
    rows = {r.real.kernel: r for r in bench.rows[workload]}
    c = workload.counter
    t = Table(title=f"{workload.value} ({c}), medians of {bench.repeat} run(s): the real kernel, "
                    f"then the model of that kernel", title_justify="left")
    for col in ("kernel", "engine", "folios", f"{c}\nΔ", "pglazy-\nfreed Δ",
                "PAGEOUT ms\nwall (TCG)", "PAGEOUT ms\ncpu (TCG)", "old/new\nwall/cpu",
                f"model\n{c} Δ", "model\npglazy-\nfreed Δ", "model\nbench-c\nms",
                "model\nold/new"):
        t.add_column(col, justify="left" if col in ("kernel", "engine") else "right",
                     no_wrap=col in ("kernel", "engine"))

    def num(v, fmt="{:,}"):
        return "-" if v is None else fmt.format(v)

    for k in bench.kernels:
        r = rows.get(k.kernel)
        if r is None:
            status = f"boot {k.boot.value}" if k.boot.value != "ok" else "benchmark failed"
            t.add_row(k.kernel, k.engine, f"[red]{status}[/]", *["-"] * 9)
            continue
        f, m = r.real, r.model
        if f.unsupported:
            t.add_row(k.kernel, k.engine, "[yellow]unsupported[/]", *["-"] * 9)
            continue
        colour = {True: "green", False: "bold red", None: "yellow"}[r.counter_matches]
        ratio = ("-" if r.real_ratio is None else
                 f"{r.real_ratio:.2f}×/{num(r.real_cpu_ratio, '{:.2f}×')}")
        t.add_row(k.kernel, k.engine, num(f.folios), f"[{colour}]{num(f.counter)}[/]",
                  num(f.pglazyfreed), num(f.pageout_ms, "{:.3f}"), num(f.pageout_cpu_ms, "{:.3f}"),
                  ratio, f"[{colour}]{num(m and m.counter)}[/]", num(m and m.pglazyfreed),
                  num(m and m.unmap_ms, "{:.3f}"), num(r.model_ratio, "{:.2f}×"))
    return t


@app.command("seed-bench")
def seed_bench(
    kernels: Annotated[str, typer.Option(
        help="comma-separated catalogue kernels, oldest first (old/new ratios are over the first)"
    )] = "deb-6.12,deb-6.16",
    repeat: Annotated[int, typer.Option(
        min=1, max=100, help="runs of each workload per boot, and bench-c passes of the model (medians are "
                             "reported)")] = 5,
    mthp_mib: Annotated[int, typer.Option(
        min=1, max=256, help="MiB of 64 KiB lazyfree mTHPs (3/4 workload)")] = 128,
    pmd_thps: Annotated[int, typer.Option(
        min=1, max=128, help="redirtied lazyfree PMD THPs (4/4 workload)")] = 64,
    timeout: Annotated[float, typer.Option(min=1, help="seconds per boot")] = 600.0,
    out: Annotated[str | None, typer.Option(help="write the figures as JSON here")] = None,
) -> None:
    """The seed series' benchmarks on real Debian kernels under qemu, beside each kernel's model.

    Exit 1 when a kernel's counter differs from its model's prediction, or a
    kernel gave no figures (it did not boot, or a workload failed).
    """
    from service.conform.seed import SeedWorkload
    from service.conform.seedbench import TIMES_NOTE
    from service.conform.seedbench import seed_bench as run_bench
    try:
        bench = run_bench([k.strip() for k in kernels.split(",") if k.strip()], repeat=repeat,
                          mthp_mib=mthp_mib, pmd_thps=pmd_thps, timeout=timeout)
    except FoliodiffError as exc:
        _fail(str(exc))
    for k in bench.kernels:
        console.print(f"{k.kernel} ({k.package_version}, uname {k.uname}) modelled by {k.engine}: "
                      f"boot {k.boot.value}, {k.seconds:.1f} s", highlight=False)
    # wide tables: a file or a pipe gets them whole, a terminal at its width
    wide = console if console.is_terminal else Console(width=160)
    for w in SeedWorkload:
        wide.print(_seed_table(bench, w))
    console.print(f"[bold]Times:[/] {TIMES_NOTE}", highlight=False)
    for k in bench.kernels:
        if k.detail:
            console.print(f"[bold red]{k.kernel}: no figures[/]: {k.detail}", highlight=False)
    for r in bench.mismatches:
        if r.model is None:             # a mismatch has a model (SeedRow.counter_matches)
            continue
        console.print(f"[bold red]{r.real.kernel} {r.real.workload.value}: {r.real.workload.counter} "
                      f"is {r.real.counter}, the model ({r.model.engine}) predicts "
                      f"{r.model.counter}[/]", highlight=False)
    _save(bench.to_dict(), out)
    if bench.mismatches or not bench.complete:
        raise typer.Exit(EXIT_UNEXPECTED)


@app.command()
def reproducer(
    program: Annotated[str | None, typer.Argument(help="program JSON file (or a corpus file)")] = None,
    divergence: Annotated[int | None, typer.Option(
        help="a stored divergence's id (its minimized program)")] = None,
    corpus: Annotated[str | None, typer.Option(help="a corpus program's name (see --corpus-dir)")] = None,
    corpus_dir: Annotated[str | None, typer.Option(
        help="where --corpus looks (default: the seed corpus)")] = None,
    db: Annotated[str | None, typer.Option(help=DB_HELP)] = None,
    pin: Annotated[str, typer.Option(help="how pins are taken: io_uring or vmsplice")] = "io_uring",
    out: Annotated[str | None, typer.Option(help="write the C file here (default: stdout)")] = None,
) -> None:
    """Export a program, a stored divergence or a corpus program as a static C reproducer."""
    import os

    from engine import CORPUS_DIR, DEFAULT_READING, PinMechanism, translate
    mechanisms = _enum_list("--pin", pin, PinMechanism)
    if len(mechanisms) != 1:
        _fail(f"--pin: give one of io_uring, vmsplice (got {pin!r})")
    mechanism = mechanisms[0]
    if sum(x is not None for x in (program, divergence, corpus)) != 1:
        _fail("program: give a program file, --divergence ID or --corpus NAME (one of them)")
    try:
        if program is not None:
            name = os.path.splitext(os.path.basename(program))[0]
            # No engine runs here: a format-1 schedule is read on the default engine.
            source = translate(_load(program, DEFAULT_READING), name=name, pin=mechanism).source
        elif corpus is not None:
            from service.triage import corpus_c
            source = corpus_c(corpus, mechanism, corpus_dir or CORPUS_DIR).source
        elif divergence is not None:
            from service.triage import divergence_c
            with open_store(db) as store:
                source = divergence_c(store, divergence, mechanism).source
    except FoliodiffError as exc:
        _fail(str(exc))
    if out:
        with open(out, "w") as fh:
            fh.write(source)
    else:
        sys.stdout.write(source)


def _progress_table(c) -> Table:
    """The live progress of a campaign (``c`` is a service.campaign.Campaign)."""
    p, cfg = c.progress, c.config
    t = Table(title=f"campaign {c.campaign_id}: {cfg.fuzzer.value} on "
              f"{cfg.engine_a} vs {cfg.engine_b}, {cfg.workers} worker(s)", show_header=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    execs = p.total_execs()
    t.add_row("time", f"{p.elapsed:.0f} / {cfg.seconds:.0f} s")
    t.add_row("executions (search)", f"{execs:,}")
    t.add_row("exec/s", f"{execs / max(p.elapsed, 1e-9):,.0f}")
    t.add_row("minimization runs", f"{p.minimize_runs:,}")
    t.add_row(f"coverage ({cfg.fuzzer.coverage_unit.value})", f"{p.total_coverage():,}")
    t.add_row("corpus", f"{sum(p.corpus.values()):,}")
    t.add_row("stored findings", str(p.total_stored()))
    t.add_row("waiting for the minimizer", str(len(p.pending)))
    for kind, n in sorted(p.by_kind().items()):
        t.add_row(f"signatures: {kind}", str(n))
    t.add_row("harness errors (foliodiff defects)", str(len(p.harness_ids())),
              style="bold red" if p.harness_ids() else None)
    t.add_row("worker RSS", _mib(p.rss))
    return t


def _mib(rss: dict[int, int]) -> str:
    """Each worker's resident set size, in MiB, by worker."""
    return "/".join(f"{rss[w] / 2**20:.0f}" for w in sorted(rss)) + " MiB" if rss else "-"


@app.command()
def fuzz(
    fuzzer: Annotated[str, typer.Option(help="atheris, hypothesis, pct, exhaustive or random")] = "pct",
    engines: Annotated[str, typer.Option(help="the engine pair")] = "v6.14,v6.15",
    time_limit: Annotated[float | None, typer.Option(
        "--time", help="seconds the campaign runs, over resumes (default 600); with --resume, seconds to "
                       "run now")] = None,
    workers: Annotated[int, typer.Option(help="worker processes")] = 1,
    db: Annotated[str | None, typer.Option(help=DB_HELP)] = None,
    corpus: Annotated[str | None, typer.Option(help="directory for kept inputs")] = None,
    seeds: Annotated[str | None, typer.Option(
        help="seed programs (*.json, e.g. corpus) the byte fuzzers start from")] = None,
    seed: Annotated[int, typer.Option(help="campaign seed")] = 0,
    resume: Annotated[int | None, typer.Option(help="resume the stopped campaign with this id")] = None,
    minimize: Annotated[bool, typer.Option(help="minimize new unexpected divergences")] = True,
    pct_depth: Annotated[int, typer.Option(help="PCT bug depth d")] = 3,
    preemption_bound: Annotated[int, typer.Option(help="exhaustive search preemption bound")] = 2,
    live: Annotated[bool, typer.Option(help="live progress table (else a line every 5 s)")] = True,
    fleet: Annotated[bool, typer.Option(
        help="queue the campaign for `foliodiff worker` processes on any machine (PostgreSQL "
             "store): --workers shares, each run --time seconds, --slice seconds at a time")] = False,
    slice_seconds: Annotated[float, typer.Option(
        "--slice", help="with --fleet: seconds a worker runs a share before it goes back "
                        "to the queue")] = 60.0,
) -> None:
    """Run a fuzzing campaign on an engine pair; findings go to the store (created if need be).

    One process runs a campaign at a time: ``--resume`` of a campaign another
    process is running is refused, naming it, unless that process stopped
    renewing its lease (then it is taken over, saying so).  With ``--fleet``
    the campaign is only queued: ``foliodiff worker`` processes run it.
    """

    from rich.live import Live

    from service.campaign import Campaign, CampaignConfig, create, harness_message, require_fuzzer
    from service.errors import LeaseLostError
    from service.store import LEASE_EXPIRY
    url = _store_url(db)
    try:
        if resume is None:
            names = _engines(engines)
            if len(names) != 2:
                raise typer.BadParameter("a campaign needs two engines", param_hint="--engines")
            config = CampaignConfig(plugins=identities(names), fuzzer=fuzzer,
                                    engine_a=names[0], engine_b=names[1],
                                    seconds=600 if time_limit is None else time_limit,
                                    workers=workers, corpus=corpus, seeds=seeds,
                                    seed=seed, pct_depth=pct_depth, minimize=minimize,
                                    preemption_bound=preemption_bound)
            require_fuzzer(config.fuzzer)        # before a campaign exists that could not run
            if fleet:
                _queue_fleet(url, config.model_copy(update={"slice_seconds": slice_seconds}))
                return
            with open_store(url, create=True) as store:
                campaign_id = create(store, config)
        else:
            campaign_id = resume
            open_store(url).close()              # a resume never creates an empty store
        c = Campaign(url, campaign_id, run_for=time_limit if resume is not None else None,
                     on_stored=lambda f: console.print(
                         f"stored #{f['divergence_id']} {f['kind']}: {f['signature']} "
                         f"({f['ops_original']} ops)", highlight=False),
                     on_minimized=lambda m: console.print(
                         f"minimized #{m['divergence_id']}: " + (
                             f"{m['ops_original']} -> {m['ops_minimized']} ops in {m['runs']} runs"
                             + "".join(f"; {what} at {m[key]}" for key, what in
                                       (("came_in", "came in"), ("went", "went"))
                                       if m.get(key))
                             + (f"; fixed by the same patch as #{m['duplicate_of']}: "
                                f"marked its duplicate" if m.get("duplicate_of") else "")
                             if m["ops_minimized"] is not None else m["error"]),
                         highlight=False),
                     on_harness=lambda f: err.print(Text(harness_message(f, url),
                                                         style="bold red")))
        try:
            previous = c.take_lease()
        except BaseException:
            c.store.close()
            raise
    except ValidationError as exc:
        _fail(_invalid(exc))
    except (FoliodiffError, typer.BadParameter) as exc:
        _fail(str(exc))
    if previous is not None:
        err.print(f"campaign {campaign_id}: took over from pid {previous.pid} on host "
                  f"{previous.host!r}, silent since {previous.heartbeat:%Y-%m-%d %H:%M:%S} UTC "
                  f"(gone, or no heartbeat for {LEASE_EXPIRY:.0f} s)", highlight=False)
    console.print(f"campaign {campaign_id}: {c.config.fuzzer.value} on {c.config.engine_a} vs "
                  f"{c.config.engine_b}, {c.remaining():.0f} s to run; store {url}")
    unit = c.config.fuzzer.coverage_unit.value
    try:
        if live and console.is_terminal:
            with Live(_progress_table(c), console=console, refresh_per_second=2) as view:
                c.on_progress = lambda camp: view.update(_progress_table(camp))
                status = c.run()
        else:
            last = [0.0]

            def line(camp) -> None:
                if camp.progress.elapsed - last[0] >= 5:
                    last[0] = camp.progress.elapsed
                    p = camp.progress
                    console.print(f"[{p.elapsed:5.0f}s] execs {p.total_execs():,} "
                                  f"({p.total_execs() / max(p.elapsed, 1e-9):,.0f}/s) "
                                  f"minimization runs {p.minimize_runs:,} "
                                  f"corpus {sum(p.corpus.values())} "
                                  f"cov {p.total_coverage()} {unit} "
                                  f"stored {p.total_stored()} signatures {p.by_kind()} "
                                  f"worker RSS {_mib(p.rss)} "
                                  f"harness errors {len(p.harness_ids())}", highlight=False)
            c.on_progress = line
            status = c.run()
    except LeaseLostError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}; this process stopped", highlight=False)
        raise typer.Exit(EXIT_FAILED) from None
    p = c.progress
    harness = (f"{len(p.harness)} harness errors (defects of foliodiff, not kernel findings: "
               f"GET /harness-errors)" if p.harness else "no harness errors")
    console.print(Text(f"campaign {campaign_id} {status}: {p.total_execs():,} executions in "
                       f"{p.elapsed:.0f} s (and {p.minimize_runs:,} minimization runs), "
                       f"coverage {p.total_coverage():,} {unit}, "
                       f"{p.total_stored()} findings stored ({len(p.stored)} in this run; "
                       f"{len(p.pending)} not minimized yet: "
                       f"the next campaign of the pair minimizes them), {harness}; "
                       f"see `foliodiff serve --db {url}` then GET /campaigns/{campaign_id} "
                       f"and /divergences", style="bold red" if p.harness else ""))
    if c.failure is not None:
        err.print(Text(f"error: campaign {campaign_id} failed: {c.failure}", style="bold red"))
        raise typer.Exit(EXIT_FAILED)
    if status == "paused":
        again = f"foliodiff fuzz --resume {campaign_id}"
        if url != DEFAULT_DB_URL:
            again += f" --db {shlex.quote(url)}"
        console.print(f"campaign {campaign_id} paused; resume it with: {again}", highlight=False,
                      markup=False, soft_wrap=True)
    if p.harness:
        # everything is stored; the exit code tells scripts the harness misbehaved
        raise typer.Exit(EXIT_HARNESS)


def _queue_fleet(url: str, config) -> None:
    """``fuzz --fleet``: queue the campaign and say how workers join it."""
    from service.fleet.create import create_fleet_campaign
    from service.fleet.queue import conninfo
    conninfo(url)                                # PostgreSQL, or refused naming the URL
    open_store(url, create=False).close()
    campaign_id = create_fleet_campaign(url, config)
    console.print(f"campaign {campaign_id} queued: {config.workers} shares of "
                  f"{config.seconds:.0f} s, {config.slice_seconds:.0f} s a slice; start workers "
                  f"on any machine with: foliodiff worker --db {shlex.quote(url)} "
                  f"--campaign {campaign_id}", highlight=False, markup=False, soft_wrap=True)


@app.command("queue-replay")
def queue_replay(
    db: Annotated[str | None, typer.Option(help=DB_HELP + "; a PostgreSQL URL")] = None,
    engines: Annotated[str | None, typer.Option(help="only this engine pair's findings")] = None,
) -> None:
    """Queue a replay of every stored finding for fleet workers (ClusterFuzz's
    progression): each runs its program again with the worker's model and notes
    on the finding whether it still shows. Workers without --campaign take them."""
    from service.fleet.queue import conninfo, ensure_schema
    from service.fleet.tasks import defer_replay, queue_app
    url = _store_url(db)
    pair = None
    if engines is not None:
        names = _engines(engines)
        if len(names) != 2:
            _fail(f"--engines: two engines, comma-separated (got {engines!r})")
        pair = (names[0], names[1])
    try:
        conninfo(url)
        ids: list[int] = []
        with open_store(url) as store:
            while True:
                page, total = store.list_divergences(engines=pair, sort="last_seen",
                                                     limit=500, offset=len(ids))
                ids += [d.id for d in page]
                if not page or len(ids) >= total:
                    break
        ensure_schema(url)
        app_ = queue_app(url)
        with app_.open():
            queued = sum(defer_replay(app_, i) for i in ids)
    except FoliodiffError as exc:
        _fail(str(exc))
    console.print(f"{queued} replays queued ({len(ids) - queued} were waiting already); "
                  f"workers without --campaign run them: foliodiff worker --db "
                  f"{shlex.quote(url)}", highlight=False, markup=False, soft_wrap=True)


@app.command()
def worker(
    db: Annotated[str | None, typer.Option(help=DB_HELP + "; a PostgreSQL URL")] = None,
    campaign: Annotated[int | None, typer.Option(
        help="take only this fleet campaign's jobs, and stop once it is finished")] = None,
    name: Annotated[str | None, typer.Option(help="this worker's name (default host:pid)")] = None,
) -> None:
    """Run fleet campaigns' jobs (fuzz shares, minimizations) from the store's queue.

    Start one per core on each machine; a worker killed, or cut off, has its
    job taken over by another after a few seconds without its heartbeat.
    Exits 0 when its campaign is finished or when stopped (SIGINT, SIGTERM),
    2 when refused (not PostgreSQL, an unknown or non-fleet campaign,
    another model), 4 when it failed or its campaign did (saying why).
    """
    from service.fleet.worker import run_worker
    url = _store_url(db)

    def stored(campaign_id: int, f) -> None:
        console.print(f"campaign {campaign_id}: stored #{f.divergence_id} {f.kind}: "
                      f"{f.signature}", highlight=False, markup=False)

    def minimized(campaign_id: int, m: dict) -> None:
        console.print(f"campaign {campaign_id}: minimized #{m['divergence_id']}: " + (
            f"{m['ops_original']} -> {m['ops_minimized']} ops in {m['runs']} runs"
            if m["ops_minimized"] is not None else m["error"]), highlight=False, markup=False)

    try:
        open_store(url, create=False).close()
        status = run_worker(url, campaign, name=name, on_stored=stored, on_minimized=minimized)
    except FoliodiffError as exc:
        _fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - a lost database, a queue error: said, exit 4
        err.print(f"[bold red]error:[/] worker failed: {escape(f'{type(exc).__name__}: {exc}')}")
        raise typer.Exit(EXIT_FAILED) from None
    if status is not None and status.value == "failed":
        with open_store(url) as store:
            why = store.get_campaign(campaign).config.get("progress", {}).get("failure")
        err.print(Text(f"error: campaign {campaign} failed: {why}", style="bold red"))
        raise typer.Exit(EXIT_FAILED)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    db: Annotated[str | None, typer.Option(help=DB_HELP)] = None,
    create: Annotated[bool, typer.Option(
        help="create the SQLite store if its file does not exist (else refuse to start)")] = False,
) -> None:
    """Serve the triage API (uvicorn) on a store, checked before the server starts."""
    from service.api import serve as run_server
    with open_store(db, create=create) as store:
        run_server(host=host, port=port, db_url=_store_url(db), store=store)


def main() -> None:
    try:
        app()
    except FoliodiffError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(EXIT_BAD_INPUT)


if __name__ == "__main__":
    main()
