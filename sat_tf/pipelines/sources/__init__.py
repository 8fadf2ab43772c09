"""Dataset readers: each returns `(list[CaptionRecord], ReadReport)`, the records being (image id, image path,
captions, split) and the report listing every skipped or repaired item with its file, line and reason.

Readers are plain Python (no TensorFlow import), so listing a dataset is cheap.
"""

from sat_tf.pipelines.sources.coco import read_coco
from sat_tf.pipelines.sources.flickr8k import read_flickr8k
from sat_tf.pipelines.sources.imagefolder import read_imagefolder
from sat_tf.pipelines.sources.karpathy import read_karpathy
from sat_tf.pipelines.sources.record import SPLITS, CaptionRecord, Problem, ReadReport
from sat_tf.pipelines.sources.scenes import read_scene_objects, read_scenes, write_scenes

__all__ = ["SPLITS", "CaptionRecord", "Problem", "ReadReport", "read_coco", "read_flickr8k", "read_imagefolder",
           "read_karpathy", "read_scene_objects", "read_scenes", "write_scenes"]
