"""Ops with a CUDA kernel and a pure-PyTorch reference each (docs/ops.md). Models use ops only from here."""
from ._dispatch import OpUnsupported
from ._extension import ExtensionUnavailable
from .modulated_conv2d_op import modulated_conv2d, modulated_conv2d_ref
from .upfirdn2d_op import upfirdn2d, upfirdn2d_ref, setup_filter
from .bias_act_op import bias_act, bias_act_ref
from .filtered_lrelu_op import filtered_lrelu, filtered_lrelu_ref
from .style_fused_conv2d_op import style_fused_conv2d, style_fused_conv2d_ref
from .lanczos_resample_op import lanczos_resample, lanczos_resample_ref
from .teacher_warp_op import teacher_warp
from . import selfcheck  # installs the first-use kernel self-check that impl="auto" consults
