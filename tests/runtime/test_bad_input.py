"""The runtime under bad input and concurrent use: typed one-line errors, never a crash or garbage."""

from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import pytest

from qwen_edge.errors import BundleError
from qwen_edge.runtime import (ContextOverflowError, GenerationError, InvalidRequestError, Model, SamplingParams,
                               load)


@pytest.fixture(scope="module", params=["qwen2", "qwen35"])
def gen(bundles, request):
    return load(bundles(request.param, "fp32"))


@pytest.mark.parametrize("prompt,match", [
    ("", "empty"),
    (b"", "empty"),
    (b"def f(\xff\xfe):", "UTF-8"),
    ("def f(\udcff):", "surrogate"),
    ([], "non-empty"),
    ([1.5, 2.0], "integers"),
    ([1, True], "integers"),
    ([1, 2**70], "int64"),
    ([[1, 2], [3, 4]], "integers"),
    (np.array([[1, 2]]), "1-D"),
    (np.array([1.0, 2.0]), "integers"),
    (np.array([1, 384]), "384"),
    ([-1], "-1"),
    (None, "NoneType"),
    (12, "int"),
])
def test_bad_prompts(gen, prompt, match):
    with pytest.raises(InvalidRequestError, match=match) as err:
        gen.generate(prompt, max_new_tokens=2)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(max_new_tokens=0), InvalidRequestError, "max_new_tokens"),
    (dict(max_new_tokens=-1), InvalidRequestError, "max_new_tokens"),
    (dict(max_new_tokens=2**40), InvalidRequestError, "max_new_tokens"),
    (dict(max_new_tokens=2.5), InvalidRequestError, "integer"),
    (dict(max_new_tokens=True), InvalidRequestError, "integer"),
    (dict(max_new_tokens=None), InvalidRequestError, "integer"),
    (dict(max_new_tokens=256), ContextOverflowError, "256"),
    (dict(stop_token_ids=["<eos>"]), InvalidRequestError, "stop_token_ids"),
    (dict(stop_token_ids=5), InvalidRequestError, "stop_token_ids"),
])
def test_bad_limits(gen, kwargs, error, match):
    with pytest.raises(error, match=match):
        gen.generate("def f(x):", **({"max_new_tokens": 4} | kwargs))


@pytest.mark.parametrize("params", [
    dict(temperature=0.0, do_sample=True), dict(temperature=float("nan"), do_sample=True),
    dict(top_p=0.0), dict(top_p=1.5), dict(top_k=-1), dict(repetition_penalty=0.0),
    dict(repetition_penalty=float("inf")), dict(seed=-1), dict(seed="x"),
])
def test_bad_sampling_parameters(gen, params):
    with pytest.raises(InvalidRequestError):
        gen.generate("def f(x):", max_new_tokens=2, sampling=SamplingParams(**params))


def test_a_prompt_longer_than_the_context(gen):
    with pytest.raises(ContextOverflowError, match="256"):
        gen.generate("x = 1\n" * 400, max_new_tokens=1)


def test_every_error_is_a_generation_error():
    assert issubclass(InvalidRequestError, GenerationError) and issubclass(ContextOverflowError, InvalidRequestError)


# ------------------------------------------------------------------------------------------ damaged bundles
def _damaged(src, tmp_path, damage):
    bundle = tmp_path / "bundle"
    shutil.copytree(src, bundle)
    damage(bundle)
    return bundle


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x10
    path.write_bytes(bytes(data))


def _edit_manifest(fn):
    def edit(bundle):
        m = json.loads((bundle / "manifest.json").read_text())
        fn(m)
        (bundle / "manifest.json").write_text(json.dumps(m))
    return edit


@pytest.mark.parametrize("damage,options,match", [
    (lambda b: _truncate(b / "model.onnx.data"), {}, "model.onnx.data"),
    (lambda b: _truncate(b / "model.onnx"), {}, "model.onnx"),
    (lambda b: (b / "model.onnx").write_bytes(b"\x08" * (b / "model.onnx").stat().st_size), {}, "model.onnx"),
    (lambda b: (b / "model.onnx.data").unlink(), {}, "model.onnx.data"),
    (lambda b: (b / "tokenizer.json").write_text("{" + " " * ((b / "tokenizer.json").stat().st_size - 1)), {},
     "tokenizer.json"),
    (lambda b: _flip(b / "model.onnx.data"), {"verify_integrity": True}, "model.onnx.data"),
    (lambda b: (b / "manifest.json").write_text("{not json"), {}, "manifest"),
    (_edit_manifest(lambda m: m["io"].update(kv_dtype="fp8")), {}, "io.kv_dtype"),
    (_edit_manifest(lambda m: m["io"].update(context_length=-4)), {}, "io.context_length"),
    (_edit_manifest(lambda m: m["io"].update(model_file="../../etc/passwd")), {}, "io.model_file"),
    (_edit_manifest(lambda m: m["generation"].update(eos_token_ids="x")), {}, "eos_token_ids"),
])
def test_damaged_bundle_is_a_bundle_error(bundles, tmp_path, damage, options, match):
    bundle = _damaged(bundles("qwen2", "fp32"), tmp_path, damage)
    with pytest.raises(BundleError, match=match) as err:
        load(bundle, **options)
    assert "\n" not in str(err.value)


def test_chat_template_that_is_not_utf8(bundles, tmp_path):
    bundle = _damaged(bundles("qwen2", "fp32"), tmp_path,
                      lambda b: (b / "chat_template.jinja").write_bytes(b"{{ '\xff' }}"))
    with pytest.raises(BundleError, match="chat_template.jinja"):
        Model(bundle)


# ------------------------------------------------------------------------------------------ threads
PROMPTS = ["def fibonacci(n):", "class Stack:", "import os\n", "for i in range(", "x = [", "print("]


def test_one_generator_from_many_threads_matches_sequential(gen):
    params = SamplingParams(do_sample=True, temperature=0.8, top_k=40, seed=3)
    expected = {p: gen.generate(p, max_new_tokens=24, sampling=params, stop_token_ids=()).token_ids for p in PROMPTS}
    results: dict[tuple[int, str], list[int]] = {}
    errors = []
    barrier = threading.Barrier(len(PROMPTS))

    def work(k: int, prompt: str) -> None:
        try:
            barrier.wait()
            for rep in range(3):
                results[(rep, prompt)] = gen.generate(prompt, max_new_tokens=24, sampling=params,
                                                      stop_token_ids=()).token_ids
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k, p)) for k, p in enumerate(PROMPTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert all(results[(rep, p)] == expected[p] for rep in range(3) for p in PROMPTS)


def test_a_generation_runs_once_in_one_thread(gen):
    g = gen.start("def f(x):", max_new_tokens=4, stop_token_ids=())
    text = "".join(g)
    with pytest.raises(InvalidRequestError, match="already been iterated"):
        list(g)
    with pytest.raises(InvalidRequestError, match="already been iterated"):
        list(g.tokens())
    assert len(g.token_ids) == 4 and text

    g = gen.start("def f(x):", max_new_tokens=8, stop_token_ids=())
    it = iter(g)
    next(it)
    outcome = []
    t = threading.Thread(target=lambda: outcome.append(pytest.raises(InvalidRequestError, list, g)))
    t.start()
    t.join()
    assert outcome and "already been iterated" in str(outcome[0].value)
    assert len(list(it)) >= 1  # the owner carries on


def test_unknown_load_option(bundles):
    with pytest.raises(InvalidRequestError, match="'verify_signatur'"):
        load(bundles("qwen2", "fp32"), verify_signatur="key.pem")
