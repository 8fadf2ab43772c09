"""Cold start of captioning one photo with a shipped preset: a new process, to the caption printed.

    python -m benchmarks.cold_start [--preset flickr8k_soft] [--repeats 3] [--photo photo.jpg]

Rows: `python -m sat_tf.caption photo.jpg` (the default preset, what a new user types first) and a Python process
that runs `ImageCaptioner.from_preset(...)` plus one caption, the same with `--preset flickr8k_hard`. Each row is
the median wall time of `--repeats` fresh processes and the largest peak resident memory among them; the Python row
also reports where its time goes (imports, loading the preset and encoder, the first caption, a second caption).
Goal: 10 s or less on 2 CPU cores. Without `--photo`, a generated 320x240 JPEG is captioned.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

DEFAULT = "flickr8k_soft"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PYTHON_API = """
import json, sys, time
start = time.perf_counter()
from sat_tf.inference.image_captioner import ImageCaptioner
imported = time.perf_counter()
captioner = ImageCaptioner.from_preset(sys.argv[1])
loaded = time.perf_counter()
first = captioner.caption([sys.argv[2]])[0]
captioned = time.perf_counter()
captioner.caption([sys.argv[2]])
again = time.perf_counter()
print(first.caption)
print(json.dumps({"import": imported - start, "load": loaded - imported, "first caption": captioned - loaded,
                  "second caption": again - captioned}))
"""


def _photo(path: str) -> str:
    import numpy as np
    from PIL import Image

    rng = np.random.RandomState(0)
    coarse = (rng.rand(6, 8, 3) * 255).astype(np.uint8)
    Image.fromarray(coarse).resize((320, 240), Image.BILINEAR).save(path, quality=90)
    return path


# Runs a module or code as __main__ and reports the process's own peak resident memory (KiB) on stderr at exit:
# VmHWM of /proc/self/status where there is one, because Linux carries ru_maxrss over an exec from the process that
# spawned it (a parent holding TensorFlow would show its own size in every child's ru_maxrss).
PEAK_WRAPPER = """
import atexit, resource, runpy, sys
def peak_kib():
    try:
        with open("/proc/self/status") as f:
            return int([line for line in f if line.startswith("VmHWM:")][0].split()[1])
    except (OSError, IndexError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
atexit.register(lambda: sys.stderr.write("\\nPEAK_RSS_KIB %d\\n" % peak_kib()))
kind, target, *sys.argv[1:] = sys.argv[1:]
if kind == "module":
    sys.argv[0] = target
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    exec(compile(target, "<benchmark>", "exec"), {"__name__": "__main__"})
"""


def run_fresh(kind: str, target: str, args: list[str], python: str = sys.executable) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, stdout) of one new Python process (interpreter `python`) running module or code
    `target`."""
    start = time.perf_counter()
    out = subprocess.run([python, "-c", PEAK_WRAPPER, kind, target, *args], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    seconds = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"{target} {' '.join(args)} failed: {out.stderr[-2000:]}")
    peak = [line for line in out.stderr.splitlines() if line.startswith("PEAK_RSS_KIB ")][-1]
    return seconds, int(peak.split()[1]) / 1024, out.stdout


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cold_start", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", nargs="+", default=["flickr8k_soft", "flickr8k_hard"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--photo", default="")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        photo = os.path.abspath(args.photo) if args.photo else _photo(os.path.join(tmp, "photo.jpg"))
        rows = []
        for preset in args.preset:
            flags = [] if preset == DEFAULT else ["--preset", preset]
            commands = {f"python -m sat_tf.caption {' '.join(flags + ['photo.jpg'])}":
                            ("module", "sat_tf.caption", [*flags, "--no-progress", photo]),
                        f"ImageCaptioner.from_preset({preset!r}) + one caption": ("code", PYTHON_API, [preset, photo])}
            for label, command in commands.items():
                runs = [run_fresh(*command) for _ in range(args.repeats)]
                phases = {}
                if "from_preset" in label:
                    parts = [json.loads(r[2].strip().splitlines()[-1]) for r in runs]
                    phases = {k: statistics.median(p[k] for p in parts) for k in parts[0]}
                rows.append((label, statistics.median(r[0] for r in runs), max(r[1] for r in runs), phases))
    print(f"cold start, {args.repeats} fresh processes per row (median wall, peak RSS), {os.cpu_count()} CPUs\n")
    print("| command | wall s | peak RSS MiB | phases (median s) |")
    print("|---|---|---|---|")
    for label, seconds, rss, phases in rows:
        detail = ", ".join(f"{k} {v:.2f}" for k, v in phases.items())
        print(f"| `{label}` | {seconds:.2f} | {rss:.0f} | {detail} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
