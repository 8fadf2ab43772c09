"""tf.distribute strategies for `python -m sat_tf.train --strategy ...`: building one, and who the chief is.

Training itself is `model.fit` under `strategy.scope()` for every strategy (`sat_tf.training.trainer`); this file
only builds the strategy from its command-line name and the standard TF_CONFIG, and answers the two questions the
trainer asks of a multi-worker job: which process writes the outputs, and when every worker has reached a point.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Sequence

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def parse_tf_config(text: str | None = None) -> dict[str, Any]:
    """Reads and checks TF_CONFIG (the environment variable when `text` is None).

    The standard format, one per process: {"cluster": {"worker": ["host0:port", "host1:port", ...]},
    "task": {"type": "worker", "index": i}} (optionally with a one-address "chief" list; the chief, else worker 0,
    writes the outputs).

    Raises:
        ValueError: TF_CONFIG is absent, not JSON, or lacks the cluster or this task.
    """
    example = '{"cluster": {"worker": ["host0:12345", "host1:12345"]}, "task": {"type": "worker", "index": 0}}'
    if text is None:
        text = os.environ.get("TF_CONFIG")
    if not text:
        raise ValueError(f"strategy 'multi_worker' needs TF_CONFIG in every process, e.g. TF_CONFIG='{example}' "
                         f"(see docs/distributed.md)")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON ({e}); expected e.g. {example}") from e
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not any(cluster.get(k) for k in ("worker", "chief")):
        raise ValueError(f"TF_CONFIG has no cluster.worker (or cluster.chief) address list: {text}")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ValueError(f"TF_CONFIG has no task {{'type', 'index'}}: {text}")
    members = cluster.get(task["type"])
    if not isinstance(members, list) or not 0 <= int(task["index"]) < len(members):
        raise ValueError(f"TF_CONFIG task {task} is not in its cluster {cluster}")
    return config


def make_strategy(name: str, *, devices: Sequence[str] | None = None, tpu: str | None = None
                  ) -> tf.distribute.Strategy:
    """Builds the tf.distribute strategy named on the command line (`--strategy`).

    Create it first thing in the program: "multi_worker" and "tpu" configure the TensorFlow runtime, which fails
    once other ops have run.

    Args:
        name: str. "default" (no distribution: this process's default device), "mirrored" (synchronous over the
            local GPUs), "multi_worker" (synchronous over the processes listed in the standard TF_CONFIG
            environment variable, each with its local GPUs or CPU; see `parse_tf_config`) or "tpu" (the TPU
            found by `TPUClusterResolver`; not tested in this project's CI, which has no TPU).
        devices: optional device names for "mirrored" (default: every local GPU, else the CPU).
        tpu: "tpu" only: the TPU's name or grpc:// address (default: $TPU_NAME, else "local", i.e. the TPU VM
            this process runs on).

    Returns:
        The strategy; `strategy.num_replicas_in_sync` is R.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=list(devices) if devices else None)
    if name == "multi_worker":
        parse_tf_config()
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.AUTO)
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver,
                                                         communication_options=options)
    if name == "tpu":
        address = tpu if tpu is not None else os.environ.get("TPU_NAME", "local")
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)
        if address != "local":
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"unknown strategy {name!r}; choose one of {STRATEGIES}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the job's outputs: the "chief" task, else worker 0, else the only process."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    if resolver.task_type == "chief":
        return True
    cluster = resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and int(resolver.task_id or 0) == 0 and "chief" not in cluster


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """Processes of the job (1 outside a multi-worker cluster)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return 1
    cluster = resolver.cluster_spec().as_dict()
    return sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))


def replica_sum(strategy: tf.distribute.Strategy) -> Callable[[float], float]:
    """A function giving the sum over all replicas of a number each process passes (a barrier between workers:
    it returns once every worker has called it). Build it once per strategy: each build traces a tf.function."""
    total = tf.function(lambda v: strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(tf.identity, args=(v,)),
                                                  axis=None))
    return lambda value: float(total(tf.constant(value, tf.float32)))
