"""launch/ray_auth.py: the cluster's authentication mode as its dashboard reports it, and a job's own token.

The dashboard is a small local HTTP server answering ``/api/authentication_mode`` as Ray 2.60's does
(``ray/dashboard/http_server_head.py``); whether a token is found here is Ray's own loader, run in a fresh
process with a scratch HOME so that the machine's ``~/.ray/auth_token`` does not count.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import stat
import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_ray_auth() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("ray_auth", REPO / "launch" / "ray_auth.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def dashboard() -> Iterator[dict[str, object]]:
    """A stand-in Ray dashboard on 127.0.0.1; set ``["body"]`` (bytes) and ``["status"]`` to what it answers."""
    answer: dict[str, object] = {"body": b'{"authentication_mode": "token"}', "status": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            answer["path"] = self.path
            answer["authorization"] = self.headers.get("Authorization")
            self.send_response(int(answer["status"]))
            self.end_headers()
            self.wfile.write(answer["body"])

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    answer["url"] = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield answer
    finally:
        server.shutdown()
        server.server_close()


def test_cluster_mode_is_what_the_dashboard_reports_and_unknown_otherwise(dashboard: dict[str, object]) -> None:
    module = load_ray_auth()
    url = str(dashboard["url"])
    assert module.cluster_mode(url + "/") == "token"
    assert dashboard["path"] == "/api/authentication_mode" and dashboard["authorization"] is None, "asks, sends none"
    dashboard["body"] = json.dumps({"authentication_mode": "disabled"}).encode()
    assert module.cluster_mode(url.removeprefix("http://")) == "disabled", "HEAD:8265 without a scheme"
    for status, body in ((404, b"not found"), (200, b"<html>"), (200, b'{"authentication_mode": "k8s"}')):
        dashboard["status"], dashboard["body"] = status, body
        assert module.cluster_mode(url) == "unknown", (status, body)
    server_gone = "http://127.0.0.1:9"  # discard port: nothing listens
    assert module.cluster_mode(server_gone, timeout=2) == "unknown"


def test_a_token_cluster_without_a_token_here_stops_the_submission(
    dashboard: dict[str, object], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = load_ray_auth()
    monkeypatch.setattr(module, "has_local_token", lambda: False)
    assert module.main(["cluster-mode", str(dashboard["url"])]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"the Ray cluster at {dashboard['url']} uses token authentication and this machine has no token" in (
        captured.err
    )
    assert "~/.ray/auth_token (chmod 600)" in captured.err and "RAY_AUTH_TOKEN_PATH" in captured.err

    monkeypatch.setattr(module, "has_local_token", lambda: True)
    assert module.main(["cluster-mode", str(dashboard["url"])]) == 0
    assert capsys.readouterr().out == "token\n"
    dashboard["body"] = b'{"authentication_mode": "disabled"}'
    monkeypatch.setattr(module, "has_local_token", lambda: pytest.fail("no token needed: not looked for"))
    assert module.main(["cluster-mode", str(dashboard["url"])]) == 0
    assert capsys.readouterr().out == "disabled\n"
    assert module.main(["cluster-mode"]) == 2


# Each case: (environment changes, then whether Ray finds a token). One process, Ray's token cache reset per case.
TOKEN_CASES = """
import json, os, runpy, sys
from ray._raylet import AuthenticationTokenLoader
has_local_token = runpy.run_path("launch/ray_auth.py")["has_local_token"]
found = []
for changes in json.loads(sys.argv[1]):
    for key, value in changes.items():
        os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
    if "WRITE" in changes:
        os.makedirs(os.path.dirname(changes["WRITE"]), exist_ok=True)
        open(changes["WRITE"], "w").write("1" * 64)
    AuthenticationTokenLoader.instance().reset_cache()
    found.append(has_local_token())
print(json.dumps(found))
"""


def test_ray_finds_a_token_where_the_readme_says(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    token = tmp_path / "job-token"
    token.write_text("0" * 64)
    cases = [
        {},  # a fresh HOME, no variable: none
        {"RAY_AUTH_TOKEN": "2" * 64},
        {"RAY_AUTH_TOKEN": None, "RAY_AUTH_TOKEN_PATH": str(token)},
        {"RAY_AUTH_TOKEN_PATH": None, "WRITE": str(home / ".ray" / "auth_token")},  # the default file
    ]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    result = subprocess.run(
        [sys.executable, "-c", TOKEN_CASES, json.dumps(cases)],
        cwd=REPO,
        env={**clean, "HOME": str(home)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == [False, True, True, True]


def test_new_token_is_private_random_and_never_overwrites(tmp_path: Path) -> None:
    module = load_ray_auth()
    old_umask = os.umask(0)  # the file is the owner's alone whatever the umask
    try:
        first, second = tmp_path / "a", tmp_path / "b"
        assert module.main(["new-token", str(first)]) == 0
        module.new_token(str(second))
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(first.stat().st_mode) == 0o600
    value = first.read_text()
    assert len(value) == 64 and set(value) <= set("0123456789abcdef") and value != second.read_text()
    assert module.main(["new-token", str(first)]) == 1, "an existing file is never replaced"
    assert first.read_text() == value


def test_the_readme_token_command_makes_a_private_token(tmp_path: Path) -> None:
    """README "ray job submit": `ray get-auth-token --generate` writes ~/.ray/auth_token with the umask's mode
    (world-readable under 022), which the command's chmod fixes; its token goes to no terminal."""
    from tests.readme_commands import COMMANDS

    (command,) = [c for c in COMMANDS if c.startswith("ray get-auth-token")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(tmp_path), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}")
    result = subprocess.run(["bash", "-c", f"umask 022 && {command}"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    token = tmp_path / ".ray" / "auth_token"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert len(token.read_text()) == 64 and token.read_text() not in result.stdout + result.stderr
