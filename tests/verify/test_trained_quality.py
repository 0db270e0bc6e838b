"""Quality gates on the trained checkpoint (../shared/models/qwen2-code-30m): slow, skipped without it.

Perplexity on the first 64k tokens of heldout.py.txt at context 1024 (non-overlapping windows).
"""

from __future__ import annotations

import pytest

from qwen_edge.build import BuildRequest, build
from qwen_edge.precision import Precision

pytestmark = pytest.mark.slow

TOKENS = 65536
CONTEXT = 1024


@pytest.fixture(scope="module")
def heldout_ids(request):
    from tests.conftest import TRAINED_MODEL, trained_checkpoint

    model = trained_checkpoint(TRAINED_MODEL, "QWEN_EDGE_TRAINED_MODEL")
    return model, (model / "heldout.py.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def reference_ppl(heldout_ids):
    from qwen_edge.verify.reference import TransformersReference
    from qwen_edge.verify.metrics import perplexity

    ckpt, text = heldout_ids
    ref = TransformersReference(ckpt)
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(ckpt / "tokenizer.json")).encode(text, add_special_tokens=False).ids
    return ids, perplexity(ref.logits, ids, CONTEXT, TOKENS).perplexity


def _bundle_ppl(ckpt, ids, out, precision):
    from qwen_edge.runtime import Model
    from qwen_edge.verify.metrics import perplexity

    manifest = build(BuildRequest(ckpt, out, precision))
    size = sum(f["bytes"] for f in manifest["files"].values())
    return perplexity(Model(out).logits, ids, CONTEXT, TOKENS).perplexity, size


def test_fp32_bundle_perplexity_within_0_1_percent_of_transformers(heldout_ids, reference_ppl, tmp_path):
    ckpt, _ = heldout_ids
    ids, ref = reference_ppl
    assert 8.5 < ref < 9.5  # the README's 8.943, re-measured on the bf16 weights
    ppl, _ = _bundle_ppl(ckpt, ids, tmp_path / "fp32", Precision.preset("fp32"))
    assert abs(ppl / ref - 1) <= 0.001, (ppl, ref)


def test_int4_bundle_within_2_percent_at_21_mb(heldout_ids, reference_ppl, tmp_path):
    ckpt, _ = heldout_ids
    ids, ref = reference_ppl
    ppl, size = _bundle_ppl(ckpt, ids, tmp_path / "int4", Precision.preset("int4"))
    assert size <= 21_000_000, size
    assert ppl / ref - 1 <= 0.02, (ppl, ref)
