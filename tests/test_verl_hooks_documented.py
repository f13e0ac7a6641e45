"""Every module that hooks into verl or vLLM is named in the README's "How the recipe plugs into verl" table."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What hooks recipe code into verl or vLLM: their registries, their import-by-name points, a trainer base class.
HOOK_PATTERNS = (
    r"register_adv_est\(",
    r"register_trainer\(",
    r"PlatformRegistry\.register",
    r"RolloutReplicaRegistry\.register",
    r"_ROLLOUT_REGISTRY\[",
    r"_get_worker_extension_cls",
    r"VERL_USE_EXTERNAL_MODULES\b.*=",
    r"TaskRunnerV1",
    r"run_ppo\(",
)
SECTION = "### How the recipe plugs into verl"


def _hook_table() -> str:
    readme = (ROOT / "README.md").read_text()
    assert SECTION in readme
    return readme.split(SECTION, 1)[1].split("\n### ", 1)[0]


def _hooking_modules() -> set[str]:
    found = set()
    for path in sorted((ROOT / "recipe").rglob("*.py")):
        text = path.read_text()
        if any(re.search(pattern, text) for pattern in HOOK_PATTERNS):
            found.add(path.relative_to(ROOT).as_posix())
    return found


def test_every_module_hooking_into_verl_is_in_the_table() -> None:
    modules = _hooking_modules()
    assert {"recipe/advantage.py", "recipe/trainer.py", "recipe/task_runner.py", "recipe/cpu/__init__.py"} <= modules
    table = _hook_table()
    missing = sorted(module for module in modules if f"`{module}`" not in table)
    assert not missing, f"hooks into verl not in the README's table: {missing}"


def test_the_config_hooks_are_in_the_table() -> None:
    config = (ROOT / "configs" / "rewardmap.yaml").read_text()
    table = _hook_table()
    for module in re.findall(r"pkg://(recipe\.[\w.]+)", config) + re.findall(
        r"VERL_USE_EXTERNAL_MODULES: (\S+)", config
    ):
        assert module in table or f"recipe/{module.split('.', 1)[1]}.py" in table, module
