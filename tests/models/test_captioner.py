import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from sat_tf import config as cfg
from sat_tf.models.captioner import Captioner

V, D, L = 30, 8, 5
TOKENS = np.array([[1, 5, 6, 7, 2, 0], [1, 8, 9, 2, 0, 0], [1, 3, 4, 5, 6, 2], [1, 10, 2, 0, 0, 0]], "int32")


def _model(attention="soft", **kw):
    args = dict(vocab_size=V, feature_dim=D, embedding_dim=16, units=32, attention_dim=16, attention=attention,
                dropout=0.0, seed=1)
    args.update(kw)
    return Captioner(**args)


def _annotations(batch=4, seed=0):
    return np.random.RandomState(seed).randn(batch, L, D).astype("float32")


def paper_parameter_count(V, D, E, H, A, gate_width=1):
    embedding = V * E
    attention = D * A + A + H * A + A  # W_a (+b), W_h, w
    init = 2 * (D * H + H)
    lstm = E * 4 * H + D * 4 * H + H * 4 * H + 4 * H
    gate = H * gate_width + gate_width
    deep_output = (H * E + E) + D * E + (E * V + V)
    return embedding + attention + init + lstm + gate + deep_output


def paper_coco(vocab_size: int = 10000) -> cfg.ModelConfig:
    """The authors' COCO setting: VGG-19 conv5_4 (14x14x512), E=512, H=1800, attention 512."""
    return cfg.ModelConfig(vocab_size=vocab_size, feature_dim=512, embedding_dim=512, units=1800, attention_dim=512)


@pytest.mark.parametrize("preset", [paper_coco, cfg.paper_flickr8k])
@pytest.mark.parametrize("attention", ["soft", "hard"])
def test_parameter_count_at_paper_sizes(preset, attention):
    c = preset()
    c = cfg.ModelConfig(**{**vars(c), "attention": attention})
    model = Captioner.from_model_config(c)
    want = paper_parameter_count(c.vocab_size, c.feature_dim, c.embedding_dim, c.units, c.attention_dim)
    assert model.count_params() - 2 == want  # + the REINFORCE baseline and its update count (non-trainable)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == want
    if preset is paper_coco:
        # V=10000, D=512, E=512, H=1800, A=512, by hand: embedding 5,120,000 + attention 1,184,768
        # + init MLPs 1,846,800 + LSTM 20,340,000 + gate 1,801 + deep output 6,314,256.
        assert want == 34_807_625


@pytest.mark.parametrize("attention", ["soft", "hard"])
def test_call_shapes_alpha_sums_to_one_and_each_step_sees_only_earlier_words(attention):
    model = _model(attention)
    out = model({"annotations": _annotations(), "tokens": TOKENS})
    assert out["logits"].shape == (4, 5, V)
    assert out["alpha"].shape == (4, 5, L)
    np.testing.assert_allclose(tf.reduce_sum(out["alpha"], -1), np.ones((4, 5)), atol=1e-5)
    # Step t is fed words 0..t: other words from position 3 on change steps 3.. and leave steps 0..2 as they were.
    changed = TOKENS.copy()
    changed[:, 3:] = 11
    other = model({"annotations": _annotations(), "tokens": changed})
    for name in ("logits", "alpha"):
        np.testing.assert_allclose(other[name][:, :3], out[name][:, :3], rtol=1e-6, atol=1e-6, err_msg=name)
    assert np.abs(other["logits"][:, 3:].numpy() - out["logits"][:, 3:].numpy()).max() > 1e-3


def _loss_and_grads(model, annotations, tokens, training, seed=(3, 4)):
    with tf.GradientTape() as tape:
        out = model.teacher_forcing(annotations, tokens, training=training, seed=tf.constant(seed),
                                    use_expected=tf.constant(False) if model.is_hard and training else None)
        terms = model.loss_terms(out, sampled=training and model.is_hard)
    grads = tape.gradient(terms["loss"], model.trainable_weights)
    return terms, grads


@pytest.mark.parametrize("attention,training", [("soft", False), ("hard", False), ("hard", True)])
def test_padding_changes_neither_loss_nor_gradients(attention, training):
    model = _model(attention)
    if attention == "hard":
        model.baseline.assign(-3.0)
        model.baseline_updates.assign(1.0)
    a = _annotations()
    padded = np.concatenate([TOKENS, np.zeros((4, 7), "int32")], axis=1)
    t1, g1 = _loss_and_grads(model, a, TOKENS, training)
    t2, g2 = _loss_and_grads(model, a, padded, training)
    for name in t1:
        np.testing.assert_allclose(t1[name], t2[name], rtol=1e-5, err_msg=name)
    for w, x, y in zip(model.trainable_weights, g1, g2):
        np.testing.assert_allclose(tf.convert_to_tensor(x), tf.convert_to_tensor(y), rtol=1e-4, atol=1e-6,
                                   err_msg=w.path)


