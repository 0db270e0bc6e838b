"""`qwen-edge demo`, the README's first command: it builds, runs and verifies an embedded tiny
checkpoint, on a machine without torch or transformers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_demo_passes_without_torch_transformers_or_safetensors(tmp_path):
    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('torch', 'transformers', 'safetensors'):
                    raise ImportError('blocked: ' + name)
        sys.meta_path.insert(0, Block())
        from qwen_edge.cli import main
        sys.exit(main(sys.argv[1:]))
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", code, "demo", "--json", "--workdir", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["passed"] is True and set(report["bundles"]) == {"fp32", "int4"}
    for name, bundle in report["bundles"].items():
        verification = bundle["verification"]
        assert verification["passed"] and verification["reference"] == "numpy-float64"
        assert verification["parity"]["positions"] > 0 and bundle["sample"]
        assert (Path(bundle["path"]) / "manifest.json").is_file()
    fp32 = report["bundles"]["fp32"]["verification"]["parity"]
    assert fp32["top1_agreement"] == 1.0 and fp32["max_abs_logits_diff"] < 1e-3
    assert "demo passed" in report["summary"]
