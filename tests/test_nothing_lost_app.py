"""The app refuses requests for host names it was not started for (DNS rebinding), and the Open
workspace box refuses a path with a NUL byte. The server is the installed `densprune app` command."""

from __future__ import annotations

import base64
import os
import socket
import sys
from pathlib import Path

import pytest
from console import densprune_command, free_port, start_server, stop_server, wait_for_health

from densprune.app.serve import host_allowed, host_name


def test_host_names_allowed():
    assert host_name("LOCALHOST:8501") == "localhost" and host_name("[::1]:8501") == "::1" and host_name("") == ""
    for ok in ("localhost", "localhost:8501", "127.0.0.1:8501", "[::1]:8501", "10.1.2.3", "::1"):
        assert host_allowed(ok), ok
    for bad in ("evil.example", "evil.example:8501", "localhost.evil.example", "127.0.0.1.nip.io", "", ":8501"):
        assert not host_allowed(bad), bad
    assert host_allowed("my.box:8501", ["My.Box"]) and not host_allowed("other.box", ["my.box"])


def raw_request(port: int, host: str, path: str = "/", websocket: bool = False) -> int:
    """The HTTP status line's code of one request with the given Host (and Origin) header."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", f"Origin: http://{host}"]
    if websocket:
        key = base64.b64encode(os.urandom(16)).decode()
        lines += ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                  "Sec-WebSocket-Version: 13"]
    else:
        lines += ["Connection: close"]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        status = s.recv(4096).split(b"\r\n", 1)[0]
    return int(status.split()[1])


@pytest.mark.slow
def test_the_app_refuses_a_rebinding_host_name(small_workspace, tmp_path):
    port = free_port()
    log = tmp_path / "app.log"
    app = start_server([str(densprune_command()), "app", str(small_workspace), "--port", str(port),
                        "--allow-host", "my.box"], log)
    try:
        wait_for_health(app, f"http://127.0.0.1:{port}", 120, "densprune app", log)
        for path in ("/", "/_stcore/health"):
            assert raw_request(port, "evil.example", path) == 403
            assert raw_request(port, f"evil.example:{port}", path) == 403
            assert raw_request(port, f"127.0.0.1:{port}", path) == 200
            assert raw_request(port, f"localhost:{port}", path) == 200
            assert raw_request(port, f"my.box:{port}", path) == 200  # --allow-host
        assert raw_request(port, "evil.example", "/_stcore/stream", websocket=True) == 403
        assert raw_request(port, f"127.0.0.1:{port}", "/_stcore/stream", websocket=True) == 101
    finally:
        stop_server(app)
    assert "refused a http request for host 'evil.example'" in log.read_text()


def test_a_nul_byte_in_the_open_workspace_box_is_refused(small_workspace, monkeypatch):
    from streamlit.testing.v1 import AppTest

    root = Path(__file__).resolve().parent.parent
    monkeypatch.setattr(sys, "argv", ["app.py", "--workspace", str(small_workspace)])
    at = AppTest.from_file(str(root / "app.py"), default_timeout=60).run()
    at.text_input[0].input(str(small_workspace) + "\x00/etc")
    next(b for b in at.button if b.label == "Open").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Not a valid path" in e.value for e in at.error), [e.value for e in at.error]
    assert Path(at.session_state["workspace"]) == small_workspace.resolve()
