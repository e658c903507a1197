"""The reproduction suite (scripts/reproduce/): its measures on hand-made cases, every experiment's --quick run,
the report built from their results, and the committed report matching the committed results."""

import importlib
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts" / "reproduce"))

import adrelu_sparsity  # noqa: E402
import aiec  # noqa: E402
import common  # noqa: E402
import report  # noqa: E402

from hf_acts import AIEC  # noqa: E402

EXPERIMENTS = ("adrelu_fc", "adrelu_sparsity", "dynact_depth", "dynactglu_lm", "fles", "aiec")


@pytest.fixture(autouse=True)
def keep_threads():
    """The experiments set torch's thread count (``--threads``, default 1); the rest of the suite keeps its own."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_verdict():
    assert common.verdict([0.90, 0.91, 0.92], [0.80, 0.81, 0.82]) == "holds"
    assert common.verdict([0.82, 0.90, 0.86], [0.80, 0.88, 0.84]) == "holds in direction only"  # within the spread
    assert common.verdict([0.80, 0.81], [0.90, 0.91]) == "does not hold here"
    assert common.verdict([2.0, 2.1], [3.0, 3.1], higher_is_better=False) == "holds"
    assert common.verdict([0.9], [0.8]) == "holds in direction only"  # one seed: no spread to judge by


def test_eq7_sparsity_and_threshold_branch():
    model = nn.Sequential(nn.ReLU())
    assert adrelu_sparsity.sparsity(model, torch.tensor([[-1.0, 0.0, 2.0, 3.0]]))["sparsity"] == 0.5
    model = nn.Sequential(nn.PReLU())
    assert adrelu_sparsity.sparsity(model, torch.tensor([[-1.0, 1.0]]))["sparsity"] == 0.0


def test_aiec_channel_stats():
    m = AIEC(3, num_classes=2)
    x = torch.tensor([[1.0, -1.0, -2.0], [2.0, -1.0, 3.0]])  # channel 1 never fires; 3 zeros out of 6
    stats = aiec.channel_stats(nn.Sequential(m), x)
    assert stats == {"sparsity": 0.5, "dead": pytest.approx(1 / 3)}


def test_quick_runs_and_report(tmp_path):
    for name in EXPERIMENTS:
        importlib.import_module(name).main(["--quick", "--out", str(tmp_path)])
        assert (tmp_path / f"{name}.json").exists()
    out = report.main(["--results", str(tmp_path), "--output", str(tmp_path / "report.md")])
    text = out.read_text()
    for heading in ("## 1. ADReLU", "## 2. ADReLU", "## 3. dynActivation", "## 4. dynActGLU", "## 5. FleS",
                    "## 6. AIEC"):
        assert heading in text
    assert "Not run yet: `demo`" in text
    for plot in ("dynact_depth.png", "dynactglu_lm.png", "aiec.png"):
        assert (tmp_path / "report" / plot).stat().st_size > 0


@pytest.mark.slow
def test_demo_quick(tmp_path):
    demo = importlib.import_module("demo")
    rows = demo.main(["--quick", "--out", str(tmp_path)])["rows"]
    assert {r["recipe"] for r in rows} == {"demo", "swap-adrelu", "continue-silu"}
    rendered = report.main(["--results", str(tmp_path), "--output", str(tmp_path / "r.md")])
    assert "## 7. `make demo`" in rendered.read_text()


def test_committed_report_matches_committed_results(tmp_path):
    committed = ROOT / "benchmarks" / "reproductions.md"
    rebuilt = report.main(["--results", str(common.RESULTS), "--output", str(tmp_path / committed.name)])
    assert rebuilt.read_text() == committed.read_text()
