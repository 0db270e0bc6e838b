"""`qwen-edge run`: the checkpoint's sampling by default, --greedy on request, flags override one by one."""

from __future__ import annotations

import argparse

import pytest

from qwen_edge.cli.run import _sampling
from qwen_edge.errors import ConfigError
from qwen_edge.runtime import SamplingParams

QWEN = SamplingParams(do_sample=True, temperature=0.7, top_k=20, top_p=0.8, repetition_penalty=1.05)


class _Gen:
    default_sampling = QWEN


def _args(**given):
    values = dict(greedy=False, temperature=None, top_k=None, top_p=None, repetition_penalty=None, seed=None)
    return argparse.Namespace(**(values | given))


def test_no_flags_means_the_bundle_defaults():
    assert _sampling(_args(), _Gen()) is None  # the runtime then uses Generator.default_sampling


def test_greedy():
    assert _sampling(_args(greedy=True), _Gen()) == SamplingParams.greedy()
    assert _sampling(_args(greedy=True, repetition_penalty=1.1), _Gen()) == SamplingParams.greedy(repetition_penalty=1.1)
    with pytest.raises(ConfigError, match="--greedy"):
        _sampling(_args(greedy=True, temperature=0.5), _Gen())


def test_flags_override_the_bundle_defaults():
    assert _sampling(_args(temperature=0.3, seed=4), _Gen()) == SamplingParams(
        do_sample=True, temperature=0.3, top_k=20, top_p=0.8, repetition_penalty=1.05, seed=4)
    assert _sampling(_args(temperature=0.0), _Gen()).do_sample is False
    assert _sampling(_args(top_k=5), object()) == SamplingParams(do_sample=True, top_k=5)  # a generator without defaults
