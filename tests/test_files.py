"""sat_tf.files: atomic writes keep the previous file on failure and give the new one open()'s permissions."""

import os
import stat

import pytest

from sat_tf.files import write_atomic, write_json_atomic


def test_written_file_has_the_permissions_open_would_give(tmp_path):
    path = write_atomic(tmp_path / "report.html", lambda f: f.write("<html></html>"))
    with open(tmp_path / "plain.txt", "w") as f:  # what open() gives under this process's umask
        f.write("x")
    assert stat.S_IMODE(os.stat(path).st_mode) == stat.S_IMODE(os.stat(tmp_path / "plain.txt").st_mode)
    assert open(path).read() == "<html></html>"


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    path = write_json_atomic(tmp_path / "config.json", {"a": 1})

    def broken(f):
        f.write('{"a": ')
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed mid-write"):
        write_atomic(path, broken)
    assert open(path).read().replace(" ", "").replace("\n", "") == '{"a":1}'
    assert os.listdir(tmp_path) == ["config.json"]
