"""Training: the model-independent Trainer, recipes per model family, losses and checkpoints (docs/training.md)."""
from .checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from .trainer import Context, Recipe, Trainer, TrainOptions, init_distributed
