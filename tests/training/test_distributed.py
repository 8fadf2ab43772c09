"""tf.distribute training: `model.fit` with `Captioner.train_step` under MirroredStrategy or two worker processes
computes what one process computes (`sat_tf.models.distributed_fit`, `sat_tf.training.strategy`).

The equality tests train the tiny model of `tests/training/harness.py` with a plain `model.fit` for 6 steps (2
epochs) with a large learning rate and a binding clip, then compare every weight, the REINFORCE baseline and the
optimizer state with a default-strategy run on the same global batches. Measured here: differences up to ~4e-6 (float summation order),
against ~0.3 when each replica normalises its loss by its own token count (the usual mistake), so the tolerance
below separates right from wrong by five orders of magnitude.

Runs that need a fresh TensorFlow runtime (logical CPU devices, one process per worker) are subprocesses of
`python -m tests.training.harness`; every one is killed on the way out, whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import types

import numpy as np
import pytest
import tensorflow as tf

from sat_tf.training import strategy as strategies
from tests.training import harness

ROOT = pathlib.Path(__file__).resolve().parents[2]
TOLERANCE = {"rtol": 1e-4, "atol": 3e-5}
TIMEOUT_S = 300  # per group of processes; the 2-core CI machine is shared, a quiet run needs ~40 s


# -- process helpers ----------------------------------------------------------------------------------------


def _free_ports(count: int) -> list[int]:
    """Ports free on localhost now (all bound at once, so they differ)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]


