"""`python -m sat_tf.pipelines.check` on tiny Flickr8k, COCO and Karpathy folders, and `--dataset coco` refused
for training before any extraction."""

from __future__ import annotations

import json
import os

import pytest
from PIL import Image

from sat_tf.config import DataConfig
from sat_tf.pipelines.check import check_dataset, main

CAPTIONS = ["a dog runs on the grass", "a brown dog is running", "two children play in the water"]


def _image(path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (12, 10), (200, 40, 40)).save(path)


def _flickr8k(root, train=("a.jpg", "b.jpg"), dev=("c.jpg",), missing=("b.jpg",)) -> str:
    """A Flickr8k folder whose token file lists a, b, c (b's photo absent by default)."""
    root = str(root)
    text = os.path.join(root, "Flickr8k_text")
    os.makedirs(text)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        if name not in missing:
            _image(os.path.join(root, "Flicker8k_Dataset", name))
    with open(os.path.join(text, "Flickr8k.token.txt"), "w", encoding="utf-8") as f:
        for name in ("a.jpg", "b.jpg", "c.jpg"):
            f.writelines(f"{name}#{n}\t{caption}\n" for n, caption in enumerate(CAPTIONS))
    for file_name, names in (("Flickr_8k.trainImages.txt", train), ("Flickr_8k.devImages.txt", dev)):
        if names is not None:
            with open(os.path.join(text, file_name), "w", encoding="utf-8") as f:
                f.writelines(f"{name}\n" for name in names)
    return root


def _coco(root) -> tuple[str, str]:
    """A COCO-format folder: train2014/ with two photos and annotations/captions_train2014.json."""
    root = str(root)
    images = [{"id": i, "file_name": f"COCO_train2014_{i:012d}.jpg"} for i in (1, 2)]
    for image in images:
        _image(os.path.join(root, "train2014", image["file_name"]))
    annotations = [{"id": 10 * i + k, "image_id": i, "caption": caption}
                   for i in (1, 2) for k, caption in enumerate(CAPTIONS)]
    path = os.path.join(root, "annotations", "captions_train2014.json")
    os.makedirs(os.path.dirname(path))
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"images": images, "annotations": annotations}, f)
    return os.path.join(root, "train2014"), path


def test_a_good_flickr8k_folder_passes_with_counts_and_every_problem(tmp_path, capsys):
    root = _flickr8k(tmp_path)
    result = check_dataset(DataConfig(dataset="flickr8k", data_dir=root))
    assert result.ok and result.errors == []
    assert result.splits == {"train": (1, 3), "val": (1, 3)}
    assert main(["--dataset", "flickr8k", "--data-dir", root]) == 0
    out = capsys.readouterr().out
    assert "train: 1 images, 3 captions" in out and "val: 1 images, 3 captions" in out
    assert "missing_image" in out and "b.jpg" in out  # the absent photo is named with its reason
    assert out.rstrip().endswith("ready for extraction")


def test_a_flickr8k_folder_without_a_dev_split_fails(tmp_path, capsys):
    root = _flickr8k(tmp_path, dev=None, missing=())
    result = check_dataset(DataConfig(dataset="flickr8k", data_dir=root))
    assert not result.ok and result.splits == {"train": (2, 6)}
    assert main(["--dataset", "flickr8k", "--data-dir", root]) == 1
    out = capsys.readouterr().out
    assert "no images in the 'val' split" in out and "Flickr_8k.devImages.txt" in out
    assert out.rstrip().endswith("not ready: training could not start")


def test_a_missing_folder_or_token_file_fails_naming_it(tmp_path, capsys):
    assert main(["--dataset", "flickr8k", "--data-dir", str(tmp_path / "nowhere")]) == 1
    assert str(tmp_path / "nowhere") in capsys.readouterr().out
    os.makedirs(tmp_path / "empty")
    assert main(["--dataset", "flickr8k", "--data-dir", str(tmp_path / "empty")]) == 1
    assert "Flicker8k_Dataset does not exist" in capsys.readouterr().out
    os.makedirs(tmp_path / "empty" / "Flicker8k_Dataset")
    assert main(["--dataset", "flickr8k", "--data-dir", str(tmp_path / "empty")]) == 1
    assert "Flickr8k.token.txt" in capsys.readouterr().out


def test_coco_is_refused_with_the_karpathy_command(tmp_path, capsys):
    images, annotations = _coco(tmp_path)
    result = check_dataset(DataConfig(dataset="coco", data_dir=images, coco_annotations=annotations))
    assert not result.ok
    assert "--dataset karpathy" in result.errors[0] and "dataset_coco.json" in result.errors[0]
    assert main(["--dataset", "coco", "--data-dir", images, "--coco-annotations", annotations]) == 1


def test_karpathy_splits_of_the_same_photos_pass(tmp_path):
    images, _ = _coco(tmp_path)
    entries = [{"filepath": "train2014", "filename": f"COCO_train2014_{i:012d}.jpg", "cocoid": i, "split": split,
                "sentences": [{"raw": caption, "sentid": 10 * i + k} for k, caption in enumerate(CAPTIONS)]}
               for i, split in ((1, "restval"), (2, "val"))]
    with open(tmp_path / "dataset_coco.json", "w", encoding="utf-8") as f:
        json.dump({"images": entries, "dataset": "coco"}, f)
    result = check_dataset(DataConfig(dataset="karpathy", data_dir=str(tmp_path)))
    assert result.ok and result.splits == {"train": (1, 3), "val": (1, 3)}


@pytest.mark.parametrize("tool", ["train", "extract"])
def test_training_or_extraction_on_one_coco_file_is_refused_before_extraction(tmp_path, capsys, tool):
    images, annotations = _coco(tmp_path / "coco")
    workdir, features = str(tmp_path / "run"), str(tmp_path / "features")
    if tool == "train":
        from sat_tf.train import main as run

        argv = ["--dataset", "coco", "--data-dir", images, "--coco-annotations", annotations, "--workdir", workdir]
        assert run(argv) == 1
        features = os.path.join(workdir, "features")
    else:
        from sat_tf.pipelines.extract.__main__ import main as run

        argv = ["--dataset", "coco", "--data-dir", images, "--coco-annotations", annotations, "--out", features]
        with pytest.raises(ValueError, match="--dataset karpathy"):
            run(argv)
    if tool == "train":
        assert "--dataset karpathy" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(features, "manifest.json"))
    assert not os.path.isdir(features) or not any(name.endswith(".tfrecord") for name in os.listdir(features))
