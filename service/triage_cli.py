"""``foliodiff triage``: the divergence store from the command line.

A thin edge over the library the triage API uses, as sqlite-utils' ``cli.py``
is over its ``db.py``: each command opens the store (:func:`_open_store`),
calls one function of :mod:`service.api.views` and prints what it returns,
as a table or, with ``--json``, as the JSON the API answers for the same
request (``show --json`` is ``GET /divergences/{id}``, ``list --json`` is
``GET /divergences``).  Bad input (an unknown id, a transition the triage
states do not allow, a bad filter) prints one line naming the option or
argument and the value, and exits 2.

Commands: ``list``, ``show``, ``transition``, ``note``, ``dup``, ``export``
(corpus file, C reproducer), ``intended`` (per rule and campaign) and
``program`` (a stored program, such as an intended rule's sample).
"""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from engine import FoliodiffError, PinMechanism
from service.errors import InvalidValueError
from service.settings import DEFAULT_DB_URL, Settings, env_name

if TYPE_CHECKING:
    from service.api.schemas import DivergenceDetail, FieldRow, RunOut
    from service.store import Store

# The store, the API's schemas and views are imported by the commands that use
# them: every `foliodiff` command loads this module, and they take 0.7 s to load.

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Triage the stored divergences: list, show, move through the triage "
                       "states, note, mark duplicates, export; intended divergences per rule.")
# As service.cli's: piped output gets 140 columns, not rich's 80.
console = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 140)

#: Exit codes, as ``service.cli``'s: 0 done, 2 bad input.
EXIT_OK, EXIT_BAD_INPUT = 0, 2
#: Equal outcome fields ``show`` prints below the differing ones, unless ``--all``.
EQUAL_ROWS = 12

# Where a field the store or a request schema names is given on this command line.
_OPTION = {"to": "STATUS", "to_status": "STATUS", "text": "TEXT", "duplicate_of": "--of",
           "divergence_id": "ID", "campaign_id": "--campaign"}

Db = Annotated[str | None, typer.Option(
    help=f"store URL (default ${env_name('db_url')} or {DEFAULT_DB_URL})")]
Json = Annotated[bool, typer.Option("--json", help="print the API's JSON for the same request")]
Id = Annotated[int, typer.Argument(min=1, help="divergence id")]
Author = Annotated[str | None, typer.Option(help="who does it (default: the login name)")]


def _fail(message: str) -> NoReturn:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(EXIT_BAD_INPUT)


def _option(field: str) -> str:
    """The option or argument of this command line that gives store field @field."""
    head = field.split(".")[0].split("[")[0]
    return _OPTION.get(head, "--" + head.replace("_", "-"))


@contextmanager
def _errors() -> Iterator[None]:
    """Turn the store's, the engine's and the schemas' errors into one line naming
    the option and the value (exit 2)."""
    try:
        yield
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _option(".".join(map(str, first["loc"]))) if first["loc"] else "input"
        _fail(f"{where}: {first['msg']} (got {first.get('input')!r})")
    except InvalidValueError as exc:
        # An engine's message names its field already ("engines: unknown engine ...").
        reason = exc.reason.removeprefix(f"{exc.field}: ")
        _fail(f"{_option(exc.field)}: {reason} (got {exc.value!r})")
    except FoliodiffError as exc:
        _fail(str(exc))


def _store_url(db: str | None) -> str:
    """@db, else the settings' store URL (``$FOLIODIFF_DB_URL``, else the default):
    the resolution of every ``foliodiff`` command (``service.cli._store_url``)."""
    try:
        return db or Settings().db_url
    except ValidationError as exc:
        first = exc.errors()[0]
        _fail(f"{env_name('db_url')}: {first['msg']} (got {first.get('input')!r})")


def _open_store(db: str | None) -> Store:
    """The store the command works on, as every command that reads a store opens it
    (``service.cli.open_store``): a SQLite file that does not exist is refused by
    name, never created."""
    from service.errors import StoreError
    from service.store import Store
    try:
        return Store.open(_store_url(db), create=False)
    except StoreError as exc:
        _fail(f"--db: {exc}")


