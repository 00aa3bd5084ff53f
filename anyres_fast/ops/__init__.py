"""Ops with a CUDA kernel and a pure-PyTorch reference each (DESIGN §2). Models use ops only from here."""
from ._dispatch import OpUnsupported
from ._extension import ExtensionUnavailable
from .modulated_conv2d import modulated_conv2d, modulated_conv2d_ref
