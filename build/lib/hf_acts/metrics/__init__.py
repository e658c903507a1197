"""Local ``evaluate`` modules (the Hub ones need internet): load them with :func:`load_metric`."""

from __future__ import annotations

from pathlib import Path

import evaluate

METRICS_DIR = Path(__file__).parent


def load_metric(name: str, **kwargs) -> evaluate.EvaluationModule:
    """``evaluate.load`` of a metric shipped with hf-acts (``accuracy``, ``top_k_accuracy``), by path."""
    path = METRICS_DIR / name
    if not (path / f"{name}.py").is_file():
        have = sorted(p.name for p in METRICS_DIR.iterdir() if (p / f"{p.name}.py").is_file())
        raise ValueError(f"no hf-acts metric {name!r}; have: {have}")
    return evaluate.load(str(path), **kwargs)
