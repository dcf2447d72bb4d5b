"""What one scenario showed on one kernel: apart, so that the store can keep it
without importing the runner."""

from __future__ import annotations

import enum


class Verdict(str, enum.Enum):
    """What one scenario showed on one kernel."""

    EQUAL = "equal"                  # every observable as predicted
    DIFFERENT = "different"          # at least one observable differs
    UNSUPPORTED = "unsupported"      # the kernel and its model lack a feature the program needs
    NOT_EXPRESSIBLE = "not-expressible"  # does not translate on the kernel's engine: not run
    FAILED = "failed"                # the reproducer failed, crashed or printed no observables
    NO_PREDICTION = "no-prediction"  # the model run crashed: nothing to compare
