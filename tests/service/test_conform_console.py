"""The console parser and the seed figures on consoles recorded from real boots (no qemu needed).

The logs in data/conform/ are what qemu wrote for Debian's 6.1.192, 6.12.117
and 6.16.12 under service.conform.run_suite: terminal resets, SeaBIOS's
banner (cut mid-line by a screen clear on 6.16), CRLF line ends, a
sysrq-triggered panic, and a boot killed at its time limit mid-test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from service.conform import (
    BenchmarkError,
    BootError,
    BootStatus,
    CaseStatus,
    KernelImage,
    SeedWorkload,
    SuiteResult,
    kernel_spec,
    parse_console,
    seed_figures,
)
from service.conform.console import console_lines

DATA = Path(__file__).parent / "data" / "conform"
UNAME = {"deb-6.1": "6.1.0-56-amd64", "deb-6.12": "6.12.117+deb13-amd64",
         "deb-6.16": "6.16.12+deb13-amd64"}


def _log(name: str) -> str:
    return (DATA / name).read_bytes().decode()


def _image(kernel: str) -> KernelImage:
    return KernelImage(spec=kernel_spec(kernel), package=f"linux-image-{UNAME[kernel]}",
                       version="0-test", vmlinuz=Path("/nonexistent/vmlinuz"))


@pytest.mark.parametrize("kernel", ["deb-6.12", "deb-6.16"])
def test_completed_suite(kernel):
    c = parse_console(_log(f"ok-{kernel}.log"), ["hello", "segv", "exit3"])
    assert c.status is BootStatus.OK
    assert c.uname == UNAME[kernel]
    assert 1.0 < c.init_uptime <= c.done_uptime < 10.0
    hello, segv, exit3 = c.cases
    assert (hello.status, hello.exit_status, hello.signal) == (CaseStatus.OK, 0, None)
    assert hello.records == ({"x": 1},)
    assert "not a figure" in hello.output
    (error,) = hello.errors  # the cut line is reported, not raised, and the test is not ok
    assert "malformed JSON" in error and '{"x": 2, "cut' in error
    assert not hello.ok
    assert (segv.status, segv.exit_status, segv.signal) == (CaseStatus.CRASHED, 139, 11)
    assert segv.records == () and "Segmentation fault" in segv.output
    assert (exit3.status, exit3.exit_status, exit3.signal) == (CaseStatus.CRASHED, 3, None)
    assert exit3.records == ([3],) and exit3.errors == ()
    assert c.kernel_reports == ()


def test_marker_after_a_screen_clear_on_the_same_line():
    raw = _log("ok-deb-6.16.log")
    # 6.16's console has /init's first marker on SeaBIOS's line, behind escape sequences.
    assert any("Booting from ROM" in line and "FOLIODIFF-INIT" in line for line in raw.splitlines())
    assert "FOLIODIFF-INIT 6.16.12+deb13-amd64 3.50" in console_lines(raw)


def test_marker_behind_a_bios_progress_dot():
    # One boot in a few dozen: SeaBIOS's last "." lands after the screen clear, then a CR, then
    # /init's marker.
    raw = _log("dot-deb-6.16.log")
    assert "\x1b[0m.\rFOLIODIFF-INIT 6.16.12+deb13-amd64 3.31\r\n" in raw
    assert "FOLIODIFF-INIT 6.16.12+deb13-amd64 3.31" in console_lines(raw)
    c = parse_console(raw, ["hello", "segv", "exit3"])
    assert (c.status, c.uname, c.init_uptime) == (BootStatus.OK, "6.16.12+deb13-amd64", 3.31)
    assert [t.status for t in c.cases] == [CaseStatus.OK, CaseStatus.CRASHED, CaseStatus.CRASHED]
    # A record, unlike a marker, must start its line.
    assert c.cases[0].records == ({"x": 1},)
    shifted = raw.replace('FOLIODIFF {"x": 1}', 'x FOLIODIFF {"x": 1}')
    assert parse_console(shifted, ["hello"]).cases[0].records == ()
    # Nor a CR: the marker is found even when the dot shares its line.
    joined = raw.replace(".\rFOLIODIFF-INIT", ".FOLIODIFF-INIT")
    assert parse_console(joined, ["hello"]).uname == "6.16.12+deb13-amd64"


def test_panic_mid_suite():
    c = parse_console(_log("panic-deb-6.16.log"), ["hello", "crash", "after"])
    assert c.status is BootStatus.PANIC
    assert [t.status for t in c.cases] == [CaseStatus.OK, CaseStatus.MISSING, CaseStatus.MISSING]
    assert c.cases[1].exit_status is None
    assert any("Kernel panic - not syncing: sysrq triggered crash" in r for r in c.kernel_reports)
    # A panic outranks the time limit: it is the reason the suite stopped.
    assert parse_console(_log("panic-deb-6.16.log"), ["hello"], timed_out=True).status is BootStatus.PANIC


def test_time_limit_mid_test():
    text = _log("timeout-deb-6.12.log")
    c = parse_console(text, ["hello", "hang", "never"], timed_out=True)
    assert c.status is BootStatus.TIMEOUT
    hello, hang, never = c.cases
    assert hello.status is CaseStatus.OK and hello.records == ({"x": 1},)
    # What the hanging test printed is kept, but it has no result.
    assert hang.status is CaseStatus.MISSING and hang.records == ({"started": True},)
    assert never.status is CaseStatus.MISSING and never.output == ()
    # The same console from a qemu that ended by itself: /init ran, the suite did not finish.
    assert parse_console(text, ["hello", "hang", "never"]).status is BootStatus.INCOMPLETE


def test_no_init():
    # A junk kernel: qemu refuses it and writes nothing on the console.
    c = parse_console("", ["hello"])
    assert (c.status, c.uname) == (BootStatus.NO_BOOT, None)
    assert [t.status for t in c.cases] == [CaseStatus.MISSING]
    bios_only = _log("ok-deb-6.12.log").split("FOLIODIFF-INIT")[0]
    assert parse_console(bios_only, ["hello"]).status is BootStatus.NO_BOOT
    assert parse_console(bios_only, ["hello"], timed_out=True).status is BootStatus.TIMEOUT


def test_require_ok_names_kernel_and_status():
    image = _image("deb-6.16")
    result = SuiteResult.read(image, _log("panic-deb-6.16.log"), ["hello", "crash", "after"],
                              qemu_stderr="")
    with pytest.raises(BootError, match=r"kernel deb-6.16: panic") as e:
        result.require_ok()
    assert "sysrq triggered crash" in str(e.value)
    junk = SuiteResult.read(KernelImage.from_file("/tmp/junk"), "", ["hello"],
                            qemu_stderr="qemu: linux kernel too old to load a ram disk\n")
    with pytest.raises(BootError, match=r"kernel junk: no-boot(.|\n)*too old to load"):
        junk.require_ok()


def test_seed_figures_before_and_after_the_series():
    before = seed_figures(SuiteResult.read(_image("deb-6.12"), _log("seed-deb-6.12.log"),
                                           ["seed-mthp", "seed-pmd"]))
    after = seed_figures(SuiteResult.read(_image("deb-6.16"), _log("seed-deb-6.16.log"),
                                          ["seed-mthp", "seed-pmd"]))
    assert [f.workload for f in before] == [SeedWorkload.MTHP, SeedWorkload.PMD]
    mthp, pmd = before
    # 8 MiB = 128 mTHPs, 2 THPs: 3/4's and 4/4's predictions, on the kernels themselves.
    assert (mthp.folios, mthp.counter, mthp.pglazyfreed, mthp.runs) == (128, 128, 2048, 2)
    assert (pmd.folios, pmd.counter) == (2, 2)
    assert (after[0].folios, after[0].counter, after[0].pglazyfreed) == (128, 0, 2048)
    assert (after[1].folios, after[1].counter) == (2, 0)
    assert all(s["thps_lost_data"] == 0 for f in (pmd, after[1]) for s in f.samples)
    assert mthp.engine == "v6.12" and after[0].engine == "v6.16"
    assert mthp.to_dict()["split_deferred"] == 128 and pmd.to_dict()["thp_split_pmd"] == 2
    assert mthp.pageout_ms == pytest.approx((13.328 + 2.295) / 2, abs=1e-3)


def test_seed_figures_without_mthp():
    mthp, pmd = seed_figures(SuiteResult.read(_image("deb-6.1"), _log("seed-deb-6.1.log"),
                                              ["seed-mthp", "seed-pmd"]))
    assert "no mTHP" in mthp.unsupported and mthp.counter is None and mthp.runs == 0
    assert (pmd.engine, pmd.folios, pmd.counter) == ("v5.18", 2, 2)


def test_seed_figures_refuse_errors():
    failed = _log("seed-deb-6.16.log").replace(
        "FOLIODIFF-END seed-pmd 0",
        'FOLIODIFF {"bench": "pmd", "error": "MADV_PAGEOUT: Invalid argument"}\r\nFOLIODIFF-END seed-pmd 1')
    with pytest.raises(BenchmarkError, match="seed-pmd.*MADV_PAGEOUT: Invalid argument"):
        seed_figures(SuiteResult.read(_image("deb-6.16"), failed, ["seed-mthp", "seed-pmd"]))
    malformed = _log("seed-deb-6.16.log").replace('"run": 1, "thps"', '"run": 1 "thps"')
    with pytest.raises(BenchmarkError, match="seed-pmd.*malformed JSON"):
        seed_figures(SuiteResult.read(_image("deb-6.16"), malformed, ["seed-mthp", "seed-pmd"]))
    crashed = _log("seed-deb-6.16.log").replace("FOLIODIFF-END seed-pmd 0", "FOLIODIFF-END seed-pmd 139")
    with pytest.raises(BenchmarkError, match="exit status 139"):
        seed_figures(SuiteResult.read(_image("deb-6.16"), crashed, ["seed-mthp", "seed-pmd"]))
    cut = _log("seed-deb-6.16.log").split("FOLIODIFF-BEGIN seed-pmd")[0]
    with pytest.raises(BootError):
        seed_figures(SuiteResult.read(_image("deb-6.16"), cut, ["seed-mthp", "seed-pmd"],
                                      timed_out=True))
