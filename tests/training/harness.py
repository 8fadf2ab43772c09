"""Tiny deterministic training runs for the tf.distribute tests, importable and runnable as a worker process.

`python -m tests.training.harness '<json spec>'` (from the repository root) trains one run with `model.fit`
(`with strategy.scope(): model = ...; model.fit(distributed dataset)`, the trainer's `fit_epochs`) and writes its
final weights to
`spec["out"]` (an .npz). Spec keys:
    attention: "soft" | "hard";  strategy: "default" | "mirrored" | "multi_worker" (TF_CONFIG from the
    environment);  logical_cpus: int (> 1 splits the CPU into that many logical devices before anything else
    runs, for "mirrored");  out: str;  epochs: int;
    uneven: bool (the last global batch is partial: with two replicas the second gets none);
    trim: bool (each replica batch is cut to its longest caption, as the training pipeline cuts its batches: with
        two replicas their batches then differ in shape, short captions in the first, long ones in the second);
    weight_average_decay: float;  reinforce_baseline: str;
    runs: a list of such specs to train one after the other in this process.

The data are the same whatever the strategy: a fixed list of global batches, each sliced into its replica
batches in replica order by `sliced_dataset_fn`, so every run trains on the same global batches.

Shapes: G global batch, B per-replica batch, L locations, D depth, T+1 tokens.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

GLOBAL_BATCH = 8
STEPS_PER_EPOCH = 3
L, D, V, TOKENS = 4, 8, 40, 7  # TOKENS = T + 1


def tf_config(workers: list[str], index: int) -> str:
    """The TF_CONFIG JSON of worker `index` of a cluster of `workers` ("host:port" each); worker 0 is chief."""
    return json.dumps({"cluster": {"worker": list(workers)}, "task": {"type": "worker", "index": int(index)}})


def global_batches(uneven: bool = False, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """STEPS_PER_EPOCH global batches {"annotations": (G, L, D), "tokens": (G, T+1)} with mixed caption lengths.

    Lengths differ inside and between batches, so replicas of one step see different real-token counts (the
    case where dividing by a local instead of the global count would give other gradients). `uneven` cuts the
    last batch to 3 captions: fewer than one replica batch, so with two replicas the second gets no data (an
    empty batch) in the last step.
    """
    rng = np.random.RandomState(seed)
    batches = []
    for s in range(STEPS_PER_EPOCH):
        size = 3 if uneven and s == STEPS_PER_EPOCH - 1 else GLOBAL_BATCH
        tokens = np.zeros((size, TOKENS), "int32")
        for b in range(size):
            # The first half of a batch (replica 0's of two) has short captions, the second half long ones.
            n = 1 + (b + s) % 2 if b < GLOBAL_BATCH // 2 else TOKENS - 2 - (b % 2)
            tokens[b, 0] = 1
            tokens[b, 1:n + 1] = rng.randint(3, V, size=n)
            tokens[b, n + 1] = 2
        batches.append({"annotations": rng.randn(size, L, D).astype("float32"), "tokens": tokens})
    return batches


def sliced_dataset_fn(batches: list[dict[str, np.ndarray]], trim: bool = False):
    """dataset_fn(input_context): this input pipeline's replica slices of every global batch, in step order.

    Pipeline p serves replicas p*r .. p*r + r - 1 (r replicas per pipeline); the distributed iterator hands a
    pipeline's consecutive elements to its replicas in order. Empty slices are left out, so a pipeline can end
    a step early (then its replicas get empty batches). `trim` cuts every slice to its longest caption.
    """
    import tensorflow as tf

    def dataset_fn(context):
        per_replica = context.get_per_replica_batch_size(GLOBAL_BATCH)
        local = context.num_replicas_in_sync // context.num_input_pipelines
        elements = []
        for batch in batches:
            for j in range(local):
                start = (context.input_pipeline_id * local + j) * per_replica
                piece = {k: v[start:start + per_replica] for k, v in batch.items()}
                if len(piece["tokens"]):
                    if trim:  # up to the last column holding a real token
                        piece["tokens"] = piece["tokens"][:, :int(np.max(np.nonzero(piece["tokens"])[1])) + 1]
                    elements.append(piece)

        def generate():
            yield from elements

        signature = {"annotations": tf.TensorSpec((None, L, D), tf.float32),
                     "tokens": tf.TensorSpec((None, None if trim else TOKENS), tf.int32)}
        return tf.data.Dataset.from_generator(generate, output_signature=signature)

    return dataset_fn


def configs(attention: str, epochs: int = 2, weight_average_decay: float = 0.0,
            reinforce_baseline: str = "moving_average"):
    from sat_tf import config as cfg

    model = cfg.ModelConfig(vocab_size=V, feature_dim=D, embedding_dim=8, units=16, attention_dim=8,
                            attention=attention, dropout=0.0, expected_context_prob=0.5,
                            reinforce_baseline=reinforce_baseline)
    # A large learning rate and a clip that binds, so a wrong reduction or clip shows in the weights.
    train = cfg.TrainConfig(batch_size=GLOBAL_BATCH, epochs=epochs, learning_rate=0.05, clip_norm=0.5, seed=7,
                            keep_checkpoints=5, weight_average_decay=weight_average_decay)
    return model, train


def state_of(model) -> dict[str, np.ndarray]:
    """Every model weight (baseline included) and the optimizer's step and moments, by stable keys."""
    state = {f"w{i:03d}": np.asarray(w.numpy()) for i, w in enumerate(model.weights)}
    state.update({f"o{i:03d}": np.asarray(v.numpy()) for i, v in enumerate(model.optimizer.variables)})
    return state


def train(spec: dict):
    """Runs one training as the spec says; returns the model."""
    import tensorflow as tf

    from sat_tf.training.strategy import make_strategy
    from sat_tf.training.trainer import build_model, fit_epochs

    name = spec.get("strategy", "default")
    devices = [f"/cpu:{i}" for i in range(spec["logical_cpus"])] if name == "mirrored" else None
    strategy = make_strategy(name, devices=devices)
    model_config, train_config = configs(spec["attention"], spec.get("epochs", 2),
                                         spec.get("weight_average_decay", 0.0),
                                         spec.get("reinforce_baseline", "moving_average"))
    with strategy.scope():
        model = build_model(model_config, train_config)
    dataset_fn = sliced_dataset_fn(global_batches(spec.get("uneven", False)), trim=spec.get("trim", False))
    # The same global batches every epoch, all epochs in the trainer's one `model.fit`.
    fit_epochs(model, lambda epoch, context=None: dataset_fn(context or tf.distribute.InputContext()), strategy,
               0, train_config.epochs, [], verbose=2, steps=STEPS_PER_EPOCH)
    return model


def main(argv: list[str]) -> None:
    spec = json.loads(argv[1])
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if spec.get("logical_cpus", 1) > 1:  # before anything else initialises TensorFlow's devices
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * spec["logical_cpus"])
    runs = spec.pop("runs", None) or [spec]
    for run in runs:
        run.setdefault("logical_cpus", spec.get("logical_cpus", 1))
        model = train(run)
        np.savez(run["out"], **state_of(model))
        print(f"done {run['out']} step={int(model.optimizer.iterations.numpy())}", flush=True)


if __name__ == "__main__":
    main(sys.argv)
