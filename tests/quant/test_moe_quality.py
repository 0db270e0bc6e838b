"""int4 MoE bundles generate the same greedy tokens as fp32 on a tiny MoE that has learned something.

Random tiny models have near-flat next-token distributions where 4-bit noise flips the argmax at
chance (tests/test_moe.py bounds that case); a model briefly trained on a small text has the peaked
distributions of real checkpoints, so greedy agreement there measures the quantized expert path.
"""

from __future__ import annotations

import numpy as np
import pytest

from qwen_edge.build import BuildRequest, build
from qwen_edge.precision import Precision
from qwen_edge.runtime import Model
from qwen_edge.checkpoint.tiny import CORPUS, TINY_QWEN2_MOE, TINY_QWEN3_MOE

from tests.conftest import make_hf_checkpoint

NEW_TOKENS = 64


def _train(ckpt, steps: int = 120) -> list[int]:
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    ids = Tokenizer.from_file(str(ckpt / "tokenizer.json")).encode(CORPUS).ids
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(ckpt), dtype=torch.float32).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x = torch.tensor([ids])
    for _ in range(steps):
        loss = model(x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(str(ckpt))
    return ids


def _greedy(model: Model, prompt: list[int], n: int) -> list[int]:
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(model.logits(np.array(ids, np.int64))[-1].argmax()))
    return ids[len(prompt):]


@pytest.mark.slow
@pytest.mark.parametrize("config", [TINY_QWEN3_MOE, TINY_QWEN2_MOE], ids=["qwen3_moe", "qwen2_moe"])
def test_int4_greedy_tokens_agree_with_fp32(config, tmp_path):
    ckpt = make_hf_checkpoint(tmp_path / "ckpt", config, seed=2)
    ids = _train(ckpt)
    for precision in ("fp32", "int4"):
        build(BuildRequest(ckpt, tmp_path / precision, Precision.preset(precision)))
    prompt = ids[:8]
    reference = _greedy(Model(tmp_path / "fp32"), prompt, NEW_TOKENS)
    quantized = _greedy(Model(tmp_path / "int4"), prompt, NEW_TOKENS)
    agreement = np.mean(np.array(reference) == np.array(quantized))
    assert agreement >= 0.9, (agreement, reference, quantized)
    # The fp32 bundle learned the text (the premise of the comparison).
    assert np.mean(np.array(reference) == np.array(ids[8:8 + NEW_TOKENS])) >= 0.9
