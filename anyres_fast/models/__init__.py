"""Model families: the any-resolution StyleGAN3 generator (anyres) and the StyleGAN2 discriminator."""
from .anyres import Generator, GeneratorConfig, layer_schedule, format_schedule, patch_transform
from .discriminator import Discriminator
from .infinity import InfinityConfig, InfinityGenerator
from .infinity_convert import convert_official_state_dict, from_official, load_official_checkpoint
from . import published  # registers the network-pickle loader of Generator.from_pretrained
