"""Cost benchmarks: activations and training steps, as ratios measured within one run.

Times are medians of repeated runs timed in alternation; every ratio divides two numbers measured in the same
process, minutes apart at most. glibc's malloc is told to keep freed memory (``steady_allocator``), as it ends up
doing in a long training loop: otherwise each large tensor is a fresh ``mmap`` whose page faults dominate and
randomise the timings. ``memory`` is what autograd saves for the backward pass (bytes), which is what an activation adds
to training memory; it is exact, unlike process RSS on CPU.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .activations import DynActGLU
from .ops import _cpp, dispatch
from .registry import create_activation, named_activations

BASES: dict[str, tuple[str, dict[str, Any]]] = {  # activation -> (native base, constructor kwargs)
    "adrelu": ("relu", {}),
    "aiec": ("relu", {"num_classes": 10}),
    "dyrelu": ("relu", {}),
    "dynactivation": ("silu", {"base": "silu", "alpha_init": 1.1, "beta_init": 0.1}),  # off-init: the general path
    "fles": ("silu", {"base": "silu"}),
    "swish_beta": ("silu", {"beta_init": 1.1}),
}
NATIVE = {"relu": F.relu, "silu": F.silu, "gelu": F.gelu}
SHAPES = {"cnn": (128, 64, 32, 32), "llm": (1, 4096, 1376)}  # the activation benchmark's tensors
QUICK_SHAPES = {"cnn": (32, 64, 32, 32), "llm": (1, 1024, 1376)}


def steady_allocator() -> bool:
    """Make glibc's malloc reuse freed memory instead of returning large blocks to the OS (``mallopt``:
    mmap threshold 1 GiB, no trimming). Returns False (and changes nothing) off glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
        return all(libc.mallopt(opt, val) == 1 for opt, val in ((m_mmap_threshold, 1 << 30),
                                                                 (m_trim_threshold, (1 << 31) - 1),
                                                                 (m_top_pad, 1 << 28)))
    except (OSError, AttributeError):
        return False


SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_bf16",
              "avx512_fp16", "amx_bf16", "amx_tile", "neon", "asimd", "sve")


