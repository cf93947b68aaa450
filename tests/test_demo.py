"""The main job, `python -m softops demo`, runs and prints the right numbers."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest


def test_demo_prints_the_tour():
    pytest.importorskip("torch")
    out = subprocess.run(
        [sys.executable, "-W", "error", "-m", "softops", "demo"],
        capture_output=True, text=True, check=True, timeout=300,
    ).stdout
    # Seed 003's NaN cases, fixed; the published sparsemax values; the keypoint.
    assert "soft_argmax([8, 8, 8, 9]) = 3.0000" in out
    assert "soft_argmax([-11, -12, -12, -12]) = 0.0000" in out
    assert "sparsemax  weights = [0.0000, 0.2500, 0.7500]" in out
    assert "(i, j) = [3.300, 5.700]" in out
    # Seed 000's linear lookup with the right gradients (its code gave -1).
    assert "lookup([1, 2, 3, 4, 5], 1.5) = 2.5000" in out
    assert "d / d arr = [0.00, 0.50, 0.50, 0.00, 0.00]   d / d index = +1.0000" in out
    assert "= [3.50, 8.50]" in out
    # The sorting family: 0.30 and 0.31 share the third place of the top-3 mask.
    assert "soft_topk_mask(k=3, temperature=Relative(1)) = [0.493, 0.000, 1.000, 0.507, 1.000] (sums to 3.0)" in out
    assert not re.search(r"[\[ ,=]-?(nan|inf)\b", out)  # _fmt prints non-finite values so


def test_version_and_bad_commands():
    """``python -m softops --version`` prints the version; an unknown command
    is a one-line usage error with exit status 2, no traceback."""
    import softops

    done = subprocess.run([sys.executable, "-m", "softops", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"softops {softops.__version__}"
    done = subprocess.run([sys.executable, "-m", "softops", "dmeo"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "invalid choice: 'dmeo'" in done.stderr and "Traceback" not in done.stderr
