"""lossweave: complex training objectives, first-class in Keras 3.

>>> import lossweave as lw
>>> sorted(name for name in lw.__all__ if not name.startswith("_"))
['Model', 'NonFiniteTermError', 'Objective', 'Sequential', 'Tap', 'Term', 'balancers', 'diagnostics', 'losses', 'metric', 'schedules', 'tap']
"""

from lossweave import balancers, diagnostics, losses, schedules
from lossweave.guard import NonFiniteTermError
from lossweave.metrics import metric
from lossweave.model import Model, Sequential
from lossweave.objective import Objective, Term
from lossweave.taps import Tap, tap

__all__ = [
    "Model",
    "NonFiniteTermError",
    "Objective",
    "Sequential",
    "Tap",
    "Term",
    "balancers",
    "diagnostics",
    "losses",
    "metric",
    "schedules",
    "tap",
]
__version__ = "0.1.0"