# The environment variables that cap the instruction set of ATen's own kernels, of oneDNN (convolutions) and of MKL
# (GEMMs): an AVX2-only CPU is emulated on a wider one by setting all three (scripts/isa_checks.sh)
ISA_LIMITS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def machine(device: str = "cpu") -> dict[str, Any]:
    """Where a result was measured: device, CPU model, its SIMD flags, the instruction set ATen dispatches to
    (``isa``: AVX2, AVX512, ...) and the caps set on it (``isa_limits``), threads, versions."""
    cpu, flags = platform.processor(), []
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
        present = next((line.split(":", 1)[1].split() for line in info if line.startswith(("flags", "Features"))),
                       [])
        flags = [f for f in SIMD_FLAGS if f in present]
    except OSError:
        pass
    gpu = torch.cuda.get_device_name() if device == "cuda" else None
    return {"device": device, "gpu": gpu, "cpu": cpu, "cpu_flags": flags,
            "isa": torch.backends.cpu.get_cpu_capability(),
            "isa_limits": {k: os.environ[k] for k in ISA_LIMITS if k in os.environ},
            "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), **({"cpu_kernels": _cpp.built()} if device == "cpu" else {})}


def result_notes(m: dict[str, Any]) -> str:
    """Warnings for a result's header: CPU kernels that did not build (their rows timed the plain formula), and an
    instruction-set cap on some libraries only (the others kept the host's wider vectors, so the bases of the ratios
    ran faster than on the CPU the cap emulates)."""
    notes = []
    missing = [k for k, ok in m.get("cpu_kernels", {}).items() if not ok]
    if missing:
        notes.append(f"CPU kernels that did not build, so their rows time the plain formula: {', '.join(missing)}.")
    limits = m.get("isa_limits", {})
    if limits and len(limits) < len(ISA_LIMITS):
        unset = ", ".join(k for k in ISA_LIMITS if k not in limits)
        notes.append(f"Instruction set capped through {', '.join(limits)} only, not {unset}: those libraries used "
                     "the host's.")
    return " ".join(notes)


def synced(fn: Callable[[], Any], device: str) -> Callable[[], Any]:
    """``fn`` followed by a device synchronisation (CUDA kernels run asynchronously), so host timers measure it."""
    if device != "cuda":
        return fn

    def run() -> Any:
        out = fn()
        torch.cuda.synchronize()
        return out
    return run


def median_time(fn: Callable[[], Any], reps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def saved_bytes(fn: Callable[[], torch.Tensor]) -> int:
    """Bytes autograd keeps for the backward pass of ``fn()`` (each storage counted once)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def _step(module_or_fn: Callable, x: torch.Tensor, backward: bool) -> Callable[[], None]:
    """One forward (in no_grad) or forward + backward of ``module_or_fn`` on ``x`` (synchronised on CUDA)."""
    xg = x.detach().requires_grad_(backward)
    grad = torch.randn_like(x)

    def step():
        if not backward:
            with torch.no_grad():
                module_or_fn(xg)
            return
        module_or_fn(xg).backward(grad)
        xg.grad = None
    return synced(step, x.device.type)


def _run(module_or_fn: Callable, x: torch.Tensor, backward: bool, reps: int) -> float:
    return median_time(_step(module_or_fn, x, backward), reps)


def _plain(fn: Callable) -> Callable:
    """``fn`` on the plain PyTorch formulas (:func:`hf_acts.ops.dispatch.plain_formulas`), for the fused-vs-plain
    column."""
    def run(*args: Any) -> Any:
        with dispatch.plain_formulas():
            return fn(*args)
    return run


def _glu_rows(x: torch.Tensor) -> dict[str, tuple[Callable, Callable]]:
    """dynActGLU's gate product ``dynact(gate) * up`` (the fused op) against eager SwiGLU's ``silu(gate) * up``."""
    up = torch.randn_like(x).requires_grad_()
    glu = DynActGLU(8, 8, alpha_init=1.1, beta_init=0.1).to(x.device)
    return {"dynactglu_gate": (lambda g: glu.gated(g, up), lambda g: F.silu(g) * up)}


def _measure(fn: Callable, ref: Callable, plain: Callable | None, x: torch.Tensor, reps: int) -> dict[str, float]:
    """Forward and forward+backward times of ``fn``, its base ``ref``, the memory floor (``out.copy_(x)``) and (eager)
    its plain formula, timed in alternation; ratios to the base, to the floor and to the plain formula. The floor is
    timed beside each row, not once per shape: on a shared VM the memory bandwidth moves between minutes while the
    compute-bound kernels do not (session 12: one shape's floor 1.6-3.9 ms over three runs, dynActivation steady at
    9.5-9.9 ms)."""
    out = torch.empty_like(x)
    row: dict[str, float] = {}
    for backward in (False, True):
        key = "fwd_bwd" if backward else "fwd"
        fns = {"act": _step(fn, x, backward), "base": _step(ref, x, backward),
               "floor": synced(lambda: out.copy_(x), x.device.type)}
        if plain is not None:
            fns["plain"] = _step(plain, x, backward)
        times = interleaved_times(fns, reps)
        t = medians(times)
        row.update({f"{key}_ms": t["act"] * 1e3, f"{key}_base_ms": t["base"] * 1e3, "floor_ms": t["floor"] * 1e3,
                    f"{key}_vs_base": paired_ratio(times, "act", "base"),
                    f"{key}_vs_floor": paired_ratio(times, "act", "floor")})
        if plain is not None:
            row[f"{key}_vs_plain"] = paired_ratio(times, "act", "plain")
    return row


BASE_TOLERANCE = 0.25  # a row whose base timing is this far from the base's median over its group is re-measured


def _remeasure_outliers(rows: list[dict[str, Any]], measure: Callable[[str], dict[str, float]],
                        retries: int = 2) -> None:
    """Rows of one (shape, dtype, mode) group share their bases (ReLU or SiLU), timed beside each activation. Where
    a row's base took ``BASE_TOLERANCE`` more or less than that base's median over the group, the machine was
    disturbed during that row: re-measure it (at most ``retries`` times) and keep the measurement whose base is
    nearest the median. ``base_retries`` records how often (0 in groups of fewer than three rows, where a median
    cannot tell which row was disturbed)."""
    for row in rows:
        row["base_retries"] = 0
    for base in {r["base"] for r in rows}:
        same = [r for r in rows if r["base"] == base]
        if len(same) < 3:
            continue
        median = statistics.median(r["fwd_bwd_base_ms"] for r in same)
        for row in same:
            deviation = abs(row["fwd_bwd_base_ms"] / median - 1)
            while deviation > BASE_TOLERANCE and row["base_retries"] < retries:
                row["base_retries"] += 1
                again = measure(row["activation"])
                if abs(again["fwd_bwd_base_ms"] / median - 1) < deviation:
                    row.update(again)
                    deviation = abs(again["fwd_bwd_base_ms"] / median - 1)


def bench_activations(quick: bool = False, device: str = "cpu", compiled: bool | None = None) -> list[dict[str, Any]]:
    """Every activation vs its native base, vs a memory-bound floor (``out.copy_(x)``) and (eager) vs its own plain
    formula, and dynActGLU's gate product vs SwiGLU's at the LLM shape. Rows whose base timing was disturbed are
    re-measured (:func:`_remeasure_outliers`). All eager rows are measured before any ``torch.compile`` runs
    (``compiled``: default off in quick runs), and inductor compiles in-process (no worker pool left running), so
    that compilation cannot disturb the other measurements."""
    shapes = QUICK_SHAPES if quick else SHAPES
    dtypes = [torch.float32] if quick else [torch.float32, torch.bfloat16, torch.float16]
    reps = 5 if quick else 21
    rows = []
    compiled = not quick if compiled is None else compiled
    for mode in ["eager", "compiled"] if compiled else ["eager"]:
        for shape_name, shape in shapes.items():
            for dtype in dtypes if mode == "eager" else [torch.float32]:
                x = torch.randn(shape, dtype=dtype, device=device)
                pairs = {}
                for name, (base, kwargs) in BASES.items():
                    act = create_activation(name, channels=x.shape[-1] if x.ndim == 3 else x.shape[1], **kwargs)
                    pairs[name] = (act.to(device, dtype), NATIVE[base])
                if shape_name == "llm":
                    pairs.update(_glu_rows(x))
                if mode == "compiled":
                    from torch._inductor import config as inductor_config

                    torch._dynamo.reset()
                    inductor_config.compile_threads = 1
                    fns = {name: (torch.compile(act), torch.compile(ref), None) for name, (act, ref) in pairs.items()}
                else:
                    fns = {name: (act, ref, _plain(act)) for name, (act, ref) in pairs.items()}
                group = []
                for name, (act, ref) in pairs.items():
                    row = {"activation": name, "base": BASES[name][0] if name in BASES else "swiglu",
                           "shape": shape_name, "dtype": str(dtype)[6:], "mode": mode,
                           **_measure(*fns[name], x, reps)}
                    xg = x.detach().requires_grad_()
                    row["saved_bytes_vs_base"] = saved_bytes(lambda: act(xg)) / max(  # noqa: B023
                        saved_bytes(lambda: ref(xg)), 1)  # noqa: B023
                    group.append(row)
                _remeasure_outliers(group, lambda name: _measure(*fns[name], x, reps))  # noqa: B023
                rows += group
    return rows


def train_step(model: nn.Module, inputs: Any, loss_fn: Callable) -> Callable[[], None]:
    """One training step (forward, backward, AdamW) as a closure (synchronised on CUDA)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def step():
        loss = loss_fn(model, inputs)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return synced(step, next(model.parameters()).device.type)


def interleaved_times(fns: dict[str, Callable[[], Any]], reps: int, warmup: int = 2) -> dict[str, list[float]]:
    """Each function's time in each of ``reps`` rounds, timed in alternation so that machine noise hits all of them
    alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    """Each function's median time over :func:`interleaved_times`' rounds."""
    return {k: statistics.median(v) for k, v in times.items()}


def interleaved_medians(fns: dict[str, Callable[[], Any]], reps: int, warmup: int = 2) -> dict[str, float]:
    """:func:`medians` of :func:`interleaved_times`."""
    return medians(interleaved_times(fns, reps, warmup))


def paired_ratio(times: dict[str, list[float]], key: str, base: str) -> float:
    """The median over rounds of ``key``'s time over ``base``'s in the same round. The project's VM changes speed
    2-3x within minutes; a ratio inside one round cancels a change between rounds, where a ratio of two medians
    can take its numerator and denominator from rounds at different speeds (session 14, the tiny Llama's 200 ms
    ``generate`` against SwiGLU's in three loops of 30 rounds: ratios of medians 0.949-0.993, medians of round
    ratios 0.978-0.989)."""
    return statistics.median(t / b for t, b in zip(times[key], times[base], strict=True))


def _ce(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return F.cross_entropy(model(batch[0]), batch[1])


def _lm_loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids, labels=ids).loss


def bench_models(quick: bool = False, device: str = "cpu") -> list[dict[str, Any]]:
    """Training-step time (forward + backward + AdamW) of hf-acts models against their base, same run, and the
    step's activation memory: the bytes autograd keeps from the forward for the backward (exact; on the CPU the
    process RSS cannot separate one model's peak from the allocator's cache)."""
    import timm
    from transformers import AutoConfig, AutoModelForCausalLM

    reps = 3 if quick else 10
    rows: list[dict[str, Any]] = []

    def compare(group: str, names: dict[str, Callable[[], nn.Module]], inputs: Any, loss_fn: Callable,
                units: float | None = None) -> None:
        models = {label: build().to(device) for label, build in names.items()}
        inputs = tuple(t.to(device) for t in inputs) if isinstance(inputs, tuple) else inputs.to(device)
        times = interleaved_times({label: train_step(m, inputs, loss_fn) for label, m in models.items()}, reps)
        saved = {label: saved_bytes(lambda m=m: loss_fn(m, inputs)) for label, m in models.items()}
        base, base_saved = next(iter(times)), next(iter(saved.values()))
        for label, t in medians(times).items():
            row = {"group": group, "model": label, "step_ms": t * 1e3, "vs_base": paired_ratio(times, label, base),
                   "saved_mb": saved[label] / 2**20, "saved_vs_base": saved[label] / base_saved}
            if units:
                row["tokens_per_s"] = units / t
            rows.append(row)

    batch = 32 if quick else 128
    cifar = (torch.randn(batch, 3, 32, 32), torch.randint(0, 100, (batch,)))
    for depth in (8,) if quick else (8, 32):
        compare(f"resnet{depth}_cifar (CIFAR-100, 32px, batch {batch})",
                {v: (lambda v=v: timm.create_model(v, num_classes=100))
                 for v in (f"resnet{depth}_cifar", f"resnet{depth}_cifar_adrelu", f"resnet{depth}_cifar_dyrelu")},
                cifar, _ce)
    vit_batch = 4 if quick else 16
    vit = (torch.randn(vit_batch, 3, 224, 224), torch.randint(0, 10, (vit_batch,)))
    compare(f"vit_tiny (224px, batch {vit_batch})",
            {v: (lambda v=v: timm.create_model(v, num_classes=10))
             for v in ("vit_tiny_patch16_224", "vit_tiny_patch16_224_fles")}, vit, _ce)
    seq, lm_batch = (128, 4) if quick else (256, 8)
    ids = torch.randint(0, 1024, (lm_batch, seq))
    lm = {mlp: (lambda mlp=mlp: AutoModelForCausalLM.from_config(AutoConfig.for_model(
        "hf_acts_llama", vocab_size=1024, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
        num_attention_heads=4, max_position_embeddings=seq, mlp_variant=mlp))) for mlp in ("swiglu", "dynactglu")}
    compare(f"tiny Llama LM (seq {seq}, batch {lm_batch})", lm, ids, _lm_loss, units=seq * lm_batch)
    if not quick:
        eff = (torch.randn(16, 3, 128, 128), torch.randint(0, 10, (16,)))
        compare("efficientnetv2_rw_t (128px, batch 16)",
                {v: (lambda v=v: timm.create_model(v, num_classes=10))
                 for v in ("efficientnetv2_rw_t", "efficientnetv2_rw_t_adrelu")}, eff, _ce)
    act = create_activation("adrelu", channels=64).to(device)
    for size in (32, 64) if quick else (32, 64, 128):
        x = torch.randn(8, 64, size, size, device=device)
        t = _run(act, x, True, reps)
        rows.append({"group": "ADReLU fwd+bwd vs input size (C=64, batch 8)", "model": f"{size}x{size}",
                     "step_ms": t * 1e3, "ms_per_kpixel": t * 1e3 / (size * size / 1000)})
    return rows


INFERENCE_MODELS = {  # timm base -> its hf-acts variants in the zoo
    "resnet18": ("resnet18_adrelu", "resnet18_dynact"),
    "resnet50": ("resnet50_adrelu", "resnet50_fles"),
    "efficientnetv2_rw_t": ("efficientnetv2_rw_t_adrelu",),
    "vit_tiny_patch16_224": ("vit_tiny_patch16_224_fles", "vit_tiny_patch16_224_dynact"),
}


def off_init_(model: nn.Module, shift: float = 0.01) -> nn.Module:
    """Move every hf-acts activation's parameters off their init, as training leaves them: at init dynActivation
    runs its base's own kernel and FleS's coefficients are exactly one, which would flatter the timings."""
    with torch.no_grad():
        for _, act in named_activations(model):
            for p in act.parameters():
                p.add_(shift)
    return model


def model_flops(model: nn.Module, *inputs: Any) -> int:
    """Matmul and convolution FLOPs of one forward, as torch's ``FlopCounterMode`` counts them (the hf-acts ops run
    their plain formulas under it; elementwise work is not counted). For GEMM-bound models the ratio of two such
    counts is about the least time ratio to expect."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(*inputs)
    return counter.get_total_flops()


