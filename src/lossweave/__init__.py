"""lossweave: complex training objectives, first-class in Keras 3.

>>> import lossweave as lw
>>> sorted(name for name in lw.__all__ if not name.startswith("_"))
['Model', 'NonFiniteTermError', 'Objective', 'Term', 'losses', 'metric', 'schedules']
"""

from lossweave import losses, schedules
from lossweave.guard import NonFiniteTermError
from lossweave.metrics import metric
from lossweave.model import Model
from lossweave.objective import Objective, Term

__all__ = ["Model", "NonFiniteTermError", "Objective", "Term", "losses", "metric", "schedules"]
__version__ = "0.1.0"
