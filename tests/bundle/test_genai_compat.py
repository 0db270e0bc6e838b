"""Bundles run unmodified in onnxruntime-genai and decode the same greedy tokens as our runtime."""

from __future__ import annotations

import pytest

og = pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai is a test dependency; install .[test]")


def genai_greedy(bundle, prompt_ids, new_tokens):
    model = og.Model(str(bundle))
    params = og.GeneratorParams(model)
    # Plain greedy whatever the bundle's genai_config recommends (the checkpoint's sampling, its penalty).
    params.set_search_options(do_sample=False, repetition_penalty=1.0, max_length=len(prompt_ids) + new_tokens,
                              min_length=0)
    generator = og.Generator(model, params)
    generator.append_tokens([int(t) for t in prompt_ids])
    out = []
    while not generator.is_done() and len(out) < new_tokens:
        generator.generate_next_token()
        out.append(int(generator.get_next_tokens()[0]))
    return out


def assert_same_greedy(gen, bundle, prompt, new_tokens: int) -> None:
    """Our runtime and onnxruntime-genai produce the same tokens, and stop at the same place: where
    ours stops on a stop token (which it does not return), genai's last token is that stop token."""
    from qwen_edge.runtime import SamplingParams

    result = gen.generate(prompt, max_new_tokens=new_tokens, sampling=SamplingParams.greedy())
    theirs = genai_greedy(bundle, prompt, new_tokens)
    if result.stats.finish_reason == "eos":
        assert theirs[:-1] == result.token_ids and theirs[-1] in gen.model.eos_token_ids
    else:
        assert result.stats.finish_reason == "length" and theirs == result.token_ids


@pytest.mark.parametrize("arch", ["qwen2", "qwen3", "qwen35", "qwen35_causal", "qwen35_moe", "qwen3_next"])
def test_int4_bundle_runs_in_onnxruntime_genai_with_same_greedy_tokens(arch, bundles):
    from qwen_edge.runtime import load

    bundle = bundles(arch, "int4")
    gen = load(bundle)
    assert_same_greedy(gen, bundle, gen.model.encode("def fibonacci(n):"), 32)


@pytest.mark.parametrize("arch", ["qwen2", "qwen35"])
def test_exact_speculation_bundle_runs_in_onnxruntime_genai_to_its_max_length(arch, bundles):
    """The spare attention row writes one position past the tokens: genai's buffers (max_length positions)
    hold it up to the last step, whose pass has max_length - 1 tokens."""
    from qwen_edge.runtime import load

    bundle = bundles(arch, "int4", exact_speculation=True)
    gen = load(bundle)
    prompt = gen.model.encode("def fibonacci(n):")
    assert_same_greedy(gen, bundle, prompt, 40)
    assert len(genai_greedy(bundle, prompt, 40)) == 40


@pytest.mark.slow
@pytest.mark.parametrize("which", ["qwen2", "qwen35"])
def test_trained_int4_bundle_same_64_greedy_tokens_in_genai_and_ours(which, tmp_path):
    from qwen_edge.build import BuildRequest, build
    from qwen_edge.precision import Precision
    from qwen_edge.runtime import SamplingParams, load
    from tests.conftest import TRAINED_MODEL, TRAINED_QWEN35, trained_checkpoint

    checkpoint = trained_checkpoint(*{"qwen2": (TRAINED_MODEL, "QWEN_EDGE_TRAINED_MODEL"),
                                      "qwen35": (TRAINED_QWEN35, "QWEN_EDGE_TRAINED_QWEN35")}[which])
    bundle = tmp_path / "int4"
    build(BuildRequest(checkpoint, bundle, Precision.preset("int4")))
    gen = load(bundle)
    prompt = gen.model.encode("import os\nimport sys\n\n\ndef parse_args(argv):\n    \"\"\"Parse the command line.\"\"\"\n")
    ours = gen.generate(prompt, max_new_tokens=64, stop_token_ids=(), sampling=SamplingParams.greedy()).token_ids
    theirs = genai_greedy(bundle, prompt, 64)
    assert len(ours) == 64
    assert theirs == ours
