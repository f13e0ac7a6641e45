"""``python -m recipe.launch_plan``: what a launch script needs before it starts anything, from one composition.

The launch scripts (``launch/*.sh``, ``launch/*.sbatch``) call this once and keep only the cluster work (Ray
start, srun, traps, requeue, ``ray job submit``). It checks the paths the run will read on other machines,
composes the recipe's config ONCE with the overrides the driver will get (as ``python -m recipe.main_rewardmap``
composes it: configs/rewardmap.yaml, verl's config folder by path, the recipe's resolvers and plain flags), reads
``trainer.experiment_name`` from it, creates the run folder and prints, on stdout, shell assignments quoted with
``shlex.quote`` for the script to ``eval``::

    RM_EXPERIMENT_NAME  trainer.experiment_name as composed (names the run folder and the Ray job)
    RM_RUN_DIR          $REWARDMAP_RUNS/<experiment name>, created with checkpoints/, tensorboard/, logs/
    RM_CKPT_DIR         $RM_RUN_DIR/checkpoints (trainer.default_local_dir)
    RM_OVERRIDES        (array) the launcher's overrides; the user's go after them, so theirs win
    TENSORBOARD_DIR     (exported) $RM_RUN_DIR/tensorboard: verl's TensorBoard logger reads it
    RM_RUNTIME_ENV      (ray-job only) the ``--runtime-env-json`` of ``ray job submit``

A bad command line (a missing data folder, a relative path, an override that does not compose, an unknown
preset) exits 1 with one ``[rewardmap] error:`` line naming what is wrong, and prints no plan.

Launchers (the first argument), then launcher options, then ``--`` and the user's arguments::

    python -m recipe.launch_plan ray-job --preset qwen2_5_vl_7b -- curriculum=coarse
    python -m recipe.launch_plan slurm --nnodes 2 --gpus-per-node 8 [--ray-num-cpus 64] -- preset=qwen2_5_vl_7b
    python -m recipe.launch_plan smoke -- trainer.total_training_steps=2

Environment: REWARDMAP_RUNS (the runs folder; smoke: default runs/ in the recipe folder), DATA_DIR (a folder
written by data_prep), MODEL (a local model folder or a hub name org/name), NNODES and GPUS_PER_NODE (ray-job:
1 and 8), STEPS (smoke: 4); relative paths are taken from ``--caller-dir`` (where the user ran the script).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, OverrideParseException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from recipe.config_resolvers import register_resolvers
from recipe.main_rewardmap import command_line, hydra_arguments, split_hydra_arguments

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"
CONFIG_NAME = "rewardmap"
DATA_KEY = "rewardmap.data_dir"
MODEL_KEY = "actor_rollout_ref.model.path"
HUB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")

# A `ray job submit` job gets these of the submitter's variables (runtime_env env_vars): every name starting with
# a prefix below, plus the exact names. Never forwarded: RAY_* (the submitter's RAY_ADDRESS is the dashboard URL
# and would misdirect the job's own ray.init; RAY_AUTH_TOKEN would show in the dashboard), CUDA_VISIBLE_DEVICES,
# PATH, PYTHONPATH and HOME (each node has its own). Forwarded tokens (WANDB_API_KEY, HF_TOKEN) show in the Ray
# dashboard's job details: on a shared cluster prefer `wandb login` / `hf auth login` on the nodes.
FORWARD_PREFIXES = (
    "WANDB_",
    "HF_",
    "HUGGING_FACE_",
    "TRANSFORMERS_",
    "TOKENIZERS_",
    "NCCL_",
    "GLOO_",
    "TORCH_",
    "PYTORCH_",
    "VLLM_",
    "VERL_",
    "REWARDMAP_",
    "TRITON_",
    "MLFLOW_",
    "SWANLAB_",
)
FORWARD_NAMES = ("TENSORBOARD_DIR", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
# Never uploaded with the working dir (runtime_env "excludes": gitignore patterns relative to the recipe folder).
UPLOAD_EXCLUDES = (
    ".git",
    ".venv",
    "/data",
    "/runs",
    "/logs",
    "checkpoints",
    "outputs",
    "tensorboard_log",
    "wandb",
    "*.out",
    "__pycache__",
    ".cache",
    ".pytest_cache",
    ".hypothesis",
    ".ruff_cache",
)

# The one-GPU smoke run (launch/run_rewardmap_gpu_smoke.sh): a few GRPO steps of the 3B model on a small synthetic
# curriculum, in its own run folder, afresh every time; STEPS sets the number of steps.
SMOKE_MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"
SMOKE_NAME = "gpu_smoke"
SMOKE_OVERRIDES = (
    "rewardmap.synthetic_cities=4",
    f"trainer.experiment_name={SMOKE_NAME}",
    "trainer.resume_mode=disable",
    "trainer.n_gpus_per_node=1",
    "trainer.nnodes=1",
    "trainer.save_freq=2",
    "trainer.test_freq=-1",
    "trainer.logger=[console]",
    "data.train_batch_size=4",
    "data.max_prompt_length=4096",
    "data.max_response_length=512",
    "actor_rollout_ref.actor.ppo_mini_batch_size=4",
    "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
    "actor_rollout_ref.rollout.gpu_memory_utilization=0.4",
    "actor_rollout_ref.rollout.max_num_batched_tokens=8192",
    "reward.num_workers=2",
)


class LaunchError(Exception):
    """A launch that must not start; the message names what is wrong and how to fix it."""


@dataclass
class LaunchPlan:
    """What the launch script reads back (``shell()``): the run folder, its name and the launcher's overrides."""

    experiment_name: str
    run_dir: Path
    overrides: list[str]
    runtime_env: dict[str, object] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def tensorboard_dir(self) -> Path:
        return self.run_dir / "tensorboard"

    def shell(self) -> str:
        """Bash assignments, every value quoted with ``shlex.quote``, for the script to ``eval``.

        >>> print(LaunchPlan("a b", Path("/r/a b"), ["k=it's"]).shell())
        RM_EXPERIMENT_NAME='a b'
        RM_RUN_DIR='/r/a b'
        RM_CKPT_DIR='/r/a b/checkpoints'
        RM_OVERRIDES=('k=it'"'"'s')
        export TENSORBOARD_DIR='/r/a b/tensorboard'
        """
        q = shlex.quote
        lines = [
            f"RM_EXPERIMENT_NAME={q(self.experiment_name)}",
            f"RM_RUN_DIR={q(str(self.run_dir))}",
            f"RM_CKPT_DIR={q(str(self.checkpoint_dir))}",
            f"RM_OVERRIDES=({' '.join(q(o) for o in self.overrides)})",
            f"export TENSORBOARD_DIR={q(str(self.tensorboard_dir))}",
        ]
        if self.runtime_env is not None:
            lines.append(f"RM_RUNTIME_ENV={q(json.dumps(self.runtime_env))}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------- paths


def absolute(path: str, caller_dir: Path) -> Path:
    """``path`` as given relative to where the user ran the script (not normalised: the user's spelling stays)."""
    return Path(path) if os.path.isabs(path) else caller_dir / path.removeprefix("./")


def data_dir(path: str, caller_dir: Path) -> Path:
    """A folder written by data_prep (it has manifest.json), made absolute; raises naming what is wrong."""
    folder = absolute(path, caller_dir)
    if not folder.is_dir():
        raise LaunchError(
            f"data folder {folder} does not exist (write one with python -m data_prep.reasonmap --out DIR)"
        )
    if not os.access(folder, os.R_OK | os.X_OK):
        raise LaunchError(f"data folder {folder} is not readable")
    manifest = folder / "manifest.json"
    if not (manifest.is_file() and os.access(manifest, os.R_OK)):
        raise LaunchError(f"data folder {folder} has no readable manifest.json: not written by data_prep")
    return folder


def model_path(model: str, caller_dir: Path, notes: list[str]) -> str:
    """A local model folder made absolute, or a hub name (org/name, no such folder here) kept as it is.

    A hub name is read from every node's Hugging Face cache; with ``HF_HUB_OFFLINE`` it must be there already.
    """
    folder = absolute(model, caller_dir)
    if folder.exists():
        if not (folder.is_dir() and os.access(folder / "config.json", os.R_OK)):
            raise LaunchError(f"model {folder} is not a readable model folder (no config.json)")
        return str(folder)
    if not HUB_NAME.fullmatch(model):
        raise LaunchError(f"model {model}: no such folder ({folder}) and not a hub name (org/name)")
    notes.append(
        f"model {model}: no such folder here, so a hub name; every node reads it from its HF cache"
        ' (pre-download it to a shared HF_HOME and set HF_HUB_OFFLINE=1, README "GPU cluster")'
    )
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    # constants reads HF_HOME / HF_HUB_CACHE / HF_HUB_OFFLINE at import, as the driver's huggingface_hub will
    cached = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=model, repo_type="model")
    if constants.HF_HUB_OFFLINE and not cached.is_dir():
        raise LaunchError(
            f"HF_HUB_OFFLINE=1 but {model} is not in the cache {constants.HF_HUB_CACHE}: run hf download {model} first"
        )
    return model


