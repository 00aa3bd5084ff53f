"""Package metadata for anyres-fast.

The CUDA sources under csrc/ are shipped as package data (as `anyres_fast/csrc`) and compiled on first
CUDA use by anyres_fast/ops/_extension.py, so installing needs no GPU and no nvcc.
"""
from setuptools import find_packages, setup

setup(
    name="anyres-fast",
    version="0.1.0",
    description="Any-resolution GANs (anyres-gan, InfinityGAN) with hand-written CUDA kernels",
    python_requires=">=3.10",
    packages=find_packages(include=["anyres_fast", "anyres_fast.*"]) + ["anyres_fast.csrc"],
    package_dir={"anyres_fast.csrc": "csrc"},
    package_data={"anyres_fast.csrc": ["*.cpp", "*.h", "kernels/*", "bindings/*", "selftest/*"],
                  "anyres_fast.serve": ["static/*"]},
    install_requires=["torch>=2.4", "numpy", "pillow", "tqdm", "ninja", "pybind11", "safetensors>=0.4"],
    extras_require={
        "test": ["pytest", "scipy", "torchvision", "lpips", "matplotlib"],
        "train": ["torchvision", "lpips"],
        "plot": ["matplotlib"],
        # `anyres-fast serve` (aiohttp) and `generate --format tiff` (tifffile)
        "serve": ["aiohttp==3.14.5", "tifffile==2026.3.3"],
    },
    entry_points={"console_scripts": ["anyres-fast=anyres_fast.cli:main"]},
)
