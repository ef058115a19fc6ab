"""``curate serve``: a local Prefect server, a process work pool, the deployments, a worker.

:func:`start` runs, each as a background process in its own session (so :func:`stop` ends it
and whatever it spawned, and nothing else)::

    prefect server start --host 127.0.0.1 --port PORT        (SQLite under <state>/prefect/)
    prefect work-pool create curate --type process --overwrite
    prefect --no-prompt deploy --all                          (prefect.yaml, from the project root)
    prefect worker start --pool curate

with ``PREFECT_HOME=<state>/prefect``, ``PREFECT_API_URL=http://127.0.0.1:PORT/api`` and
analytics off. PIDs, the port and the URLs go to ``<state>/serve.json``; logs to
``<state>/server.log`` / ``worker.log`` / ``deploy.log``. The state folder defaults to
``$CURATE_SERVE_DIR`` or ``~/.curate/serve``.

Prefect CLI calls from the user's shell must use this server: :func:`start` prints the
``export PREFECT_API_URL=...`` line (otherwise each ``prefect`` command starts its own
temporary server and ``--watch`` waits on a run it never hears about).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

log = logging.getLogger(__name__)

POOL = "curate"
STATE_FILE = "serve.json"
DEFAULT_PORT = 4200


class ServeError(RuntimeError):
    """A serve step failed (the message names the step and its log file)."""


def default_state_dir() -> Path:
    return Path(os.environ.get("CURATE_SERVE_DIR", Path.home() / ".curate" / "serve"))


def project_root() -> Path:
    """The folder holding prefect.yaml, flows/ and configs/ (the curate checkout)."""
    root = Path(__file__).resolve().parent.parent.parent  # curate/ops/serve.py -> the checkout
    if not (root / "prefect.yaml").is_file():
        raise ServeError(f"{root} has no prefect.yaml: `curate serve` needs a source checkout of curate "
                         "(git clone ...; pip install -e '.[flows]')")
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _prefect_bin() -> str:
    exe = Path(sys.executable).parent / "prefect"
    return str(exe) if exe.exists() else (shutil.which("prefect") or "prefect")


def prefect_env(state_dir: Path, port: int) -> dict[str, str]:
    """Environment of every process serve starts (and of the user's prefect CLI calls)."""
    return {**os.environ, "PREFECT_HOME": str(state_dir / "prefect"),
            "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
            "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(port),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
            "PREFECT_UI_API_URL": f"http://127.0.0.1:{port}/api"}


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:  # a zombie child of this process counts as gone
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def read_state(state_dir: Path | None = None) -> dict | None:
    p = (state_dir or default_state_dir()) / STATE_FILE
    return json.loads(p.read_text()) if p.is_file() else None


def _write_state(state_dir: Path, state: dict) -> None:
    tmp = state_dir / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, state_dir / STATE_FILE)


def _spawn(cmd: list[str], log_path: Path, env: dict, cwd: Path) -> subprocess.Popen:
    with open(log_path, "ab") as f:
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)  # own process group: stop() ends it and its children


def _run(cmd: list[str], log_path: Path, env: dict, cwd: Path, step: str, timeout: float = 300) -> None:
    with open(log_path, "ab") as f:
        f.write(f"$ {' '.join(cmd)}\n".encode())
        f.flush()
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd, timeout=timeout).returncode
    if rc != 0:
        raise ServeError(f"{step} failed (exit {rc}); see {log_path}")


