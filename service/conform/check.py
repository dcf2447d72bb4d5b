"""Conformance: a real kernel's observables against its model's prediction, field by field.

For each kernel of the catalogue, every scenario of
:func:`engine.conformance` is translated to a C reproducer
(:func:`engine.translate`, checked on the engine that models that
kernel, :attr:`KernelSpec.engine`, besides the default engines), all of them
run in one boot (:func:`service.conform.run_suite`), and what each printed is
compared with :func:`engine.predict` for that engine.  A kernel that
does not boot, panics or times out gives a boot status and no scenario
verdicts: it is never a conformance result.

A kernel is a :class:`KernelTarget`: a catalogue entry (fetched, held to
its catalogue engine) or a bzImage given by path with the engine the caller
names (a plugin engine included), booted the same way.  A scenario may be any
translatable program (``foliodiff conform --program``); for a stored
divergence, @sides names its two engines and each result says, besides its
verdict against the kernel's own engine, which of the two the kernel matched.

A scenario is "unsupported" on a kernel only when the reproducer found a
feature missing there (exit 2) and the kernel's engine lacks it too
(:func:`engine.missing_features`: MAP_DROPPABLE before v6.11); a
kernel that refuses what its model has is a failure, not a pass.  A scenario
that translates for the default engines but not on the kernel's own engine
is "not-expressible" there, with the reason, and is not run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from engine import (
    FieldDifference,
    NotTranslatable,
    PredictionError,
    Reproducer,
    compare,
    missing_features,
    predict,
    translate,
)
from engine.kernels import identity
from service.conform.console import BootStatus, CaseStatus
from service.conform.images import KernelImage
from service.conform.kconfig import ImageFile
from service.conform.kernels import KernelSpec, kernel_spec
from service.conform.suite import KernelBoot, run_suite
from service.conform.verdict import Verdict
from service.store import ConformanceRecord


@dataclass
class ScenarioResult:
    """One scenario on one kernel.

    @observed: what the kernel printed (its observables, its per-operation
        counter deltas and how the THP policy was set), when it printed them:
        kept so that a later run, on the next Debian update of the series,
        can be set beside this one.
    """

    scenario: str
    verdict: Verdict
    differences: list[FieldDifference] = field(default_factory=list)
    detail: str = ""
    observed: dict[str, Any] | None = None
    sides: dict[str, Side] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "verdict": self.verdict.value, "detail": self.detail,
                "differences": [d.to_dict() for d in self.differences],
                "observed": self.observed,
                "sides": {e: side.to_dict() for e, side in self.sides.items()}}


@dataclass
class Side:
    """What the kernel printed against one more engine's prediction (a divergence's side).

    @verdict: EQUAL, DIFFERENT, or NO_PREDICTION when that engine's run crashed.
    """

    verdict: Verdict
    differences: list[FieldDifference] = field(default_factory=list)
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict.value, "detail": self.detail,
                "differences": [d.to_dict() for d in self.differences]}


@dataclass(frozen=True)
class KernelTarget:
    """A kernel to check: a catalogue entry, or a bzImage given by path.

    @name: the catalogue name, or ``image:<file name>``.
    @engine: the engine its observables are held to.
    @spec: the catalogue entry (None for an image file).
    @image: the image file and its header (None for a catalogue entry, fetched at boot).
    """

    name: str
    engine: str
    spec: KernelSpec | None = None
    image: ImageFile | None = None

    @classmethod
    def of(cls, kernel: str | KernelSpec | KernelTarget) -> KernelTarget:
        """The target of a catalogue name or entry (a target is returned as it is)."""
        if isinstance(kernel, KernelTarget):
            return kernel
        spec = kernel_spec(kernel)
        return cls(spec.name, spec.engine, spec=spec)

    @classmethod
    def from_image(cls, image: ImageFile, engine: str) -> KernelTarget:
        """A bzImage the caller built or fetched, held to @engine."""
        return cls(f"image:{image.path.name}", engine, image=image)

    def boot_image(self) -> KernelSpec | KernelImage:
        """What to hand to :func:`run_suite`: the image file, or the catalogue entry
        (which it fetches, or takes from the cache)."""
        if self.image is not None:
            return KernelImage.from_bzimage(self.image)
        assert self.spec is not None
        return self.spec


@dataclass
class KernelConformance(KernelBoot):
    """One kernel's boot and, when it booted, its scenario results."""

    results: list[ScenarioResult] = field(default_factory=list)
    boot_detail: str = ""

    @property
    def conforms(self) -> bool:
        """Booted, and every scenario equal (or unsupported by this kernel and its
        model, or not expressible on it)."""
        return self.boot is BootStatus.OK and all(
            r.verdict in (Verdict.EQUAL, Verdict.UNSUPPORTED, Verdict.NOT_EXPRESSIBLE)
            for r in self.results)

    def counts(self) -> dict[str, int]:
        """How many scenarios got each verdict (every verdict, zeros included)."""
        return {v.value: sum(r.verdict is v for r in self.results) for v in Verdict}

    def to_dict(self) -> dict[str, Any]:
        return {**self.boot_dict(), "boot_detail": self.boot_detail, "conforms": self.conforms,
                "counts": self.counts(), "results": [r.to_dict() for r in self.results]}


