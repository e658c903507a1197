"""Publish a training output folder to the Hugging Face Hub: validate, card, create repo, upload."""

from __future__ import annotations

import fnmatch
from pathlib import Path

from huggingface_hub import CommitInfo, HfApi

from .cards import folder_kind, render_card

# never uploaded: Accelerate states (optimizer, pickled RNG states) and half-written temporaries
IGNORE = ["checkpoints/*", "checkpoints/**", ".tmp*", "**/.tmp*", "__pycache__/*", "**/*.pyc"]


LOAD_PROBLEMS = ("missing_keys", "unexpected_keys", "mismatched_keys")  # what from_pretrained only warns about


def validate_folder(folder: str | Path) -> str:
    """Load the folder the way users will (timm ``local-dir:`` / transformers ``from_pretrained`` of the Auto class
    that maps its architecture): the weights load strictly and the config rebuilds the model. Returns the folder
    kind; raises ``ValueError``."""
    folder = Path(folder)
    kind = folder_kind(folder)
    try:
        if kind == "adapter":  # the base model is on the Hub; check what the folder itself holds
            from peft import PeftConfig
            from safetensors.torch import load_file

            PeftConfig.from_pretrained(folder)
            load_file(folder / "adapter_model.safetensors")
        elif kind == "timm":
            import timm

            timm.create_model(f"local-dir:{folder}", pretrained=True)
        else:
            import transformers

            from .integrations.transformers.swapped import auto_class_for, folder_config

            auto = getattr(transformers, auto_class_for(folder_config(folder)))
            _, info = auto.from_pretrained(folder, output_loading_info=True)
            wrong = {k: sorted(v)[:4] for k, v in info.items() if k in LOAD_PROBLEMS and v}
            if wrong:
                raise ValueError(f"{auto.__name__} does not load the weights strictly: {wrong}")
    except Exception as e:
        raise ValueError(f"{folder} does not load as a {kind} model: {type(e).__name__}: {e}") from e
    return kind


def files_to_upload(folder: str | Path) -> list[str]:
    """Relative paths ``upload_folder`` will send (checkpoints and temporaries excluded)."""
    folder = Path(folder)
    paths = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return [p for p in paths if not any(fnmatch.fnmatch(p, pat) for pat in IGNORE)]


def is_kernel_repo(folder: str | Path) -> bool:
    """Whether ``folder`` is a Kernel Hub repository (``build/<variant>/metadata.json``, as ``hf-acts kernel-repo``
    writes it) rather than a model folder."""
    return any(Path(folder).glob("build/*/metadata.json"))


def publish_to_hub(
    folder: str | Path,
    repo_id: str,
    private: bool = False,
    revision: str | None = None,
    dry_run: bool = False,
    token: str | None = None,
) -> list[str] | CommitInfo:
    """Validate a model ``folder`` and write its model card (``README.md``; a kernel repository keeps the README it
    was built with), then ``create_repo(exist_ok=True)`` and ``upload_folder``. Safe to repeat. ``dry_run`` returns
    the files that would be uploaded and sends nothing. The token comes from ``token`` or huggingface_hub's usual
    sources and is never written."""
    folder = Path(folder)
    kernels = is_kernel_repo(folder)
    if not kernels:
        validate_folder(folder)
        render_card(folder, repo_id=repo_id).save(folder / "README.md")
    files = files_to_upload(folder)
    if dry_run:
        return files
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    return api.upload_folder(
        folder_path=folder, repo_id=repo_id, revision=revision, ignore_patterns=IGNORE,
        commit_message=f"Upload hf-acts {'kernels' if kernels else 'model'} ({len(files)} files)",
        commit_description="Published with `hf-acts publish`: " + (
            "Triton kernels and Kernel Hub layers, metadata, card." if kernels
            else "weights (safetensors), config, metrics, model card."),
    )
