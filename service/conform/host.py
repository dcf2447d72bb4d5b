"""The host programs the real-kernel runner needs, and the Debian packages that carry them.

CI installs these packages (Debian bookworm names); on a machine without
them each use raises :class:`ToolMissingError` naming the package.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from service.conform.errors import ToolMissingError

#: Program -> Debian package.  gcc needs libc6-dev as well for ``-static``
#: (libc.a); without it a test fails to build with gcc's "cannot find -lc".
TOOLS = {"apt-get": "apt", "apt-cache": "apt", "dpkg-deb": "dpkg", "dpkg": "dpkg",
         "gcc": "gcc", "qemu-system-x86_64": "qemu-system-x86"}
#: Where Debian's busybox-static installs its binary.
BUSYBOX = "/bin/busybox"
#: ELF program header type of the dynamic loader's path: present iff dynamically linked.
_PT_INTERP = 3


def require_tool(tool: str, package: str | None = None) -> str:
    """The path of host program @tool; raises :class:`ToolMissingError` naming its package."""
    path = shutil.which(tool)
    if path is None:
        raise ToolMissingError(tool, package or TOOLS.get(tool, tool))
    return path


def _is_static_elf(path: Path) -> bool:
    """Whether @path is an x86-64 ELF executable without a PT_INTERP header."""
    data = path.read_bytes()
    if data[:5] != b"\x7fELF\x02" or data[5] != 1:  # 64-bit little-endian
        return False
    phoff = int.from_bytes(data[32:40], "little")
    phentsize = int.from_bytes(data[54:56], "little")
    phnum = int.from_bytes(data[56:58], "little")
    return all(int.from_bytes(data[phoff + i * phentsize:phoff + i * phentsize + 4], "little")
               != _PT_INTERP for i in range(phnum))


def static_busybox(path: str = BUSYBOX) -> Path:
    """The static busybox binary; raises :class:`ToolMissingError` if absent or dynamic."""
    p = Path(path)
    if not p.is_file():
        raise ToolMissingError(path, "busybox-static")
    if not _is_static_elf(p):
        raise ToolMissingError(path, "busybox-static",
                               "is not a static x86-64 executable (the busybox package is dynamic)")
    return p
