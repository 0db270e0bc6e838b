"""Fixtures for the server's tests: bundles, a real server on a free loopback port, the official client."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the serve extra is not installed")
openai = pytest.importorskip("openai")

from qwen_edge.runtime import RuntimeOptions  # noqa: E402
from qwen_edge.serve import Engine, ServeOptions  # noqa: E402
from qwen_edge.serve.server import BackgroundServer  # noqa: E402
from qwen_edge.targets.catalog import load_generator  # noqa: E402

BODY_LIMIT = 64 * 1024

# The servers under test are on loopback: never send their requests through a proxy from the environment.
for _name in ("NO_PROXY", "no_proxy"):
    os.environ[_name] = ",".join(filter(None, [os.environ.get(_name), "127.0.0.1", "localhost"]))


@contextlib.contextmanager
def running(generator, **options):
    """A real server (uvicorn on a thread) for `generator` on 127.0.0.1, stopped on exit."""
    server = BackgroundServer(Engine(generator, options.pop("model_id", "tiny")),
                              ServeOptions(port=0, **{"max_body_bytes": BODY_LIMIT, **options}))
    with server:
        yield server


def client_for(server, **kwargs):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=kwargs.pop("api_key", "none"), max_retries=0,
                         timeout=60, **kwargs)


@pytest.fixture(scope="module")
def bundle(bundles) -> Path:
    return bundles("qwen3", "fp32")


@pytest.fixture(scope="module")
def generator(bundle):
    """Loaded the way `qwen-edge run` and `qwen-edge serve` load a bundle."""
    return load_generator(bundle, RuntimeOptions(max_cached_sequences=4))


@pytest.fixture(scope="module")
def server(generator):
    with running(generator, parallel=2, queue=8) as server:
        yield server


@pytest.fixture(scope="module")
def client(server):
    return client_for(server)
