"""A plain onnxruntime IO-binding decode loop, shared by decode_profile.py and decode_ab.py.

It runs any decoder graph with the inputs `input_ids`, `attention_mask`,
`past_key_values.N.key/value` and the outputs `logits`, `present.N.key/value` (ours and
onnxruntime-genai's builder's both have them), reading the cache's shape from the folder's
genai_config.json (both write one). No qwen_edge import, so that the same loop times every graph.

The KV cache is one fixed-capacity buffer per layer and kind, bound as both past and present, so
GroupQueryAttention updates it in place (what our runtime and onnxruntime-genai's
`past_present_share_buffer` do). The prompt runs in one pass with onnxruntime-allocated logits;
every decode step binds one token id and the attention mask, writes into one preallocated logits
buffer and picks the next token greedily (argmax).
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def machine() -> dict:
    import platform

    return {"cpus": len(os.sched_getaffinity(0)), "platform": platform.platform(),
            "python": platform.python_version(), "onnxruntime": ort.__version__}


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def session_options(threads: int, profile_prefix: str | None = None) -> ort.SessionOptions:
    """The same settings for every graph: our bundles' recommended ones (ORT_ENABLE_ALL, spinning on)."""
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1")
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return so


class Decoder:
    def __init__(self, model_dir: str | os.PathLike, threads: int, capacity: int, profile_prefix: str | None = None):
        self.dir = Path(model_dir)
        cfg = json.loads((self.dir / "genai_config.json").read_text())["model"]
        dec = cfg["decoder"]
        self.kv_heads, self.head_dim = dec["num_key_value_heads"], dec["head_size"]
        self.vocab = cfg["vocab_size"]
        self.model_file = self.dir / dec.get("filename", "model.onnx")
        self.session = ort.InferenceSession(str(self.model_file), session_options(threads, profile_prefix),
                                            providers=["CPUExecutionProvider"])
        # Every past input is bound to one buffer that is also its present output: key/value caches
        # of `capacity` positions (GroupQueryAttention writes only the new ones) and, in a hybrid
        # graph, the linear-attention layers' fixed-size states (read whole, then overwritten).
        dtypes = {"tensor(float16)": np.float16, "tensor(float)": np.float32}
        self.capacity = capacity
        self.caches, self.states = [], []
        for i in self.session.get_inputs():
            if not i.name.startswith("past"):
                continue
            present = "present" + i.name[i.name.index("."):]  # past_key_values.3.key, past.0.conv -> present.*
            if i.name.endswith((".key", ".value")):
                array = np.zeros((1, self.kv_heads, capacity, self.head_dim), dtypes[i.type])
            else:
                array = np.zeros([d if isinstance(d, int) else 1 for d in i.shape], dtypes[i.type])
                self.states.append(array)
            self.caches.append((i.name, present, array, ort.OrtValue.ortvalue_from_numpy(array)))
        # onnxruntime-genai's graphs may take position ids ([3, batch, seq] for Qwen3.5's M-RoPE).
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.position_rank = len(inputs["position_ids"].shape) if "position_ids" in inputs else 0
        logits_type = {o.name: o.type for o in self.session.get_outputs()}["logits"]
        logits_dtype = np.float16 if logits_type == "tensor(float16)" else np.float32
        self.logits = np.zeros((1, 1, self.vocab), logits_dtype)
        self.logits_value = ort.OrtValue.ortvalue_from_numpy(self.logits)
        self.mask = np.ones((1, capacity), np.int64)

    def _bind_cache(self, binding: ort.IOBinding) -> None:
        for past, present, _, value in self.caches:
            binding.bind_ortvalue_input(past, value)
            binding.bind_ortvalue_output(present, value)

    def _positions(self, start: int, length: int) -> dict[str, np.ndarray]:
        """position_ids for the graphs that take them, else nothing."""
        if not self.position_rank:
            return {}
        pos = np.arange(start, start + length, dtype=np.int64).reshape(1, length)
        return {"position_ids": np.ascontiguousarray(
            np.broadcast_to(pos, (3, 1, length)) if self.position_rank == 3 else pos)}

    def generate(self, prompt: np.ndarray, new_tokens: int) -> dict:
        """Prompt, then new_tokens - 1 decode steps. Returns timings of the steps after the first token."""
        n = prompt.shape[0]
        ids = np.zeros((1, 1), np.int64)

        def step(token: int, k: int) -> dict[str, np.ndarray]:
            ids[0, 0] = token
            return {"input_ids": ids, **self._positions(n + k, 1)}

        return self.decode({"input_ids": prompt.reshape(1, n).astype(np.int64), **self._positions(0, n)}, n,
                           new_tokens, step)

    def decode(self, prompt_feeds: dict[str, np.ndarray], n: int, new_tokens: int, step_feeds) -> dict:
        """The loop: a prompt of n tokens (`prompt_feeds` besides the mask), then new_tokens - 1 greedy steps,
        each fed `step_feeds(token, k)` (k = 0, 1, ...) besides the mask."""
        if n + new_tokens > self.capacity:
            raise ValueError("prompt + new tokens exceed the cache capacity")
        for state in self.states:  # a new sequence starts from zero states
            state.fill(0)
        pre = self.session.io_binding()
        pre.bind_output("logits", "cpu")
        self._bind_cache(pre)
        for name, value in prompt_feeds.items():
            pre.bind_cpu_input(name, value)
        pre.bind_cpu_input("attention_mask", self.mask[:, :n])
        t0 = time.perf_counter()
        self.session.run_with_iobinding(pre)
        token = int(np.argmax(pre.get_outputs()[0].numpy()[0, -1]))
        t1 = time.perf_counter()
        step = self.session.io_binding()
        step.bind_ortvalue_output("logits", self.logits_value)
        self._bind_cache(step)
        tokens = [token]
        ru0, c0 = resource.getrusage(resource.RUSAGE_SELF), time.process_time()
        t2 = time.perf_counter()
        for k in range(new_tokens - 1):
            for name, value in step_feeds(token, k).items():
                step.bind_cpu_input(name, value)
            step.bind_cpu_input("attention_mask", self.mask[:, :n + k + 1])
            self.session.run_with_iobinding(step)
            token = int(np.argmax(self.logits[0, 0]))
            tokens.append(token)
        t3 = time.perf_counter()
        c1, ru1 = time.process_time(), resource.getrusage(resource.RUSAGE_SELF)
        steps = new_tokens - 1
        return {"prefill_s": t1 - t0, "decode_steps": steps, "decode_s": t3 - t2,
                "decode_tokens_per_s": steps / (t3 - t2), "decode_cpu_ms_per_token": (c1 - c0) * 1e3 / steps,
                "involuntary_switches": ru1.ru_nivcsw - ru0.ru_nivcsw, "tokens": tokens}

    def end_profiling(self) -> str:
        return self.session.end_profiling()
