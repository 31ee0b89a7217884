"""The backprop engine: dense layers on flat buffers, written by hand in numpy.

One module per concern: ``activations``, ``losses``, ``layers``, ``network``
(forward, loss, backward, gradients), ``optim`` (the update), ``gradcheck``.
"""

from common.nn.gradcheck import GradcheckResult, gradcheck
from common.nn.network import Network
from common.nn.optim import SGD, Adam, Optimizer, make_optimizer

__all__ = ["SGD", "Adam", "GradcheckResult", "Network", "Optimizer", "gradcheck",
           "make_optimizer"]