def _check_ids(**ids: int | None) -> None:
    """Refuse an id over the store's range (32-bit INTEGER columns on PostgreSQL), as
    the API does; @ids: the option or argument name -> its value."""
    from service.api.schemas import MAX_ID
    for where, value in ids.items():
        if value is not None and value > MAX_ID:
            _fail(f"{where}: must be at most {MAX_ID} (got {value})")


def _author(author: str | None) -> str:
    if author is not None:
        return author
    try:
        return getpass.getuser()
    except (OSError, KeyError):     # no login name in a bare container
        return "foliodiff-cli"


def _print_json(model: BaseModel) -> None:
    print(model.model_dump_json())


def _value(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, default=str)


# -- list ----------------------------------------------------------------------------


@app.command("list")
def list_(
    status: Annotated[str | None, typer.Option(help="triage state: new, confirmed, ...")] = None,
    kind: Annotated[str | None, typer.Option(help="data_loss, crash, invariant, ...")] = None,
    classification: Annotated[str | None, typer.Option(help="unexpected or intended")] = None,
    engines: Annotated[str | None, typer.Option(help="engine pair 'a..b'")] = None,
    text: Annotated[str | None, typer.Option("--text", "-q",
                                             help="text in the signature")] = None,
    came_in: Annotated[str | None, typer.Option(
        help="an edge of the version tree where bisection saw it come in, 'a->b'")] = None,
    went: Annotated[str | None, typer.Option(
        help="an edge where bisection saw it go, 'a->b'")] = None,
    sort: Annotated[str, typer.Option(help="id, first_seen, last_seen, hit_count, kind, status "
                                           "or signature; - in front for descending")
                    ] = "-last_seen",
    limit: Annotated[int, typer.Option(help="rows, 1..1000 (the store's most)")] = 50,
    offset: Annotated[int, typer.Option(help="rows to skip")] = 0,
    as_json: Json = False,
    db: Db = None,
) -> None:
    """List divergences with the API's filters (GET /divergences)."""
    from service.api import views
    from service.triage import engine_pair
    with _errors():
        pair = engine_pair(engines, "..", "engines") if engines is not None else None
        with _open_store(db) as store:
            page = views.divergence_page(store, status=status, kind=kind,
                                         classification=classification, engines=pair,
                                         text=text, came_in=came_in, went=went, sort=sort,
                                         limit=limit, offset=offset)
    if as_json:
        _print_json(page)
        return
    t = Table(title=f"divergences {offset + 1 if page.items else 0}-{offset + len(page.items)} "
                    f"of {page.total}")
    for col in ("id", "status", "kind", "engines", "hits", "last seen", "min.", "came in",
                "went", "signature"):
        t.add_column(col, no_wrap=col != "signature")
    for d in page.items:
        t.add_row(str(d.id), d.status.value + (f" of #{d.duplicate_of}" if d.duplicate_of
                                               else ""),
                  d.kind.value, f"{d.engine_a}..{d.engine_b}", str(d.hit_count),
                  d.last_seen.strftime("%Y-%m-%d %H:%M"), "yes" if d.minimized else "-",
                  d.came_in or "-", d.went or "-", Text(d.signature))
    console.print(t)


# -- show ----------------------------------------------------------------------------


def _outcome_rows(view: RunOut | DivergenceDetail, show_all: bool, title: str) -> Table:
    """Both outcomes side by side, the differing fields highlighted and first."""
    t = Table(title=title, title_justify="left")
    for col in ("field", view.outcome_a.get("engine") or "a", view.outcome_b.get("engine") or "b"):
        t.add_column(col, overflow="fold")
    rows: list[FieldRow] = view.side_by_side
    differing = [r for r in rows if r.differs]
    equal = [r for r in rows if not r.differs]
    for r in differing:
        t.add_row(Text(r.field, style="bold red"), Text(_value(r.a), style="bold red"),
                  Text(_value(r.b), style="bold red"))
    shown = equal if show_all else equal[:EQUAL_ROWS]
    for r in shown:
        t.add_row(Text(r.field, style="dim"), Text(_value(r.a), style="dim"),
                  Text(_value(r.b), style="dim"))
    if len(shown) < len(equal):
        t.add_row(Text(f"... {len(equal) - len(shown)} more equal fields (--all)", style="dim"),
                  "", "")
    return t


