"""Model cards for hf-acts output folders (``model_cards/*.md`` Jinja templates, huggingface_hub's ModelCard).

Every number in a card comes from the folder: ``metrics.json`` (what the run measured), the weights (parameter
counts) and a forward pass (FLOPs). A folder without metrics gets a card without results or ``model-index``.
"""

from __future__ import annotations

import inspect
import itertools
import json
import math
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .papers import PAPERS
from .registry import canonical_name, get_activation

# a wheel carries the templates as package data (setup.py copies them); an editable install reads the source folder
TEMPLATES = next(p for p in (Path(__file__).parent / "model_cards", Path(__file__).resolve().parents[1] / "model_cards")
                 if p.is_dir())
EMBEDDED = {"digits": "scikit-learn digits (embedded, offline)", "mnist1d": "MNIST-1D (generated locally)",
            "pydoc": "Python pydoc topics (embedded, offline)"}
TIMM_BIBTEX = ("@misc{rw2019timm,\n  author = {Ross Wightman},\n  title  = {PyTorch Image Models},\n"
               "  year   = {2019},\n  publisher = {GitHub},\n  howpublished = {\\url{https://github.com/huggingface/pytorch-image-models}}\n}")
TRANSFORMERS_BIBTEX = (
    "@inproceedings{wolf-etal-2020-transformers,\n  title  = {Transformers: State-of-the-Art Natural Language "
    "Processing},\n  author = {Wolf, Thomas and others},\n  booktitle = {EMNLP: System Demonstrations},\n"
    "  year   = {2020}\n}"
)
LIMITATIONS = {
    "adrelu": "ADReLU has no init equal to SiLU or GELU (only to ReLU, with `tau_init=\"zero\"`): swapped into a "
              "pretrained SiLU or GELU network it changes the function until fine-tuned. Its cost grows with the "
              "channel count squared per replaced site.",
    "aiec": "AIEC's decision units (K x C per site) are only used in training; inference is a plain threshold.",
}


def folder_kind(folder: Path) -> str:
    """``"timm"`` or ``"transformers"``, from ``config.json``, or ``"adapter"`` (a PEFT adapter folder, from
    ``adapter_config.json``); ``ValueError`` otherwise."""
    if (Path(folder) / "adapter_config.json").exists():
        return "adapter"
    path = Path(folder) / "config.json"
    if not path.exists():
        raise ValueError(f"{folder} has no config.json: not a saved model folder")
    config = json.loads(path.read_text())
    if "architecture" in config:
        return "timm"
    if "model_type" in config:
        return "transformers"
    raise ValueError(f"{path} is neither a timm nor a transformers config")


def _read(folder: Path, name: str) -> Any:
    path = folder / name
    return json.loads(path.read_text()) if path.exists() else None


def count_parameters(model: torch.nn.Module) -> int:
    """Every parameter of ``model`` (cards, zoo table, reproductions)."""
    return sum(p.numel() for p in model.parameters())


def _flops(model: torch.nn.Module, input_size: tuple[int, ...]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.randn(1, *input_size))
    return counter.get_total_flops()


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _args_table(args: dict[str, Any]) -> str:
    return _table([{"argument": f"`--{k.replace('_', '-')}`", "value": f"`{v}`"} for k, v in sorted(args.items())
                   if v not in (None, False)], ["argument", "value"])


def _activation_text(act: str) -> dict[str, str]:
    name = canonical_name(act)
    # the method's paragraphs: everything before the implementation notes ("Speed: ...")
    paragraphs = inspect.cleandoc(get_activation(name).__doc__ or "").split("\n\n")
    doc = "\n\n".join(itertools.takewhile(lambda p: not p.startswith("Speed:"), paragraphs))
    paper = PAPERS[name]
    return {"activation_title": f"{name} (`hf_acts.{get_activation(name).__name__}`)", "equation": doc,
            "paper_name": paper.name, "activation_bibtex": paper.bibtex}


