"""The images a command is given (`sat_tf.images.paths`): files, folders and glob patterns expanded in a stable
order, hidden entries skipped, and every pattern or folder that yields no image reported with the reason."""

from __future__ import annotations

import os

from sat_tf.images.paths import expand_image_paths


def test_folders_globs_and_files_expand_in_a_stable_order(tmp_path):
    (tmp_path / "a" / "sub").mkdir(parents=True)
    (tmp_path / "a" / ".hidden").mkdir()
    (tmp_path / "empty").mkdir()
    for name in ("a/2.jpg", "a/1.PNG", "a/notes.txt", "a/sub/3.jpeg", "a/.hidden/4.jpg", "b.webp"):
        (tmp_path / name).write_bytes(b"x")
    folder, pattern, file = str(tmp_path / "a"), str(tmp_path / "**" / "*.webp"), str(tmp_path / "a" / "2.jpg")
    paths, missing = expand_image_paths([folder, pattern, file, str(tmp_path / "none" / "*.jpg"),
                                         str(tmp_path / "gone.jpg"), str(tmp_path / "empty")])
    assert [os.path.relpath(p, tmp_path) for p in paths] == ["a/1.PNG", "a/2.jpg", "a/sub/3.jpeg", "b.webp",
                                                               "gone.jpg"]  # 2.jpg once; gone.jpg errs later
    assert missing == [(str(tmp_path / "none" / "*.jpg"), "no image file matches"),
                       (str(tmp_path / "empty"), "cannot read file (a folder with no image file in it)")]
    paths, missing = expand_image_paths([str(tmp_path / "a" / "sub" / "*.jpeg")])
    assert paths == [str(tmp_path / "a" / "sub" / "3.jpeg")] and missing == []
