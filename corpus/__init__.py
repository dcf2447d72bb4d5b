"""The seed corpus: programs (``*.json``), each with its expected outcome per kernel version.

Data only, installed with foliodiff as package data: the engine finds this
directory through :mod:`importlib.resources` (``engine.CORPUS_DIR``), in a
source tree and in an installed copy alike, and imports nothing from here.
``tools/make_corpus.py`` writes the files.
"""

from pathlib import Path

#: This directory: where the corpus files are.
CORPUS_DIR = Path(__file__).resolve().parent
