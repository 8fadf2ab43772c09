"""sat_tf.timing.median_seconds: one warm-up call, then the median of the timed ones."""

import time

from sat_tf.timing import median_seconds


def test_median_seconds_warms_up_once_and_takes_the_median():
    delays = iter([0.6, 0.0, 0.3, 0.0])  # warm-up (not timed), then three timed calls
    calls = []

    def call():
        calls.append(1)
        time.sleep(next(delays))

    seconds = median_seconds(call, runs=3)
    assert len(calls) == 4
    assert 0.0 <= seconds < 0.25  # the median of ~0, ~0.3, ~0: the warm-up's 0.6 s is not counted
