"""Peak memory of `python -m sat_tf.caption` on a folder of N images: it must stay flat in N (streaming in batches).

    python -m benchmarks.caption_memory --workdir runs/quick [--counts 100 1000] [--figures]
        [--images-dir data/flickr8k/Flicker8k_Dataset]

Each count runs the real command in its own process (`python -m sat_tf.caption --workdir DIR FOLDER --out
captions.jsonl`, and `--attention-map figures/` with `--figures`: drawing a figure costs more than captioning) on
a folder of N images, and reads that process's peak resident memory (ru_maxrss from wait4) and wall time. The images are the first N JPEGs of `--images-dir` (linked, not copied), or
else synthetic 500x375 JPEGs (Flickr8k's typical size) of smooth random colour fields. Prints a table and the
ratio of the largest count's peak to the smallest's (goal: within 1.10).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def synthetic_jpegs(folder: str, count: int, size: tuple[int, int] = (500, 375), seed: int = 0) -> None:
    """`count` JPEGs of smooth random colour fields (upsampled 8x6 noise) in `folder`."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for k in range(count):
        small = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
        small.resize(size, Image.BICUBIC).save(os.path.join(folder, f"image_{k:05d}.jpg"), quality=90)


def linked_images(source: str, folder: str, count: int) -> None:
    """Symbolic links to the first `count` JPEGs of `source` (sorted by name) in `folder`."""
    names = sorted(n for n in os.listdir(source) if n.lower().endswith((".jpg", ".jpeg")))[:count]
    if len(names) < count:
        raise SystemExit(f"{source} has {len(names)} JPEGs, fewer than {count}")
    os.makedirs(folder, exist_ok=True)
    for name in names:
        os.symlink(os.path.abspath(os.path.join(source, name)), os.path.join(folder, name))


def run_caption(workdir: str, folder: str, out_dir: str, extra: list[str]) -> tuple[float, float, int]:
    """(peak RSS in MiB, seconds, exit code) of one `python -m sat_tf.caption` process on `folder`."""
    command = [sys.executable, "-m", "sat_tf.caption", "--workdir", workdir, folder, "--no-progress",
               "--out", os.path.join(out_dir, "captions.jsonl"), *extra]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.stderr.write(process.stderr.read().decode(errors="replace")[-2000:])
    process.stderr.close()
    return usage.ru_maxrss / 1024, seconds, process.returncode  # ru_maxrss is in KiB on Linux


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a trained work dir (e.g. python -m sat_tf.train --quick)")
    parser.add_argument("--counts", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--images-dir", default="", help="take the images from here (default: synthetic JPEGs)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--figures", action="store_true", help="also write every image's attention figure")
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory(prefix="caption-memory-") as tmp:
        for count in args.counts:
            folder = os.path.join(tmp, f"images_{count}")
            if args.images_dir:
                linked_images(args.images_dir, folder, count)
            else:
                synthetic_jpegs(folder, count)
            out = os.path.join(tmp, f"out_{count}")
            extra = ["--batch-size", str(args.batch_size)]
            if args.figures:
                extra += ["--attention-map", os.path.join(out, "figures")]
            peak, seconds, code = run_caption(args.workdir, folder, out, extra)
            with open(os.path.join(out, "captions.jsonl"), encoding="utf-8") as f:
                records = sum(1 for _ in f)
            figures = len(os.listdir(os.path.join(out, "figures"))) if os.path.isdir(os.path.join(out, "figures")) \
                else 0
            rows.append((count, peak, seconds, records, figures, code))
    source = args.images_dir or "synthetic 500x375 JPEGs"
    print(f"caption peak memory, {source}, batch {args.batch_size}, work dir {args.workdir}"
          + (", with attention figures" if args.figures else ""))
    print("| images | peak RSS MiB | seconds | images/s | records | figures | exit |\n|---|---|---|---|---|---|---|")
    for count, peak, seconds, records, figures, code in rows:
        print(f"| {count} | {peak:.0f} | {seconds:.0f} | {count / seconds:.1f} | {records} | {figures} | {code} |")
    smallest, largest = min(rows), max(rows)
    print(f"peak at {largest[0]} / peak at {smallest[0]} images: {largest[1] / smallest[1]:.3f} (goal <= 1.10)")
    return 0 if all(row[5] == 0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
