"""Compiled kernels behind the backend layer (see ``isotonic.py`` and ``lapsum.py``).

Each kernel has a pure Array API twin with the same contract; the backends pick
which one runs (``Backend.isotonic_forward`` / ``Backend.isotonic_backward``,
``Backend.lapsum_kernel`` / ``lapsum_forward`` / ``lapsum_backward``).
"""