def bench_inference(quick: bool = False, device: str = "cpu") -> list[dict[str, Any]]:
    """Eval-mode latency under ``torch.inference_mode`` (no autograd bookkeeping: the ops save nothing there) of the
    zoo models against their bases at 224 px, batch 1 and 32 (quick: 1 and 8, two groups), and the tiny dynActGLU
    Llama's ``generate`` throughput against SwiGLU's (greedy, fixed length). Image rows also give the model's
    matmul + conv FLOPs against its base's (``flops_vs_base``, per image)."""
    import timm
    from transformers import AutoConfig, AutoModelForCausalLM

    groups = {k: INFERENCE_MODELS[k] for k in ("resnet18", "vit_tiny_patch16_224")} if quick else INFERENCE_MODELS
    batches, reps = ((1, 8), 3) if quick else ((1, 32), 7)
    rows: list[dict[str, Any]] = []

    def compare(group: str, models: dict[str, Callable[[], Any]], batch: int, units: int, unit: str,
                flops: dict[str, int] | None = None, rounds: int = reps) -> None:
        with torch.inference_mode():
            times = interleaved_times({k: synced(fn, device) for k, fn in models.items()}, rounds)
        base = next(iter(times))
        for k, t in medians(times).items():
            rows.append({"group": group, "model": k, "batch": batch, "ms": t * 1e3,
                         "vs_base": paired_ratio(times, k, base), unit: units / t,
                         **({"flops_vs_base": flops[k] / flops[base]} if flops else {})})

    for base, variants in groups.items():
        models = {name: off_init_(timm.create_model(name)).eval().to(device) for name in (base, *variants)}
        one = torch.randn(1, 3, 224, 224, device=device)
        flops = {k: model_flops(m, one) for k, m in models.items()}
        for batch in batches:
            x = torch.randn(batch, 3, 224, 224, device=device)
            compare(f"{base} (224px)", {k: (lambda m=m: m(x)) for k, m in models.items()}, batch,  # noqa: B023
                    batch, "images_per_s", flops)
    prompt, new = (8, 8) if quick else (16, 32)
    lms = {mlp: off_init_(AutoModelForCausalLM.from_config(AutoConfig.for_model(
        "hf_acts_llama", vocab_size=1024, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
        num_attention_heads=4, max_position_embeddings=256, mlp_variant=mlp))).eval().to(device)
        for mlp in ("swiglu", "dynactglu")}
    for batch in batches:
        ids = torch.randint(1, 1024, (batch, prompt), device=device)
        compare(f"tiny Llama generate ({prompt} + {new} tokens)",
                {k: (lambda m=m: m.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False,  # noqa: B023
                                            pad_token_id=0)) for k, m in lms.items()},
                batch, batch * new, "tokens_per_s", rounds=3 * reps)  # its target is within 5%: more rounds
    return rows


