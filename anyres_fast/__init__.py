"""anyres_fast: any-resolution GANs (anyres-gan, InfinityGAN) with hand-written CUDA kernels."""
__version__ = "0.1.0"

from . import ops
from .models import Discriminator, Generator, InfinityGenerator
