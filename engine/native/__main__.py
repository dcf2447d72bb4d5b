"""``python3 -m engine.native build [--sanitize] [--out PATH]``: build the C batched path.

A package entry point rather than ``-m engine.native.loader``: importing the
engine imports the loader, and runpy warns when the module it is asked to
run as ``__main__`` is already imported.
"""

import sys

from engine.native.loader import main

sys.exit(main())