def start(port: int | None = DEFAULT_PORT, state_dir: Path | None = None, timeout: float = 180.0) -> dict:
    """Start server, pool, deployments and worker (see module docstring); returns the state dict.

    Args:
        port: API/UI port on 127.0.0.1 (default 4200); 0 or None picks a free one.
        state_dir: where PIDs, logs and the Prefect database live (default :func:`default_state_dir`).
        timeout: seconds to wait for the server to answer (default 180; slow machines need it).

    Raises:
        ServeError: already running, port taken, or a step failed (with its log file).
    """
    state_dir = Path(state_dir or default_state_dir()).resolve()
    st = read_state(state_dir)
    if st and any(_alive(p) for p in st.get("pids", {}).values()):
        raise ServeError(f"already running (state {state_dir}, UI {st['ui_url']}); `curate serve --stop` first")
    port = port or free_port()
    if port_in_use(port):
        raise ServeError(f"port={port}: 127.0.0.1:{port} is already in use; pass --port N (or --port 0 for a free one)")
    root = project_root()
    state_dir.mkdir(parents=True, exist_ok=True)
    env = prefect_env(state_dir, port)
    env["PWD"] = str(root)  # prefect.yaml's pull step bakes {{ $PWD }} in as the flows' working dir
    pf = _prefect_bin()
    api = env["PREFECT_API_URL"]
    state = {"port": port, "api_url": api, "ui_url": f"http://127.0.0.1:{port}", "project": str(root),
             "state_dir": str(state_dir), "prefect_home": env["PREFECT_HOME"], "pids": {},
             "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    t0 = time.perf_counter()
    server = _spawn([pf, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                    state_dir / "server.log", env, root)
    state["pids"]["server"] = server.pid
    _write_state(state_dir, state)
    try:
        while not healthy(api):
            if server.poll() is not None:
                raise ServeError(f"prefect server exited with {server.returncode}; see {state_dir / 'server.log'}")
            if time.perf_counter() - t0 > timeout:
                raise ServeError(f"prefect server did not answer at {api} within {timeout:.0f}s; "
                                 f"see {state_dir / 'server.log'}")
            time.sleep(0.5)
        log.info("server up in %.1fs", time.perf_counter() - t0)
        deploy_log = state_dir / "deploy.log"
        _run([pf, "work-pool", "create", POOL, "--type", "process", "--overwrite"], deploy_log, env, root,
             "work-pool create")
        _run([pf, "--no-prompt", "deploy", "--all"], deploy_log, env, root, "prefect deploy --all")
        worker = _spawn([pf, "worker", "start", "--pool", POOL, "--type", "process"], state_dir / "worker.log",
                        env, root)
        state["pids"]["worker"] = worker.pid
        _write_state(state_dir, state)
    except BaseException:
        stop(state_dir)
        raise
    state["seconds"] = round(time.perf_counter() - t0, 1)
    _write_state(state_dir, state)
    return state


def status(state_dir: Path | None = None) -> dict:
    """{"running": bool, "server": alive, "worker": alive, "healthy": API answers, **state}."""
    st = read_state(Path(state_dir) if state_dir else None)
    if st is None:
        return {"running": False}
    alive = {k: _alive(p) for k, p in st.get("pids", {}).items()}
    return {**st, "alive": alive, "healthy": healthy(st["api_url"]), "running": any(alive.values())}


def _kill_group(pid: int, grace: float) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)  # start_new_session made pid its group's leader
    except ProcessLookupError:
        return
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < grace and _alive(pid):
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)  # anything left in the group (flow-run children included)
    except ProcessLookupError:
        pass


def stop(state_dir: Path | None = None, grace: float = 15.0) -> list[str]:
    """Stop the worker, then the server, that :func:`start` recorded; returns what was stopped."""
    state_dir = Path(state_dir or default_state_dir())
    st = read_state(state_dir)
    if st is None:
        return []
    stopped = []
    for name in ("worker", "server"):
        pid = st.get("pids", {}).get(name)
        if pid and _alive(pid):
            _kill_group(pid, grace)
            stopped.append(f"{name} (pid {pid})")
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return stopped


def banner(st: dict) -> str:
    """What ``curate serve`` prints: the UI, the export line and commands to try."""
    return "\n".join([
        f"Prefect UI:  {st['ui_url']}",
        f"state/logs:  {st['state_dir']}  (server.log, worker.log, deploy.log, serve.json)",
        "",
        "In your shell (so `prefect` talks to this server):",
        f"  export PREFECT_API_URL={st['api_url']}",
        "",
        "Then try:",
        "  prefect deployment ls",
        "  prefect deployment run curate/quickstart --watch",
        "  prefect deployment run curate/recipe --param config=configs/full_pipeline.yaml --watch",
        "  prefect deployment run curate/refresh --watch",
        "",
        "curate serve --status    curate serve --stop",
    ])
