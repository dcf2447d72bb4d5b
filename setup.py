"""Build the C batched path (engine/cpath.c) with the package.

Everything else is configured in pyproject.toml.  The extension is plain C
with no Python API: ``engine.cpath`` loads it with ctypes, not with import.
"""

import os
import sys

from setuptools import Extension, setup

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine.cpath import CFLAGS  # noqa: E402 - the flags are defined once, beside the loader

setup(ext_modules=[Extension("engine._cpath", sources=["engine/cpath.c"],
                             extra_compile_args=CFLAGS, depends=["engine/cpath.c"])])
