"""TextStreamer: pieces concatenate to tokenizer.decode(ids), never split a character, O(1) window per token."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from qwen_edge.runtime.errors import InvalidRequestError
from qwen_edge.runtime.streaming import IncrementalDecoder, TextStreamer
from tests.conftest import TRAINED_MODEL, trained_checkpoint
from qwen_edge.checkpoint.tiny import make_tokenizer


SAMPLES = [
    "def fibonacci(n):\n    a, b = 0, 1\n    return a\n",
    "emoji 🙂🎉 and a family 👩‍👩‍👧 and a flag 🇯🇵 and a coder 👩🏽‍💻",
    "日本語のテキストと中文文本，还有한국어 텍스트。",
    "combining: e\u0301 a\u0308 n\u0303 — Zalgo: Z\u0336\u0311a\u0337\u0352l\u0338g\u0335o\u0334",
    "mixed: naïve café déjà vu, Ελληνικά, русский, العربية, हिन्दी, ไทย\t\ttabs  and   spaces\n\n",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙 ∀x∈ℝ: x²≥0 ≠ ∅",
]


def stream(tok, ids, **kwargs) -> list[str]:
    streamer = TextStreamer(tok, **kwargs)
    pieces = [streamer.push(i) for i in ids]
    pieces.append(streamer.flush())
    return pieces


def check_pieces(tok, ids, pieces, *, skip_special_tokens=True):
    expected = tok.decode(list(ids), skip_special_tokens=skip_special_tokens)
    assert "".join(pieces) == expected
    for piece in pieces[:-1]:  # only flush() may end in an incomplete character
        if piece and "\ufffd" not in expected:
            assert not piece.endswith("\ufffd")
    for piece in pieces:
        piece.encode("utf-8")  # raises on a lone surrogate
    if "\ufffd" not in expected:
        assert not any("\ufffd" in piece for piece in pieces)


@pytest.fixture(scope="module")
def byte_bpe() -> Tokenizer:
    """A tiny Qwen-style byte-level BPE: most non-ASCII characters span several tokens."""
    return make_tokenizer(384)


@pytest.fixture(scope="module")
def sentencepiece_bpe() -> Tokenizer:
    """A Llama-style BPE (Metaspace, byte fallback, a decoder that strips the leading space): decoding a
    token alone gives different text from decoding it in context."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    tok.train_from_iterator(["the quick brown fox jumps over the lazy dog " * 3, "hello world, hello there"], trainer)
    model = json.loads(tok.to_str())["model"]
    vocab = dict(model["vocab"])
    for b in range(256):
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    sp = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True))
    sp.pre_tokenizer = pre_tokenizers.Metaspace()
    sp.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                    decoders.Strip(" ", 1, 0)])
    sp.add_special_tokens(["<unk>", "<s>", "</s>"])
    return sp


@pytest.fixture(scope="module")
def trained_tokenizer() -> Tokenizer:
    return Tokenizer.from_file(str(trained_checkpoint(TRAINED_MODEL, "QWEN_EDGE_TRAINED_MODEL") / "tokenizer.json"))


# -- fixed samples -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", SAMPLES)
def test_byte_level_samples(byte_bpe, text):
    ids = byte_bpe.encode(text).ids
    pieces = stream(byte_bpe, ids)
    check_pieces(byte_bpe, ids, pieces)
    assert "".join(pieces) == text


def test_the_fixture_really_splits_characters(byte_bpe):
    # Otherwise the tests above would prove nothing: decoding one token at a time must go wrong.
    ids = byte_bpe.encode(SAMPLES[1]).ids
    assert any("\ufffd" in byte_bpe.decode([i]) for i in ids)
    assert "".join(byte_bpe.decode([i]) for i in ids) != SAMPLES[1]


@pytest.mark.parametrize("text", SAMPLES)
def test_sentencepiece_style_samples(sentencepiece_bpe, text):
    tok = sentencepiece_bpe
    ids = tok.encode(text).ids
    pieces = stream(tok, ids)
    check_pieces(tok, ids, pieces)
    # Decoding token by token loses the spaces; the window keeps them.
    if " " in tok.decode(ids):
        assert "".join(tok.decode([i]) for i in ids) != tok.decode(ids)


@pytest.mark.parametrize("text", SAMPLES)
def test_trained_tokenizer_samples(trained_tokenizer, text):
    ids = trained_tokenizer.encode(text).ids
    pieces = stream(trained_tokenizer, ids)
    check_pieces(trained_tokenizer, ids, pieces)
    assert "".join(pieces) == text


def test_trained_tokenizer_on_code(trained_tokenizer):
    text = (TRAINED_MODEL / "heldout.py.txt").read_text(encoding="utf-8")[:20000]  # the fixture found the model
    ids = trained_tokenizer.encode(text).ids
    check_pieces(trained_tokenizer, ids, stream(trained_tokenizer, ids))


