"""The C flags of every build of engine/native/cpath.c.

No imports: setup.py reads this file with runpy before the package (and its
dependencies) can be imported.
"""

CFLAGS = ["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"]
SANITIZE_FLAGS = ["-O1", "-g", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
                  "-fno-sanitize-recover=all"]
