"""Benchmarks are not tests: this checks that the quick run works and writes valid results, and the bookkeeping
(ranges over runs, re-measuring disturbed rows, moving models off their init) on hand-made cases."""

import json

import pytest
import timm
import torch

import hf_acts.bench as bench
from hf_acts.cli import main as cli


@pytest.mark.slow
def test_quick_bench_writes_json_table_and_plot(tmp_path):
    cli(["bench", "--quick", "--output-dir", str(tmp_path), "--runs", "2"])
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["quick"] and result["machine"]["torch"] and result["machine"]["isa"] and result["runs"] == 2
    assert len(result["all_runs"]) == 2
    acts = {r["activation"] for r in result["activations"]}
    assert acts == {"adrelu", "aiec", "dyrelu", "dynactivation", "fles", "swish_beta", "dynactglu_gate"}
    assert all(r["fwd_bwd_vs_base"] > 0 and r["fwd_bwd_vs_floor"] > 0 and r["fwd_bwd_vs_plain"] > 0
               for r in result["activations"])
    groups = {r["group"].split(" ")[0] for r in result["models"]}
    assert {"resnet8_cifar", "vit_tiny", "tiny", "ADReLU"} <= groups
    saved = {r["model"]: r["saved_mb"] for r in result["models"] if "saved_mb" in r}
    # memory is deterministic: the fused gate product saves gate, up, alpha and beta; eager SwiGLU saves gate, up
    # and silu(gate): one (batch 4, seq 128, 688) float32 tensor more per layer, less the two float32 scalars
    assert round((saved["swiglu"] - saved["dynactglu"]) * 2**20) == 4 * (4 * 128 * 688 * 4 - 2 * 4)
    assert saved["resnet8_cifar"] < saved["resnet8_cifar_adrelu"] < saved["resnet8_cifar_dyrelu"]
    inference = {(r["model"], r["batch"]) for r in result["inference"]}
    assert {("resnet18_adrelu", 1), ("vit_tiny_patch16_224_fles", 8), ("dynactglu", 8)} <= inference
    flops = {r["model"]: r["flops_vs_base"] for r in result["inference"] if "flops_vs_base" in r}
    assert flops["resnet18"] == 1.0 and flops["resnet18_adrelu"] > 1.0
    table = (tmp_path / "results.md").read_text()
    assert "| activation |" in table and "### Inference" in table and " (" in table  # ranges over the two runs
    assert (tmp_path / "activations.png").stat().st_size > 0


def test_each_row_divides_by_the_floor_timed_in_its_own_loop(monkeypatch):
    """The copy_ floor is timed beside the activation and its base (the VM's memory bandwidth moves between rows),
    and each ratio divides times of one loop."""
    loops = []

    def fake_times(fns, reps):
        loops.append(set(fns))
        floor = 1e-3 if len(loops) == 1 else 0.5e-3
        return {k: [v] * reps for k, v in {"act": 3e-3, "base": 2e-3, "floor": floor, "plain": 6e-3}.items()}

    monkeypatch.setattr(bench, "interleaved_times", fake_times)
    row = bench._measure(torch.relu, torch.relu, torch.relu, torch.randn(4, 4), reps=3)
    assert loops == [{"act", "base", "floor", "plain"}] * 2
    assert row["fwd_vs_floor"] == 3.0 and row["fwd_bwd_vs_floor"] == 6.0 and row["floor_ms"] == 0.5
    assert row["fwd_bwd_vs_base"] == 1.5 and row["fwd_bwd_vs_plain"] == 0.5


def test_a_ratio_is_the_median_of_ratios_within_rounds():
    """A slowdown between two calls of one round moves that round's ratio, not the result; a ratio of the two
    medians would take its numerator from the slow rounds and its denominator from the fast ones."""
    times = {"base": [1.0, 1.0, 2.0, 2.0, 1.0], "act": [1.5, 3.0, 3.0, 3.0, 1.5]}  # round 2: slowed after base ran
    assert bench.paired_ratio(times, "act", "base") == 1.5
    assert bench.paired_ratio(times, "base", "base") == 1.0
    with pytest.raises(ValueError):
        bench.paired_ratio({"base": [1.0, 2.0], "act": [1.0]}, "act", "base")


def test_summarize_gives_the_median_and_range_over_runs():
    runs = [[{"model": "a", "vs_base": v, "note": "x"}] for v in (1.5, 1.2, 1.3)]
    assert bench.summarize(runs, ("model",), ("vs_base", "missing")) == [{"model": "a", "vs_base": "1.30 (1.20-1.50)"}]
    assert bench.summarize(runs[:1], ("model",), ("vs_base",)) == [{"model": "a", "vs_base": "1.50"}]


