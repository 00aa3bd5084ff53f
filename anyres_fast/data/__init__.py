"""Mixed-resolution training data: image sources, LR and HR patch datasets, the key sampler (docs/data.md).

Uses Pillow and `anyres_fast.ops`-compatible Lanczos resampling; imports no model."""
from .sources import BadFile, ImageSource, image_extensions
from .datasets import HRPatchDataset, KeySampler, LRDataset, lanczos_float, sample_rng, square_crop