# The columns of each table, and the fields that identify a row across runs.
TABLES = {
    "activations": (("activation", "base", "shape", "dtype", "mode"),
                    ("fwd_vs_base", "fwd_bwd_vs_base", "fwd_bwd_vs_floor", "fwd_bwd_vs_plain", "saved_bytes_vs_base")),
    "models": (("group", "model"), ("step_ms", "vs_base", "saved_mb", "saved_vs_base", "tokens_per_s",
                                    "ms_per_kpixel")),
    "inference": (("group", "model", "batch"), ("ms", "vs_base", "flops_vs_base", "images_per_s", "tokens_per_s")),
}


def summarize(runs: list[list[dict[str, Any]]], keys: tuple[str, ...], values: tuple[str, ...]
              ) -> list[dict[str, Any]]:
    """One row per key over several runs: each value as its median with the range over the runs (``1.57
    (1.52-1.61)``; one run: the value alone)."""
    merged: dict[tuple, dict[str, Any]] = {}
    for rows in runs:
        for row in rows:
            entry = merged.setdefault(tuple(row.get(k) for k in keys), {k: row.get(k) for k in keys})
            for v in values:
                if isinstance(row.get(v), (int, float)):
                    entry.setdefault(v, []).append(float(row[v]))
    for entry in merged.values():
        for v in values:
            got = entry.get(v)
            if got:
                mid = statistics.median(got)
                entry[v] = f"{mid:.2f}" if len(got) == 1 else f"{mid:.2f} ({min(got):.2f}-{max(got):.2f})"
    return list(merged.values())