@pytest.mark.parametrize("skip", [True, False])
def test_special_tokens(byte_bpe, skip):
    end = byte_bpe.token_to_id("<|im_end|>")
    start = byte_bpe.token_to_id("<|im_start|>")
    ids = [start] + byte_bpe.encode("user\n日本🙂").ids + [end] + byte_bpe.encode("é").ids + [end]
    # a special token in the middle of a character's bytes
    emoji = byte_bpe.encode("🙂").ids
    ids += emoji[:1] + [end] + emoji[1:]
    pieces = stream(byte_bpe, ids, skip_special_tokens=skip)
    check_pieces(byte_bpe, ids, pieces, skip_special_tokens=skip)
    assert ("<|im_end|>" in "".join(pieces)) is (not skip)


def test_incomplete_tail_is_flushed_like_decode(byte_bpe):
    full = byte_bpe.encode("ok 🎉👩🏽‍💻").ids
    cut = next(n for n in range(len(full), 0, -1) if byte_bpe.decode(full[:n]).endswith("\ufffd"))
    ids = full[:cut]  # cut inside a character
    streamer = TextStreamer(byte_bpe)
    pieces = [streamer.push(i) for i in ids]
    assert "".join(pieces) == byte_bpe.decode(ids).rstrip("\ufffd")
    assert streamer.pending > 0
    tail = streamer.flush()
    assert "".join(pieces) + tail == byte_bpe.decode(ids) and tail.endswith("\ufffd")
    assert streamer.flush() == ""


def test_reset_and_alias(byte_bpe):
    streamer = IncrementalDecoder(byte_bpe)
    assert streamer.push_many(byte_bpe.encode("abc ").ids) + streamer.flush() == "abc "
    streamer.reset()
    ids = byte_bpe.encode("déjà").ids
    assert streamer.push_many(ids) + streamer.flush() == "déjà"
    assert streamer.push_many(np.array(byte_bpe.encode("x").ids)) + streamer.flush() == "x"


def test_out_of_vocabulary_ids_decode_like_the_tokenizer(byte_bpe):
    ids = byte_bpe.encode("ab").ids + [10_000_000] + byte_bpe.encode("cd").ids
    check_pieces(byte_bpe, ids, stream(byte_bpe, ids))


@pytest.mark.parametrize("bad", [-1, 1 << 32, 1.0, True, "3", None])
def test_bad_token_ids(byte_bpe, bad):
    with pytest.raises(InvalidRequestError):
        TextStreamer(byte_bpe).push(bad)


def test_bad_tokenizer():
    with pytest.raises(InvalidRequestError):
        TextStreamer(object())


class CountingTokenizer:
    def __init__(self, tok):
        self.tok = tok
        self.windows: list[int] = []

    def decode(self, ids, skip_special_tokens=True):
        self.windows.append(len(ids))
        return self.tok.decode(ids, skip_special_tokens=skip_special_tokens)


def test_work_per_token_is_bounded(byte_bpe):
    text = "\n".join(SAMPLES) * 60
    ids = byte_bpe.encode(text).ids
    assert len(ids) > 10000
    counting = CountingTokenizer(byte_bpe)
    streamer = TextStreamer(counting)
    pieces = [streamer.push(i) for i in ids] + [streamer.flush()]
    assert "".join(pieces) == byte_bpe.decode(ids)
    assert max(counting.windows) <= 16  # the longest character is 4 bytes; a window spans ~2 emissions
    assert len(counting.windows) <= 2 * len(ids) + 2
    assert len(streamer._ids) < 300  # emitted ids are dropped


# -- properties --------------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=60))
@example(text="<|im_end|>")  # special-token text encodes to the special id, which decoding skips
def test_random_text_byte_level(byte_bpe, text):
    ids = byte_bpe.encode(text).ids
    pieces = stream(byte_bpe, ids)
    check_pieces(byte_bpe, ids, pieces)
    specials = [t.content for t in byte_bpe.get_added_tokens_decoder().values() if t.special]
    if not any(s in text for s in specials):
        assert "".join(pieces) == text


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=60))
def test_random_text_sentencepiece_style(sentencepiece_bpe, text):
    ids = sentencepiece_bpe.encode(text).ids
    check_pieces(sentencepiece_bpe, ids, stream(sentencepiece_bpe, ids))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids=st.lists(st.integers(0, 383), max_size=40), skip=st.booleans())
def test_random_ids_byte_level(byte_bpe, ids, skip):
    # Arbitrary ids: invalid UTF-8, lone continuation bytes, special tokens anywhere.
    check_pieces(byte_bpe, ids, stream(byte_bpe, ids, skip_special_tokens=skip), skip_special_tokens=skip)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=80), data=st.data())
def test_random_text_trained_tokenizer(trained_tokenizer, text, data):
    ids = trained_tokenizer.encode(text).ids
    check_pieces(trained_tokenizer, ids, stream(trained_tokenizer, ids))
    extra = data.draw(st.lists(st.integers(0, trained_tokenizer.get_vocab_size() - 1), max_size=20))
    check_pieces(trained_tokenizer, ids + extra, stream(trained_tokenizer, ids + extra))
