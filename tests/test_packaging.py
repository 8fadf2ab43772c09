"""A non-editable install holds one top-level package, sat_tf, with every module of the checkout's sat_tf/ (the
pipelines and export sub-packages included), never a generic top-level `pipelines` or `export`."""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_non_editable_install_holds_every_sat_tf_module_and_nothing_else(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(ROOT)], check=True, cwd=tmp_path,
                   env={**os.environ, "PIP_NO_WARN_SCRIPT_LOCATION": "1"})
    installed = {p.name for p in target.iterdir() if not p.name.endswith((".dist-info", ".egg-info"))}
    assert installed == {"sat_tf"}, installed
    package = ROOT / "sat_tf"
    sources = {p.relative_to(package) for p in package.rglob("*") if p.suffix in (".py", ".typed")}
    copied = {p.relative_to(target / "sat_tf") for p in (target / "sat_tf").rglob("*") if p.suffix in (".py", ".typed")}
    assert sources == copied, sorted(sources ^ copied)
    assert pathlib.Path("pipelines", "extract.py") in copied and pathlib.Path("export", "saved_model.py") in copied
    # Imported from the installed copy (not the checkout), the sub-packages resolve inside the install target.
    code = ("import sat_tf, sat_tf.pipelines, sat_tf.export, sat_tf.layers; "
            "print(sat_tf.pipelines.__file__); print(sat_tf.export.__file__)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(target), "TF_CPP_MIN_LOG_LEVEL": "3"}).stdout
    lines = out.split()
    assert len(lines) == 2
    for line in lines:
        assert line.startswith(str(target)), line
