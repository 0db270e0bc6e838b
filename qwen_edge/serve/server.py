"""Running the application under uvicorn: in the foreground (`qwen-edge serve`) or on a background
thread (tests, benchmarks, an app that embeds the server). uvicorn is told not to configure logging
and not to write its own access log: the request log is ours, and where it goes is the caller's choice."""

from __future__ import annotations

import socket
import threading
import time

from ..errors import ConfigError
from .adapter import Engine
from .middleware import LOG
from .options import ServeOptions

GRACEFUL_SHUTDOWN_S = 5


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, or a one-line ConfigError (address in use, unknown host, ...)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host.strip("[]"), port), family=family, backlog=256)
    except OSError as exc:
        raise ConfigError(f"serve: cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _server(engine: Engine, options: ServeOptions):
    import uvicorn

    from .app import create_app

    config = uvicorn.Config(create_app(engine, options), log_config=None, access_log=False, server_header=False,
                            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, lifespan="on")
    return uvicorn.Server(config)


def serve(engine: Engine, options: ServeOptions) -> None:
    """Serve until interrupted (SIGINT / SIGTERM shut down gracefully)."""
    sock = listen(options.host, options.port)
    LOG.warning("serving %r on %s (%d at once, queue %d%s)", engine.model_id, url_of(sock, options.host),
                options.parallel, options.queue, ", API key required" if options.api_key else "")
    _server(engine, options).run(sockets=[sock])


def url_of(sock: socket.socket, host: str) -> str:
    host = host.strip("[]")
    return f"http://{f'[{host}]' if ':' in host else host}:{sock.getsockname()[1]}"


class BackgroundServer:
    """The server on a thread of this process, bound before `start` returns.

        with BackgroundServer(engine, ServeOptions(port=0)) as server:
            client = OpenAI(base_url=server.url + "/v1", api_key="none")
    """

    def __init__(self, engine: Engine, options: ServeOptions):
        self.options = options
        self._sock = listen(options.host, options.port)
        self.port = self._sock.getsockname()[1]
        self.url = url_of(self._sock, options.host)
        self._server = _server(engine, options)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="qwen-edge-serve", daemon=True)

    def start(self, timeout: float = 30.0) -> "BackgroundServer":
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError("serve: the server did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


__all__ = ["BackgroundServer", "listen", "serve"]
