"""The remote cache against a real S3 API on 127.0.0.1 (moto's server): put-if-absent publishing by
concurrent jobs, cache hits, damaged entries rebuilt, failures never cached, credentials never
reported, pruning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from qwen_edge.bundle import manifest as manifest_mod
from qwen_edge.cli import main
from qwen_edge.pipeline import load_pipeline, open_cache, run_pipeline

from .conftest import SECRET

REPO = Path(__file__).resolve().parents[2]

PIPELINE = """
output = "dist"
cache = "{cache}"

[[checkpoints]]
name = "q2"
path = "{ckpts}/q2"

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


def s3_keys(url: str) -> list[str]:
    """Every object under the cache URL, relative to it."""
    import boto3

    bucket, _, prefix = url[len("s3://"):].partition("/")
    found = []
    for page in boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        found += [o["Key"][len(prefix) + 1:] for o in page.get("Contents", [])]
    return sorted(found)


def _workspace(root: Path, cache: str, ckpts: Path, text: str = PIPELINE) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "PIPELINE.toml"
    path.write_text(text.format(cache=cache, ckpts=ckpts))
    return path


def _cli(pipeline: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, "-m", "qwen_edge.cli", "pipeline", str(pipeline), "--json", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _statuses(report) -> dict[str, str]:
    return {c["name"]: c["status"] for c in report["cells"]}


def test_two_jobs_building_the_same_cells_publish_each_entry_once_then_all_hit(tmp_path, s3_bucket, tiny_checkpoints):
    jobs = [_cli(_workspace(tmp_path / f"job{i}", s3_bucket, tiny_checkpoints), "--cell", "q2/cpu-fp32",
                 "--cell", "q2/cpu-int4") for i in (1, 2)]
    reports = []
    for job in jobs:
        out, err = job.communicate(timeout=300)
        assert job.returncode == 0, err
        reports.append(json.loads(out))
    keys = {c["key"] for r in reports for c in r["cells"]}
    assert len(keys) == 2
    for key in keys:
        cells = [c for r in reports for c in r["cells"] if c["key"] == key]
        built = [c for c in cells if c["status"] == "built"]
        # each entry is published once: by one builder; any other built it too and lost, or copied it
        assert sum(c["stages"]["build"]["published"] is True for c in built) == 1, cells
        assert all(c["status"] in ("built", "copied-from-cache") for c in cells)
    objects = s3_keys(s3_bucket)
    assert sorted(o for o in objects if o.startswith("entries/")) == sorted(f"entries/{k}.json" for k in keys)
    assert len([o for o in objects if o.startswith("archives/")]) == 2  # the losers' equal archives: not twice
    for report in reports:
        text = json.dumps(report)
        assert SECRET not in text and "qwen-edge-test" not in text.replace("qwen-edge-test-", "")
        assert report["cache"] == s3_bucket
    junit = (tmp_path / "job1" / "dist" / "junit.xml").read_text()
    assert SECRET not in junit

    third = run_pipeline(load_pipeline(_workspace(tmp_path / "job3", s3_bucket, tiny_checkpoints)))
    assert set(_statuses(third).values()) == {"copied-from-cache"} and third["passed"]
    assert all(c["stages"]["gate"]["cache_hit"] for c in third["cells"] if "gate" in c["stages"])
    for cell in third["cells"]:
        assert manifest_mod.check_integrity(Path(cell["output"])) == []
    assert s3_keys(s3_bucket) == objects  # a run of cache hits writes nothing


@pytest.mark.parametrize("store", ["s3", "file"])
def test_racing_publishers_of_one_key_have_exactly_one_winner(tmp_path, tiny_checkpoints, store, request):
    url = request.getfixturevalue("s3_bucket") if store == "s3" else (tmp_path / "shared-cache").as_uri()
    path = _workspace(tmp_path / "w", url, tiny_checkpoints)
    report = run_pipeline(load_pipeline(path), cells=["q2/cpu-int4"])
    assert report["cells"][0]["stages"]["build"]["published"] is True
    again = run_pipeline(load_pipeline(_workspace(tmp_path / "w2", url, tiny_checkpoints)), cells=["q2/cpu-int4"])
    assert again["cells"][0]["status"] == "copied-from-cache"
    bundle = Path(report["cells"][0]["output"])
    cache = open_cache(url, tmp_path / "state")
    barrier = threading.Barrier(4)
    results = []

    def publish():
        barrier.wait()
        results.append(cache.publish("k" * 64, bundle, {"test": True}))

    threads = [threading.Thread(target=publish) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]
    assert cache.fetch("k" * 64, tmp_path / "fetched")
    assert manifest_mod.check_integrity(tmp_path / "fetched") == []


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _flip(data: bytes) -> bytes:
    middle = len(data) // 2  # inside a model file: the tar keeps its size and structure
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1:]


