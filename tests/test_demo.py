"""The main job, `python -m softops demo`, runs and prints the right numbers."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import pytest


def test_demo_prints_the_tour(tmp_path):
    pytest.importorskip("torch")
    out = subprocess.run(
        [sys.executable, "-W", "error", "-m", "softops", "demo", "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, check=True, timeout=300,
    ).stdout
    # Seed 001: the hard selection has no gradient; every relaxation x method lowers the *hard* objective.
    assert "hard selection (torch.topk indices): no gradient at all" in out
    rows = re.findall(r"^  (topk_mask|quantile|sort_by) +(\S+) +([+-]\d\.\d+) +([+-]\d\.\d+) +([+-]\d\.\d+)", out, re.M)
    assert {(r[0], r[1]) for r in rows} >= {("topk_mask", "lapsum"), ("quantile", "permutahedron-kl"),
                                            ("sort_by", "network"), ("topk_mask", "sinkhorn")}, out
    assert len(rows) >= 16, out
    for select, method, start, end, best in rows:
        assert float(end) < float(start) - 0.1, (select, method, start, end)
    # Seed 003's own test rows: its layer re-implemented gives its published values, NaN included.
    assert "[-11, -12, -12, -12]   published nan | nan, gradient finite False | 0.0000, gradient finite True" in out
    assert "[7, 7, 7, 8]           published   3 | 3.0000" in out
    # Seed 003's NaN cases, fixed; the published sparsemax values; the keypoint.
    assert "soft_argmax([8, 8, 8, 9]) = 3.0000" in out
    assert "soft_argmax([-11, -12, -12, -12]) = 0.0000" in out
    assert "sparsemax  weights = [0.0000, 0.2500, 0.7500]" in out
    assert "(i, j) = [3.300, 5.700]" in out
    # Seed 000's linear lookup with the right gradients (its code gave -1).
    assert "seed 000, lookup([1..5], 1.5): value 2.5, d/d index -1 (the seed's) | softops: 2.5, +1.0" in out
    assert "lookup([1, 2, 3, 4, 5], 1.5) = 2.5000" in out
    assert "d / d arr = [0.00, 0.50, 0.50, 0.00, 0.00]   d / d index = +1.0000" in out
    assert "= [3.50, 8.50]" in out
    # The sorting family: 0.30 and 0.31 share the third place of the top-3 mask.
    assert "soft_topk_mask(k=3, temperature=Relative(1)) = [0.493, 0.000, 1.000, 0.507, 1.000] (sums to 3.0)" in out
    assert not re.search(r"[\[ ,=]-?(nan|inf)\b", out.split("The seeds' numbers")[0] + out.split("1. argmax")[1])
    if importlib.util.find_spec("matplotlib"):
        for name in ("seed001_objective.png", "relaxations_vs_temperature.png"):
            assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert str(tmp_path / name) in out


def test_version_and_bad_commands():
    """``python -m softops --version`` prints the version; an unknown command
    is a one-line usage error with exit status 2, no traceback."""
    import softops

    done = subprocess.run([sys.executable, "-m", "softops", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"softops {softops.__version__}"
    done = subprocess.run([sys.executable, "-m", "softops", "dmeo"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "invalid choice: 'dmeo'" in done.stderr and "Traceback" not in done.stderr
