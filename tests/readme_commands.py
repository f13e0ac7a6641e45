"""Which test runs each command of the README's shell code blocks: the one table of it, read by test_readme_commands.

Keys are the README's commands as ``readme_commands()`` reads them (continuation lines joined, comments and
runs of spaces dropped). A value is either the test that runs the command, ``"tests/FILE.py::TEST"`` (or
``".ci/run"``, CI's own script), or ``NOT_RUNNABLE_HERE`` plus why: it needs a GPU, a cluster, a container
runtime or the network, none of which a CPU test machine has. A README command that is in no row fails
``tests/test_readme_commands.py``: add it here with its test.
"""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
NOT_RUNNABLE_HERE = "not CPU-runnable: "
APPTAINER_TEST = "tests/test_launch_apptainer.py::test_launch_script_runs_unchanged_with_the_wrappers_first_on_path"
EVALUATE_TEST = "tests/test_evaluate_e2e.py::test_generate_score_compare_on_cpu"
EVALUATE_CHECKPOINT_TEST = "tests/test_evaluate_e2e.py::test_a_verl_checkpoint_is_merged_and_evaluated"
BENCHMARK_TEST = "tests/test_readme_commands.py::test_benchmarks_run_on_small_inputs"

COMMANDS: dict[str, str] = {
    # Set up and run
    "bash install.sh && .venv/bin/python -m recipe.main_rewardmap": (
        "tests/test_training_loop_cpu.py::test_readme_main_command_trains_bare_from_a_scratch_folder"
    ),
    "bash install.sh && .venv/bin/python -m pytest -q tests": ".ci/run",
    # GPU cluster: install
    "python3.11 -m venv .venv && . .venv/bin/activate": NOT_RUNNABLE_HERE + "GPU install (a second venv)",
    'pip install -c constraints/gpu-py311.txt -e ".[gpu]"': NOT_RUNNABLE_HERE + "GPU install (CUDA wheels, network)",
    "pip install -c constraints/gpu-py311.txt setuptools wheel ninja packaging psutil": (
        NOT_RUNNABLE_HERE + "GPU install, network"
    ),
    "CUDA_HOME=$(python -m recipe.cuda_home) && export CUDA_HOME && MAX_JOBS=8 pip install --no-build-isolation "
    "-c constraints/gpu-py311.txt -r constraints/gpu-build.txt": (
        "tests/test_gpu_install.py::test_the_flash_attn_step_sets_cuda_home_to_the_toolkit_behind_an_nvcc_wrapper"
    ),
    "python -m recipe.ablate": ("tests/test_ablate_cpu.py::test_the_ablation_command_writes_a_complete_report"),
    # the same command with --seeds and the check set to warn, as the end-to-end test runs it
    "python -m recipe.ablate --seeds 0,1 rewardmap.cpu_run.precheck.on_failure=warn": (
        "tests/test_ablate_cpu.py::test_the_ablation_command_writes_a_complete_report"
    ),
    # other arms, 16 steps: the end-to-end test runs the same command on two arms, one of them difficulty_weights_grpo
    "python -m recipe.ablate --arms difficulty_weights,difficulty_weights_grpo --seeds 0,1 --steps 16 "
    "rewardmap.ablation.last_k=8": ("tests/test_ablate_cpu.py::test_the_ablation_command_writes_a_complete_report"),
    # the curriculum from a warm start on every question type: the end-to-end test runs the command on planning arms;
    # tests/test_warm_start.py checks the repeats setting, the training-loop test a curriculum through verl's trainer
    "python -m recipe.ablate --arms coarse_curriculum,difficulty_weights --seeds 0,1 --steps 16 "
    "rewardmap.ablation.perception_steps=16 'rewardmap.cpu_run.warm_start.question_types=[]' "
    "'rewardmap.cpu_run.warm_start.repeats={planning:4}' rewardmap.cpu_run.warm_start.steps=1600 "
    "rewardmap.ablation.last_k=8": ("tests/test_ablate_cpu.py::test_the_ablation_command_writes_a_complete_report"),
    # the learning test, deselected from the default run (pytest.ini): it is its own command
    "python -m pytest -m learning tests/test_learning_cpu.py": (
        "tests/test_learning_cpu.py::test_the_detail_arm_raises_its_reward_and_endpoint_rate"
    ),
    "python -m recipe.main_rewardmap --dry-run": (
        "tests/test_training_loop_cpu.py::test_two_processes_train_the_plan_and_resume_exactly"
    ),
    "apptainer pull /shared/verl-vllm024.sif docker://verlai/verl:vllm024.latest": (
        NOT_RUNNABLE_HERE + "container runtime and network"
    ),
    "export APPTAINER_BIND=/shared": NOT_RUNNABLE_HERE + "container setting",
    "apptainer exec --nv /shared/verl-vllm024.sif python3 -m venv --system-site-packages /shared/rm-venv": (
        NOT_RUNNABLE_HERE + "container runtime"
    ),
    "apptainer exec --nv /shared/verl-vllm024.sif /shared/rm-venv/bin/pip install -e . transformers==5.9.0": (
        NOT_RUNNABLE_HERE + "container runtime and network"
    ),
    "bash launch/apptainer_bin.sh /shared/verl-vllm024.sif /shared/rm-venv ~/rm-sif-bin": APPTAINER_TEST,
    "export PATH=~/rm-sif-bin:$PATH": APPTAINER_TEST,
    # GPU cluster: model, caches, run folders
    "export HF_HOME=/shared/hf": NOT_RUNNABLE_HERE + "cluster setting (shared storage)",
    "hf download Qwen/Qwen2.5-VL-7B-Instruct": NOT_RUNNABLE_HERE + "network (model download)",
    "export HF_HOME=/shared/hf HF_HUB_OFFLINE=1 HF_DATASETS_CACHE=/shared/hf/datasets": (
        "tests/test_launch_ray_job.py::test_job_carries_the_listed_variables_an_absolute_run_folder_and_the_overrides"
    ),
    "export REWARDMAP_RUNS=/shared/rewardmap-runs DATA_DIR=/shared/rewardmap-data": (
        "tests/test_launch_ray_job.py::test_relative_paths_become_absolute_and_are_checked_before_submission"
    ),
    "python -m recipe.main_rewardmap preset=qwen2_5_vl_7b --preflight": (
        "tests/test_gpu_install.py::test_the_readme_preflight_loads_the_downloaded_models_processor_offline"
    ),
    # GPU cluster: ray job submit
    "ray get-auth-token --generate >/dev/null && chmod 600 ~/.ray/auth_token": (
        "tests/test_launch_ray_auth.py::test_the_readme_token_command_makes_a_private_token"
    ),
    "export RAY_AUTH_MODE=token": NOT_RUNNABLE_HERE + "cluster setting (every node, before ray start)",
    "ray start --head --dashboard-host=0.0.0.0 --num-gpus=8": NOT_RUNNABLE_HERE + "cluster (starts a Ray head)",
    "ray start --address=HEAD:6379 --num-gpus=8": NOT_RUNNABLE_HERE + "cluster (joins a Ray head)",
    "RAY_ADDRESS=http://HEAD:8265 bash launch/run_rewardmap_qwen2_5_vl_7b.sh --no-wait": (
        "tests/test_launch_ray_job.py::test_no_wait_and_the_same_command_again_resumes_in_the_same_folder"
    ),
    # GPU cluster: SLURM
    "sbatch launch/slurm_rewardmap.sbatch preset=qwen2_5_vl_7b": (
        "tests/test_launch_slurm.py::test_head_then_workers_then_poll_then_driver_once_then_ray_stop_everywhere"
    ),
    "sbatch launch/slurm_rewardmap_1node.sbatch preset=qwen2_5_vl_7b": (
        "tests/test_launch_slurm.py::test_single_node_variant_lets_the_driver_start_ray"
    ),
    # Choosing a run
    "python -m recipe.main_rewardmap preset=qwen2_5_vl_7b curriculum=coarse reward_mode=released "
    "rewardmap.data_dir=/data/rm": "tests/test_configs.py::test_every_combination_composes_and_validates",
    "python -m recipe.main_rewardmap --cfg job": "tests/test_configs.py::test_cli_prints_the_composed_job",
    # Data
    "python -m data_prep.reasonmap --out data/rewardmap --stations-root path/to/ReasonMap": (
        "tests/test_reasonmap_prep.py::test_hub_path_with_load_dataset_mocked"
    ),
    "python -m data_prep.reasonmap --out data/rm --source train=./ReasonMap-Train --source val=./ReasonMap "
    "--stations-root ./ReasonMap --skip-invalid": "tests/test_reasonmap_prep.py::test_cli_converts_local_copies",
    "python -m data_prep.synthetic --out data/synthetic --cities 50 --seed 0 --contact-sheet": (
        "tests/test_synthetic.py::test_cli_without_render_and_with_a_real_network"
    ),
    # Evaluate
    "python -m recipe.evaluate generate --model Qwen/Qwen2.5-VL-7B-Instruct --test data/rm/val.parquet "
    "data/rm/test.parquet --out runs/base/responses.jsonl": NOT_RUNNABLE_HERE + "network (7B model download), GPU",
    "python -m recipe.evaluate generate --model checkpoints/rewardmap/run1 --test data/rm/val.parquet "
    "data/rm/test.parquet --out runs/trained/responses.jsonl": EVALUATE_CHECKPOINT_TEST,
    "python -m recipe.evaluate score --responses runs/base/responses.jsonl --test data/rm/val.parquet "
    "data/rm/test.parquet --out runs/base/results": EVALUATE_TEST,
    "python -m recipe.evaluate score --responses runs/trained/responses.jsonl --test data/rm/val.parquet "
    "data/rm/test.parquet --out runs/trained/results --training-log tensorboard_log/rewardmap/run1": (
        "tests/test_evaluate.py::test_training_logs_from_tensorboard_and_file_logger"
    ),
    "python -m recipe.evaluate compare runs/base/results runs/trained/results --out runs/compare "
    "--names base,trained": EVALUATE_TEST,
    "python -m recipe.evaluate export-vlmevalkit --test data/rm/test.parquet --out runs/ReasonMap-Plus-local.tsv": (
        "tests/test_evaluate.py::test_export_vlmevalkit"
    ),
    # Benchmarks
    ".venv/bin/python benchmarks/bench_rewards.py": BENCHMARK_TEST,
    ".venv/bin/python benchmarks/bench_data.py": BENCHMARK_TEST,
    ".venv/bin/python benchmarks/bench_eval.py": BENCHMARK_TEST,
    ".venv/bin/python benchmarks/bench_startup.py": BENCHMARK_TEST,
    ".venv/bin/python benchmarks/bench_cpu_run.py": (
        "tests/test_readme_commands.py::test_bench_cpu_run_times_one_engine"
    ),
}


def readme_commands(text: str | None = None) -> list[str]:
    """Commands of the README's ```bash / ```sh blocks: one per logical line, comments and extra spaces dropped."""
    text = README.read_text() if text is None else text
    commands = []
    for block in re.findall(r"^```(?:bash|sh|shell)\n(.*?)^```", text, flags=re.M | re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            if line:
                commands.append(" ".join(line.split()))
    return commands
