"""`curate serve`: start / --status / --stop on a free port with a private state folder."""
from __future__ import annotations

import os
import socket

import pytest
from typer.testing import CliRunner

from curate.cli.main import app
from curate.ops import serve as srv


def test_status_and_stop_without_a_server(tmp_path):
    r = CliRunner().invoke(app, ["serve", "--status", "--state-dir", str(tmp_path)])
    assert r.exit_code == 1 and "not running" in r.output
    r = CliRunner().invoke(app, ["serve", "--stop", "--state-dir", str(tmp_path)])
    assert r.exit_code == 0 and "nothing to stop" in r.output


def test_port_in_use_is_refused_before_anything_starts(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = CliRunner().invoke(app, ["serve", "--port", str(port), "--state-dir", str(tmp_path)])
    assert r.exit_code == 2 and f"port={port}" in r.output
    assert not (tmp_path / "serve.json").exists()


def test_banner_has_the_export_line_and_commands():
    st = {"ui_url": "http://127.0.0.1:5", "api_url": "http://127.0.0.1:5/api", "state_dir": "/s"}
    text = srv.banner(st)
    assert "export PREFECT_API_URL=http://127.0.0.1:5/api" in text
    assert "prefect deployment run curate/quickstart --watch" in text


@pytest.mark.slow
def test_serve_start_status_stop(tmp_path):
    """The real thing: server, pool, the four deployments, worker; then stop exactly those."""
    state = tmp_path / "state"
    r = CliRunner().invoke(app, ["serve", "--port", "0", "--state-dir", str(state)])
    try:
        assert r.exit_code == 0, r.output
        st = srv.read_state(state)
        assert "export PREFECT_API_URL=" + st["api_url"] in r.output
        pids = dict(st["pids"])
        assert set(pids) == {"server", "worker"}
        s = CliRunner().invoke(app, ["serve", "--status", "--state-dir", str(state)])
        assert s.exit_code == 0 and "API answers" in s.output
        deploy_log = (state / "deploy.log").read_text()
        for name in ("quickstart", "recipe", "instruction-car", "refresh"):
            assert f"Deployment 'curate/{name}' successfully created" in deploy_log
        again = CliRunner().invoke(app, ["serve", "--port", "0", "--state-dir", str(state)])
        assert again.exit_code == 2 and "already running" in again.output
    finally:
        stop = CliRunner().invoke(app, ["serve", "--stop", "--state-dir", str(state)])
    assert "worker" in stop.output and "server" in stop.output
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not srv.healthy(st["api_url"])


def test_project_root_is_the_checkout_holding_prefect_yaml():
    # after the move to curate/ops/serve.py it looked one folder too deep (inside curate/) and
    # `curate serve` failed with "has no prefect.yaml"
    from curate.ops.serve import project_root

    root = project_root()
    assert (root / "prefect.yaml").is_file() and (root / "flows" / "curate_flow.py").is_file()
    assert (root / "curate" / "ops" / "serve.py").is_file()
