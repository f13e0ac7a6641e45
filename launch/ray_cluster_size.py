"""Print ``<alive nodes> <GPUs>`` of the Ray cluster at ADDRESS (the head's ``ip:port``); the SLURM scripts poll it.

    python launch/ray_cluster_size.py 10.0.0.1:6379

Exits non-zero, printing nothing on stdout, while the cluster cannot be reached: the caller retries until its
own timeout (and bounds each try with ``timeout``, since connecting to a head that is still starting can wait).
"""

from __future__ import annotations

import sys


def cluster_size(nodes: list[dict]) -> tuple[int, int]:
    """(alive nodes, whole GPUs over them) from ``ray.nodes()``."""
    alive = [node for node in nodes if node.get("Alive")]
    gpus = sum(float((node.get("Resources") or {}).get("GPU", 0)) for node in alive)
    return len(alive), int(gpus)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python launch/ray_cluster_size.py HEAD_IP:PORT", file=sys.stderr)
        return 2
    import ray

    try:
        ray.init(address=argv[0], logging_level="ERROR", log_to_driver=False)
    except Exception as err:  # noqa: BLE001 (any failure to connect means "not up yet")
        print(f"ray_cluster_size: cannot reach {argv[0]}: {err}", file=sys.stderr)
        return 1
    try:
        nodes, gpus = cluster_size(ray.nodes())
    finally:
        ray.shutdown()
    print(nodes, gpus)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
