"""The suite's pure parts: Must-show ratios from results, and the README table made from them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def suite_modules():
    sys.path[:0] = [str(BENCH), str(BENCH / "peers")]
    try:
        import readme_table
        import run_suite
        yield run_suite, readme_table
    finally:
        del sys.path[:2]


def _run(tps, ttft):
    return {"decode_tokens_per_s_median": tps, "ttft_ms_median": ttft, "process_peak_rss_bytes": 2**29,
            "workload": {"prompt_tokens": 128, "new_tokens": 128, "runs": 5}}


def _report(run_suite, ours_tps):
    ckpt = {
        "checkpoint": "/x/qwen2.5-0.5b-random",
        "runs": {"qwen_edge int4": _run(ours_tps, 500.0), "genai int4": _run(40.0, 600.0),
                 "llama.cpp Q4_0": _run(50.0, 450.0), "openvino int4": {"skipped": "openvino_genai is not importable"}},
        "builds": {"qwen_edge int4": {"wall_s": 20.0, "peak_rss_bytes": 2**30},
                   "genai int4": {"wall_s": 50.0, "peak_rss_bytes": 4 * 2**30}},
        "weight_bytes_per_token_int4": 300 * 2**20,
    }
    ckpt["comparisons"] = run_suite.comparisons(ckpt)
    return {"date": "2026-11-23T10:00:00+00:00", "command": "run_suite.py --quick", "threads": 2,
            "machine": {"cpus": 2, "load_average_at_start": [0.1, 0.1, 0.1]}, "bandwidth": {"read_gb_s": 20.0},
            "checkpoints": {"qwen2.5-0.5b-random": ckpt},
            "must_show": run_suite.must_show(ckpt["comparisons"], None)}


def test_must_show_ratios_follow_the_numbers(suite_modules):
    run_suite, _ = suite_modules
    report = _report(run_suite, 48.0)
    cmp = report["checkpoints"]["qwen2.5-0.5b-random"]["comparisons"]
    assert cmp["decode_vs_genai int4"] == pytest.approx(1.2)
    assert cmp["ttft_vs_best_of_genai_llamacpp_q4_0"] == pytest.approx(500 / 450, abs=1e-3)
    checks = report["must_show"]
    assert checks["decode >= 1.1x genai int4"]["met"] is True
    assert checks["decode >= 1.0x llama.cpp Q4_0"]["met"] is False  # 48 < 50
    assert checks["ttft <= 1.1x best of genai int4 and llama.cpp Q4_0"]["met"] is False  # 1.111
    assert checks["build wall <= 0.5x genai builder"]["met"] is True
    assert checks["decode >= 70% of the bandwidth-bound ceiling"]["met"] is None


def test_readme_table_lists_every_entry_and_skips(suite_modules):
    run_suite, readme_table = suite_modules
    text = readme_table.table(_report(run_suite, 55.0), "suite-x.json")
    assert "| llama.cpp Q4_0 | 50.0 | 450 | 512 | 1.10x |" in text
    assert "skipped: openvino_genai is not importable" in text
    assert "| decode >= 1.0x llama.cpp Q4_0 | 1.1 | yes |" in text


def test_the_symmetric_recipe_gets_its_own_ratios_and_table(suite_modules):
    run_suite, readme_table = suite_modules
    report = _report(run_suite, 40.0)
    ckpt = report["checkpoints"]["qwen2.5-0.5b-random"]
    ckpt["runs"][run_suite.OURS_SYMMETRIC] = _run(46.0, 480.0)
    ckpt["builds"][run_suite.OURS_SYMMETRIC] = {"wall_s": 10.0, "peak_rss_bytes": 2**30}
    sym = run_suite.comparisons(ckpt, run_suite.OURS_SYMMETRIC)
    assert sym["decode_vs_genai int4"] == pytest.approx(46.0 / 40.0)
    assert sym["build_wall_vs_genai"] == pytest.approx(0.2)
    assert run_suite.comparisons(ckpt)["decode_vs_genai int4"] == pytest.approx(1.0)
    report["must_show_symmetric"] = run_suite.must_show(sym, None)
    text = readme_table.table(report, "suite-x.json")
    assert "| Must-show, ours = int4 --symmetric | value | met |" in text
    assert "| decode >= 1.1x genai int4 | 1.15 | yes |" in text


def test_readme_table_shows_the_moe_against_dense(suite_modules):
    run_suite, readme_table = suite_modules
    report = _report(run_suite, 48.0)

    def entry(active, total, tps, peak):
        return {"build": {"weights": {"active_parameters": active, "parameters": total}, "peak_rss_bytes": peak},
                "decode": {"prompt_tokens": 32, "decode_tokens_per_s_median": tps}}

    report["moe"] = {"layers": 8, "precision": "int4", "threads": 2,
                     "moe": entry(1.08e9, 5.6e9, 12.0, 2**31), "dense": entry(1.07e9, 1.07e9, 10.0, 2**30),
                     "decode_ratio_moe_over_dense": 1.2,
                     "build_memory": {"limit_bytes": 3 * 2**30, "within_limit": True}}
    text = readme_table.table(report, "suite-x.json")
    assert "| moe | 1.08 B / 5.60 B | 12.0 | 2048 |" in text
    assert "| MoE / dense decode | | 1.20x | MoE build limit 3072 (within) |" in text
    del report["moe"]
    assert "**MoE**" not in readme_table.table(report, "suite-x.json")


def test_qwen35_must_show_reads_the_ratios_and_the_long_context_memory(suite_modules):
    run_suite, _ = suite_modules
    ckpt = {"runs": {"qwen_edge int4": _run(30.0, 400.0), "genai int4": _run(28.0, 500.0),
                     "llama.cpp Q4_0": {"skipped": "convert failed: unknown architecture"}},
            "builds": {"qwen_edge int4": {"wall_s": 20.0, "peak_rss_bytes": 2**30},
                       "genai int4": {"wall_s": 50.0, "peak_rss_bytes": 4 * 2**30}},
            "long_context": {"peak_rss_vs_genai": 1.2}}
    ckpt["comparisons"] = run_suite.comparisons(ckpt)
    checks = run_suite.must_show_qwen35(ckpt)
    assert checks["decode >= 1.0x genai int4"] == {"value": round(30 / 28, 3), "met": True}
    assert checks["decode >= 1.0x llama.cpp Q4_0"] == {"value": None, "met": None}  # not run: not claimed
    assert checks["ttft <= 1.0x best of genai int4 and llama.cpp Q4_0"]["met"] is True
    assert checks["build wall <= 0.5x genai builder"] == {"value": 0.4, "met": True}
    assert checks["runtime peak RSS at the long context <= 1.0x genai"] == {"value": 1.2, "met": False}


def test_speculative_must_show_reads_each_checkpoints_floors(suite_modules):
    import suite_speculative

    def entry(code_edit, vs_genai, open_ended, same):
        ngram = {"speedup_vs_plain": code_edit, "identical_to_plain": same, "prompts": 50}
        if vs_genai is not None:
            ngram["speedup_vs_best_genai_ngram"] = vs_genai
        return {"workloads": {"code-edit": {"ngram": ngram},
                              "open-ended": {"ngram": {"speedup_vs_plain": open_ended, "identical_to_plain": 50,
                                                       "prompts": 50}}}}

    checks = suite_speculative.must_show({"checkpoints": {"a": entry(1.6, 1.3, 1.0, 50), "b": entry(1.2, None, 0.9, 49)}})
    met = {name: c["met"] for name, c in checks.items()}
    assert met["a: code-edit n-gram >= 1.5x plain"] and met["a: code-edit n-gram >= 1.2x genai n-gram"]
    assert met["a: open-ended n-gram >= 0.95x plain"] and met["a: speculative output identical to plain, every prompt and drafter"]
    assert met["b: code-edit n-gram >= 1.5x plain"] is False and met["b: open-ended n-gram >= 0.95x plain"] is False
    assert met["b: code-edit n-gram >= 1.2x genai n-gram"] is None  # Qwen3.5: genai cannot speculate
    assert checks["b: speculative output identical to plain, every prompt and drafter"] == {"value": "99/100", "met": False}
