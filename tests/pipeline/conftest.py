"""An S3 API on the loopback address (moto's standalone server) for the remote cache tests, and the
tiny checkpoints the pipeline tests build."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest

from qwen_edge.checkpoint.tiny import TINY_QWEN2, TINY_QWEN3, make_tiny_checkpoint

SECRET = "qwen-edge-test-secret-never-in-reports"

# Two tiny checkpoints (the `tiny_checkpoints` fixture's directory as {ckpts}) by a gated fp32 and an int4
# target, with a local cache: the matrix the shard and --jobs tests build.
MATRIX = """
output = "dist"
cache = "cache"

[[checkpoints]]
name = "q2"
path = "{ckpts}/q2"

[[checkpoints]]
name = "q3"
path = "{ckpts}/q3"

[[targets]]
name = "cpu-fp32"
target = "cpu"
precision = "fp32"
gate = {{ reference = "numpy" }}

[[targets]]
name = "cpu-int4"
target = "cpu"
precision = "int4"
precision_options = {{ block_size = 32, method = "rtn" }}
"""


@pytest.fixture(scope="session")
def s3_endpoint():
    pytest.importorskip("s3fs")
    server_mod = pytest.importorskip("moto.server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture()
def s3_env(s3_endpoint, monkeypatch) -> dict[str, str]:
    """Credentials and endpoint the way a CI job gives them: in the environment."""
    env = {"AWS_ACCESS_KEY_ID": "qwen-edge-test", "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": s3_endpoint}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture()
def s3_bucket(s3_env) -> str:
    """A fresh bucket; returns the cache URL in it."""
    import boto3

    bucket = f"cache-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"]).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/ci/cache"


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pipeline-tiny-ckpts")
    make_tiny_checkpoint(root / "q2", TINY_QWEN2, seed=1)
    make_tiny_checkpoint(root / "q3", TINY_QWEN3, seed=2)
    return root
