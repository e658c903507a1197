"""Benchmarks are not tests: this only checks that the quick run works and writes valid results."""

import json

import pytest

from hf_acts.cli import main as cli


@pytest.mark.slow
def test_quick_bench_writes_json_table_and_plot(tmp_path):
    cli(["bench", "--quick", "--output-dir", str(tmp_path)])
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["quick"] and result["machine"]["torch"]
    acts = {r["activation"] for r in result["activations"]}
    assert acts == {"adrelu", "aiec", "dyrelu", "dynactivation", "fles", "swish_beta"}
    assert all(r["fwd_bwd_vs_base"] > 0 and r["fwd_bwd_vs_floor"] > 0 for r in result["activations"])
    groups = {r["group"].split(" ")[0] for r in result["models"]}
    assert {"resnet8_cifar", "vit_tiny", "tiny", "ADReLU"} <= groups
    assert "| activation |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "activations.png").stat().st_size > 0
