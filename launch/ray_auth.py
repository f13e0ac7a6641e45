"""Ray token authentication for the launch scripts (Ray 2.60): the cluster's mode, and a fresh token for a job.

    python launch/ray_auth.py cluster-mode http://HEAD:8265   # prints token | disabled | unknown
    python launch/ray_auth.py new-token FILE                  # a new 256-bit token in FILE, mode 600

What Ray 2.60 does (README "Ray token authentication"): a process uses token authentication when
``RAY_AUTH_MODE=token`` is in its environment; a client never asks the cluster. ``ray start --head`` turns it on
by itself when it finds a token, and ``ray.init()`` does for the local Ray it starts (creating
``~/.ray/auth_token`` when none exists), but ``ray start --address`` (a worker), ``ray.init(address=...)`` and
``ray job submit`` do not: without ``RAY_AUTH_MODE=token`` they send no token and a token cluster refuses them.
A token is read from ``RAY_AUTH_TOKEN``, else the file ``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``.

``cluster-mode`` asks the dashboard (``GET /api/authentication_mode``, public even on a token cluster) so that
the submit scripts set ``RAY_AUTH_MODE=token`` for ``ray job submit`` when the cluster wants a token; when it
does and this machine has none, it exits 1 saying where to put it. ``unknown``: the dashboard did not answer
(``ray job submit`` then reports the address itself). ``new-token`` writes the per-job token of the SLURM
scripts' Ray cluster; it never overwrites a file.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import urllib.error
import urllib.request

MODE_PATH = "/api/authentication_mode"
TIMEOUT_S = 10.0
NO_TOKEN_HERE = (
    "the Ray cluster at {address} uses token authentication and this machine has no token: copy the cluster's"
    " token (on the head: ray get-auth-token) into ~/.ray/auth_token (chmod 600) or a file named by"
    " RAY_AUTH_TOKEN_PATH"
)


def cluster_mode(address: str, timeout: float = TIMEOUT_S) -> str:
    """The authentication mode the Ray dashboard at ``address`` reports: "token", "disabled", or "unknown"."""
    url = (address if "://" in address else f"http://{address}").rstrip("/") + MODE_PATH
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            mode = json.loads(response.read().decode()).get("authentication_mode")
    except (OSError, ValueError, AttributeError):  # unreachable, not a Ray dashboard, an older Ray
        return "unknown"
    return mode if mode in ("token", "disabled") else "unknown"


def has_local_token() -> bool:
    """Whether Ray finds a token on this machine (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token)."""
    from ray._raylet import AuthenticationTokenLoader

    return bool(AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True))


def new_token(path: str) -> None:
    """Write a new random token (Ray's own form: 64 hex digits) to ``path``, readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # a new file, never another's
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, secrets.token_hex(32).encode())
    finally:
        os.close(fd)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("cluster-mode", "new-token"):
        print("usage: python launch/ray_auth.py cluster-mode DASHBOARD_URL | new-token FILE", file=sys.stderr)
        return 2
    command, arg = argv
    if command == "new-token":
        try:
            new_token(arg)
        except OSError as err:
            print(f"[rewardmap] error: cannot write a Ray token to {arg}: {err}", file=sys.stderr)
            return 1
        return 0
    mode = cluster_mode(arg)
    if mode == "token" and not has_local_token():
        print(f"[rewardmap] error: {NO_TOKEN_HERE.format(address=arg)}", file=sys.stderr)
        return 1
    print(mode)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
