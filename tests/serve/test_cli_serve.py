"""`qwen-edge serve` as a user runs it: a process that binds loopback, logs one line per request, stops
cleanly on Ctrl-C; and the server's libraries stay out of the runtime and the CLI until it is used."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest

from qwen_edge.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_serve_process_binds_loopback_logs_and_stops_on_interrupt(bundle):
    proc = subprocess.Popen([sys.executable, "-m", "qwen_edge.cli", "serve", str(bundle), "--port", "0",
                             "--parallel", "2"], cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        url, lines = None, []
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            found = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
            url = found.group(1) if found else None
        assert url, "".join(lines)
        assert "'bundle'" in lines[-1]  # served under the bundle directory's name by default
        reply = httpx.post(url + "/v1/completions", json={"prompt": "def f(", "max_tokens": 3}, timeout=30)
        assert reply.status_code == 200 and reply.json()["model"] == "bundle"
        assert httpx.get(url + "/v1/nothing", timeout=10).status_code == 404
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130  # the CLI's exit code for an interrupt, after a graceful shutdown
        log = proc.stderr.read()
        assert "Application shutdown complete" in log and "Traceback" not in log
        assert re.search(r"POST /v1/completions 200 tokens=\d+\+\d+ [\d.]+ms", log), log
        assert "GET /v1/nothing 404" in log and "def f(" not in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bad_options_are_one_line_config_errors(bundle, capsys):
    assert main(["serve", str(bundle), "--parallel", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qwen-edge: error: serve: --parallel") and err.count("\n") == 1


def test_a_missing_extra_names_the_install_line(bundle, capsys, monkeypatch):
    from qwen_edge.cli import serve as serve_cli

    monkeypatch.setattr(serve_cli, "SERVE_PACKAGES", ("starlette", "no_such_package_for_qwen_edge"))
    assert main(["serve", str(bundle)]) == 2
    assert "pip install 'qwen-edge[serve]'" in capsys.readouterr().err


def test_a_port_in_use_is_a_config_error(bundle, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(bundle), "--port", str(port), "--quiet"]) == 2
    assert "cannot listen on 127.0.0.1" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["qwen_edge.runtime", "qwen_edge.cli", "qwen_edge.serve"])
def test_the_server_stack_is_imported_only_when_serving(module):
    code = (f"import sys, {module}; from qwen_edge.cli.app import parser; parser(); "
            "print(sorted(m for m in ('starlette', 'uvicorn', 'sse_starlette') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
