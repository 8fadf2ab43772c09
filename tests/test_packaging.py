"""A non-editable install holds one top-level package, sat_tf, with every module of the checkout's sat_tf/ (the
pipelines and export sub-packages included) and the shipped presets' files (weights, configs, vocabularies, model
cards) within their size limit, never a generic top-level `pipelines` or `export`."""

import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def copy_of_the_checkout(dest: pathlib.Path) -> pathlib.Path:
    """setup.py, README.md and every top-level Python package (sat_tf, tests, tools, ...): what find_packages could
    pick up. pip builds in the source folder (build/, *.egg-info); the copy keeps that out of the checkout, and a
    stale build/ there out of the install."""
    dest.mkdir()
    for name in ("setup.py", "README.md"):
        shutil.copy(ROOT / name, dest / name)
    for folder in ROOT.iterdir():
        if (folder / "__init__.py").is_file():
            shutil.copytree(folder, dest / folder.name, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def test_non_editable_install_holds_every_sat_tf_module_and_nothing_else(tmp_path):
    source = copy_of_the_checkout(tmp_path / "src")
    assert {"sat_tf", "tests"} <= {p.name for p in source.iterdir()}
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(source)], check=True, cwd=tmp_path,
                   env={**os.environ, "PIP_NO_WARN_SCRIPT_LOCATION": "1"})
    installed = {p.name for p in target.iterdir() if not p.name.endswith((".dist-info", ".egg-info"))}
    assert installed == {"sat_tf"}, installed
    def modules(package: pathlib.Path) -> set[pathlib.Path]:
        return {p.relative_to(package) for p in package.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}

    in_install = modules(target / "sat_tf")
    assert modules(ROOT / "sat_tf") == in_install, sorted(modules(ROOT / "sat_tf") ^ in_install)
    assert {pathlib.Path("pipelines", "extract", "__init__.py"), pathlib.Path("export", "saved_model.py"),
            pathlib.Path("images", "tf_decode.py"), pathlib.Path("inference", "captioned.py"),
            pathlib.Path("evaluation", "report.py"), pathlib.Path("training", "workdir.py")} <= in_install
    presets = [p for p in in_install if p.parts[0] == "presets" and p.name == "model.weights.h5"]
    assert {p.parts[1] for p in presets} >= {"flickr8k_soft", "flickr8k_hard"}
    preset_bytes = sum((target / "sat_tf" / p).stat().st_size for p in in_install if p.parts[0] == "presets")
    assert preset_bytes <= 50 * 1024 * 1024, preset_bytes
    # Imported from the installed copy (not the checkout), the sub-packages resolve inside the install target.
    code = ("import sat_tf, sat_tf.pipelines, sat_tf.export, sat_tf.layers; "
            "print(sat_tf.pipelines.__file__); print(sat_tf.export.__file__)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(target), "TF_CPP_MIN_LOG_LEVEL": "3"}).stdout
    lines = out.split()
    assert len(lines) == 2
    for line in lines:
        assert line.startswith(str(target)), line