def _program_lines(program: dict[str, Any], parted: int | None) -> Text:
    """A program one operation a line, the operation where the runs parted marked."""
    out = Text()
    for th in program.get("threads") or []:
        out.append(f"thread {_value(th)}\n", style="dim")
    for i, op in enumerate(program.get("ops") or []):
        mark = "▶ " if i == parted else "  "
        out.append(f"{mark}[{i}] {_value(op)}\n", style="bold" if i == parted else "")
    for e in program.get("schedule") or []:
        out.append(f"  schedule {_value(e)}\n", style="dim")
    return out


def _parting(view: RunOut | DivergenceDetail) -> str:
    p = view.parting_op
    if p is None:
        return "runs parted (no operation recorded)"
    return f"runs parted after op {p.index}: {_value(p.op)}"


def _header(d: DivergenceDetail, show_all: bool) -> list[RenderableType]:
    from service.api.schemas import RunOf
    ops = len((d.minimized_program or d.original_program).get("ops") or [])
    if d.run_of is RunOf.MINIMIZED:
        run = (f"the minimized program's run ({len(d.original_program.get('ops') or [])} -> "
               f"{ops} ops); the original's below")
    elif d.minimized:
        run = ("[yellow]the original program's run: the minimized program (the reproducer) "
               "was minimized before its run was kept[/]")
    else:
        run = "the original program's run (not minimized)"
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    for k, v in (("signature", f"{d.signature} ({d.signature_id})"),
                 ("engines", f"{d.engine_a} -> {d.engine_b}"),
                 ("kind", f"{d.kind.value}, {d.classification.value}"),
                 ("status", d.status.value + (f", duplicate of #{d.duplicate_of}"
                                              if d.duplicate_of is not None else "")),
                 ("hits", f"{d.hit_count} (first {d.first_seen:%Y-%m-%d %H:%M:%S}, "
                          f"last {d.last_seen:%Y-%m-%d %H:%M:%S})"),
                 ("seq", f"{d.seq}" + (f", reopened from #{d.reopened_from}"
                                       if d.reopened_from is not None else "")),
                 ("shown", run),
                 ("detail", d.detail),
                 ("parted", _parting(d))):
        head.add_row(k, Text.from_markup(v) if k == "shown" else Text(v))
    return [Text(f"divergence #{d.id}", style="bold"), head,
            _outcome_rows(d, show_all, "outcomes, differing fields first")]


def _original(d: DivergenceDetail, show_all: bool) -> list[RenderableType]:
    """The original program's run, labelled, when the top of the view is the minimized's."""
    o = d.original_run
    if o is None:
        return []
    return [Text("original program's run (kept; the reproducer is the minimized program)",
                 style="bold"),
            Text(f"detail: {o.detail}\n{_parting(o)}"),
            _outcome_rows(o, show_all, "original outcomes, differing fields first")]


def _programs(d: DivergenceDetail) -> list[RenderableType]:
    from service.api.schemas import RunOf
    if d.minimized_program is not None:
        parted = d.parting_op.index if d.run_of is RunOf.MINIMIZED and d.parting_op else None
        return [Text("minimized program (the reproducer)", style="bold"),
                _program_lines(d.minimized_program, parted)]
    parted = d.parting_op.index if d.parting_op else None
    return [Text("program (not minimized)", style="bold"),
            _program_lines(d.original_program, parted)]