def summary_table(kind: str, runs: list[list[dict[str, Any]]]) -> str:
    """The markdown table of one benchmark (``TABLES`` key) over its runs."""
    keys, values = TABLES[kind]
    return _markdown(summarize(runs, keys, values), [*keys, *values])


def _markdown(rows: list[dict[str, Any]], columns: list[str]) -> str:
    fmt = lambda v: f"{v:.2f}" if isinstance(v, float) else ("" if v is None else str(v))  # noqa: E731
    columns = [c for c in columns if any(r.get(c) not in (None, "") for r in rows)]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eager = [r for r in rows if r["mode"] == "eager" and r["dtype"] == "float32"]
    labels = [f"{r['activation']}\n{r['shape']}" for r in eager]
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(labels)), 3.5))
    ax.bar(range(len(eager)), [r["fwd_bwd_vs_base"] for r in eager])
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(len(eager)), labels, fontsize=7)
    ax.set_ylabel("fwd+bwd time / native base")
    ax.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_benchmarks(quick: bool = False, output_dir: str | Path = "benchmarks", device: str = "cpu",
                   compiled: bool | None = None, runs: int = 1) -> dict[str, Any]:
    """Run the three benchmarks (activations, training steps, inference) ``runs`` times on ``device``; write every
    run (JSON), a markdown table of medians with their ranges over the runs, and a PNG into ``output_dir``."""
    steady = steady_allocator()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    all_runs = []
    for i in range(runs):
        print(f"hf-acts bench: run {i + 1} of {runs}", flush=True)
        all_runs.append({"activations": bench_activations(quick, device, compiled),
                         "models": bench_models(quick, device), "inference": bench_inference(quick, device)})
    result = {"machine": {**machine(device), "steady_allocator": steady}, "quick": quick, "runs": len(all_runs),
              **all_runs[-1], "all_runs": all_runs}
    write_report(result, out)
    return result


