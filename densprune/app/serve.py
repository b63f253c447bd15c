"""Serve the app: Streamlit's own server with a Host check in front of every request.

The app listens on 127.0.0.1 by default, but a web page the user visits can still reach it through a
rebinding domain (``evil.example`` resolving to 127.0.0.1 after the page loaded): the browser then sends
``Host: evil.example`` and, to the same-origin page, the app's HTTP endpoints and its websocket are
open. Requests are therefore served only when their Host header names an IP address (a rebinding
attack needs a domain name), ``localhost``, or a name given with ``densprune app --allow-host NAME``;
others get 403 (HTTP) or a refused websocket handshake.

``python -m densprune.app.serve run SCRIPT [streamlit flags] -- [app args]`` is ``streamlit run`` with the
check installed; the allowed names come in ``$DENSPRUNE_ALLOW_HOSTS`` (comma-separated). The check is
an ASGI middleware added to the stack Streamlit's Starlette server builds (streamlit >= 1.67); should
that seam be missing, the server refuses to start rather than run unprotected.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable

log = logging.getLogger(__name__)

ALLOW_HOSTS_ENV = "DENSPRUNE_ALLOW_HOSTS"
WARM_UP_THREAD = "densprune-warm-up"
NO_WARM_UP_ENV = "DENSPRUNE_NO_WARM_UP"  # "1": fill no caches before the first session (to measure without it)
REFUSED = (b"densprune: this app answers only requests for localhost, its IP address or a name given with "
           b"`densprune app --allow-host NAME`\n")


def host_name(host_header: str) -> str:
    """The name part of a Host header: no port, no IPv6 brackets, lower case ('' when there is none)."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1:h.index("]")] if "]" in h else ""
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def host_allowed(host_header: str, allowed: Iterable[str] = ()) -> bool:
    """Whether a request with this Host header is served: an IP address, ``localhost`` or an allowed name."""
    name = host_name(host_header)
    if not name:
        return False
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    return name == "localhost" or name in {a.strip().lower() for a in allowed}


class HostCheck:
    """ASGI middleware: refuse HTTP requests (403) and websocket handshakes whose Host is not allowed."""

    def __init__(self, app: Callable[..., Awaitable[None]], allowed: Iterable[str] = ()) -> None:
        self.app, self.allowed = app, frozenset(a.strip().lower() for a in allowed if a.strip())

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope.get("type") in ("http", "websocket"):
            host = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k.lower() == b"host"), "")
            if not host_allowed(host, self.allowed):
                log.warning("refused a %s request for host %r (not localhost, an IP or an --allow-host name)",
                            scope["type"], host[:100])
                if scope["type"] == "http":
                    await send({"type": "http.response.start", "status": 403,
                                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                            (b"content-length", str(len(REFUSED)).encode())]})
                    await send({"type": "http.response.body", "body": REFUSED})
                else:  # closing before accepting: the server answers the handshake with 403
                    await send({"type": "websocket.close", "code": 1008})
                return
        await self.app(scope, receive, send)


def install(allowed: Iterable[str]) -> None:
    """Put HostCheck first in the middleware stack of Streamlit's server (RuntimeError when it cannot)."""
    try:
        from starlette.middleware import Middleware
        from streamlit.web.server.starlette import starlette_app
        original = starlette_app.create_streamlit_middleware
    except (ImportError, AttributeError) as exc:
        raise RuntimeError("this Streamlit has no Starlette middleware stack to add the Host check to "
                           f"({exc}); install streamlit >= 1.67") from exc
    allowed = tuple(allowed)

    def with_host_check() -> list:
        return [Middleware(HostCheck, allowed=allowed), *original()]

    starlette_app.create_streamlit_middleware = with_host_check


LISTEN_WAIT_S = 5.0  # the warm-up waits at most this long for the server to listen before it starts anyway


def wait_until_listening(timeout_s: float) -> bool:
    """Wait until Streamlit's server accepts connections on its configured address and port (True), or
    ``timeout_s`` has passed (False). The warm-up starts after that: importing the app and filling the
    caches in the same process, under the same GIL, delayed the server's first answer by ~0.4-0.6 s
    while the browser that will open the first page could not even start; once the server listens the
    browser needs ~1.5 s to load Streamlit's frontend and connect, time the warm-up has to itself."""
    import socket

    from streamlit import config

    host = str(config.get_option("server.address") or "127.0.0.1")
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    port = int(config.get_option("server.port"))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def warm_up_in_background(app_argv: list[str], wait_s: float = 60.0,
                          listen_s: float = LISTEN_WAIT_S) -> threading.Thread:
    """Start a thread that, once Streamlit's runtime exists and its server listens (at most ``listen_s``
    seconds of waiting for that), imports the app and fills the caches the first page reads
    (densprune.app.main.warm_up), so the first browser to connect does not wait for them. Best
    effort: a failure is logged and the pages compute what they need as before."""

    def work() -> None:
        # the cached functions ask for a script-run context a server thread does not have: not a problem
        logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").addFilter(
            lambda record: record.threadName != WARM_UP_THREAD)
        t0 = time.monotonic()
        try:
            from streamlit.runtime import Runtime

            while not Runtime.exists() and time.monotonic() - t0 < wait_s:
                time.sleep(0.02)
            listening = wait_until_listening(listen_s)
            log.debug("warm-up: server %s %.2f s after start", "listening" if listening else "not yet listening",
                      time.monotonic() - t0)
            from densprune.app.main import warm_up

            filled = warm_up(app_argv)
            log.info("warm-up: %s ready %.1f s after start", ", ".join(filled) or "nothing", time.monotonic() - t0)
        except Exception:  # noqa: BLE001 - the pages do the same work on their first run
            log.warning("warm-up failed; the first page computes what it needs", exc_info=True)

    thread = threading.Thread(target=work, name=WARM_UP_THREAD, daemon=True)
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> None:
    """``streamlit ARGS`` (``run SCRIPT ... [-- APP ARGS]``) with the Host check installed and the
    caches of the first page filled in the background while the server starts."""
    allowed = [h for h in os.environ.get(ALLOW_HOSTS_ENV, "").split(",") if h.strip()]
    install(allowed)
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["run"] and os.environ.get(NO_WARM_UP_ENV) != "1":
        warm_up_in_background(args[args.index("--") + 1:] if "--" in args else [])
    from streamlit.web.cli import main as streamlit_main

    sys.argv = ["streamlit", *args]
    streamlit_main()


if __name__ == "__main__":
    main()