def _rules(d: DivergenceDetail) -> list[RenderableType]:
    t = Table(title=f"intended changes between {d.engine_a} and {d.engine_b} (none explained "
                    f"this divergence)", title_justify="left")
    for col in ("rule", "versions", "patch"):
        t.add_column(col, overflow="fold")
    for r in d.pair_rules:
        t.add_row(r.name, f"{r.older} -> {r.newer}", r.patch)
    return [t] if d.pair_rules else [Text(f"no intended changes between {d.engine_a} and "
                                          f"{d.engine_b}", style="dim")]


def _bisection(d: DivergenceDetail) -> list[RenderableType]:
    """Where it came in and went along the version tree, and every other edge
    whose behaviour changes, with the rules the runs show there."""
    b = d.bisection
    if not b:
        return [Text(f"not bisected yet: foliodiff triage bisect {d.id}", style="dim")]
    t = Table(title="bisection along the version tree", title_justify="left")
    for col in ("edge", "branch", "change", "on path", "rules (patch)"):
        t.add_column(col, overflow="fold")
    for e in b.get("edges", []):
        change = e.get("change", "") + (" (this)" if e.get("target") else "")
        rules = "; ".join(f"{r.get('name')} ({r.get('patch')})" for r in e.get("rules", []))
        t.add_row(e.get("edge", ""), e.get("branch", ""), Text(change, style="bold" if
                  e.get("target") else ""), "yes" if e.get("on_path") else "",
                  rules or e.get("commit", ""))
    return [t]


def _history(d: DivergenceDetail) -> list[RenderableType]:
    t = Table(title="history", title_justify="left")
    for col in ("at", "what", "author", "note"):
        t.add_column(col, overflow="fold")
    for e in d.events:
        was = e.from_status.value if e.from_status is not None else "(reopened)"
        t.add_row(f"{e.at:%Y-%m-%d %H:%M:%S}", f"{was} -> {e.to_status.value}", e.author, e.note)
    for n in d.notes:
        t.add_row(f"{n.at:%Y-%m-%d %H:%M:%S}", "note", n.author, n.text)
    return [t] if d.events or d.notes else [Text("no triage history yet", style="dim")]


def _replay(d: DivergenceDetail) -> list[RenderableType]:
    return [Text(f"replay: {d.replay_command}  (foliodiff triage export {d.id} --corpus "
                 f"{d.corpus_file})", style="dim")]


def show_sections(d: DivergenceDetail, show_all: bool = False) -> list[RenderableType]:
    """What ``show`` prints of @d, section by section, in order."""
    return [*_header(d, show_all), *_original(d, show_all), *_programs(d), *_rules(d),
            *_bisection(d), *_history(d), *_replay(d)]


@app.command()
def show(
    divergence: Id,
    show_all: Annotated[bool, typer.Option("--all", help="every equal outcome field too")] = False,
    as_json: Json = False,
    db: Db = None,
) -> None:
    """One divergence: its reproducer's outcomes side by side, where the runs parted, the
    original's run, the programs, the pair's rules, its history (GET /divergences/{id})."""
    from service.api import views
    _check_ids(ID=divergence)
    with _errors(), _open_store(db) as store:
        d = views.divergence_detail(store, divergence)
    if as_json:
        _print_json(d)
        return
    console.print(Group(*show_sections(d, show_all)))


@app.command("bisect")
def bisect_(divergence: Id, as_json: Json = False, db: Db = None) -> None:
    """Bisect a divergence's reproducer along the version tree and keep the result
    (POST /divergences/{id}/bisect); prints it as ``show`` does."""
    from service.api import views
    from service.triage import FIX_GROUPER, bisect_stored
    _check_ids(ID=divergence)
    with _errors(), _open_store(db) as store:
        bisect_stored(store, divergence)
        d = views.divergence_detail(store, divergence)
    if as_json:
        _print_json(d)
        return
    console.print(Group(*_bisection(d)))
    grouped = [e for e in d.events if e.author == FIX_GROUPER]
    if d.duplicate_of is not None and grouped:
        console.print(f"#{d.id}: {grouped[-1].note}; now a duplicate of #{d.duplicate_of}",
                      highlight=False)


