"""The initramfs: test names, /init, gcc's errors and the archive's contents
(gcc, busybox-static; no qemu)."""

from __future__ import annotations

import gzip
import os
import shutil
import stat
from pathlib import Path

import pytest

from service.conform import BuildError, InvalidTestError, ToolMissingError, seed_sources
from service.conform.host import BUSYBOX, _is_static_elf, static_busybox
from service.conform.initramfs import (
    build_initramfs,
    check_test_name,
    compile_test,
    init_script,
)


def _require(ok: bool, what: str) -> None:
    # CI installs these (see .ci/run): there a missing one is a failure, elsewhere a skip.
    if not ok:
        message = f"{what} is not installed"
        if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
            pytest.fail(f"CI=true but {message}", pytrace=False)
        pytest.skip(message)


@pytest.fixture
def gcc():
    _require(shutil.which("gcc") is not None, "gcc")


@pytest.fixture
def busybox(gcc):
    _require(Path(BUSYBOX).is_file() and _is_static_elf(Path(BUSYBOX)), "busybox-static")


def _newc(archive: bytes) -> dict[str, tuple[int, int, bytes]]:
    """name -> (mode, rdev, data) of a newc cpio archive."""
    out, i = {}, 0
    while True:
        h = archive[i:i + 110]
        assert h[:6] == b"070701", h[:6]
        field = [int(h[6 + 8 * k:14 + 8 * k], 16) for k in range(13)]
        mode, size, rmaj, rmin, namesize = field[1], field[6], field[9], field[10], field[11]
        name = archive[i + 110:i + 110 + namesize - 1].decode()
        i = (i + 110 + namesize + 3) & ~3
        data = archive[i:i + size]
        i = (i + size + 3) & ~3
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, os.makedev(rmaj, rmin), data)


@pytest.mark.parametrize("bad", ["", "../x", "a b", "-x", "x" * 65, "a;reboot"])
def test_bad_test_names(bad):
    with pytest.raises(InvalidTestError, match="a test name is"):
        check_test_name(bad)


def test_init_runs_tests_in_order_between_markers():
    script = init_script(["b-first", "a.second"]).splitlines()
    assert script[0] == "#!/bin/busybox sh"
    body = script[script.index('echo "FOLIODIFF-INIT $(uname -r) $up"') + 1:]
    assert body[:6] == ["echo 'FOLIODIFF-BEGIN b-first'", "/tests/b-first",
                        'echo "FOLIODIFF-END b-first $?"', "echo 'FOLIODIFF-BEGIN a.second'",
                        "/tests/a.second", 'echo "FOLIODIFF-END a.second $?"']
    assert body[-1] == "poweroff -f"


def test_compile_error_names_the_test(tmp_path, gcc):
    with pytest.raises(BuildError, match=r"test 'broken' does not compile:(.|\n)*"
                                         r"broken\.c:1:25: error: 'undeclared' undeclared") as e:
        compile_test("broken", "int main(void) { return undeclared; }\n", tmp_path)
    assert e.value.test == "broken"


def test_archive_contents(tmp_path, busybox):
    hello = '#include <stdio.h>\nint main(void) { puts("FOLIODIFF {}"); return 0; }\n'
    out = build_initramfs({"zz": hello, "aa": "int main(void) { return 3; }\n"}, tmp_path / "i.gz")
    files = _newc(gzip.decompress(out.read_bytes()))
    mode, _, init = files["init"]
    assert stat.S_ISREG(mode) and mode & 0o111
    # Run in the order given, not sorted.
    assert init.decode().index("/tests/zz") < init.decode().index("/tests/aa")
    for name in ("bin/busybox", "tests/zz", "tests/aa"):
        mode, _, data = files[name]
        assert stat.S_ISREG(mode) and mode & 0o111
        (tmp_path / "probe").write_bytes(data)
        assert _is_static_elf(tmp_path / "probe"), name
    assert stat.S_ISLNK(files["bin/sh"][0]) and files["bin/sh"][2] == b"busybox"
    assert {"proc", "sys", "dev", "tmp"} <= {n for n, (m, _, _) in files.items() if stat.S_ISDIR(m)}
    if os.geteuid() == 0:  # mknod needs root; without it /init takes the console from devtmpfs
        mode, rdev, _ = files["dev/console"]
        assert stat.S_ISCHR(mode) and rdev == os.makedev(5, 1)


def test_dynamic_busybox_is_refused(tmp_path):
    dynamic = shutil.which("ls")
    assert dynamic is not None and not _is_static_elf(Path(dynamic))
    with pytest.raises(ToolMissingError, match=r"not a static x86-64 executable.*busybox-static"):
        static_busybox(dynamic)
    with pytest.raises(ToolMissingError, match=r"apt-get install busybox-static"):
        static_busybox(str(tmp_path / "absent"))


def test_seed_programs_compile(tmp_path, gcc):
    sources = seed_sources(repeat=2, mthp_mib=8, pmd_thps=2)
    assert list(sources) == ["seed-mthp", "seed-pmd"]
    for name, source in sources.items():
        assert "#define REPEAT 2" in source
        assert _is_static_elf(compile_test(name, source, tmp_path))
    with pytest.raises(InvalidTestError, match=r"mthp_mib must be an int in 1\.\.256 \(got 1024\)"):
        seed_sources(mthp_mib=1024)