def _timm_context(folder: Path) -> dict[str, Any]:
    import timm

    config = json.loads((folder / "config.json").read_text())
    swaps = _read(folder, "hf_acts_swaps.json") or []
    if not swaps:
        raise ValueError(f"{folder} has no hf_acts_swaps.json: not an hf-acts timm folder")
    model = timm.create_model(f"local-dir:{folder}", pretrained=True)
    arch, args = config["architecture"], config.get("model_args", {})
    from .models.zoo import ZOO

    base = args.get("base_model") if arch == "hf_acts_swapped" else ZOO[arch].base.split(".")[0]
    base_model = timm.create_model(base, num_classes=model.num_classes,
                                   in_chans=args.get("in_chans", 3))
    size = tuple(model.pretrained_cfg["input_size"])
    rows = [{**r, "name": f"`{r['name']}`", "params_added": f"{r['params_added']:,}",
             "function_preserving": "yes" if r["function_preserving"] else "no"}
            for report in swaps for r in report["records"]]
    return {
        "act": swaps[0]["activation"], "base_model": base, "base_params": f"{count_parameters(base_model):,}",
        "params": f"{count_parameters(model):,}", "input_size": "x".join(map(str, size)),
        "base_flops": f"{_flops(base_model, size) / 1e6:,.1f}M", "flops": f"{_flops(model, size) / 1e6:,.1f}M",
        "swap_table": _table(rows, ["name", "old", "new", "channels", "params_added", "function_preserving"]),
        "library_bibtex": TIMM_BIBTEX, "library_name": "timm", "pipeline_tag": "image-classification",
        "task": "image-classification", "weights": config.get("pretrained_cfg", {}).get("hf_hub_id"),
    }


def _weight_shapes(folder: Path) -> dict[str, list[int]]:
    """Tensor name -> shape of a folder's safetensors files, read from their headers (no model is built: a card is
    rendered on the main process alone, where building a model under DeepSpeed ZeRO-3 would wait for the others)."""
    from safetensors import safe_open

    shapes = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), "pt") as f:
            shapes.update({k: f.get_slice(k).get_shape() for k in f.keys()})
    return shapes


def _state_size(module: torch.nn.Module) -> int:
    """The numbers ``module`` saves (parameters and persistent buffers), as its keys in a checkpoint hold."""
    return sum(t.numel() for t in module.state_dict().values())


def _arguments(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"`{k}={v!r}`" for k, v in kwargs.items())