@app.command()
def replay(
    divergence: Id,
    engines: Annotated[str | None, typer.Option(
        help="another engine pair 'a,b' (a fix checked against another version): the record "
             "only gets a note; default its own pair")] = None,
    author: Annotated[str | None, typer.Option(help="who replays (default $USER)")] = None,
    as_json: Json = False,
    db: Db = None,
) -> None:
    """Re-run the stored reproducer (POST /divergences/{id}/replay): on its own pair a
    fixed record is verified or confirmed again; the answer is noted either way."""
    from service.triage import replay as replay_stored
    _check_ids(ID=divergence)
    with _errors(), _open_store(db) as store:
        r = replay_stored(store, divergence, author=_author(author), engines=engines)
    if as_json:
        print(json.dumps({"divergence_id": r.divergence_id, "engines": r.engines,
                          "reproduces": r.reproduces, "signatures": r.signatures,
                          "status_before": r.status_before.value,
                          "status_after": r.status_after.value,
                          "reopened_as": r.reopened_as, "harness_errors": r.harness_errors},
                         indent=2))
        return
    said = "still reproduces" if r.reproduces else "does not reproduce"
    console.print(f"#{r.divergence_id} on {','.join(r.engines)}: {said}"
                  + (f" (now: {', '.join(r.signatures)})" if r.signatures and not r.reproduces
                     else "")
                  + f"; {r.status_before.value} -> {r.status_after.value}", highlight=False)


# -- triage --------------------------------------------------------------------------


@app.command()
def transition(
    divergence: Id,
    status: Annotated[str, typer.Argument(
        help="confirmed, intended, fixed, verified, invalid (dup for duplicates)")],
    note: Annotated[str, typer.Option(help="why")] = "",
    author: Author = None,
    as_json: Json = False,
    db: Db = None,
) -> None:
    """Move a divergence to another triage state (POST /divergences/{id}/transitions)."""
    from service.api import views
    from service.api.schemas import TransitionIn
    from service.models import TriageStatus
    _check_ids(ID=divergence)
    if status == TriageStatus.DUPLICATE.value:
        _fail(f"STATUS: mark a duplicate with `foliodiff triage dup {divergence} --of OTHER` "
              f"(got {status!r})")
    with _errors():
        body = TransitionIn(to=status, note=note, author=_author(author))
        with _open_store(db) as store:
            d = views.transition(store, divergence, body.to, note=body.note, author=body.author)
    if as_json:
        _print_json(d)
        return
    console.print(f"divergence #{d.id} is now {d.status.value}", highlight=False)


@app.command()
def dup(
    divergence: Id,
    of: Annotated[int, typer.Option("--of", min=1, help="the divergence it duplicates")],
    note: Annotated[str, typer.Option(help="why")] = "",
    author: Author = None,
    as_json: Json = False,
    db: Db = None,
) -> None:
    """Mark a divergence a duplicate of another (its state becomes duplicate)."""
    from service.api import views
    from service.api.schemas import TransitionIn
    from service.models import TriageStatus
    _check_ids(ID=divergence, **{"--of": of})
    with _errors():
        body = TransitionIn(to=TriageStatus.DUPLICATE, note=note, author=_author(author),
                            duplicate_of=of)
        with _open_store(db) as store:
            d = views.transition(store, divergence, body.to, note=body.note, author=body.author,
                                 duplicate_of=body.duplicate_of)
    if as_json:
        _print_json(d)
        return
    console.print(f"divergence #{d.id} is now a duplicate of #{d.duplicate_of}", highlight=False)


@app.command()
def note(
    divergence: Id,
    text: Annotated[str, typer.Argument(help="the note")],
    author: Author = None,
    as_json: Json = False,
    db: Db = None,
) -> None:
    """Attach a note to a divergence (POST /divergences/{id}/notes)."""
    from service.api import views
    from service.api.schemas import NoteIn
    _check_ids(ID=divergence)
    with _errors():
        body = NoteIn(text=text, author=_author(author))
        with _open_store(db) as store:
            n = views.add_note(store, divergence, body.text, body.author)
    if as_json:
        _print_json(n)
        return
    console.print(f"note #{n.id} on divergence #{n.divergence_id}", highlight=False)


