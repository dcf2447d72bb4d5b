"""What identifies the model a run used: a digest of the engine's own sources.

Findings are claims about kernels made through this model; two workers of
one campaign must run the same model, or their findings and corpora mean
different things.  A plugin engine has its own identity (its source hash,
:func:`engine.kernels.plugins.identity`); this is the built-in model's.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

_ENGINE = Path(__file__).resolve().parent.parent


@functools.cache
def model_digest() -> str:
    """The sha256 (hex, first 16 digits) of every source file of the engine
    package (Python and the C path's C), in path order: equal exactly when
    two installs run the same model."""
    h = hashlib.sha256()
    for path in sorted(p for p in _ENGINE.rglob("*") if p.suffix in (".py", ".c")):
        h.update(path.relative_to(_ENGINE).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:16]
