"""lossweave: complex training objectives, first-class in Keras 3."""

from lossweave import losses

__version__ = "0.1.0"