@pytest.mark.parametrize("damage", ["truncated archive", "flipped byte in archive", "archive missing",
                                    "entry manifest not JSON", "entry manifest names another bundle"])
def test_a_damaged_remote_entry_is_detected_and_rebuilt(tmp_path, s3_bucket, tiny_checkpoints, damage):
    import boto3

    first = run_pipeline(load_pipeline(_workspace(tmp_path / "a", s3_bucket, tiny_checkpoints)), cells=["q2/cpu-int4"])
    key = first["cells"][0]["key"]
    bucket, _, prefix = s3_bucket[len("s3://"):].partition("/")
    s3 = boto3.client("s3")
    entry_key = f"{prefix}/entries/{key}.json"
    entry = json.loads(s3.get_object(Bucket=bucket, Key=entry_key)["Body"].read())
    archive_key = f"{prefix}/{entry['archive']}"
    archive = s3.get_object(Bucket=bucket, Key=archive_key)["Body"].read()
    if damage == "truncated archive":
        s3.put_object(Bucket=bucket, Key=archive_key, Body=_truncate(archive))
    elif damage == "flipped byte in archive":
        s3.put_object(Bucket=bucket, Key=archive_key, Body=_flip(archive))
    elif damage == "archive missing":
        s3.delete_object(Bucket=bucket, Key=archive_key)
    elif damage == "entry manifest not JSON":
        s3.put_object(Bucket=bucket, Key=entry_key, Body=b'{"schema": 1, "key": ')
    else:
        s3.put_object(Bucket=bucket, Key=entry_key,
                      Body=json.dumps(entry | {"bundle_manifest_sha256": "0" * 64}).encode())

    again = run_pipeline(load_pipeline(_workspace(tmp_path / "b", s3_bucket, tiny_checkpoints)), cells=["q2/cpu-int4"])
    cell = again["cells"][0]
    assert cell["status"] == "built" and cell["stages"]["build"]["published"] is True, cell
    assert manifest_mod.check_integrity(Path(cell["output"])) == []
    # the entry is whole again: the next job copies it
    third = run_pipeline(load_pipeline(_workspace(tmp_path / "c", s3_bucket, tiny_checkpoints)), cells=["q2/cpu-int4"])
    assert third["cells"][0]["status"] == "copied-from-cache"
    assert (Path(third["cells"][0]["output"]) / "model.onnx.data").read_bytes() == \
        (Path(cell["output"]) / "model.onnx.data").read_bytes()


