"""Former home of the direct module plan; it now lives in :mod:`ppokit.internals.direct`.

Kept so that ``from ppokit.fast.direct import ModulePlan`` keeps working.
"""

from ppokit.internals.direct import ModulePlan, TensorReader
from ppokit.internals.slots import ParamSlots

__all__ = ["ModulePlan", "ParamSlots", "TensorReader"]