class _Jobs:
    """Harness subprocesses started by a test; `close` kills every one still running (by its own pid)."""

    def __init__(self, log_dir: pathlib.Path):
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, spec: dict, env: dict[str, str] | None = None) -> subprocess.Popen:
        environment = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
        environment.update({"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT), **(env or {})})
        log = open(self.log_dir / f"{name}.log", "w")
        proc = subprocess.Popen([sys.executable, "-m", "tests.training.harness", json.dumps(spec)], cwd=ROOT,
                                env=environment, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs[name] = proc
        return proc

    def tail(self, name: str, lines: int = 25) -> str:
        text = (self.log_dir / f"{name}.log").read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def wait(self, *names: str, timeout: float = TIMEOUT_S) -> dict[str, int]:
        """Exit codes of `names`; a process still running at the deadline fails the test with the logs."""
        deadline = time.monotonic() + timeout
        codes = {}
        for name in names:
            try:
                codes[name] = self.procs[name].wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                self.close()
                pytest.fail(f"{name} still running after {timeout:.0f} s:\n"
                            + "\n".join(f"--- {n}\n{self.tail(n)}" for n in names))
        return codes

    def expect_success(self, *names: str, timeout: float = TIMEOUT_S) -> None:
        codes = self.wait(*names, timeout=timeout)
        failed = [n for n, code in codes.items() if code != 0]
        assert not failed, "\n".join(f"--- {n} exited {codes[n]}:\n{self.tail(n)}" for n in failed)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


@pytest.fixture
def jobs(tmp_path):
    group = _Jobs(tmp_path)
    try:
        yield group
    finally:
        group.close()


def _load(path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _assert_same_state(a: dict, b: dict, what: str, exact: bool = False) -> None:
    assert sorted(a) == sorted(b), what
    for key in sorted(a):
        if exact:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{what}: {key}")
        else:
            np.testing.assert_allclose(a[key], b[key], err_msg=f"{what}: {key}", **TOLERANCE)


def _baseline_updates(state: dict) -> float:
    return float(state["w001"])  # the model's weights start with baseline, baseline_updates


# -- strategies and roles -----------------------------------------------------------------------------------


def test_tf_config_is_checked_before_a_multi_worker_strategy_is_built(monkeypatch):
    config = harness.tf_config(["localhost:1", "localhost:2"], 1)
    assert strategies.parse_tf_config(config)["task"] == {"type": "worker", "index": 1}
    for text, message in [("", "needs TF_CONFIG"), ("{not json", "not valid JSON"),
                          ('{"task": {"type": "worker", "index": 0}}', "no cluster.worker"),
                          ('{"cluster": {"worker": ["a:1"]}}', "no task"),
                          ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}', "not in")]:
        with pytest.raises(ValueError, match=message):
            strategies.parse_tf_config(text)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs TF_CONFIG"):
        strategies.make_strategy("multi_worker")
    with pytest.raises(ValueError, match="unknown strategy 'mirorred'"):
        strategies.make_strategy("mirorred")
    assert strategies.make_strategy("default") is tf.distribute.get_strategy()


def test_the_chief_is_the_chief_task_else_worker_zero_and_every_task_is_a_worker():
    def strategy(task_type, task_id, cluster):
        resolver = types.SimpleNamespace(task_type=task_type, task_id=task_id,
                                         cluster_spec=lambda: tf.train.ClusterSpec(cluster))
        return types.SimpleNamespace(cluster_resolver=resolver)

    workers = {"worker": ["a:1", "b:1"]}
    assert strategies.is_chief(strategy("worker", 0, workers))
    assert not strategies.is_chief(strategy("worker", 1, workers))
    with_chief = {"chief": ["c:1"], **workers}
    assert strategies.is_chief(strategy("chief", 0, with_chief))
    assert not strategies.is_chief(strategy("worker", 0, with_chief))
    assert strategies.is_chief(tf.distribute.get_strategy())  # one process
    # every process of the job counts, the chief task included; one process outside a cluster
    assert strategies.num_workers(strategy("worker", 1, workers)) == 2
    assert strategies.num_workers(strategy("chief", 0, with_chief)) == 3
    assert strategies.num_workers(tf.distribute.get_strategy()) == 1


def test_the_global_batch_must_split_evenly_over_the_replicas(tmp_path):
    from sat_tf import config as cfg
    from sat_tf.training import trainer

    model, train = harness.configs("soft")
    fake = types.SimpleNamespace(num_replicas_in_sync=3)
    with pytest.raises(ValueError, match="divisible by the 3 replicas"):
        trainer.train(str(tmp_path), model, train, cfg.scenes_default()[2], strategy=fake)
    assert not os.listdir(tmp_path)  # refused before anything was written


# -- the Captioner pieces the replica step relies on ------------------------------------------------------


def _hard_model():
    from sat_tf.models.captioner import Captioner

    model, _ = harness.configs("hard")
    return Captioner.from_model_config(model, seed=3)


def test_locations_drawn_by_global_row_do_not_depend_on_the_split_and_follow_alpha():
    model = _hard_model()
    batch = harness.global_batches()[0]
    a, y = batch["annotations"], batch["tokens"]  # (8, L, D), (8, T+1)
    seed, no = tf.constant([5, 6]), tf.constant(False)

    def locations(rows, offset):
        out = model.teacher_forcing(a[rows], y[rows], training=True, seed=seed, use_expected=no,
                                    sample_rows=(offset, len(y)))
        return out["location"].numpy()  # (B, T)

    whole = locations(slice(0, 8), 0)
    np.testing.assert_array_equal(whole, np.concatenate([locations(slice(0, 3), 0), locations(slice(3, 8), 3)]))
    # Gumbel-max is an exact draw: 20,000 copies of one caption, first step, against a far from uniform alpha_0.
    score = model.cell.attention.score.kernel
    score.assign(score * 4.0)
    n = 20000
    many = np.repeat(a[:1], n, 0), np.repeat(y[:1], n, 0)
    out = model.teacher_forcing(*many, training=True, seed=seed, use_expected=no, sample_rows=(0, n))
    counts = np.bincount(out["location"].numpy()[:, 0], minlength=harness.L)
    alpha = out["alpha"].numpy()[0, 0]
    assert alpha.max() - alpha.min() > 0.2, alpha
    np.testing.assert_allclose(counts / n, alpha, atol=4 * np.sqrt(alpha * (1 - alpha) / n).max())


@pytest.mark.parametrize("updates", [0.0, 2.0])
def test_loss_terms_with_global_counts_add_up_to_the_whole_batch(updates):
    """Two replica shares (different token counts) normalised by the global counts sum to the terms of the whole
    batch; the baseline (first update: the global mean itself) is the same for both shares."""
    model = _hard_model()
    model.baseline.assign(-7.0)
    model.baseline_updates.assign(updates)
    batch = harness.global_batches()[1]
    a, y = batch["annotations"], batch["tokens"]
    seed, no = tf.constant([1, 2]), tf.constant(False)
    full = model.loss_terms(model.teacher_forcing(a, y, training=True, seed=seed, use_expected=no,
                                                  sample_rows=(0, 8)), sampled=True)
    num_tokens = float(np.sum(y[:, 1:] != 0))
    outs = [model.teacher_forcing(a[r], y[r], training=True, seed=seed, use_expected=no, sample_rows=(o, 8))
            for r, o in ((slice(0, 4), 0), (slice(4, 8), 4))]
    log_p_y = [tf.reduce_sum(-tf.nn.sparse_softmax_cross_entropy_with_logits(o["targets"], o["logits"]) * o["mask"],
                             axis=1) for o in outs]
    global_mean = float(tf.reduce_mean(tf.concat(log_p_y, 0)))
    shares = [model.loss_terms(o, sampled=True, num_tokens=num_tokens, num_captions=8.0,
                               batch_mean=lambda values: tf.constant(global_mean)) for o in outs]
    assert np.sum(y[:4, 1:] != 0) != np.sum(y[4:, 1:] != 0)  # the shares really have different token counts
    for name in ("loss", "xent", "alpha_reg", "reinforce", "entropy"):
        np.testing.assert_allclose(float(shares[0][name] + shares[1][name]), float(full[name]), rtol=1e-5,
                                   atol=1e-6, err_msg=name)
    for share in shares:
        np.testing.assert_allclose(float(share["baseline"]), float(full["baseline"]), rtol=1e-6)


# -- equality with one process ------------------------------------------------------------------------------


def test_mirrored_over_two_cpus_gives_the_weights_of_the_default_strategy(jobs, tmp_path):
    """Soft and hard attention, each in its own process (two logical CPUs, so two replicas): default strategy, then
    MirroredStrategy, on the same global batches and seed. Soft attention cuts each replica batch to its longest
    caption, so the replicas' batches differ in shape, as the training pipeline's do (Keras' own symbolic build
    fails on that, keras#20585: without `SymbolicBuildFree` this test fails). Hard attention uses a partial last
    batch, so the second replica gets an empty batch once. Soft attention also keeps a weight average (its
    averages are optimizer variables, compared below); hard attention uses the expected-context REINFORCE
    baseline (computed per replica on its rows). (One MirroredStrategy per process: a second one in the same
    process reuses the first one's collective instance keys and its all-reduces fail with shape mismatches.)"""
    for attention, uneven in (("soft", False), ("hard", True)):
        runs = [{"attention": attention, "strategy": name, "uneven": uneven, "trim": attention == "soft",
                 "weight_average_decay": 0.5 if attention == "soft" else 0.0,
                 "reinforce_baseline": "expected_context" if attention == "hard" else "moving_average",
                 "out": str(tmp_path / f"{attention}_{name}.npz")}
                for name in ("default", "mirrored")]
        jobs.start(attention, {"logical_cpus": 2, "runs": runs})
    jobs.expect_success("soft", "hard")
    for attention in ("soft", "hard"):
        one = _load(tmp_path / f"{attention}_default.npz")
        two = _load(tmp_path / f"{attention}_mirrored.npz")
        _assert_same_state(one, two, f"{attention}: mirrored vs default")
        print(f"{attention}: mirrored vs default, largest weight difference "
              f"{max(float(np.abs(one[k] - two[k]).max()) for k in one):.2e}")
        assert int(two["o000"]) == 2 * harness.STEPS_PER_EPOCH  # optimizer iterations
    # Adam keeps 2 moments per weight; with the average, a 3rd copy of every trainable weight.
    soft, hard = _load(tmp_path / "soft_mirrored.npz"), _load(tmp_path / "hard_mirrored.npz")
    assert sum(k.startswith("o") for k in soft) - 2 > 1.4 * (sum(k.startswith("o") for k in hard) - 2)
    # The hard run had both kinds of minibatch (expected context and sampled), so REINFORCE and the baseline
    # update were both exercised.
    assert 0 < _baseline_updates(_load(tmp_path / "hard_mirrored.npz")) < 2 * harness.STEPS_PER_EPOCH
    # With the expected-context reference the baseline averages residuals log p(y|s,a) - r (a few nats at most);
    # without it, it averages whole caption log-likelihoods (-14.8 here with the paper's baseline).
    assert abs(float(_load(tmp_path / "hard_mirrored.npz")["w000"])) < 3.0


def _start_workers(jobs: _Jobs, tmp_path: pathlib.Path, prefix: str, spec: dict, crash: dict | None = None):
    ports = _free_ports(2)
    workers = [f"localhost:{p}" for p in ports]
    names = []
    for index in (0, 1):
        scratch = tmp_path / f"{prefix}_tmp{index}"
        scratch.mkdir(exist_ok=True)
        run = {**spec, "strategy": "multi_worker", "out": str(tmp_path / f"{prefix}_worker{index}.npz")}
        run.update((crash or {}).get(index, {}))
        name = f"{prefix}_worker{index}"
        jobs.start(name, run, env={"TF_CONFIG": harness.tf_config(workers, index), "TMPDIR": str(scratch)})
        names.append(name)
    return names


def test_two_worker_processes_match_each_other_and_one_process(jobs, tmp_path):
    """MultiWorkerMirroredStrategy over two processes on localhost, hard attention, a partial last batch that
    leaves worker 1 without data in the last step; and the same training in a single process."""
    spec = {"attention": "hard", "uneven": True}
    names = _start_workers(jobs, tmp_path, "mw", spec)
    jobs.start("single", {**spec, "strategy": "default", "out": str(tmp_path / "single.npz")})
    jobs.expect_success(*names, "single")
    w0, w1 = _load(tmp_path / "mw_worker0.npz"), _load(tmp_path / "mw_worker1.npz")
    _assert_same_state(w0, w1, "worker 0 vs worker 1", exact=True)
    single = _load(tmp_path / "single.npz")
    _assert_same_state(w0, single, "two workers vs one process")
    print(f"two workers vs one process, largest difference "
          f"{max(float(np.abs(w0[k] - single[k]).max()) for k in w0):.2e}")
    assert int(w0["o000"]) == 2 * harness.STEPS_PER_EPOCH


@pytest.mark.slow
def test_the_cli_trainer_resumes_a_single_process_work_dir_under_mirrored(tmp_path, monkeypatch):
    """`train(strategy="mirrored")` (what `python -m sat_tf.train --strategy mirrored` runs) takes over a work dir
    whose first epoch ran under the default strategy: same checkpoint objects, history, best model. The work dir
    trains on mirrored views, which the distributed input pipeline must read too."""
    import dataclasses

    from sat_tf import config as cfg
    from sat_tf.training import trainer

    model, train, data = cfg.scenes_default()
    model = dataclasses.replace(model, embedding_dim=16, units=32, attention_dim=16)
    train = dataclasses.replace(train, epochs=2, batch_size=16, beam_size=2, patience=0)
    data = dataclasses.replace(data, max_images=24, features_dir=str(tmp_path / "features"), eval_images=8,
                               mirrored_views=True, mirror_probability=0.5)
    asked = []
    original = trainer.training_dataset
    monkeypatch.setattr(trainer, "training_dataset",
                        lambda *a, **kw: asked.append(kw.get("mirror_probability")) or original(*a, **kw))
    workdir = str(tmp_path / "work")
    first = trainer.train(workdir, model, dataclasses.replace(train, epochs=1), data, verbose=0, weights=None,
                          final_evaluation=False, tensorboard=False)
    assert first.epochs_done == 1
    lines = []
    result = trainer.train(workdir, model, train, data, strategy="mirrored", weights=None, log=lines.append,
                           final_evaluation=False, verbose=0)
    assert result.epochs_done == 1 and any("resuming from" in line for line in lines), lines
    assert asked and set(asked) == {0.5}
    assert [h["epoch"] for h in result.history] == [2]
    assert "dev_BLEU-4" in result.history[0] and np.isfinite(result.history[0]["loss"])
    assert tf.train.latest_checkpoint(os.path.join(workdir, "best")) is not None
    assert [h["epoch"] for h in json.loads(open(os.path.join(workdir, "history.json")).read())] == [1, 2]


def test_steps_per_epoch_exact_on_one_machine_and_a_reachable_bound_over_workers():
    from sat_tf.training import trainer

    manifest = {"splits": {"train": {"length_histogram": {"3": 70, "5": 33}}}}  # 103 captions, two lengths
    one = types.SimpleNamespace(num_replicas_in_sync=1)
    two = types.SimpleNamespace(num_replicas_in_sync=2)
    assert trainer._steps_per_epoch(manifest, "train", 16, one) == 5 + 3  # ceil(70/16) + ceil(33/16)
    assert trainer._steps_per_epoch(manifest, "train", 16, two) == 7  # ceil((9 + 5) / 2) per-replica batches of 8
    resolver = types.SimpleNamespace(task_type="worker", task_id=0,
                                     cluster_spec=lambda: tf.train.ClusterSpec({"worker": ["a:1", "b:1"]}))
    workers = types.SimpleNamespace(num_replicas_in_sync=2, cluster_resolver=resolver)
    assert trainer._steps_per_epoch(manifest, "train", 16, workers) == 103 // 16
