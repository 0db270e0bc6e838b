"""npu-qnn quality on the trained checkpoint, executed on the HTP emulator: slow (minutes).

Small shapes (context 256, chunk 64) keep the emulated HTP to a few minutes; the full
measurement at context 1024 is `qwen-edge verify` (see the README's npu-qnn section).
"""

from __future__ import annotations

import pytest

pytest.importorskip("onnxruntime_qnn", reason="the npu-qnn target needs onnxruntime-qnn (the 'qnn' extra)")

from qwen_edge.build import BuildRequest, build  # noqa: E402
from qwen_edge.targets.qnn import load_qnn_bundle  # noqa: E402
from qwen_edge.verify.metrics import perplexity  # noqa: E402

pytestmark = pytest.mark.slow
CONTEXT, CHUNK, TOKENS = 256, 64, 512


def build_qnn(checkpoint, output, **options) -> dict:
    return build(BuildRequest(checkpoint, output, target="npu-qnn", builder_options=options))


def test_w8a16_on_the_htp_keeps_top1_and_perplexity(trained_model, tmp_path):
    from qwen_edge.verify.reference import TransformersReference

    out = tmp_path / "bundle"
    manifest = build_qnn(trained_model, out, precision="w8a16", context=CONTEXT, chunk=CHUNK,
                         calibration_tokens=512, parity_prompts=2)
    assert manifest["quality"]["passed"] and manifest["quality"]["gate"] == "enforced"
    qb = load_qnn_bundle(out)
    ids = qb.encode((trained_model / "heldout.py.txt").read_text(encoding="utf-8"))
    ref = TransformersReference(trained_model)
    window = ids[:CONTEXT]
    agree = (qb.logits(window).argmax(-1) == ref.logits(window).argmax(-1)).mean()
    assert agree >= 0.9
    bundle_ppl = perplexity(qb.logits, ids, CONTEXT, TOKENS).perplexity
    ref_ppl = perplexity(ref.logits, ids, CONTEXT, TOKENS).perplexity
    assert bundle_ppl <= 1.05 * ref_ppl, (bundle_ppl, ref_ppl)
