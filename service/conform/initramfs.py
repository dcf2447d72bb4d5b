"""The initramfs a suite boots into: busybox, the test binaries and an /init that runs them.

/init mounts proc, sysfs and devtmpfs, prints the kernel release, then runs
each test in the order given, framed by markers on the console::

    FOLIODIFF-INIT <uname -r> <uptime>
    FOLIODIFF-BEGIN <name>
    ...whatever the test prints, its figures as ``FOLIODIFF {json}``...
    FOLIODIFF-END <name> <exit status>
    FOLIODIFF-DONE <uptime>

and powers the machine off.  The exit status is the shell's ``$?``: 128 + N
for a test killed by signal N.  :mod:`service.conform.console` reads these
markers back.  Test programs are C, built here with ``gcc -static -O2``, so
the guest needs no libraries.  The archive is ``busybox cpio -o -H newc``
(no cpio package needed), gzip'd by Python.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Mapping
from pathlib import Path

from service.conform.errors import BuildError, ConformError, InvalidTestError
from service.conform.host import BUSYBOX, require_tool, static_busybox

#: Test names become file names and marker words: keep them plain.
_TEST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_test_name(name: str) -> str:
    """Return @name if it can name a test; raise :class:`InvalidTestError` otherwise."""
    if not isinstance(name, str) or not _TEST_NAME.fullmatch(name):
        raise InvalidTestError(str(name), "a test name is 1-64 letters, digits, '_', '.' or '-', "
                                          "starting with a letter or digit")
    return name


def compile_test(name: str, source: str, out_dir: Path) -> Path:
    """Build the C program @source as the static executable ``out_dir/name``.

    Return: the executable's path.  Raises :class:`BuildError` with gcc's
    message when it does not compile or link (no libc.a: install libc6-dev).
    """
    check_test_name(name)
    gcc = require_tool("gcc")
    out = out_dir / name
    src = out_dir / f"{name}.c"  # gcc's messages then point at "<name>.c:line:col"
    src.write_text(source)
    r = subprocess.run([gcc, "-static", "-O2", "-o", name, src.name], cwd=out_dir,
                       capture_output=True, text=True, check=False,
                       env={**os.environ, "LC_ALL": "C"})
    src.unlink()
    if r.returncode != 0:
        raise BuildError(name, r.stderr or f"gcc exited with {r.returncode}")
    return out


def init_script(names: list[str]) -> str:
    """The /init shell script that runs the tests @names in order."""
    lines = [
        "#!/bin/busybox sh",
        "/bin/busybox mount -t proc proc /proc",
        "/bin/busybox mount -t sysfs sysfs /sys",
        "/bin/busybox mount -t devtmpfs devtmpfs /dev",
        # Without a /dev/console in the archive (built without CAP_MKNOD) the
        # kernel started us with no stdio: take the console from devtmpfs.
        "exec </dev/console >/dev/console 2>&1",
        "/bin/busybox --install -s /bin",
        "export PATH=/bin",
        "cd /",
        "read up _ </proc/uptime",
        'echo "FOLIODIFF-INIT $(uname -r) $up"',
    ]
    for name in names:
        lines += [f"echo 'FOLIODIFF-BEGIN {name}'",
                  f"/tests/{name}",
                  f'echo "FOLIODIFF-END {name} $?"']
    lines += ["read up _ </proc/uptime",
              'echo "FOLIODIFF-DONE $up"',
              "poweroff -f", ""]
    return "\n".join(lines)


def build_initramfs(tests: Mapping[str, str], out: Path, *, busybox: str = BUSYBOX) -> Path:
    """Compile @tests and pack them with busybox and /init into the gzip'd cpio @out.

    @tests: test name -> C source, run in this order.
    @out: the archive to write; its directory also holds the staging tree.

    Return: @out.  Raises :class:`BuildError` (a test does not compile),
    :class:`InvalidTestError` (a bad name), :class:`ToolMissingError`.
    """
    names = [check_test_name(n) for n in tests]
    bb = static_busybox(busybox)
    root = out.parent / (out.name + ".d")
    if root.exists():
        shutil.rmtree(root)  # nothing of an earlier build may ride along
    for d in ("bin", "dev", "proc", "sys", "tmp", "tests"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for name in names:
        compile_test(name, tests[name], root / "tests")
    (root / "bin" / "busybox").write_bytes(bb.read_bytes())
    (root / "bin" / "busybox").chmod(0o755)
    if not (root / "bin" / "sh").is_symlink():
        (root / "bin" / "sh").symlink_to("busybox")
    init = root / "init"
    init.write_text(init_script(names))
    init.chmod(0o755)
    console = root / "dev" / "console"
    if not console.exists():
        try:
            os.mknod(console, 0o600 | stat.S_IFCHR, os.makedev(5, 1))
        except PermissionError:
            pass  # /init reopens the console from devtmpfs
    files = []
    for dirpath, dirnames, filenames in os.walk(root):  # top-down: a directory before its entries
        dirnames.sort()
        rel = Path(dirpath).relative_to(root)
        files += [str(rel)] + [str(rel / f) for f in sorted(filenames)]
    cpio = subprocess.run([str(bb), "cpio", "-o", "-H", "newc"], cwd=root,
                          input="\n".join(files).encode() + b"\n", capture_output=True,
                          check=False)
    if cpio.returncode != 0:
        raise ConformError(f"{bb} cpio -o -H newc exited with {cpio.returncode}: "
                           f"{cpio.stderr.decode(errors='replace').strip()}")
    out.write_bytes(gzip.compress(cpio.stdout, compresslevel=6))
    return out
