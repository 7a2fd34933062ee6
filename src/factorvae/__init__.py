"""factorvae: Kim & Mnih, "Disentangling by Factorising" (ICML 2018), in PyTorch.

The Python API in six names: ``Config`` and ``make_config`` (settings), ``train`` and ``resume`` (a run
directory), ``load`` (a trained model), ``data.load`` (a data set).
"""

from .config import Config, make_config
from .run.trained import TrainedModel, load
from .training.loop import resume, train

__version__ = "0.1.0"
__all__ = ["Config", "make_config", "train", "resume", "load", "TrainedModel"]
