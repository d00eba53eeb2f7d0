"""Serving the receiver with uvicorn: in the foreground (the CLI) or in a background thread.

The background form exists for the tests and for anything that must post to a real receiver
in-process (a simulated market going through the real path): it binds the socket itself, so
port 0 gets a free port without a race, and it returns only once the server accepts requests.

uvicorn's access log is off: request lines would carry unsubscribe tokens, which name the
recipient. The app logs each outcome itself, without them.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.types import ASGIApp


def _config(app: ASGIApp, host: str, port: int, log_level: str) -> uvicorn.Config:
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False, lifespan="off", server_header=False)


def serve(app: ASGIApp, host: str, port: int) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM finish the requests in flight first)."""
    uvicorn.Server(_config(app, host, port, "info")).run()


@contextmanager
def serve_in_thread(app: ASGIApp, host: str = "127.0.0.1", port: int = 0, start_timeout_s: float = 10.0) -> Iterator[str]:
    """Run the app in a daemon thread for the block; yields its base URL (http://host:port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    port = sock.getsockname()[1]
    server = uvicorn.Server(_config(app, host, port, "warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="factory-receiver", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"the receiver did not start on {host}:{port}")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
