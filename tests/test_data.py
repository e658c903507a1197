"""The dataset loaders on local folders laid out as Hub datasets are, whose column and split names vary."""

import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
from PIL import Image as PILImage

from hf_acts.data import load_image_dataset, load_text_dataset


def test_text_dataset_renames_its_column_and_finds_the_validation_split(tmp_path):
    DatasetDict(train=Dataset.from_dict({"content": ["a b", "c d", "e"], "id": [0, 1, 2]}),
                validation=Dataset.from_dict({"content": ["f g"], "id": [3]})).save_to_disk(tmp_path / "text")
    ds = load_text_dataset(str(tmp_path / "text"), text_column="content")
    assert ds["train"].column_names == ["text"] and list(ds["train"]["text"]) == ["a b", "c d", "e"]
    assert list(ds["eval"]["text"]) == ["f g"]
    with pytest.raises(ValueError, match="text column 'body' not in dataset"):
        load_text_dataset(str(tmp_path / "text"), text_column="body")


def test_text_dataset_without_an_eval_split_holds_a_fraction_out(tmp_path):
    docs = [f"doc {i}" for i in range(20)]
    DatasetDict(train=Dataset.from_dict({"text": docs})).save_to_disk(tmp_path / "text")
    ds = load_text_dataset(str(tmp_path / "text"), eval_fraction=0.1)
    assert len(ds["eval"]) == 2 and sorted([*ds["train"]["text"], *ds["eval"]["text"]]) == sorted(docs)


def test_image_dataset_finds_its_columns_and_evaluation_split(tmp_path):
    features = Features({"img": Image(), "labels": ClassLabel(names=["cat", "dog"]), "note": Value("string")})
    image = PILImage.new("RGB", (8, 8))
    split = lambda n: Dataset.from_dict(  # noqa: E731
        {"img": [image] * n, "labels": [i % 2 for i in range(n)], "note": [""] * n}, features=features)
    DatasetDict(train=split(4), valid=split(2)).save_to_disk(tmp_path / "images")
    data = load_image_dataset(str(tmp_path / "images"))
    assert (data.image_column, data.label_column, data.label_names) == ("img", "labels", ["cat", "dog"])
    assert len(data.train) == 4 and len(data.eval) == 2 and not data.is_vector
    DatasetDict(train=split(4), holdout=split(2)).save_to_disk(tmp_path / "odd")
    with pytest.raises(ValueError, match="no evaluation split"):
        load_image_dataset(str(tmp_path / "odd"))
    assert len(load_image_dataset(str(tmp_path / "odd"), eval_split="holdout").eval) == 2
