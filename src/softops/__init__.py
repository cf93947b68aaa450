"""softops: differentiable relaxations of discrete array operations.

Native in PyTorch, JAX and NumPy: the caller's arrays go in, arrays of the same
framework, device and dtype come out, and the framework's own autodiff, ``jit``,
``vmap`` and ``torch.compile`` see through every operation.

The public names are those of each family module's ``__all__``.
"""

from softops import index, select, sort, topk
from softops.index import *  # noqa: F403
from softops.select import *  # noqa: F403
from softops.sort import *  # noqa: F403
from softops.temperature import Relative
from softops.topk import *  # noqa: F403

__version__ = "0.1.0"

__all__ = [*select.__all__, *index.__all__, *sort.__all__, *topk.__all__, "Relative"]
