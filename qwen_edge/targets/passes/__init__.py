"""Graph and model passes: a typed, closed config and a declared contract each (`base`), registered
by name (`registry`); target files list them in order. This package holds the passes that serve
every backend (operator-support validation, ORT format, the Olive bridge); a backend's own passes
live with the backend (`qwen_edge.targets.openvino.passes`).
"""