def test_a_failing_cell_leaves_nothing_in_the_cache(tmp_path, s3_bucket, tiny_checkpoints):
    import numpy as np

    from qwen_edge.checkpoint.tiny import TINY_QWEN2, make_tiny_checkpoint, random_weights, write_safetensors

    bad = tmp_path / "ckpts" / "q2"
    make_tiny_checkpoint(bad, TINY_QWEN2, seed=1)
    tensors = random_weights(TINY_QWEN2, seed=1)
    name = next(n for n in tensors if "layers.0" in n and n.endswith("weight") and tensors[n].ndim == 2)
    tensors[name] = np.full_like(tensors[name], np.nan)  # the checkpoint opens; its build fails
    write_safetensors(bad / "model.safetensors", tensors)
    text = PIPELINE.replace('gate = {{ reference = "numpy" }}',
                            'gate = {{ reference = "numpy", min_top1 = 1.0, max_kl = 0.0 }}')
    path = _workspace(tmp_path / "w", s3_bucket, tmp_path / "ckpts", text)
    report = run_pipeline(load_pipeline(path))
    by_name = {c["name"]: c for c in report["cells"]}
    assert not report["passed"]
    for cell in by_name.values():
        assert cell["status"] == "failed" and cell["stages"]["build"]["passed"] is False, cell
        assert "model.safetensors" in cell["error"] or "smoke test" in cell["error"], cell["error"]
    assert s3_keys(s3_bucket) == []  # no entry, no archive, no partial upload, no gate result


def test_a_failed_gate_is_not_cached(tmp_path, s3_bucket, tiny_checkpoints):
    text = PIPELINE.replace('gate = {{ reference = "numpy" }}',
                            'gate = {{ reference = "numpy", min_top1 = 1.0, max_kl = 0.0 }}')
    report = run_pipeline(load_pipeline(_workspace(tmp_path / "w", s3_bucket, tiny_checkpoints, text)),
                          cells=["q2/cpu-fp32"])
    cell = report["cells"][0]
    assert cell["status"] == "built" and not cell["passed"] and "KL" in cell["error"]
    assert not [o for o in s3_keys(s3_bucket) if o.startswith("gates/")]


def test_prune_a_remote_cache(tmp_path, s3_bucket, tiny_checkpoints, capsys):
    report = run_pipeline(load_pipeline(_workspace(tmp_path / "w", s3_bucket, tiny_checkpoints)))
    assert report["passed"] and len(s3_keys(s3_bucket)) == 5  # 2 entries, 2 archives, 1 gate result
    cache = open_cache(s3_bucket, tmp_path / "state")
    sizes = {e.key: e.bytes for e in cache.entries()}
    oldest = min(cache.entries(), key=lambda e: e.created).key
    assert main(["cache", "prune", s3_bucket, "--max-size", str(max(sizes.values())), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["removed"] == [oldest] and result["kept"] == 1
    assert not [o for o in s3_keys(s3_bucket) if oldest in o]
    assert main(["cache", "prune", str(tmp_path / "w" / "PIPELINE.toml"), "--older-than", "0s", "--json"]) == 0
    assert s3_keys(s3_bucket) == []


def test_credentials_in_a_cache_url_are_refused_without_being_repeated(tmp_path):
    from qwen_edge.errors import ConfigError

    with pytest.raises(ConfigError, match="s3://bucket/prefix") as err:
        open_cache(f"s3://AKIA:{SECRET}@bucket/prefix", tmp_path)
    assert SECRET not in str(err.value) and "AKIA" not in str(err.value)
    with pytest.raises(ConfigError, match="environment"):
        open_cache("s3://bucket/prefix?secret=x", tmp_path)


def test_the_key_covers_the_tool_versions_and_the_host_kind():
    from qwen_edge.pipeline.cache import build_key, tool_fingerprint

    tool = tool_fingerprint()
    assert {"onnx", "onnxruntime", "qwen-edge", "numpy"} <= set(tool["packages"])
    assert tool["machine"] and tool["system"] and tool["source_sha256"] and tool["python"]
    key, _ = build_key({"files": {}}, {"target": "cpu"}, tool)
    for changed in ({**tool, "packages": {**tool["packages"], "onnxruntime": "0.0.1"}},
                    {**tool, "machine": "elsewhere"}, {**tool, "source_sha256": "0" * 64}):
        assert build_key({"files": {}}, {"target": "cpu"}, changed)[0] != key
