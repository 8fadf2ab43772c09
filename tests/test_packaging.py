"""`pipelines/` and `export/` install under the sat_tf namespace, never as generic top-level modules."""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_non_editable_install_maps_pipelines_and_export_under_sat_tf(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(ROOT)], check=True, cwd=tmp_path,
                   env={**os.environ, "PIP_NO_WARN_SCRIPT_LOCATION": "1"})
    installed = {p.name for p in target.iterdir()}
    assert "sat_tf" in installed
    assert "pipelines" not in installed and "export" not in installed and "tests" not in installed
    assert (target / "sat_tf" / "pipelines" / "__init__.py").is_file()
    assert (target / "sat_tf" / "export" / "__init__.py").is_file()
    # Imported from the installed copy (not the checkout), the namespaced names resolve inside site-packages.
    code = ("import sat_tf, sat_tf.pipelines, sat_tf.export, sat_tf.layers; "
            "print(sat_tf.pipelines.__file__); print(sat_tf.export.__file__)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(target), "TF_CPP_MIN_LOG_LEVEL": "3"}).stdout
    for line in out.split():
        assert line.startswith(str(target)), line
