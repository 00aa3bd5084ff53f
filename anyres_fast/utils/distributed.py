"""Joining the torchrun process group, the same way for training and for sharded rendering."""
from __future__ import annotations

import os
from typing import Optional


def init_distributed(device_text: Optional[str] = None) -> tuple:
    """Join the torchrun process group when WORLD_SIZE > 1.

    Args:
        device_text: "cpu", "cuda" or "cuda:N" (None: cuda:LOCAL_RANK when a GPU is available, else cpu).
            A bare "cuda" means this process's GPU, cuda:LOCAL_RANK.

    Returns:
        (device, rank, world). NCCL when the device is a GPU, gloo on the CPU.
    """
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device_text is None:
        device = torch.device(f"cuda:{local}" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(device_text)
        if device.type == "cuda" and device.index is None:
            device = torch.device(f"cuda:{local}")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device, rank, world
