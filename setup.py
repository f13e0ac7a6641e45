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

setup(
    name="rewardmap-recipe",
    version="0.1.0",
    description=__doc__,
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["recipe", "recipe.*", "reward_fns", "reward_fns.*", "data_prep", "data_prep.*"]),
    install_requires=VERL_RUNTIME
    + [
        "hydra-core>=1.3",
        "datasets>=2.19",
        "matplotlib>=3.8",
        "networkx>=3.2",
        "numpy>=2.0",
        "pandas>=2.0",
        "pillow>=10.0",
        "pyarrow>=19.0",
    ],
    extras_require={
        # GPU clusters: verl's own vLLM rollout and FSDP training stack (pins torch 2.11 and transformers 5.9).
        "gpu": ["verl[vllm,fsdp]==0.9.1", "qwen_vl_utils"],
        "test": ["pytest>=8", "hypothesis>=6.100", "ruff>=0.6"],
    },
)
