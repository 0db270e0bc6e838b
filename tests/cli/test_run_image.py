"""`qwen-edge run BUNDLE --image A --image B --chat MESSAGE` on a Qwen2.5-VL bundle: the same answer as
the runtime's chat with those image parts; bad uses are one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qwen_edge.cli import main
from qwen_edge.runtime import Generator, Model, SamplingParams

Image = pytest.importorskip("PIL.Image")


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_run_with_images_matches_the_runtime_chat(vl_bundles, tmp_path, capsys):
    rng = np.random.default_rng(2)
    paths = []
    for k, shape in enumerate([(150, 200, 3), (90, 120, 3)]):
        paths.append(str(tmp_path / f"{k}.png"))
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(paths[-1])
    bundle = vl_bundles("fp32")
    code, out, _ = _run(capsys, "run", str(bundle), "--image", paths[0], "--image", paths[1], "--chat", "what?",
                        "--greedy", "--max-new-tokens", "6", "--json")
    assert code == 0
    content = [{"type": "image", "image": p} for p in paths] + [{"type": "text", "text": "what?"}]
    expected = Generator(Model(bundle)).chat([{"role": "user", "content": content}], max_new_tokens=6,
                                             sampling=SamplingParams.greedy())
    report = json.loads(out)
    assert report["token_ids"] == expected.token_ids and report["stats"]["prompt_tokens"] > 20


def test_a_bad_image_is_one_line(vl_bundles, tmp_path, capsys):
    (tmp_path / "bad.png").write_bytes(b"nope")
    code, _, err = _run(capsys, "run", str(vl_bundles("fp32")), "--image", str(tmp_path / "bad.png"), "--chat", "x")
    assert code != 0 and "bad.png" in err and len(err.strip().splitlines()) == 1


def test_image_needs_chat(vl_bundles, capsys):
    code, _, err = _run(capsys, "run", str(vl_bundles("fp32")), "--image", "a.png", "--prompt", "x")
    assert code != 0 and "--image" in err
