"""Build the C batched path (engine/native/cpath.c) with the package.

Everything else is configured in pyproject.toml.  The extension is plain C
with no Python API: ``engine.native.loader`` loads it with ctypes, not with
import.
"""

import runpy

from setuptools import Extension, setup

# The flags are defined once, beside the loader; read without importing the
# package, whose dependencies a build environment does not have.
CFLAGS = runpy.run_path("engine/native/cflags.py")["CFLAGS"]

setup(ext_modules=[Extension("engine.native._cpath", sources=["engine/native/cpath.c"],
                             extra_compile_args=CFLAGS, depends=["engine/native/cpath.c"])])
