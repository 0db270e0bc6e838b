"""The server's settings, checked when made (one-line ConfigError naming the setting)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

DEFAULT_HOST = "127.0.0.1"  # loopback unless told otherwise
DEFAULT_PORT = 8080


@dataclass(frozen=True)
class ServeOptions:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT  # 0 = any free port
    api_key: str | None = None  # when set, /v1/ requests need `Authorization: Bearer <key>`
    parallel: int = 1  # generations at once over the one loaded model
    queue: int = 16  # requests that may wait for a slot; beyond that, 429 with Retry-After
    max_body_bytes: int = 4 << 20  # larger request bodies get 413
    model_id: str = "qwen-edge"  # the name /v1/models lists and requests may name

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ConfigError("serve: --host must be a host name or address")
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ConfigError(f"serve: --port must be in [0, 65535], got {self.port!r}")
        if self.api_key is not None and (not isinstance(self.api_key, str) or not self.api_key.strip()):
            raise ConfigError("serve: --api-key must not be empty")
        if not isinstance(self.parallel, int) or not 1 <= self.parallel <= 256:
            raise ConfigError(f"serve: --parallel must be in [1, 256], got {self.parallel!r}")
        if not isinstance(self.queue, int) or not 0 <= self.queue <= 100_000:
            raise ConfigError(f"serve: --queue must be in [0, 100000], got {self.queue!r}")
        if not isinstance(self.max_body_bytes, int) or self.max_body_bytes < 1024:
            raise ConfigError(f"serve: the body limit must be at least 1024 bytes, got {self.max_body_bytes!r}")
        if not isinstance(self.model_id, str) or not self.model_id:
            raise ConfigError("serve: the model id must be a non-empty string")


__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "ServeOptions"]
