"""Helpers shared by the benchmarks: a dense-matmul peak measured in the same run, and robust timing."""

from __future__ import annotations

import statistics
import time

import tensorflow as tf


def matmul_peak_gflops(n: int = 2048, dtype=tf.float32, repeats: int = 10) -> float:
    """Best-of-`repeats` GFLOP/s of an n^3 matmul: the ceiling the useful GFLOP/s are compared with."""
    a = tf.random.normal([n, n], dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(tf.transpose(a), dtype)
    f = tf.function(lambda x, y: tf.reduce_sum(tf.cast(tf.matmul(x, y)[:1, :1], tf.float32)))
    f(a, b).numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        f(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def median_rate(run_window, windows: int) -> tuple[float, list[float]]:
    """Calls run_window() -> (items, seconds) `windows` times; returns the median rate and all rates."""
    rates = []
    for _ in range(windows):
        items, seconds = run_window()
        rates.append(items / seconds)
    return statistics.median(rates), rates


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start
