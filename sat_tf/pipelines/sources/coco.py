"""Reader of MS COCO caption annotations (`captions_train2014.json` and the like).

    {"images": [{"id": 57870, "file_name": "COCO_train2014_000000057870.jpg", ...}, ...],
     "annotations": [{"id": 787980, "image_id": 57870, "caption": "A restaurant has ..."}, ...]}

One file is one split, so the caller names it. Entries are checked one by one: a malformed image or annotation
entry is skipped and reported with its JSON path (e.g. "annotations[12]"); a file without the top-level
"images"/"annotations" arrays raises. Records follow the order of "images"; captions follow the order of
"annotations". An image id is the numeric COCO id as text.
"""

from __future__ import annotations

import os

from sat_tf.pipelines.sources.record import (DUPLICATE_CAPTION_ID, DUPLICATE_IMAGE, EMPTY_CAPTION, MALFORMED_ENTRY,
                                             MISSING_IMAGE, NO_CAPTIONS, SPLITS, UNKNOWN_IMAGE, CaptionRecord,
                                             ImageFiles, ReadReport, clean_caption, has_words, missing_key,
                                             raise_if_all_malformed, read_json, require_keys)

WHAT = "a COCO captions file (captions_*.json)"


def read_coco(annotations_file: str | os.PathLike, images_dir: str | os.PathLike, *, split: str,
              check_images: bool = True) -> tuple[list[CaptionRecord], ReadReport]:
    """Reads one COCO captions JSON file.

    Args:
        annotations_file: the captions JSON.
        images_dir: folder of the images its "file_name"s name (e.g. train2014/).
        split: str. Split of every record ("train", "val", "test").
        check_images: bool. Skip (MISSING_IMAGE) images whose file is absent.

    Returns:
        (records, report).

    Raises:
        FileNotFoundError: the JSON file or (with check_images) the image folder does not exist.
        ValueError: the file is not JSON, lacks "images"/"annotations" arrays, or has no well-formed entry in one
            of them; the message names the file and key.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = os.fspath(annotations_file)
    images_dir = os.fspath(images_dir)
    report = ReadReport(f"coco {path}")
    images = ImageFiles(images_dir) if check_images else None
    data = read_json(path, report, WHAT)
    require_keys(data, path, WHAT, images=list, annotations=list)

    file_names: dict[object, str] = {}
    for i, image in enumerate(data["images"]):
        where = f"images[{i}]"
        problem = missing_key(image, ("id", "file_name"))
        if problem is None and not isinstance(image["file_name"], str):
            problem = f"has a non-string 'file_name' {image['file_name']!r}"
        if problem is None and not isinstance(image["id"], (int, str)):
            problem = f"has an 'id' {image['id']!r} that is neither a number nor a string"
        if problem is not None:
            report.add(MALFORMED_ENTRY, path, None, f"{where} {problem}")
        elif image["id"] in file_names:
            report.add(DUPLICATE_IMAGE, path, None, f"{where}: image id {image['id']!r} listed before")
        else:
            file_names[image["id"]] = image["file_name"]
    num_good_images = len(file_names) + report.count(DUPLICATE_IMAGE)
    raise_if_all_malformed(report, path, "images", len(data["images"]), num_good_images, WHAT)

    captions: dict[object, list[str]] = {image_id: [] for image_id in file_names}
    caption_ids: dict[object, str] = {}
    num_good_annotations = 0
    for j, annotation in enumerate(data["annotations"]):
        where = f"annotations[{j}]"
        problem = missing_key(annotation, ("image_id", "caption"))
        if problem is None and not isinstance(annotation["caption"], str):
            problem = f"has a non-string 'caption' {annotation['caption']!r}"
        if problem is not None:
            report.add(MALFORMED_ENTRY, path, None, f"{where} {problem}")
            continue
        num_good_annotations += 1
        caption_id = annotation.get("id")
        if caption_id is not None and not isinstance(caption_id, (dict, list)):
            if caption_id in caption_ids:
                report.add(DUPLICATE_CAPTION_ID, path, None,
                           f"{where}: caption id {caption_id!r} already used by {caption_ids[caption_id]}")
                continue
            caption_ids[caption_id] = where
        image_id = annotation["image_id"]
        if isinstance(image_id, (dict, list)) or image_id not in captions:
            report.add(UNKNOWN_IMAGE, path, None, f"{where}: image_id {image_id!r} is not in 'images'")
            continue
        caption = clean_caption(annotation["caption"])
        if not has_words(caption):
            report.add(EMPTY_CAPTION, path, None, f"{where}: caption has no words: {caption!r}")
            continue
        captions[image_id].append(caption)
    raise_if_all_malformed(report, path, "annotations", len(data["annotations"]), num_good_annotations, WHAT)

    records = []
    for image_id, file_name in file_names.items():
        if not captions[image_id]:
            report.add(NO_CAPTIONS, path, None, f"image {image_id!r} ({file_name}) has no usable caption")
        elif images is not None and not images.exists(os.path.join(images_dir, file_name)):
            report.add(MISSING_IMAGE, path, None, f"image {image_id!r}: {file_name} is not in {images_dir}")
        else:
            records.append(CaptionRecord(image_id=str(image_id), image_path=os.path.join(images_dir, file_name),
                                         captions=tuple(captions[image_id]), split=split))
    report.finish(records)
    return records, report
