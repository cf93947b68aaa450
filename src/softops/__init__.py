"""softops: differentiable relaxations of discrete array operations.

Native in PyTorch, JAX and NumPy: the caller's arrays go in, arrays of the same
framework, device and dtype come out, and the framework's own autodiff, ``jit``,
``vmap`` and ``torch.compile`` see through every operation.

The public names are those of each family module's ``__all__``.
"""

from softops import index, permutation, select, sort, topk
from softops._kernels._threads import get_num_threads, set_num_threads
from softops._kernels._tiers import get_compile_mode, set_compile_mode
from softops.index import *  # noqa: F403
from softops.permutation import *  # noqa: F403
from softops.select import *  # noqa: F403
from softops.sort import *  # noqa: F403
from softops.temperature import Relative
from softops.topk import *  # noqa: F403

__version__ = "0.1.0"

# The operations (every one is in tests/test_transforms.py's harness) and the settings.
OPERATIONS = tuple(name for name in (*select.__all__, *index.__all__, *sort.__all__, *topk.__all__,
                                     *permutation.__all__)
                   if name[0].islower())
__all__ = [*OPERATIONS, "Relative", "get_compile_mode", "get_num_threads", "set_compile_mode", "set_num_threads"]