def _limits(m: dict[str, Any]) -> str:
    """``; capped: VAR=value, ...`` for a result's machine line (empty without caps)."""
    limits = m.get("isa_limits", {})
    return "; capped: " + ", ".join(f"{k}={v}" for k, v in limits.items()) if limits else ""


def write_report(result: dict[str, Any], out: Path) -> None:
    """``results.json``, ``results.md`` (median and range over the runs) and ``activations.png`` in ``out`` from a
    :func:`run_benchmarks` result; prints the tables."""
    all_runs, m = result["all_runs"], result["machine"]
    (out / "results.json").write_text(json.dumps(result, indent=2))
    table = "\n\n".join([
        f"Machine: {m['gpu'] or m['cpu']} (ATen {m['isa']}; {' '.join(m['cpu_flags'])}{_limits(m)}), "
        f"{m['threads']} CPU threads, torch {m['torch']}, device {m['device']}. "
        f"{len(all_runs)} full run(s): median (range over the runs). Within a run, times are medians "
        f"of alternating rounds and each ratio is the median of the ratios within a round; freed memory kept by "
        f"malloc: {m['steady_allocator']}. {result_notes(m)}".rstrip(),
        "### Activations (ratio to the native base, to a copy_ memory floor and to the activation's own plain "
        "formula)",
        summary_table("activations", [r["activations"] for r in all_runs]),
        "### Training steps (forward + backward + AdamW)",
        summary_table("models", [r["models"] for r in all_runs]),
        "### Inference (eval mode, torch.inference_mode)",
        summary_table("inference", [r["inference"] for r in all_runs]),
    ])
    (out / "results.md").write_text(table + "\n")
    _plot(result["activations"], out / "activations.png")
    print(table)