def check_override_paths(overrides: Sequence[str], caller_dir: Path, notes: list[str]) -> None:
    """The user's data and model paths must be absolute (a relative one would be read on another machine)."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException:
        return  # the composition names the override it cannot read
    for override in parsed:
        if override.is_delete() or override.key_or_group not in (DATA_KEY, MODEL_KEY):
            continue
        value, given = override.value(), override.input_line
        if value is None or value == "":
            continue
        value = str(value)
        env = "DATA_DIR" if override.key_or_group == DATA_KEY else "MODEL"
        relative = LaunchError(f"{given}: give an absolute path (or {env}={value}, made absolute here)")
        if override.key_or_group == DATA_KEY:
            if not os.path.isabs(value):
                raise relative
            data_dir(value, caller_dir)
        elif os.path.isabs(value):
            model_path(value, caller_dir, notes)
        elif value.startswith(".") or absolute(value, caller_dir).exists():
            raise relative
        else:
            model_path(value, caller_dir, notes)


def run_dir(runs: str | None, name: str, caller_dir: Path) -> Path:
    """``$REWARDMAP_RUNS/<name>``, absolute; raises when REWARDMAP_RUNS is not set."""
    if not runs:
        raise LaunchError(
            "set REWARDMAP_RUNS to a folder every node mounts at the same path (e.g. /shared/rewardmap-runs):"
            f" checkpoints, TensorBoard and logs go to $REWARDMAP_RUNS/{name} and a later job resumes from there"
        )
    return absolute(runs, caller_dir) / name


def make_run_dir(folder: Path) -> None:
    """Create the run folder's checkpoints/, tensorboard/ and logs/ (kept between jobs: a later one resumes)."""
    try:
        for sub in ("checkpoints", "tensorboard", "logs"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise LaunchError(f"cannot create the run folder {folder}: {err.strerror}") from err
    if not os.access(folder / "checkpoints", os.W_OK):
        raise LaunchError(f"run folder {folder / 'checkpoints'} is not writable")


# ------------------------------------------------------------------------------------------------ composition


def hydra_overrides(args: Sequence[str]) -> list[str]:
    """The Hydra overrides among the user's arguments: the recipe's plain flags translated, Hydra's flags dropped.

    Split as the driver splits them (``recipe.main_rewardmap``: flags and overrides in any order), the flags read
    by Hydra's own parser. Flags that change which config is composed, or run several jobs, are refused: a launch
    composes configs/rewardmap.yaml once.

    >>> hydra_overrides(["curriculum=coarse", "--cfg", "job", "--dry-run", "+trainer.note=x y"])
    ['curriculum=coarse', 'dry_run=cpu', '+trainer.note=x y']
    """
    from hydra._internal.utils import get_args_parser

    translated, _ = command_line(list(args), has_cuda=True, ray_cluster=True)  # a GPU cluster: no automatic dry run
    overrides, flags = split_hydra_arguments(translated)
    parser = get_args_parser()

    def refuse(message: str) -> None:
        raise LaunchError(f"cannot read the arguments {' '.join(args)}: {message}")

    parser.error = refuse  # type: ignore[method-assign]
    try:
        with contextlib.redirect_stdout(sys.stderr):
            parsed = parser.parse_args(flags)
    except SystemExit as exit_:  # --version, --shell-completion: answered by the driver, not a launch
        raise LaunchError(f"cannot read the arguments {' '.join(args)}: not a run") from exit_
    for flag, name in (
        ("config_path", "--config-path"),
        ("config_name", "--config-name"),
        ("config_dir", "--config-dir"),
    ):
        if getattr(parsed, flag):
            raise LaunchError(f"{name}: the launch scripts run configs/{CONFIG_NAME}.yaml; choose with overrides")
    if parsed.multirun:
        raise LaunchError("--multirun: a launch runs one job; submit one per setting")
    return overrides


def composition_error(overrides: Sequence[str], err: Exception) -> str:
    """Hydra's complaint on one line, without its search-path listing; a grammar error names its override."""
    message = " ".join(str(err).split()).split(" Config search path:")[0]
    if isinstance(err, OverrideParseException):
        parser = OverridesParser.create()
        for override in overrides:
            try:
                parser.parse_overrides([override])
            except HydraException:
                return f"{override!r} is not a valid override ({message}; quote a value with spaces: key='a b')"
    return message


def compose_experiment_name(overrides: Sequence[str]) -> str:
    """``trainer.experiment_name`` of the config composed from ``overrides`` (the driver's, minus its run folder).

    Composed with ``hydra_arguments`` of ``recipe.main_rewardmap`` (verl's config folder by path) and its
    resolvers; ``${hydra:...}`` in the name resolves against this composition's choices, as in the driver.
    """
    register_resolvers()
    hydra_config = HydraConfig.instance()
    before = hydra_config.cfg
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
            config = compose(CONFIG_NAME, overrides=hydra_arguments(list(overrides)), return_hydra_config=True)
        hydra_config.set_config(config)
        name = OmegaConf.select(config, "trainer.experiment_name", throw_on_missing=True)
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        raise LaunchError(
            f"the Hydra overrides ({' '.join(overrides)}) do not compose: {composition_error(overrides, err)}"
            " (python -m recipe.main_rewardmap --cfg job shows the config)"
        ) from err
    finally:
        hydra_config.cfg = before  # this process's Hydra state as it was (the plan runs inside tests too)
    if not name or "/" in str(name) or str(name) in (".", ".."):
        raise LaunchError(f"trainer.experiment_name {name!r} cannot name a run folder")
    return str(name)


# ---------------------------------------------------------------------------------------------------- plans


def runtime_env(environ: Mapping[str, str], tensorboard_dir: Path) -> dict[str, object]:
    """``ray job submit``'s runtime env: the recipe folder (uploaded, less EXCLUDES) and the forwarded variables."""
    env = {k: v for k, v in sorted(environ.items()) if k in FORWARD_NAMES or k.startswith(FORWARD_PREFIXES)}
    env["TENSORBOARD_DIR"] = str(tensorboard_dir)
    return {"working_dir": str(REPO), "excludes": list(UPLOAD_EXCLUDES), "env_vars": dict(sorted(env.items()))}


def plan_launch(
    launcher: str,
    user_args: Sequence[str],
    *,
    environ: Mapping[str, str],
    caller_dir: Path,
    preset: str | None = None,
    nnodes: int | None = None,
    gpus_per_node: int | None = None,
    ray_num_cpus: int | None = None,
) -> LaunchPlan:
    """Check, compose once, name and create the run folder; the plan of ``launcher`` (ray-job, slurm or smoke)."""
    notes: list[str] = []
    user_overrides = hydra_overrides(user_args)
    check_override_paths(user_overrides, caller_dir, notes)
    overrides: list[str] = []
    if launcher == "smoke":
        overrides.append(f"{MODEL_KEY}={model_path(environ.get('MODEL') or SMOKE_MODEL, caller_dir, notes)}")
    elif environ.get("MODEL"):
        overrides.append(f"{MODEL_KEY}={model_path(environ['MODEL'], caller_dir, notes)}")
    if environ.get("DATA_DIR"):
        overrides.append(f"{DATA_KEY}={data_dir(environ['DATA_DIR'], caller_dir)}")
    if launcher == "smoke":
        overrides += [*SMOKE_OVERRIDES, f"trainer.total_training_steps={environ.get('STEPS') or 4}"]
    else:
        overrides = [
            *([f"preset={preset}"] if preset else []),
            f"trainer.nnodes={nnodes}",
            f"trainer.n_gpus_per_node={gpus_per_node}",
            "trainer.resume_mode=auto",
            *overrides,
            *([f"ray_kwargs.ray_init.num_cpus={ray_num_cpus}"] if ray_num_cpus else []),
        ]
    name = compose_experiment_name([*overrides, *user_overrides])
    runs = environ.get("REWARDMAP_RUNS") or (str(REPO / "runs") if launcher == "smoke" else None)
    folder = run_dir(runs, name, caller_dir)
    plan = LaunchPlan(name, folder, [*overrides, f"trainer.default_local_dir={folder / 'checkpoints'}"], notes=notes)
    if launcher == "ray-job":
        plan.runtime_env = runtime_env(environ, plan.tensorboard_dir)
    make_run_dir(folder)
    return plan


def parse_command_line(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """(launcher options, the user's arguments after ``--``)."""
    argv = list(argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(prog="python -m recipe.launch_plan", description=__doc__.split("\n")[0])
    parser.add_argument("launcher", choices=("ray-job", "slurm", "smoke"))
    parser.add_argument("--caller-dir", type=Path, default=Path.cwd(), help="where the user ran the script")
    parser.add_argument("--preset", help="ray-job: the script's preset (a preset= override wins)")
    parser.add_argument("--nnodes", type=int, help="slurm: nodes of the job")
    parser.add_argument("--gpus-per-node", type=int, help="slurm: GPUs per node")
    parser.add_argument("--ray-num-cpus", type=int, help="slurm: CPUs for a Ray the driver starts itself")
    return parser.parse_args(argv[:cut]), argv[cut + 1 :]


def main(argv: Sequence[str] | None = None) -> int:
    options, user_args = parse_command_line(sys.argv[1:] if argv is None else argv)
    environ = os.environ
    nnodes, gpus = options.nnodes, options.gpus_per_node
    if options.launcher == "ray-job":
        nnodes, gpus = int(environ.get("NNODES") or 1), int(environ.get("GPUS_PER_NODE") or 8)
    elif options.launcher == "slurm" and not (nnodes and gpus):
        print("[rewardmap] error: launch_plan slurm needs --nnodes and --gpus-per-node", file=sys.stderr)
        return 2
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the plan only
            plan = plan_launch(
                options.launcher,
                user_args,
                environ=environ,
                caller_dir=options.caller_dir.absolute(),
                preset=options.preset,
                nnodes=nnodes,
                gpus_per_node=gpus,
                ray_num_cpus=options.ray_num_cpus,
            )
    except LaunchError as err:
        print(f"[rewardmap] error: {err}", file=sys.stderr)
        return 1
    for note in plan.notes:
        print(f"[rewardmap] {note}", file=sys.stderr)
    print(plan.shell())
    return 0


if __name__ == "__main__":
    sys.exit(main())
