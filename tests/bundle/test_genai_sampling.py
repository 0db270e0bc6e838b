"""The checkpoint's sampling and its reasoning / tool-call tags reach the bundle: the manifest's
generation.sampling, genai_config.json's search section and model.bot/eot/bor/eor_token_id (the keys
onnxruntime-genai 0.18 reads), and the runtime's default sampling."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from qwen_edge.bundle.genai_config import SPECIAL_TOKEN_KEYS, search_section, special_token_ids
from qwen_edge.checkpoint.tiny import REASONING_TOKENS, TINY_QWEN3, make_tokenizer
from tests.conftest import make_hf_checkpoint

QWEN3_SAMPLING = {"do_sample": True, "temperature": 0.6, "top_k": 20, "top_p": 0.95}


def _gen(**fields):
    base = dict(do_sample=False, temperature=None, top_k=None, top_p=None, repetition_penalty=None)
    return SimpleNamespace(**(base | fields))


@pytest.mark.parametrize("fields, expected", [
    ({}, {"do_sample": False, "temperature": 1.0, "top_k": 1, "top_p": 1.0, "repetition_penalty": 1.0}),
    ({"temperature": 0.7, "repetition_penalty": 1.05},  # not sampling: greedy, the penalty still applies
     {"do_sample": False, "temperature": 1.0, "top_k": 1, "top_p": 1.0, "repetition_penalty": 1.05}),
    (QWEN3_SAMPLING | {"repetition_penalty": 1.05},
     {"do_sample": True, "temperature": 0.6, "top_k": 20, "top_p": 0.95, "repetition_penalty": 1.05}),
    ({"do_sample": True}, {"do_sample": True, "temperature": 1.0, "top_k": 50, "top_p": 1.0, "repetition_penalty": 1.0}),
    ({"do_sample": True, "temperature": 0.0}, {"do_sample": False, "temperature": 1.0, "top_k": 1, "top_p": 1.0,
                                               "repetition_penalty": 1.0}),
])
def test_search_section(fields, expected):
    search = search_section(_gen(**fields), 4096, False)
    assert {k: search[k] for k in expected} == expected
    assert search["max_length"] == 4096 and search["num_beams"] == 1


def test_special_token_ids_only_from_added_tokens(tmp_path):
    plain = tmp_path / "plain.json"
    make_tokenizer(384).save(str(plain))
    assert special_token_ids(plain) == {}
    tagged = tmp_path / "tagged.json"
    tok = make_tokenizer(384, REASONING_TOKENS)
    tok.save(str(tagged))
    expected = {"bor_token_id": "<think>", "eor_token_id": "</think>", "bot_token_id": "<tool_call>",
                "eot_token_id": "</tool_call>"}
    assert special_token_ids(tagged) == {k: tok.token_to_id(v) for k, v in expected.items()}
    assert set(SPECIAL_TOKEN_KEYS) == set(expected)


@pytest.fixture(scope="module")
def sampling_bundle(tmp_path_factory):
    from qwen_edge.build import BuildRequest, build
    from qwen_edge.precision import Precision

    root = tmp_path_factory.mktemp("sampling")
    ckpt = make_hf_checkpoint(root / "ckpt", TINY_QWEN3, seed=1, added_tokens=REASONING_TOKENS)
    gen_path = ckpt / "generation_config.json"
    gen_path.write_text(json.dumps(json.loads(gen_path.read_text()) | QWEN3_SAMPLING))
    build(BuildRequest(ckpt, root / "bundle", Precision.preset("int4")))
    return root / "bundle"


def test_the_bundle_records_and_uses_the_checkpoints_sampling(sampling_bundle):
    from qwen_edge.runtime import SamplingParams, load

    manifest = json.loads((sampling_bundle / "manifest.json").read_text())
    assert manifest["generation"]["sampling"] == QWEN3_SAMPLING  # as given; repetition_penalty absent
    genai = json.loads((sampling_bundle / "genai_config.json").read_text())
    assert {k: genai["search"][k] for k in QWEN3_SAMPLING} == QWEN3_SAMPLING
    assert genai["search"]["top_k"] == 20 and genai["search"]["max_length"] == genai["model"]["context_length"]
    gen = load(sampling_bundle, verify_integrity=True)
    assert gen.default_sampling == SamplingParams(do_sample=True, temperature=0.6, top_k=20, top_p=0.95)
    tok = gen.model.tokenizer
    assert {k: genai["model"][k] for k in SPECIAL_TOKEN_KEYS} == {
        "bot_token_id": tok.token_to_id("<tool_call>"), "eot_token_id": tok.token_to_id("</tool_call>"),
        "bor_token_id": tok.token_to_id("<think>"), "eor_token_id": tok.token_to_id("</think>")}


def test_a_tokenizer_without_tags_writes_no_tag_ids(bundles):
    bundle = bundles("qwen3", "int4")
    genai = json.loads((bundle / "genai_config.json").read_text())
    assert not set(SPECIAL_TOKEN_KEYS) & set(genai["model"])
    assert genai["search"]["do_sample"] is False and genai["search"]["top_k"] == 1  # greedy as before
    assert json.loads((bundle / "manifest.json").read_text())["generation"]["sampling"] == {"do_sample": False}


def test_onnxruntime_genai_reads_the_new_keys(sampling_bundle):
    # genai refuses keys it does not know, so loading proves the names; its search defaults are ours.
    og = pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai is a test dependency; install .[test]")
    model = og.Model(str(sampling_bundle))
    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=24)
    generator = og.Generator(model, params)
    generator.append_tokens([1, 2, 3])
    generator.generate_next_token()
    assert 0 <= int(generator.get_next_tokens()[0]) < 384
    config = json.loads((sampling_bundle / "genai_config.json").read_text())
    bad = sampling_bundle.parent / "bad"
    bad.mkdir()
    for f in sampling_bundle.iterdir():
        (bad / f.name).symlink_to(f)
    (bad / "genai_config.json").unlink()
    config["model"]["not_a_genai_key_id"] = 1
    (bad / "genai_config.json").write_text(json.dumps(config))
    with pytest.raises(Exception, match="not_a_genai_key_id"):
        og.Model(str(bad))
