"""The server on the trained checkpoints' int4 bundles, through the official client (slow).

Greedy answers through the server are the runtime's own; a streamed chat has one id, the role first and
the finish reason last; a request without sampling fields samples with the checkpoint's
generation_config (seeded, so it repeats).
"""

from __future__ import annotations

import dataclasses

import pytest

from qwen_edge.runtime import RuntimeOptions, SamplingParams
from qwen_edge.targets.catalog import load_generator

from .conftest import client_for, running

pytestmark = pytest.mark.slow

MESSAGES = [{"role": "user", "content": "Write a Python function that reverses a string."}]
PROMPT = "import os\nimport sys\n\n\ndef parse_args(argv):\n"


@pytest.fixture(scope="module", params=["qwen2", "qwen35"])
def trained(request, tmp_path_factory):
    from qwen_edge.build import BuildRequest, build
    from qwen_edge.precision import Precision
    from tests.conftest import TRAINED_MODEL, TRAINED_QWEN35, trained_checkpoint

    ckpt = trained_checkpoint(*{"qwen2": (TRAINED_MODEL, "QWEN_EDGE_TRAINED_MODEL"),
                                "qwen35": (TRAINED_QWEN35, "QWEN_EDGE_TRAINED_QWEN35")}[request.param])
    out = tmp_path_factory.mktemp(f"serve-{request.param}") / "bundle"
    build(BuildRequest(ckpt, out, Precision.preset("int4")))
    generator = load_generator(out, RuntimeOptions(max_cached_sequences=4))
    with running(generator, parallel=2, queue=4, model_id=request.param) as server:
        yield request.param, generator, client_for(server)


def test_greedy_completion_and_chat_are_the_runtimes(trained):
    """temperature 0 is greedy over the bundle's other defaults (the repetition penalty stays, as in
    llama.cpp's server); with repetition_penalty 1 too it is plain argmax, SamplingParams.greedy()."""
    model_id, generator, client = trained
    assert [m.id for m in client.models.list().data] == [model_id]
    completion = client.completions.create(model=model_id, prompt=PROMPT, max_tokens=48, temperature=0,
                                           extra_body={"repetition_penalty": 1.0})
    assert completion.choices[0].text == generator.generate(PROMPT, max_new_tokens=48,
                                                            sampling=SamplingParams.greedy()).text
    assert completion.usage.completion_tokens <= 48 and completion.choices[0].text.strip()
    greedy_with_defaults = dataclasses.replace(generator.default_sampling, do_sample=False)
    completion = client.completions.create(model=model_id, prompt=PROMPT, max_tokens=48, temperature=0)
    assert completion.choices[0].text == generator.generate(PROMPT, max_new_tokens=48,
                                                            sampling=greedy_with_defaults).text

    chat = client.chat.completions.create(model=model_id, messages=MESSAGES, max_tokens=48, temperature=0)
    ours = generator.chat(MESSAGES, max_new_tokens=48, sampling=greedy_with_defaults)
    assert chat.choices[0].message.content == ours.content
    assert chat.choices[0].finish_reason == ours.finish_reason


def test_streamed_chat_shape(trained):
    model_id, _, client = trained
    chunks = list(client.chat.completions.create(model=model_id, messages=MESSAGES, max_tokens=24, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[-1].choices[0].finish_reason in ("stop", "length")
    assert all(c.choices[0].finish_reason is None for c in with_choices[:-1])
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_default_sampling_is_the_checkpoints_and_seeded_requests_repeat(trained):
    model_id, generator, client = trained
    assert generator.default_sampling.do_sample  # both trained checkpoints recommend sampling
    runs = [client.completions.create(model=model_id, prompt=PROMPT, max_tokens=32, seed=7).choices[0].text
            for _ in range(2)]
    assert runs[0] == runs[1]