def _transformers_context(folder: Path) -> dict[str, Any]:
    """An hf-acts LM (``convert_glu``'s MLPs), a swapped model of any architecture (``hf_acts_activations``), or
    both: the replaced sites, parameter counts from the weights' headers, and the Auto class and task it loads as."""
    import transformers
    from transformers.pipelines import SUPPORTED_TASKS

    from .integrations.transformers.configuration_hf_acts import SWAP_FIELD
    from .integrations.transformers.swapped import auto_class_for, folder_config

    config = folder_config(folder)
    auto_class = auto_class_for(config)
    shapes = _weight_shapes(folder)
    rows, acts, added_params = [], [], 0
    base_mlp = mlp = None
    if hasattr(config, "mlp_variant"):  # the LM family
        converted = config.mlp_variant == "dynactglu"
        layers = range(config.num_hidden_layers) if config.mlp_layers is None else config.mlp_layers
        base_mlp = f"gated MLP, `hidden_act={config.hidden_act}`"
        mlp = f"`{config.mlp_variant}` (mode `{config.mlp_mode}`) in {len(layers)} layer(s)"
        rows += [{"layer": f"`model.layers.{i}.mlp`", "old": f"gated MLP (`hidden_act={config.hidden_act}`)",
                  "new": "DynActGLU" if converted else "unchanged",
                  "arguments": _arguments({"base": config.dynact_base, "mode": config.mlp_mode})} for i in layers]
        if converted:  # each MLP's dynActivation, and the up branch's with mode="both"
            per_layer = _state_size(get_activation("dynactivation")(config.dynact_base))
            added_params += per_layer * len(layers) * (2 if config.mlp_mode == "both" else 1)
        acts.append("dynactglu" if converted else "dynactivation")
    records = getattr(config, SWAP_FIELD, None) or []
    # a base-model module is recorded relative to the base model; a task model holds that at its base_model_prefix
    model_class = getattr(transformers, auto_class)._model_mapping.get(type(config), None) if records else None
    prefix = model_class.base_model_prefix + "." if auto_class != "AutoModel" and model_class else ""
    for r in records:
        activation = get_activation(r["activation"])(**r["kwargs"])  # its tensors (the weights' keys may be renamed)
        rows.append({"layer": f"`{prefix if r['root'] == 'base' else ''}{r['module']}`", "old": r.get("replaced", ""),
                     "new": type(activation).__name__, "arguments": _arguments(r["kwargs"])})
        added_params += _state_size(activation)
        acts.append(r["activation"])
    if not acts:
        raise ValueError(f"{folder} is a transformers folder without hf-acts activations: its config has neither the "
                         f"LM family's MLP fields nor {SWAP_FIELD}")
    total = sum(math.prod(shape) for shape in shapes.values())
    processor = next((cls for file, cls in (("tokenizer_config.json", "AutoTokenizer"),
                                            ("preprocessor_config.json", "AutoImageProcessor"))
                      if (folder / file).exists()), None)
    # the first pipeline task that loads this Auto class (AutoModel: feature-extraction)
    task = next((t for t, spec in SUPPORTED_TASKS.items() if auto_class in [c.__name__ for c in spec.get("pt", ())]),
                None)
    return {
        "act": acts[0], "base_params": f"{total - added_params:,}", "params": f"{total:,}", "base_mlp": base_mlp,
        "mlp": mlp, "swap_table": _table(rows, ["layer", "old", "new", "arguments"]), "auto_class": auto_class,
        "processor": processor, "library_bibtex": TRANSFORMERS_BIBTEX, "library_name": "transformers",
        "pipeline_tag": task, "task": task, "weights": None,
    }


BASE_SPEC = "hf_acts_base.json"  # beside a timm adapter: the ``timm.create_model`` call of the model it adapts