# -- export --------------------------------------------------------------------------


def _write(path: str, text: str, what: str) -> None:
    try:
        with open(path, "w") as fh:
            fh.write(text)
    except OSError as exc:
        _fail(f"{what}: cannot write {path!r}: {exc.strerror or exc}")


@app.command()
def export(
    divergence: Id,
    corpus: Annotated[str | None, typer.Option(
        "--corpus", help="write the divergence as a corpus file here")] = None,
    c: Annotated[str | None, typer.Option(
        "--c", help="write its reproducer as a static C program here")] = None,
    pin: Annotated[str, typer.Option(help="how the C program pins: io_uring or vmsplice")
                   ] = PinMechanism.IO_URING.value,
    db: Db = None,
) -> None:
    """Export a divergence's reproducer (minimized if any) as a corpus file and/or C
    (GET /divergences/{id}/corpus and /reproducer.c)."""
    from service.triage import corpus_entry, divergence_c
    _check_ids(ID=divergence)
    if corpus is None and c is None:
        _fail("--corpus/--c: give a file for the corpus file, the C reproducer, or both")
    try:
        mechanism = PinMechanism(pin)
    except ValueError:
        _fail(f"--pin: must be one of {', '.join(m.value for m in PinMechanism)} (got {pin!r})")
    with _errors(), _open_store(db) as store:
        entry = corpus_entry(store, store.get_divergence(divergence)) if corpus else None
        source = divergence_c(store, divergence, mechanism).source if c else None
    if corpus is not None and entry is not None:
        _write(corpus, json.dumps(entry, indent=2) + "\n", "--corpus")
        console.print(f"corpus file {corpus}", highlight=False)
    if c is not None and source is not None:
        _write(c, source, "--c")
        console.print(f"C reproducer {c}", highlight=False)


# -- intended divergences and programs -----------------------------------------------


@app.command()
def intended(
    campaign: Annotated[int | None, typer.Option(
        min=1, help="one campaign (default: every campaign)")] = None,
    as_json: Json = False,
    db: Db = None,
) -> None:
    """Intended divergences per rule and campaign: counts, patches, sample programs
    (GET /intended, GET /campaigns/{id}/intended)."""
    from service.api import views
    _check_ids(**{"--campaign": campaign})
    with _errors(), _open_store(db) as store:
        page = views.intended(store, campaign)
    if as_json:
        _print_json(page)
        return
    t = Table(title=f"intended divergences: {page.total} counted"
                    + (f" by campaign {campaign}" if campaign is not None else ""))
    for col in ("rule", "campaign", "engines", "count", "samples", "patch"):
        t.add_column(col, overflow="fold", no_wrap=col in ("rule", "engines"))
    for r in page.items:
        t.add_row(r.rule, str(r.campaign_id), f"{r.engine_a}..{r.engine_b}", str(r.count),
                  " ".join(f"#{p}" for p in r.samples),
                  r.patch if r.patch is not None else Text("(a rule this foliodiff does not know)",
                                                           style="yellow"))
    console.print(t)
    if page.items:
        console.print("a sample program: foliodiff triage program ID", style="dim",
                      highlight=False)


@app.command()
def program(
    program_id: Annotated[int, typer.Argument(min=1, help="program id")],
    as_json: Json = False,
    db: Db = None,
) -> None:
    """Print a stored program (an intended rule's sample, a reproducer) as JSON that
    ``foliodiff run`` reads (GET /programs/{id} with --json)."""
    from service.api import views
    _check_ids(ID=program_id)
    with _errors(), _open_store(db) as store:
        p = views.program(store, program_id)
    if as_json:
        _print_json(p)
        return
    print(json.dumps(p.program, indent=2))
