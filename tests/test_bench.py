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
    assert acts == {"adrelu", "aiec", "dyrelu", "dynactivation", "fles", "swish_beta", "dynactglu_gate"}
    assert all(r["fwd_bwd_vs_base"] > 0 and r["fwd_bwd_vs_floor"] > 0 for r in result["activations"])
    groups = {r["group"].split(" ")[0] for r in result["models"]}
    assert {"resnet8_cifar", "vit_tiny", "tiny", "ADReLU"} <= groups
    saved = {r["model"]: r["saved_mb"] for r in result["models"] if "saved_mb" in r}
    # memory is deterministic: the fused gate product saves gate, up, alpha and beta; eager SwiGLU saves gate, up
    # and silu(gate): one (batch 4, seq 128, 688) float32 tensor more per layer, less the two float32 scalars
    assert round((saved["swiglu"] - saved["dynactglu"]) * 2**20) == 4 * (4 * 128 * 688 * 4 - 2 * 4)
    assert saved["resnet8_cifar"] < saved["resnet8_cifar_adrelu"] < saved["resnet8_cifar_dyrelu"]
    assert "| activation |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "activations.png").stat().st_size > 0