def test_name(scenario: str) -> str:
    """The initramfs test name of a scenario (``+`` is not allowed there)."""
    return scenario.replace("+", ".")


def _side(scenario: Any, engine: str, observables: dict[str, Any]) -> Side:
    try:
        predicted = predict(scenario.program, engine, **scenario.options)
    except (PredictionError, NotTranslatable) as exc:
        return Side(Verdict.NO_PREDICTION, detail=str(exc))
    diffs = compare(predicted, observables)
    return Side(Verdict.DIFFERENT if diffs else Verdict.EQUAL, diffs)


def _judge(scenario: Any, engine: str, case: Any, sides: tuple[str, ...] = ()) -> ScenarioResult:
    name = scenario.name
    record = next((r for r in reversed(case.records) if isinstance(r, dict)), None)
    if record is not None and record.get("unsupported"):
        detail = f"{record['unsupported']}: {record.get('error', '')}"
        missing = missing_features(scenario.program, engine)
        if missing:
            return ScenarioResult(name, Verdict.UNSUPPORTED,
                                  detail=f"{detail}; as modelled: {'; '.join(missing)}")
        return ScenarioResult(name, Verdict.FAILED,
                              detail=f"the kernel lacks {detail}, which its model {engine} has")
    if case.status is not CaseStatus.OK or record is None or "observables" not in record:
        what = (f"exit {case.exit_status}" if case.exit_status is not None else case.status.value)
        if record is not None and "error" in record:
            what += f": {record['error']} (op {record.get('op')})"
        return ScenarioResult(name, Verdict.FAILED, detail=what)
    observed = {k: record[k] for k in ("observables", "deltas", "thp", "khugepaged", "kernel")
                if k in record}
    try:
        predicted = predict(scenario.program, engine, **scenario.options)
    except PredictionError as exc:
        return ScenarioResult(name, Verdict.NO_PREDICTION, detail=str(exc), observed=observed)
    diffs = compare(predicted, record["observables"])
    return ScenarioResult(name, Verdict.DIFFERENT if diffs else Verdict.EQUAL, diffs,
                          observed=observed,
                          sides={e: _side(scenario, e, record["observables"]) for e in sides})


def _for_kernel(scenario: Any, default: Reproducer, engine: str) -> Reproducer | NotTranslatable:
    """The reproducer of @scenario for a kernel modelled by @engine, or why there is none."""
    if engine in default.analysis.engines:
        return default
    try:
        return translate(scenario.program, name=scenario.name, target=engine, **scenario.options)
    except NotTranslatable as exc:
        return exc


def conform(kernels: Iterable[str | KernelSpec | KernelTarget], scenarios: dict[str, Any], *,
            timeout: float = 300.0, sides: tuple[str, ...] = ()) -> list[KernelConformance]:
    """Run ``scenarios`` (name -> :class:`engine.Scenario`) on each kernel.

    @sides: more engines each observation is compared with (a divergence's
        pair), besides the kernel's own.

    Raises :class:`engine.NotTranslatable` for a scenario that does
    not translate for the default engines, and :class:`UnknownKernelError`
    for a kernel the catalogue lacks, before any boot.
    """
    default = {s.name: translate(s.program, name=s.name, **s.options) for s in scenarios.values()}
    targets = [KernelTarget.of(k) for k in kernels]
    out = []
    for target in targets:
        made = {s.name: _for_kernel(s, default[s.name], target.engine) for s in scenarios.values()}
        sources = {test_name(n): r.source for n, r in made.items() if isinstance(r, Reproducer)}
        suite = run_suite(target.boot_image(), sources, timeout=timeout)
        kc = KernelConformance.of(target, suite)
        if suite.status is not BootStatus.OK:
            kc.boot_detail = "; ".join(suite.kernel_reports) or suite.console[-400:]
        else:
            kc.results = [
                _judge(s, target.engine, suite.test(test_name(s.name)), sides)
                if isinstance(made[s.name], Reproducer) else
                ScenarioResult(s.name, Verdict.NOT_EXPRESSIBLE,
                               detail=f"on {target.engine}: {made[s.name]}")
                for s in scenarios.values()]
        out.append(kc)
    return out


def records(kc: KernelConformance, scenarios: dict[str, Any]) -> list[ConformanceRecord]:
    """What the store keeps of @kc: one record per scenario result, with the
    scenario's program (from @scenarios) and the engine's plugin identity.
    A kernel that did not boot gave no results, so it gives no records."""
    plugin = identity(kc.engine)
    return [ConformanceRecord(
        scenario=r.scenario, program=scenarios[r.scenario].program.to_json(indent=None),
        kernel=kc.kernel, kernel_version=kc.identity, package=kc.package, uname=kc.uname,
        engine=kc.engine, verdict=r.verdict, differences=[d.to_dict() for d in r.differences],
        detail=r.detail, observed=r.observed,
        sides={e: side.to_dict() for e, side in r.sides.items()}, plugin=plugin)
        for r in kc.results]