def test_alpha_regularisation_formula():
    model = _model(alpha_regularization=2.0)
    out = model.teacher_forcing(_annotations(), TOKENS)
    mask = (TOKENS[:, 1:] != 0).astype("float32")
    coverage = (out["alpha"].numpy() * mask[:, :, None]).sum(1)
    terms = model.loss_terms(out)
    np.testing.assert_allclose(terms["alpha_reg"], 2.0 * np.mean((1 - coverage) ** 2), rtol=1e-5)


@pytest.mark.parametrize("attention", ["soft", "hard"])
def test_overfits_a_handful_of_pairs_through_fit(attention):
    model = _model(attention, alpha_regularization=0.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    ds = tf.data.Dataset.from_tensors({"annotations": _annotations(), "tokens": TOKENS}).repeat(400)
    history = model.fit(ds, epochs=1, verbose=0).history
    assert history["xent"][-1] < 1.0  # mean over the epoch, from log(30) = 3.4
    final = model.evaluate(tf.data.Dataset.from_tensors({"annotations": _annotations(), "tokens": TOKENS}),
                           verbose=0, return_dict=True)
    assert final["xent"] < 0.05, final
    # TOKENS use id 3 (<unk> in a real vocabulary) as a word, so <unk> suppression is off here.
    generated = model.generate(_annotations(), beam_size=1, max_length=5, suppress_unk=False)["tokens"].numpy()
    np.testing.assert_array_equal(generated, TOKENS[:, 1:])
    if attention == "hard":
        assert set(history) >= {"reinforce", "entropy", "baseline"}
        assert model.baseline_updates.numpy() > 100  # about half of the 400 minibatches sampled
        assert model.baseline.numpy() < 0


def test_keras_save_and_load_round_trip(tmp_path):
    model = _model("hard", hard_inference="argmax")
    model.baseline.assign(-7.5)
    path = str(tmp_path / "captioner.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_config() == model.get_config()
    assert float(loaded.baseline.numpy()) == -7.5
    x = {"annotations": _annotations(), "tokens": TOKENS}
    np.testing.assert_allclose(loaded(x)["logits"], model(x)["logits"], rtol=1e-6)
    a = model.generate(x["annotations"], beam_size=3)
    b = loaded.generate(x["annotations"], beam_size=3)
    np.testing.assert_array_equal(a["tokens"], b["tokens"])
    np.testing.assert_array_equal(a["location"], b["location"])


def test_config_json_round_trip(tmp_path):
    model_config = cfg.ModelConfig(vocab_size=V, feature_dim=D, attention="hard")
    train_config = cfg.TrainConfig(batch_size=8)
    path = str(tmp_path / "config.json")
    cfg.save_config(path, model=model_config, train=train_config)
    loaded = cfg.load_config(path)
    assert loaded["model"] == model_config and loaded["train"] == train_config
    payload = json.load(open(path))
    payload["model"]["units_typo"] = 3
    json.dump(payload, open(path, "w"))
    with pytest.raises(ValueError, match="units_typo"):
        cfg.load_config(path)
    # Work dirs written while self-critical training existed: loaded if it was off, refused by name if it was on.
    old = {**cfg.dataclasses.asdict(train_config), "scst_epochs": 0, "scst_learning_rate": 5e-5, "scst_samples": 5,
           "scst_images": 16}
    assert cfg.config_from_dict(cfg.TrainConfig, old) == train_config
    with pytest.raises(ValueError, match="scst_epochs=2.*self-critical"):
        cfg.config_from_dict(cfg.TrainConfig, {**old, "scst_epochs": 2})


def test_bad_configs_are_named():
    with pytest.raises(ValueError, match="attention"):
        Captioner(attention="local")
    with pytest.raises(ValueError, match="dropout"):
        cfg.ModelConfig(dropout=1.5)
    with pytest.raises(ValueError, match="annotations"):
        _model()({"tokens": TOKENS})


@pytest.mark.parametrize("attention", ["soft", "hard"])
def test_batched_beam_search_equals_per_image_beam_search(attention):
    model = _model(attention, seed=5)
    a = _annotations(batch=5, seed=3)
    batched = model.generate(a, beam_size=4, max_length=7, return_all_beams=True)
    for i in range(5):
        single = model.generate(a[i:i + 1], beam_size=4, max_length=7, return_all_beams=True)
        for name in batched:
            np.testing.assert_allclose(np.asarray(batched[name][i]), np.asarray(single[name][0]), rtol=1e-5,
                                       atol=1e-6, err_msg=name)


@pytest.mark.parametrize("attention", ["soft", "hard"])
def test_decode_drops_ended_images_without_changing_the_search(attention):
    """`decode` lets beam search drop each image once its beams have ended (the per-image annotations passed as
    `images`); the search over the whole batch to the end, through `decode_step_fn`, gives the same beams."""
    from sat_tf.decoding.beam_search import beam_search
    # Unseeded initializers draw from Keras' global generator: seeded here so the weights (and so which images end
    # early) do not depend on the tests that ran before.
    keras.utils.set_random_seed(3)
    model = _model(attention, seed=7)
    a = _annotations(batch=6, seed=5)
    c = model.model_config
    model.decode(tf.constant(a[:1]), beam_size=3, max_length=2)  # builds the weights
    bias = model.cell.output_projection.bias
    bias.assign(bias + tf.one_hot(c.end_id, V) * 0.5)  # an untrained model that ends its captions, some sooner
    dropped = model.decode(tf.constant(a), beam_size=3, max_length=12)
    state, step_fn = model.decode_step_fn(a, beam_size=3)
    whole = beam_search(step_fn, state, 6, 3, 12, c.start_id, c.end_id, c.pad_id)
    ended = dropped["lengths"].numpy().max(-1)
    assert len(set(ended)) > 1 and ended.min() < 12, ended  # images did leave the batch before the others
    np.testing.assert_array_equal(dropped["tokens"], whole["tokens"])
    np.testing.assert_array_equal(dropped["lengths"], whole["lengths"])
    for name in whole:
        np.testing.assert_allclose(np.asarray(dropped[name]), np.asarray(whole[name]), rtol=1e-5, atol=1e-6,
                                   err_msg=name)


@pytest.mark.parametrize("attention", ["soft", "hard"])
def test_beam_of_one_equals_greedy_and_records_alphas(attention):
    model = _model(attention, seed=2)
    a = _annotations(batch=3, seed=4)
    greedy = model.generate(a, beam_size=1, max_length=7)
    from sat_tf.decoding.beam_search import beam_search
    state, step_fn = model.decode_step_fn(a, beam_size=1)
    c = model.model_config
    beam = beam_search(step_fn, state, 3, 1, 7, c.start_id, c.end_id, c.pad_id)
    np.testing.assert_array_equal(greedy["tokens"], beam["tokens"][:, 0])
    np.testing.assert_allclose(greedy["log_probs"], beam["log_probs"][:, 0], rtol=1e-5)
    np.testing.assert_allclose(greedy["alpha"], beam["alpha"][:, 0], rtol=1e-5, atol=1e-7)
    lengths = greedy["lengths"].numpy()
    sums = greedy["alpha"].numpy().sum(-1)
    for i, n in enumerate(lengths):
        np.testing.assert_allclose(sums[i, :n], 1.0, atol=1e-5)
        np.testing.assert_array_equal(sums[i, n:], 0.0)


@pytest.mark.parametrize("attention", ["soft", "hard"])
def test_unrolled_while_loop_and_static_teacher_forcing_agree(attention):
    """The three teacher-forcing graphs (static length, dynamic length unrolled with conds, tf.while_loop)."""
    model = _model(attention, unroll_steps=8)
    a, seed = _annotations(), tf.constant([4, 2])
    spec = [tf.TensorSpec([None, L, D], tf.float32), tf.TensorSpec([None, None], tf.int32)]

    def run(annotations, tokens):
        out = model.teacher_forcing(annotations, tokens, training=True, seed=seed,
                                    use_expected=tf.constant(False) if model.is_hard else None)
        return out, model.loss_terms(out, sampled=model.is_hard)

    static = run(a, TOKENS)
    dynamic_unrolled = tf.function(run, input_signature=spec)(a, TOKENS)
    model.unroll_steps = 0
    looped = tf.function(run, input_signature=spec)(a, TOKENS)
    for other in (dynamic_unrolled, looped):
        for name in static[0]:
            np.testing.assert_allclose(other[0][name], static[0][name], rtol=1e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(other[1]["loss"], static[1]["loss"], rtol=1e-5)
    model.unroll_steps = 3
    with pytest.raises(tf.errors.InvalidArgumentError, match="unroll_steps"):
        tf.function(run, input_signature=spec)(a, TOKENS)


def test_decoding_never_emits_pad_start_or_unk_unless_allowed():
    model = _model(seed=3)
    c = model.model_config
    # Make <unk> the most likely word everywhere: without suppression greedy decoding says it at once.
    bias = model.cell.output_projection.bias
    bias.assign(tf.tensor_scatter_nd_update(bias, [[c.unk_id], [c.pad_id], [c.start_id]], [50.0, 40.0, 40.0]))
    a = _annotations(batch=3)
    allowed = model.generate(a, beam_size=1, max_length=5, suppress_unk=False)["tokens"].numpy()
    assert np.all(allowed[:, 0] == c.unk_id)
    for beam in (1, 3):
        tokens = model.generate(a, beam_size=beam, max_length=5)["tokens"].numpy()
        assert not np.isin(tokens[:, :1], [c.unk_id, c.pad_id, c.start_id]).any()
        assert not np.isin(tokens, [c.unk_id, c.start_id]).any()
    sampled = model.sample(a, 4, max_length=5, seed=tf.constant([1, 2]))["tokens"].numpy()
    assert not np.isin(sampled, [c.unk_id, c.start_id]).any() and sampled.shape[0] == 12


@pytest.mark.parametrize("attention", ["soft", "hard"])
def test_sample_returns_k_draws_per_image_in_image_order(attention):
    model = _model(attention, seed=4, hard_inference="sample" if attention == "hard" else "expected")
    a = _annotations(batch=2)
    out = model.sample(a, 3, max_length=6, seed=tf.constant([5, 6]))
    assert out["tokens"].shape == (6, 6) and out["lengths"].shape == (6,)
    if attention == "hard":
        assert out["location"].shape == (6, 6)
    again = model.sample(a, 3, max_length=6, seed=tf.constant([5, 6]))
    np.testing.assert_array_equal(out["tokens"], again["tokens"])
    # draws, not copies: an untrained model's next word is spread over ~V words, so the K captions of an image
    # differ, and another seed draws other captions
    tokens = out["tokens"].numpy()
    for b in range(2):
        assert len({tuple(row) for row in tokens[b * 3:(b + 1) * 3]}) > 1, tokens
    other = model.sample(a, 3, max_length=6, seed=tf.constant([5, 7]))["tokens"].numpy()
    assert np.any(other != tokens)
    # rows b*K .. b*K + K-1 are image b's samples: they start from image b's initial state
    h0 = model.cell.initial_state(tf.constant(a))[0].numpy()  # (2, H)
    state, _ = model.decode_step_fn(a, 3)
    np.testing.assert_allclose(state[0].numpy(), np.repeat(h0, 3, axis=0), rtol=1e-6)


def test_compile_refuses_a_loss_or_metrics_it_cannot_use_by_name():
    model = _model("soft")
    for argument in ("loss", "metrics", "loss_weights", "weighted_metrics"):
        with pytest.raises(ValueError, match=rf"compile\({argument}="):
            model.compile(optimizer="adam", **{argument: ["mse"] if "metrics" in argument else "mse"})
    model.compile(optimizer=keras.optimizers.Adam(1e-3))


@pytest.mark.parametrize("attention", ["soft", "hard"])
def test_predict_returns_greedy_captions_of_annotations(attention):
    from sat_tf.models.captioner import PREDICT_MAX_LENGTH

    model = _model(attention)
    annotations = _annotations()
    out = model.predict(annotations, batch_size=2, verbose=0)  # two batches, concatenated by Keras
    want = model.generate(annotations, beam_size=1, max_length=PREDICT_MAX_LENGTH)
    assert out["tokens"].shape == (len(annotations), PREDICT_MAX_LENGTH)
    np.testing.assert_array_equal(out["tokens"], want["tokens"])
    np.testing.assert_array_equal(out["lengths"], want["lengths"])
    assert ("location" in out) == (attention == "hard")
    batches = model.predict(tf.data.Dataset.from_tensor_slices({"annotations": annotations}).batch(3), verbose=0)
    np.testing.assert_array_equal(batches["tokens"], want["tokens"])
