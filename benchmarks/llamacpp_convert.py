"""Run llama.cpp's convert_hf_to_gguf.py on a Qwen2 checkpoint whose small trained BPE tokenizer
has a pre-tokenizer hash the converter does not list.

The converter refuses unknown hashes. The pre-tokenizer name only affects text -> ids in
llama.cpp, never the weights or the compute, and the quality benchmark feeds token ids. So this
registers, through the converter's own `ModelBase.register` extension point, a subclass of its
Qwen2 model that names Qwen2's pre-tokenizer when the hash is unknown (the tokenizer regex is
Qwen2's, see the checkpoint's README), then runs the converter's main().

    python llamacpp_convert.py LLAMA_CPP_DIR CKPT --outtype f32 --outfile model.gguf
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> None:
    src = Path(sys.argv[1])
    sys.path[:0] = [str(src / "gguf-py"), str(src)]
    import conversion.qwen as qwen  # noqa: E402  (the converter's package, found through sys.path)
    from conversion.base import ModelBase  # noqa: E402

    @ModelBase.register("Qwen2ForCausalLM")
    class Qwen2KnownPreTokenizer(qwen.Qwen2Model):
        model_arch = qwen.Qwen2Model.model_arch

        def get_vocab_base_pre(self, tokenizer) -> str:
            try:
                return super().get_vocab_base_pre(tokenizer)
            except NotImplementedError:
                print("llamacpp_convert: unknown BPE pre-tokenizer hash, naming 'qwen2'", file=sys.stderr)
                return "qwen2"

    import convert_hf_to_gguf  # noqa: E402

    sys.argv = ["convert_hf_to_gguf.py", *sys.argv[2:]]
    convert_hf_to_gguf.main()


if __name__ == "__main__":
    main()
