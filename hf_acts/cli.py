"""``hf-acts``: list, swap, card, publish, bench, kernel-repo."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hf_acts.errors import empty_output_dir, json_object, run


def cmd_list(args: argparse.Namespace) -> None:
    import timm

    import hf_acts
    from hf_acts.integrations.transformers.configuration_hf_acts import CONFIGS
    from hf_acts.models.zoo import ZOO

    print("activations:", ", ".join(hf_acts.list_activations()))
    print("\ntimm models (after `import hf_acts`):")
    for name in sorted({*ZOO, *timm.list_models("hf_acts_*"), "resnet8_cifar", "resnet32_cifar", "mlp_mnist1d"}):
        v = ZOO.get(name)
        print(f"  {name:38s} {f'{v.act} at {v.placement} of {v.base}' if v else ''}")
    print("\ntransformers model types:", ", ".join(c.model_type for c in CONFIGS.values()))


def cmd_swap(args: argparse.Namespace) -> None:
    """A pretrained model + an activation -> a saved (Hub-ready, untrained) folder with its card."""
    import hf_acts
    from hf_acts.cards import render_card

    out = empty_output_dir(args.output_dir)
    sites = {"target": args.target.split(","), "select": args.select, "exclude": args.exclude, "last": args.last}
    act_kwargs = json_object(args.act_kwargs, "--act-kwargs")
    if args.library == "transformers":
        import transformers
        from transformers import AutoConfig, AutoProcessor

        from hf_acts.integrations.transformers.configuration_hf_acts import MLP_VARIANTS
        from hf_acts.integrations.transformers.swapped import auto_class_for

        auto = getattr(transformers, auto_class_for(AutoConfig.from_pretrained(args.model)))
        head = {"num_labels": args.num_classes, "ignore_mismatched_sizes": True} if args.num_classes else {}
        model = auto.from_pretrained(args.model, **head)
        if args.act in MLP_VARIANTS:  # an LM's gated MLPs (Llama, Mistral, Qwen2, Qwen3)
            hf_acts.convert_glu(model, args.act, layers=args.layers)
        else:  # any architecture: its activation modules, recorded in its config
            print(hf_acts.replace_activations(model, args.act, **sites, **act_kwargs))
        base = None if Path(args.model).exists() else args.model
        model.save_pretrained(out)
        try:  # the tokenizer or image processor, so the folder is usable as it was
            AutoProcessor.from_pretrained(args.model).save_pretrained(out)
        except (OSError, ValueError):
            print(f"hf-acts: no tokenizer or processor saved ({args.model} has none)", file=sys.stderr)
    else:
        import timm

        swap = {"act": args.act, **sites, "kwargs": act_kwargs}
        kwargs = {"num_classes": args.num_classes} if args.num_classes else {}
        model = timm.create_model("hf_acts_swapped", base_model=args.model, swaps=[swap], pretrained=args.pretrained,
                                  **kwargs)
        for report in model.hf_acts_reports:
            print(report)
        hf_acts.save_timm_model(model, out)
        base = model.pretrained_cfg.get("hf_hub_id") if args.pretrained else None
    render_card(out, base_model=base).save(out / "README.md")
    print(f"saved to {out.resolve()}")


def cmd_card(args: argparse.Namespace) -> None:
    from hf_acts.cards import render_card

    card = render_card(args.folder, repo_id=args.repo_id, license=args.license)
    path = Path(args.folder) / "README.md"
    card.save(path)
    print(f"wrote {path}")


def cmd_publish(args: argparse.Namespace) -> None:
    from hf_acts.publish import publish_to_hub

    result = publish_to_hub(args.folder, args.repo_id, private=args.private, revision=args.revision,
                            dry_run=args.dry_run)
    if args.dry_run:
        print("would upload:\n  " + "\n  ".join(result))
    else:
        print(f"published {args.folder} to {result.commit_url}")


def cmd_bench(args: argparse.Namespace) -> None:
    from hf_acts.bench import run_benchmarks

    run_benchmarks(quick=args.quick, output_dir=Path(args.output_dir), device=args.device,
                   compiled=False if args.no_compile else None, runs=args.runs)


def cmd_kernel_repo(args: argparse.Namespace) -> None:
    from hf_acts.kernel_hub import build_kernel_repo

    folder = build_kernel_repo(args.output_dir)
    print(f"wrote the kernel repository to {folder} (push it with: hf-acts publish {folder} --repo-id ORG/NAME)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-acts", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="activations and registered models").set_defaults(fn=cmd_list)

    p = sub.add_parser("swap", help="pretrained timm/transformers model + activation -> saved folder")
    p.add_argument("model", help="timm name / hf-hub: / local-dir:, or a transformers id/folder")
    p.add_argument("--act", required=True,
                   help="hf-acts activation; for transformers LMs also an MLP variant (dynactglu: convert_glu)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--library", choices=["timm", "transformers"], default="timm")
    p.add_argument("--pretrained", action="store_true", help="timm: load the base model's pretrained weights")
    p.add_argument("--num-classes", type=int,
                   help="a new classifier with this many classes (transformers: num_labels, the head re-initialised)")
    p.add_argument("--target", default="relu,silu,gelu")
    p.add_argument("--select")
    p.add_argument("--exclude")
    p.add_argument("--last", type=int)
    p.add_argument("--act-kwargs", default="{}")
    p.add_argument("--layers", type=int, nargs="*", help="transformers: decoder layers to convert")
    p.set_defaults(fn=cmd_swap)

    p = sub.add_parser("card", help="render the model card (README.md) of an output folder")
    p.add_argument("folder")
    p.add_argument("--repo-id")
    p.add_argument("--license", default="apache-2.0")
    p.set_defaults(fn=cmd_card)

    p = sub.add_parser("publish", help="validate an output folder and upload it to the Hub")
    p.add_argument("folder")
    p.add_argument("--repo-id", required=True)
    p.add_argument("--private", action="store_true")
    p.add_argument("--revision")
    p.add_argument("--dry-run", action="store_true", help="list what would be uploaded; send nothing")
    p.set_defaults(fn=cmd_publish)

    p = sub.add_parser("bench", help="activation, training-step and inference benchmarks (ratios within a run)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--output-dir", default="benchmarks")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda: the Triton kernels on a GPU")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    p.add_argument("--runs", type=int, default=1, help="full runs; the tables give the median and range over them")
    p.set_defaults(fn=cmd_bench)

    p = sub.add_parser("kernel-repo",
                       help="write the Kernel Hub repository of the Triton kernels (push it with hf-acts publish)")
    p.add_argument("output_dir")
    p.set_defaults(fn=cmd_kernel_repo)
    return parser


def _main(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    args.fn(args)


def main(argv: list[str] | None = None) -> None:
    """``hf-acts`` entry point: errors end in one line on stderr (``--debug`` shows the traceback)."""
    run(_main, "hf-acts", argv)


if __name__ == "__main__":
    main()