def script_main(kind: str, argv: list[str] | None = None) -> list[dict[str, Any]]:
    """``scripts/bench_<kind>.py``: run one benchmark, write ``<output-dir>/<kind>.json``, print the table."""
    import argparse

    parser = argparse.ArgumentParser(description=f"hf-acts {kind} benchmark (ratios measured in one run)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output-dir", default="benchmarks")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--runs", type=int, default=1, help="full runs; the table gives the median and range")
    parser.add_argument("--no-compile", action="store_true", help="activations: skip the torch.compile rows")
    args = parser.parse_args(argv)
    steady = steady_allocator()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if kind == "activations":
        def bench(quick: bool, device: str) -> list[dict[str, Any]]:
            return bench_activations(quick, device, compiled=False if args.no_compile else None)
    else:
        bench = {"models": bench_models, "inference": bench_inference}[kind]
    runs = [bench(args.quick, args.device) for _ in range(args.runs)]
    result = {"machine": {**machine(args.device), "steady_allocator": steady}, "rows": runs[-1], "all_runs": runs}
    (out / f"{kind}.json").write_text(json.dumps(result, indent=2))
    table = summary_table(kind, runs)
    note = result_notes(result["machine"])
    table = f"{note}\n\n{table}" if note else table
    (out / f"{kind}.md").write_text(table + "\n")
    print(table)
    return runs[-1]
