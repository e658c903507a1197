"""Datasets for the training scripts: any Hub / local dataset through ``datasets``, plus three embedded
offline ones (scikit-learn's digits, MNIST-1D generated locally, Python's pydoc topics text).

Every loader returns ``datasets`` objects, so a user can pass a Hub name where the demos use an
embedded one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasets import (
    ClassLabel,
    Dataset,
    DatasetDict,
    Features,
    Image,
    Sequence,
    Value,
    load_dataset,
    load_from_disk,
)

EMBEDDED_IMAGE = ("digits", "mnist1d")
EMBEDDED_TEXT = ("pydoc",)
IMAGE_COLUMNS = ("image", "img", "pixel_values", "x")
LABEL_COLUMNS = ("label", "labels", "fine_label", "y")
EVAL_SPLITS = ("validation", "test", "valid", "val")


@dataclass
class ImageData:
    """Train/eval splits with the columns the scripts read."""

    train: Dataset
    eval: Dataset
    image_column: str
    label_column: str
    label_names: list[str]

    @property
    def is_vector(self) -> bool:
        """MNIST-1D-style rows of floats rather than images."""
        return not isinstance(self.train.features[self.image_column], Image)


def digits_dataset(image_size: int = 32, seed: int = 0, test_fraction: float = 0.2) -> DatasetDict:
    """scikit-learn's 8x8 digits (1,797 images), upsampled to ``image_size`` RGB PIL images."""
    from PIL import Image as PILImage
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = [PILImage.fromarray((img * 255 / 16).astype(np.uint8)).convert("RGB").resize(
        (image_size, image_size), PILImage.Resampling.BILINEAR) for img in digits.images]
    features = Features({"image": Image(), "label": ClassLabel(names=[str(i) for i in range(10)])})
    ds = Dataset.from_dict({"image": images, "label": digits.target.tolist()}, features=features)
    split = ds.train_test_split(test_size=test_fraction, seed=seed, stratify_by_column="label")
    return DatasetDict(train=split["train"], test=split["test"])


def mnist1d_dataset(num_samples: int = 5000, seed: int = 42) -> DatasetDict:
    """MNIST-1D (Greydanus 2020) generated locally with ``mnist1d.data.make_dataset`` (never downloaded):
    40-sample 1-D signals, 10 classes, 80/20 split."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = num_samples, seed
    data = make_dataset(args)
    features = Features({"x": Sequence(Value("float32")), "label": ClassLabel(names=[str(i) for i in range(10)])})
    return DatasetDict(
        train=Dataset.from_dict({"x": data["x"].tolist(), "label": data["y"].tolist()}, features=features),
        test=Dataset.from_dict({"x": data["x_test"].tolist(), "label": data["y_test"].tolist()}, features=features),
    )


def _load(name: str, image: bool) -> DatasetDict:
    """A local folder (``imagefolder`` for images, ``load_from_disk`` / data files otherwise) or a Hub dataset."""
    try:
        if Path(name).is_dir():
            if (Path(name) / "dataset_dict.json").exists():
                return load_from_disk(name)
            return load_dataset("imagefolder", data_dir=name) if image else load_dataset(name)
        return load_dataset(name)
    except Exception as e:  # datasets raises many types; the user needs the name and the cause
        raise ValueError(f"cannot load dataset {name!r} (not embedded, not a local folder, not on the Hub or "
                         f"offline): {type(e).__name__}: {e}") from e


def _pick(columns: list[str], given: str | None, candidates: tuple[str, ...], what: str, name: str) -> str:
    if given:
        if given not in columns:
            raise ValueError(f"{what} column {given!r} not in dataset {name!r} (columns: {columns})")
        return given
    found = next((c for c in candidates if c in columns), None)
    if found is None:
        raise ValueError(f"no {what} column found in dataset {name!r} (columns: {columns}); pass --{what}-column")
    return found


def load_image_dataset(
    name: str,
    image_column: str | None = None,
    label_column: str | None = None,
    train_split: str = "train",
    eval_split: str | None = None,
    image_size: int = 32,
) -> ImageData:
    """An embedded dataset (``digits``, ``mnist1d``), a local folder (``imagefolder``), or a Hub dataset."""
    if name == "digits":
        ds = digits_dataset(image_size)
    elif name == "mnist1d":
        ds = mnist1d_dataset()
    else:
        ds = _load(name, image=True)
    if train_split not in ds:
        raise ValueError(f"dataset {name!r} has no split {train_split!r} (splits: {list(ds)})")
    eval_split = eval_split or next((s for s in EVAL_SPLITS if s in ds), None)
    if eval_split is None or eval_split not in ds:
        raise ValueError(f"dataset {name!r} has no evaluation split (splits: {list(ds)}); pass --eval-split")
    columns = list(ds[train_split].column_names)
    image_column = _pick(columns, image_column, IMAGE_COLUMNS, "image", name)
    label_column = _pick(columns, label_column, LABEL_COLUMNS, "label", name)
    feature = ds[train_split].features[label_column]
    if isinstance(feature, ClassLabel):
        label_names = list(feature.names)
    else:
        label_names = [str(v) for v in sorted(set(ds[train_split][label_column]))]
    return ImageData(ds[train_split], ds[eval_split], image_column, label_column, label_names)


def load_text_dataset(name: str, text_column: str = "text", train_split: str = "train",
                      eval_split: str | None = None, eval_fraction: float = 0.1) -> DatasetDict:
    """``pydoc`` (Python's own help topics, ~465k characters, one document per topic) or a Hub/local
    text dataset; returns ``train`` and ``eval`` splits with a ``text`` column."""
    if name == "pydoc":
        from pydoc_data.topics import topics

        ds = DatasetDict(train=Dataset.from_dict({"text": [topics[k] for k in sorted(topics)]}))
    else:
        ds = _load(name, image=False)
    if text_column not in ds[train_split].column_names:
        raise ValueError(f"text column {text_column!r} not in dataset {name!r} ({ds[train_split].column_names})")
    if eval_split is None:
        eval_split = next((s for s in EVAL_SPLITS if s in ds), None)
    if eval_split is None:
        split = ds[train_split].train_test_split(test_size=eval_fraction, seed=0)
        train, evaluation = split["train"], split["test"]
    else:
        train, evaluation = ds[train_split], ds[eval_split]
    keep = lambda d: d.select_columns([text_column]).rename_column(text_column, "text") if text_column != "text" \
        else d.select_columns(["text"])  # noqa: E731
    return DatasetDict(train=keep(train), eval=keep(evaluation))
