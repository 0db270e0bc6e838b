"""The compiled scale search gives, bit for bit, the numpy search it replaced (tests/quant/search_reference.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from qwen_edge.quant import scale_search
from tests.quant import search_reference


def _chunk(block_size: int, seed: int) -> np.ndarray:
    """[block_size, blocks] with the blocks that stress each branch of the search: ordinary
    normal, heavy-tailed, all zero, constant, nearly constant, one outlier, all positive, all
    negative, below the tiny-scale limit, huge, and a +a / -a pair at the extreme."""
    rng = np.random.default_rng(seed)
    cols = [rng.standard_normal(block_size) * 0.05 for _ in range(40)]
    cols += [rng.standard_t(2, block_size) * 0.02 for _ in range(20)]
    cols += [np.zeros(block_size), np.full(block_size, 0.125), np.full(block_size, -3.0)]
    cols += [0.5 + rng.standard_normal(block_size) * 1e-7, np.where(np.arange(block_size) == 3, 40.0, 0.01)]
    cols += [np.abs(rng.standard_normal(block_size)), -np.abs(rng.standard_normal(block_size))]
    cols += [rng.standard_normal(block_size) * 1e-38, rng.standard_normal(block_size) * 1e29]
    pair = rng.standard_normal(block_size) * 0.1
    pair[:2] = (0.7, -0.7)
    cols.append(pair)
    return np.ascontiguousarray(np.stack(cols, axis=1), dtype=np.float32)


def _weights(x: np.ndarray, seed: int) -> np.ndarray:
    w = np.random.default_rng(seed).random(x.shape).astype(np.float32)
    w[-3:] = 0.0  # padding past K
    return w / w.max()


@pytest.mark.parametrize("bits, block_size, symmetric, weighted",
                         list(itertools.product((4, 8), (16, 32, 128), (True, False), (False, True))))
def test_compiled_search_is_bitwise_the_numpy_search(bits, block_size, symmetric, weighted):
    x = _chunk(block_size, seed=bits * 1000 + block_size)
    w = _weights(x, seed=block_size) if weighted else None
    name = "search_symmetric" if symmetric else "search_asymmetric"
    codes, scales, zeros = getattr(scale_search, name)(x, bits, w)
    ref_codes, ref_scales, ref_zeros = getattr(search_reference, name)(x, bits, w)
    assert codes.dtype == np.uint8 and scales.dtype == np.float32
    np.testing.assert_array_equal(codes, ref_codes)
    np.testing.assert_array_equal(scales.view(np.uint32), ref_scales.view(np.uint32))
    if symmetric:
        assert zeros is None and ref_zeros is None
    else:
        assert zeros.dtype == np.uint8
        np.testing.assert_array_equal(zeros, ref_zeros)


def test_compiled_search_takes_a_strided_weight_view():
    """blockwise passes the importance as a column slice of a wider tiled array."""
    x = _chunk(32, seed=7)
    wide = np.concatenate([_weights(x, seed=1), np.ones_like(x)], axis=1)
    w = wide[:, : x.shape[1]]
    assert not w.flags.c_contiguous
    codes, scales, _ = scale_search.search_symmetric(x, 4, w)
    ref_codes, ref_scales, _ = search_reference.search_symmetric(x, 4, np.ascontiguousarray(w))
    np.testing.assert_array_equal(codes, ref_codes)
    np.testing.assert_array_equal(scales, ref_scales)


def test_numba_is_imported_only_when_a_search_runs():
    """numba's import costs a few tenths of a second: the runtime and a build without a search skip it."""
    import subprocess
    import sys

    code = ("import sys, numpy as np, qwen_edge.quant, qwen_edge.runtime, qwen_edge.build\n"
            "from qwen_edge.quant import QuantSpec, quantize_blockwise\n"
            "w = np.ones((4, 64), np.float32)\n"
            "quantize_blockwise(w, QuantSpec(4, 32, True, 'rtn'))\n"
            "assert 'numba' not in sys.modules\n"
            "quantize_blockwise(w, QuantSpec(4, 32, True, 'search'))\n"
            "assert 'numba' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)