def _adapter_context(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    config = json.loads((folder / "adapter_config.json").read_text())
    args = _read(folder, "training_args.json") or {}
    weights = load_file(folder / "adapter_model.safetensors")
    lora = sum(v.numel() for k, v in weights.items() if ".lora_" in k)
    spec = _read(folder, BASE_SPEC)
    if spec:  # timm
        call = ", ".join([repr(spec["model_name"])] + [f"{k}={v!r}" for k, v in spec["kwargs"].items()])
        model = args.get("model", spec["model_name"])
        ctx = {"act": spec["activation"], "base_row": f"`timm.create_model({call}, pretrained=True)`",
               "timm_call": call, "library_bibtex": TIMM_BIBTEX, "pipeline_tag": "image-classification",
               "task": "image-classification",
               "weights": model.removeprefix("hf-hub:") if model.startswith("hf-hub:") else None}
    else:
        options = {"mode": args.get("mlp_mode", "gate"), "layers": args.get("layers"),
                   "beta_init": args.get("dynact_beta_init", 0.0)}
        conversion = "hf_acts.convert_glu(" + ", ".join(
            ["base", '"dynactglu"'] + [f"{k}={v!r}" for k, v in options.items()]) + ")"
        base = config.get("base_model_name_or_path")
        ctx = {"act": "dynactglu", "base_model": base, "base_row": f"`{base}`, converted with `{conversion}`",
               "conversion": conversion,
               "timm_call": None, "library_bibtex": TRANSFORMERS_BIBTEX, "pipeline_tag": "text-generation",
               "task": "text-generation", "weights": base}
    return {**ctx, "lora_r": config["r"], "lora_alpha": config["lora_alpha"],
            "lora_targets": len(config["target_modules"]), "lora_params": f"{lora:,}",
            "saved_modules": f"{len(config['modules_to_save'])} modules (activations, classifier head)",
            "saved_params": f"{sum(v.numel() for v in weights.values()) - lora:,}", "library_name": "peft"}


def _started_from(folder: Path, kind: str, args: dict[str, Any], weights: str | None) -> str | None:
    """The Hub weights a training run started from (``args`` from ``training_args.json``), else None; a folder
    without a run keeps the ``base_model`` its card already names (``hf-acts swap`` writes it)."""
    if kind == "adapter":  # a Hub id, not a local folder
        return None if weights is None or Path(weights).exists() else weights
    if args:
        if kind == "timm":
            return weights if args.get("pretrained") else None
        model = args.get("model")
        return None if model in (None, "tiny") or Path(model).exists() else model
    readme = folder / "README.md"
    return ModelCard.load(readme).data.base_model if readme.exists() else None


def render_card(folder: str | Path, repo_id: str | None = None, license: str = "apache-2.0",
                base_model: str | None = None) -> ModelCard:
    """The model card of an hf-acts output folder (``metrics.json`` numbers only).

    ``base_model`` (Hub id) names the pretrained weights the folder started from; by default it is read from the
    run (``training_args.json``). Only then does the card carry ``base_model`` with ``base_model_relation:
    finetune``: a model trained from scratch names its architecture in the text only.
    """
    folder = Path(folder)
    kind = folder_kind(folder)
    ctx = {"timm": _timm_context, "transformers": _transformers_context, "adapter": _adapter_context}[kind](folder)
    args = _read(folder, "training_args.json") or {}
    metrics = _read(folder, "metrics.json") or {}
    repo_id = repo_id or f"your-org/{folder.name}"
    model_name = repo_id.split("/")[-1]
    dataset = args.get("dataset")
    base_model = base_model or _started_from(folder, kind, args, ctx.pop("weights"))
    results, evals = [], []
    metric_names = {"top1": "top-1 accuracy", "top5": "top-5 accuracy", "perplexity": "perplexity",
                    "eval_loss": "eval loss"}
    for key, label in metric_names.items():
        if key in metrics:
            results.append({"metric": label, "value": f"{metrics[key]:.4f}", "dataset": EMBEDDED.get(dataset, dataset)})
            if key != "eval_loss" and dataset:  # model-index needs the dataset
                evals.append(EvalResult(task_type=ctx["task"], dataset_type=dataset, dataset_name=dataset,
                                        metric_type="accuracy" if key.startswith("top") else key, metric_name=label,
                                        metric_value=metrics[key]))
    act = canonical_name(ctx["act"])
    data = ModelCardData(
        library_name=ctx["library_name"], license=license, pipeline_tag=ctx["pipeline_tag"],
        tags=["hf-acts", act, "trainable-activation", kind], base_model=base_model,
        base_model_relation=("adapter" if kind == "adapter" else "finetune") if base_model else None,
        datasets=[dataset] if dataset and dataset not in EMBEDDED else None,
        model_name=model_name if evals else None, eval_results=evals or None,
    )
    trained = f", trained for {metrics.get('steps')} steps on {EMBEDDED.get(dataset, dataset)}" if metrics else ""
    origin = (f"It started from the pretrained weights of [`{base_model}`](https://huggingface.co/{base_model})."
              if base_model else "Its weights were not initialised from pretrained ones.")
    summary = (f"`{model_name}` is a {ctx['library_name']} model whose activations were replaced with **{act}** by "
               f"[hf-acts](https://github.com/hf-acts/hf-acts){trained}. {origin}")
    return ModelCard.from_template(
        data, template_path=str(TEMPLATES / f"{kind}.md"), model_name=model_name, repo_id=repo_id, summary=summary,
        training_args=_args_table(args) if args else "", results_table=_table(results, ["metric", "value", "dataset"]),
        limitations=LIMITATIONS.get(act, "Small-scale runs; compare with the base model on your own data."),
        **{k: v for k, v in ctx.items() if k not in ("act",)}, **_activation_text(act),
    )
