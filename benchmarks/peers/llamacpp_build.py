"""llama.cpp's own conversion: convert_hf_to_gguf.py to f16, then llama_model_quantize.

    python benchmarks/peers/llamacpp_build.py convert CKPT OUT.gguf --src LLAMA_CPP_DIR
    python benchmarks/peers/llamacpp_build.py quantize IN.gguf OUT.gguf --type Q4_0

LLAMA_CPP_DIR holds convert_hf_to_gguf.py, conversion/ and gguf-py/ from the llama-cpp-python
sdist of the installed version (`fetch_llama_cpp_source` gets it with pip).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

_MEMBERS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")


def fetch_llama_cpp_source(python: str, dest: Path) -> Path:
    """Download the sdist of the llama-cpp-python that `python` has installed and unpack the converter."""
    if (dest / "convert_hf_to_gguf.py").is_file():
        return dest
    version = subprocess.run([python, "-c", "import llama_cpp; print(llama_cpp.__version__)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([python, "-m", "pip", "download", f"llama-cpp-python=={version}", "--no-deps",
                        "--no-binary", ":all:", "-d", tmp], check=True, capture_output=True)
        sdist = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            prefix = f"{sdist.name[:-len('.tar.gz')]}/vendor/llama.cpp/"
            members = [m for m in tar.getmembers()
                       if m.name.startswith(prefix) and m.name[len(prefix):].startswith(_MEMBERS)]
            for m in members:
                m.name = m.name[len(prefix):]
            dest.mkdir(parents=True, exist_ok=True)
            tar.extractall(dest, members=members, filter="data")
    return dest


# The converter refuses a BPE tokenizer whose pre-tokenizer hash it does not know (our benchmark
# checkpoints carry a small trained tokenizer). The pre-tokenizer name only affects text -> ids,
# never the weights or the compute, and the suite feeds token ids: for an unknown hash we name
# Qwen2's pre-tokenizer instead of failing.
_SHIM = """
import runpy, sys
from conversion import base
known = base.TextModel.get_vocab_base_pre
def get_vocab_base_pre(self, tokenizer):
    try:
        return known(self, tokenizer)
    except NotImplementedError:
        print("benchmark: unknown BPE pre-tokenizer hash, using 'qwen2'", file=sys.stderr)
        return "qwen2"
base.TextModel.get_vocab_base_pre = get_vocab_base_pre
script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
"""


def convert(checkpoint: str, out: str, src: str) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(src) / "gguf-py"), src]))
    script = Path(src) / "convert_hf_to_gguf.py"
    # The suite compares text decoders: like our build and genai's, leave a multi-token-prediction
    # head out (Qwen3.5's converter otherwise insists on finding MTP layers in the checkpoint).
    arch = json.loads((Path(checkpoint) / "config.json").read_text())["architectures"][0]
    has_mtp_head = arch.startswith(("Qwen3_5", "Qwen3Next"))  # the converters that take --no-mtp
    extra = ["--no-mtp"] if has_mtp_head and "--no-mtp" in script.read_text() else []
    subprocess.run([sys.executable, "-c", _SHIM, str(script), checkpoint, "--outfile", out, "--outtype", "f16",
                    *extra], check=True, env=env)


def quantize(source: str, out: str, qtype: str, threads: int) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype}")
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(source.encode(), out.encode(), params)
    if rc != 0:
        raise SystemExit(f"llama_model_quantize {qtype} failed with {rc}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert")
    c.add_argument("checkpoint")
    c.add_argument("out")
    c.add_argument("--src", required=True)
    q = sub.add_parser("quantize")
    q.add_argument("source")
    q.add_argument("out")
    q.add_argument("--type", default="Q4_0", choices=["Q4_0", "Q4_K_M"])
    q.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.cmd == "convert":
        convert(args.checkpoint, args.out, args.src)
    else:
        quantize(args.source, args.out, args.type, args.threads)


if __name__ == "__main__":
    main()
