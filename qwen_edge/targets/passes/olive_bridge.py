"""Running one olive-ai pass through its Python API and checking that it produced a model.

Olive can return without writing anything; every wrapper checks the files it expects.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path
from typing import Any

from ...errors import ConfigError, GraphError


def run_olive_pass(pass_class: type, config: dict[str, Any], model, output_dir: Path, expect: list[Path]):
    os.environ.setdefault("OLIVE_DISABLE_TELEMETRY", "1")
    from olive.passes.olive_pass import create_pass_from_dict

    quiet = [logging.getLogger(name) for name in ("olive", "nncf")]
    levels = [lg.level for lg in quiet]
    try:
        for lg in quiet:
            lg.setLevel(logging.WARNING)  # library code stays quiet; the CLI reports progress
        olive_pass = create_pass_from_dict(pass_class, config, disable_search=True)
        with contextlib.redirect_stdout(io.StringIO()):
            result = olive_pass.run(model, str(output_dir))
    except (ValueError, RuntimeError, TypeError) as exc:
        raise GraphError(f"olive {pass_class.__name__}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    finally:
        for lg, level in zip(quiet, levels):
            lg.setLevel(level)
    missing = [p.name for p in expect if not p.is_file()]
    if missing:
        raise GraphError(f"olive {pass_class.__name__} returned without writing {', '.join(missing)} in {output_dir}")
    return result


def require_olive() -> None:
    try:
        import olive  # noqa: F401
    except ImportError:
        raise ConfigError("this pass needs olive-ai (pip install 'qwen-edge[olive]')") from None