def test_rows_whose_base_was_disturbed_are_measured_again():
    def row(name, base_ms, base="silu"):
        return {"activation": name, "base": base, "fwd_bwd_base_ms": base_ms, "fwd_bwd_vs_base": 2.0}

    # c: base twice its usual time; e, f: a group of two, where no median can say which one was disturbed
    rows = [row("a", 10.0), row("b", 10.5), row("c", 21.0), row("d", 9.8), row("e", 3.0, "relu"), row("f", 9.0, "relu")]
    again = {"c": [{"fwd_bwd_base_ms": 18.0, "fwd_bwd_vs_base": 1.1},
                   {"fwd_bwd_base_ms": 10.1, "fwd_bwd_vs_base": 2.1}]}
    bench._remeasure_outliers(rows, lambda name: again[name].pop(0))
    c = rows[2]
    assert c["base_retries"] == 2 and c["fwd_bwd_base_ms"] == 10.1 and c["fwd_bwd_vs_base"] == 2.1
    assert [r["base_retries"] for r in rows] == [0, 0, 2, 0, 0, 0]


def test_model_flops_counts_the_activations_convolutions():
    """ADReLU(16) on a 8 x 8 map: QKV conv 2 * 48 * 4 * 64, depthwise 2 * 16 * 9 * 64, proj 2 * 16 * 4 * 64 (groups
    of 4 channels); the attention and the norms are elementwise and not counted."""
    from hf_acts import ADReLU

    x = torch.randn(1, 16, 8, 8)
    assert bench.model_flops(ADReLU(16), x) == 2 * 64 * (48 * 4 + 16 * 9 + 16 * 4)
    assert bench.model_flops(torch.nn.ReLU(), x) == 0


def test_off_init_moves_only_the_activations():
    model = timm.create_model("resnet18_dynact", num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bench.off_init_(model)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.endswith(("alpha", "beta")) for k in changed)


def test_a_cpu_result_names_the_kernels_that_did_not_build(monkeypatch, tmp_path):
    # session 18: on torch 2.11 fles.cpp did not compile, and the FleS rows silently timed the plain formula
    assert all(bench.machine()["cpu_kernels"].values())
    assert bench.result_notes(bench.machine()) == "" and "cpu_kernels" not in bench.machine("meta")
    real_load = bench._cpp.load
    monkeypatch.setattr(bench._cpp, "load", lambda name: None if name == "fles" else real_load(name))
    m = bench.machine()
    assert m["cpu_kernels"] == {"adrelu": True, "fles": False, "pointwise": True}
    assert bench.result_notes(m) == "CPU kernels that did not build, so their rows time the plain formula: fles."
    monkeypatch.setattr(bench, "bench_inference", lambda quick, device: [])
    bench.script_main("inference", ["--output-dir", str(tmp_path)])
    assert (tmp_path / "inference.md").read_text().startswith("CPU kernels that did not build")
    assert json.loads((tmp_path / "inference.json").read_text())["machine"]["cpu_kernels"]["fles"] is False


def test_a_result_says_which_libraries_an_instruction_set_cap_reached(monkeypatch, tmp_path):
    # session 18's emulated AVX2 set ATEN_CPU_CAPABILITY alone: oneDNN's convolutions and MKL's GEMMs of the base
    # models kept AVX-512, against kernels built for AVX2
    for var in bench.ISA_LIMITS:
        monkeypatch.delenv(var, raising=False)
    assert bench.machine()["isa_limits"] == {} and bench.result_notes(bench.machine()) == ""
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert bench.result_notes(bench.machine()) == ("Instruction set capped through ATEN_CPU_CAPABILITY only, not "
                                                   "ONEDNN_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS: those libraries "
                                                   "used the host's.")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "AVX2")
    m = bench.machine()
    assert m["isa_limits"] == {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                               "MKL_ENABLE_INSTRUCTIONS": "AVX2"} and bench.result_notes(m) == ""
    result = {"machine": {**m, "steady_allocator": True}, "quick": True, "runs": 1, "activations": [],
              "all_runs": [{"activations": [], "models": [], "inference": []}]}
    monkeypatch.setattr(bench, "_plot", lambda rows, path: None)
    bench.write_report(result, tmp_path)
    assert ("; capped: ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2, MKL_ENABLE_INSTRUCTIONS=AVX2)"
            in (tmp_path / "results.md").read_text().splitlines()[0])
