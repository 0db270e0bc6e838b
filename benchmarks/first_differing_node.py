"""Which node of a decoder first gives different numbers for one M-token pass than for M one-token steps over
the same past (every node output exposed as a graph output). Found layer 0's GroupQueryAttention first on
qwen2-code-30m int4 (9.5e-7), the logits 0.10 apart; MatMulNBits before it identical.

    python benchmarks/first_differing_node.py BUNDLE [M] --expose
"""
import sys, os, shutil, numpy as np, onnx, onnxruntime as ort
bundle, M = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 8
expose = "--expose" in sys.argv
m = onnx.load(bundle + "/model.onnx", load_external_data=False)
if expose:
    have = {o.name for o in m.graph.output}
    for n in m.graph.node:
        if n.op_type in ("Cast", "Shape", "Gather", "Range", "Unsqueeze", "ReduceSum", "Sub"): continue
        for o in n.output:
            if o and o not in have and not o.startswith("present"):
                m.graph.output.append(onnx.helper.make_empty_tensor_value_info(o)); have.add(o)
path = bundle + "/first_differing_node.onnx"  # beside model.onnx.data; removed once loaded
onnx.save(m, path)
so = ort.SessionOptions(); so.intra_op_num_threads = 2; so.log_severity_level = 3
so.add_session_config_entry("session.intra_op.allow_spinning", "1")
for kv in [a for a in sys.argv if a.startswith("cfg:")]:
    k, v = kv[4:].split("=", 1); so.add_session_config_entry(k, v)
s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
os.remove(path)
names = [o.name for o in s.get_outputs()]
ins = {i.name: i for i in s.get_inputs()}
rng = np.random.default_rng(0)
P = 64
prompt = rng.integers(3, 4000, size=P + M)
def feeds(ids, past):
    f = {"input_ids": np.asarray(ids, np.int64)[None], "attention_mask": np.ones((1, past_len(past) + len(ids)), np.int64)}
    f.update(past); return f
def past_len(past):
    for k, v in past.items():
        if k.endswith(".key"): return v.shape[2]
    return 0
def empty():
    out = {}
    for name, i in ins.items():
        if name.startswith("past"):
            shape = [d if isinstance(d, int) else (1 if d == "batch_size" else 0) for d in i.type and i.shape]
            out[name] = np.zeros(shape, np.float32)
    return out
def presents(outs):
    out = {}
    for n, v in zip(names, outs):
        if n.startswith("present"):
            out[n.replace("present.", "past_key_values.", 1) if n.endswith((".key", ".value")) else n.replace("present.", "past.", 1)] = v
    return out
pre = s.run(None, feeds(prompt[:P], empty()))
past0 = presents(pre)
multi = dict(zip(names, s.run(None, feeds(prompt[P:], past0))))
singles = []
past = past0
for t in range(M):
    o = s.run(None, feeds(prompt[P + t:P + t + 1], past))
    singles.append(dict(zip(names, o))); past = presents(o)
printed = 0
for n in names:
    if n.startswith("present"): continue
    a = multi[n]
    if a.ndim < 2 or a.shape[-2] != M and not (a.ndim >= 2 and a.shape[1] == M): continue
    try:
        b = np.concatenate([sg[n] for sg in singles], axis=1)
        d = np.abs(a - b).max()
    except Exception as e:
        continue
    if d > 0 and (printed < 12 or n == "logits"):
        print(f"{d:.3g}  {n}  shape {a.shape}"); printed += 1
print("logits max diff", np.abs(multi["logits"] - np.concatenate([sg["logits"] for sg in singles], axis=1)).max())
