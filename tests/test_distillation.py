"""Knowledge distillation: the distilled cost against a hand computation in NumPy (the teacher
being the student's own initial network), the student's images unchanged by the teacher, a
student moving toward a fixed teacher on the built-in sample, and the refusals."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from launcher_support import quick_config, train_teacher
from test_objective import numpy_log_softmax
from test_refusals import refusal
from test_resume import sample  # noqa: F401 - the module-scoped built-in sample fixture

import run_experiment as launcher
from convnets.networks import Conv, Pool, build_convnet
from loaders.hdf5 import read_split
from utils.evaluation.inference import InferenceModel
from utils.experiments.experiment import Experiment
from utils.experiments.keywords import KeywordError, resolve
from utils.models import model_io
from utils.models.networks import get_network
from utils.training.distillation import Distillation, Teacher
from utils.training.mixing import MIX_STREAM, mix_batch
from utils.training.objective import Objective, prepare_batch
from utils.training.online_augmentation import augment, augment_key, parse
from utils.training.optim import make_optimizer, make_schedule
from utils.training.steps import Steps
from utils.training.views import OnlineViews

RNG = np.random.default_rng(29)


def network(size: int, n_classes: int):
    # No dropout: a step's cost can be recomputed from the parameters alone.
    return build_convnet("distil", [Conv(3), Pool()], im_dim=[size, size], n_hidden=[5],
                         p_drop=0.0, p_dropConv=[0.0], n_classes=n_classes)


def numpy_views(x, online: OnlineViews, mirrored: bool, views: str) -> np.ndarray:
    """[B, n, h, w, C]: the teacher's views of each image, cut by hand."""
    height = x.shape[1]
    size = online.size or height
    if views == "plain":
        top = (height - size) // 2
        return x[:, None, top:top + size, top:top + size]
    versions = [x, x[:, :, ::-1]] if mirrored else [x]
    out = []
    for image in versions:
        padded = np.pad(image, ((0, 0), (online.pad,) * 2, (online.pad,) * 2, (0, 0)))
        margin = height + 2 * online.pad - size
        for top, left in ((margin // 2, margin // 2), (0, 0), (0, margin), (margin, 0),
                          (margin, margin)):
            window = padded[:, top:top + size, left:left + size]
            out += [window, window[:, :, ::-1]] if online.flip else [window]
    return np.stack(out, axis=1)


def numpy_softmax(z):
    return np.exp(numpy_log_softmax(z))


CASES = {
    # labels, the warp before the teacher's ten-crop, the student's random window and flip
    "ten-crop teacher, warped images": dict(
        size=8, n_classes=7, augment="rotate:15,scale:0.1,crop_to:6,flip", mirrored=False,
        views="model", temperature=3.0, weight=0.7, objective={}),
    # FER+ vote distributions, smoothed and mixed; a teacher of a mirrored variant, crop:1
    "FER+ targets, mixup, mirrored teacher": dict(
        size=6, n_classes=8, augment="crop:1", mirrored=True, views="model", temperature=2.0,
        weight=0.4, objective=dict(targets="distribution", label_smoothing=0.1, mixup=0.4)),
    "plain view, CutMix, pure distillation": dict(
        size=6, n_classes=7, augment="flip", mirrored=False, views="plain", temperature=1.0,
        weight=1.0, objective=dict(cutmix=1.0)),
}


@pytest.mark.parametrize("case", CASES)
def test_the_cost_with_the_students_initial_network_as_teacher_is_the_hand_computation(case):
    c = CASES[case]
    spec = parse(c["augment"])
    window = spec.output_size(c["size"], c["size"])[0]
    net = network(window, c["n_classes"])
    x = RNG.uniform(size=(8, c["size"], c["size"], 1)).astype(np.float32)
    y = RNG.integers(0, c["n_classes"], size=8).astype(np.int32)
    votes = RNG.integers(0, 6, size=(8, c["n_classes"])).astype(np.float32) + 0.5
    targets = votes / votes.sum(axis=1, keepdims=True)
    online = OnlineViews.matching(spec, c["mirrored"])
    distillation = Distillation((Teacher(net, online, c["mirrored"]),), c["temperature"],
                                c["weight"], c["views"])
    objective = Objective(spec, **c["objective"])
    steps = Steps(net, make_optimizer("sgd", 0.1), make_schedule("constant", 0.1),
                  objective=objective, distillation=distillation)
    state = steps.init_state(jax.random.key(0), jax.random.key(1))
    params, bn_state = jax.tree_util.tree_map(np.array, (state.params, state.bn_state))
    steps.teacher_trees = ((params, bn_state),)  # the student's own initial network
    step_key = jax.random.fold_in(jax.random.wrap_key_data(state.key), 0)
    _, metrics = steps.train(state, jnp.asarray(x), jnp.asarray(y), jnp.asarray(targets))

    # The teacher by hand: its views of the warped images (the warp's parts alone).
    warp = parse(",".join(p for p in c["augment"].split(",") if p.split(":")[0] in
                          ("rotate", "scale", "shift")))
    warped = np.asarray(augment(jnp.asarray(x), augment_key(step_key), warp))
    views = numpy_views(warped, online, c["mirrored"], c["views"])
    n = views.shape[1]
    teacher_logits = np.asarray(net.apply(params, bn_state, jnp.asarray(
        views.reshape(8 * n, *views.shape[2:])), train=False)[0], np.float64)
    q = numpy_softmax(teacher_logits.reshape(8, n, -1).mean(axis=1) / c["temperature"])
    # The student's images and targets: the augmentation, then the step's mixing draws.
    student_x = augment(jnp.asarray(x), augment_key(step_key), spec)
    hard_targets = targets if "targets" in c["objective"] else np.eye(c["n_classes"])[y]
    hard_targets = hard_targets * (1 - objective.label_smoothing) + (
        objective.label_smoothing / c["n_classes"])
    if objective.mixup or objective.cutmix:
        student_x, _, lam, perm = mix_batch(jax.random.fold_in(step_key, MIX_STREAM),
                                            student_x, jnp.asarray(hard_targets),
                                            objective.mixup, objective.cutmix)
        lam, perm = float(lam), np.asarray(perm)
        assert 0 < lam < 1
        q = lam * q + (1 - lam) * q[perm]
        hard_targets = lam * hard_targets + (1 - lam) * hard_targets[perm]
    z = np.asarray(net.apply(params, bn_state, student_x, train=True, key=None)[0], np.float64)
    hard = -(hard_targets * numpy_log_softmax(z)).sum(axis=1).mean()
    kl = (q * (np.log(q) - numpy_log_softmax(z / c["temperature"]))).sum(axis=1).mean()
    want = (1 - c["weight"]) * hard + c["weight"] * c["temperature"] ** 2 * kl
    assert kl > 1e-4  # the teacher (test mode, its views) is not the student in train mode
    assert float(metrics["distill_kl"]) == pytest.approx(kl, rel=1e-4)
    assert float(metrics["hard_cost"]) == pytest.approx(hard, rel=1e-5)
    assert float(metrics["nll"]) == pytest.approx(want, rel=1e-5)
    assert float(metrics["cost"]) == pytest.approx(want, rel=1e-5)  # no L1/L2 penalty here


def test_the_student_sees_what_it_sees_without_a_teacher_bit_for_bit():
    x = jnp.asarray(RNG.uniform(size=(6, 10, 10, 1)).astype(np.float32))
    y = jnp.asarray(RNG.integers(0, 7, size=6).astype(np.int32))
    objective = Objective(parse("rotate:10,scale:0.1,shift:1,crop_to:8,flip,brightness:0.1,"
                                "contrast:0.1,erase:0.5"), label_smoothing=0.1, mixup=0.3)
    teacher = Teacher(network(8, 7), OnlineViews(size=8, flip=True), False)
    trees = (teacher.network.init(jax.random.key(3)),)
    key = jax.random.key(4)
    alone = prepare_batch(objective, key, x, y, None, 7)
    distilled = Distillation((teacher, teacher)).prepare_batch(objective, trees * 2, key, x, y,
                                                               None, 7)
    for a, b in zip(alone, distilled[:3]):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    soft = np.asarray(distilled[3])
    np.testing.assert_allclose(soft.sum(axis=1), 1, rtol=1e-6)  # an ensemble of distributions


def kl_to_teacher(teacher, student_logits, temperature: float, faces) -> float:
    """KL(q_T || p_T) on test faces: the teacher on its ten views, the student's plain view."""
    q = numpy_softmax(teacher.views(teacher.versions(faces)).logits() / temperature)
    log_p = numpy_log_softmax(student_logits / temperature)
    return float((q * (np.log(q) - log_p)).sum(axis=1).mean())


@pytest.fixture(scope="module")
def teacher_run(sample, tmp_path_factory):
    return train_teacher(tmp_path_factory.mktemp("teacher"), sample, optimizer="adam",
                         learning_rate=0.01, n_epochs=3)


def test_a_distilled_student_moves_toward_its_teacher(sample, teacher_run, tmp_path):
    settings = dict(val=False, n_epochs=3, anneal_epochs=0, augment="rotate:10,crop_to:40,flip",
                    optimizer="adam", learning_rate=0.01)
    distilled = quick_config(tmp_path / "distilled", sample, teacher=str(teacher_run),
                             distill_weight=1.0, distill_temperature=2.0, **settings)
    initial = Experiment(resolve(distilled))
    launcher.run_experiment(**distilled)
    launcher.run_experiment(**quick_config(tmp_path / "labels", sample, **settings))
    faces, _ = read_split(sample, "test")
    teacher = InferenceModel(teacher_run)
    params, bn_state = initial.initial
    windows = jnp.asarray(faces[:, 4:44, 4:44, None], jnp.float32) / 255
    before = kl_to_teacher(teacher, np.asarray(initial.network.apply(
        params, bn_state, windows, train=False)[0], np.float64), 2.0, faces)
    after = kl_to_teacher(teacher, InferenceModel(tmp_path / "distilled" / "run").plain(
        faces).logits(), 2.0, faces)
    from_labels = kl_to_teacher(teacher, InferenceModel(tmp_path / "labels" / "run").plain(
        faces).logits(), 2.0, faces)
    # Measured: 0.101 -> 0.0017, against 0.0024 for the same student taught by the labels.
    assert after < 0.1 * before and after < 0.85 * from_labels, (before, after, from_labels)
    header = model_io.load(tmp_path / "distilled" / "run", model_io.MODEL_FORMAT)[0]
    assert [t["path"] for t in header["teachers"]] == [str(teacher_run / "model.msgpack")]
    assert len(header["teachers"][0]["sha256"]) == 64


def untrained_model(path, *, n_classes=7, variant="mirror", size=48):
    """A valid model file of the tiny network, never trained (for the refusals)."""
    net = get_network("tiny_net:tiny", im_dim=[size, size], n_hidden=[8], n_classes=n_classes)
    params, bn_state = net.init(jax.random.key(0))
    names = [f"class{k}" for k in range(n_classes)] if n_classes != 7 else [
        "angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    header = {"config": {"network": "tiny_net:tiny", "im_dim": [size, size], "augment": None},
              "network_options": net.options, "class_names": names, "dataset_variant": variant}
    model_io.save(path, model_io.MODEL_FORMAT, header, {"params": params, "bn_state": bn_state})
    return path


def test_teachers_that_cannot_teach_on_the_dataset_are_refused(sample, tmp_path, capsys):
    eight = untrained_model(tmp_path / "eight.msgpack", n_classes=8)
    crop5 = untrained_model(tmp_path / "crop5.msgpack", variant="crop5", size=44)
    damaged = untrained_model(tmp_path / "damaged.msgpack")
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    config = quick_config(tmp_path, sample)
    assert refusal(capsys, {**config, "teacher": str(eight)}) == (
        f"teacher {eight} classifies 8 classes (class0, class1, class2, class3, class4, class5, "
        f"class6, class7) but {sample} has 7 (angry, disgust, fear, happy, sad, surprise, "
        f"neutral): a teacher must classify the dataset's classes")
    assert refusal(capsys, {**config, "teacher": str(crop5)}) == (
        f"teacher {crop5} takes 44x44 images (its crop5 variant) but {sample} holds 48x48 "
        f"ones: a teacher must take the dataset's images (it cuts its own windows from them)")
    assert refusal(capsys, {**config, "teacher": str(damaged)}) == (
        f"teacher {damaged}: {model_io.MISMATCH}, so it is not used and is left as it is; "
        f"restore it from a copy or train it again")
    missing = tmp_path / "nowhere"
    assert refusal(capsys, {**config, "teacher": [str(untrained_model(
        tmp_path / "good.msgpack")), str(missing)]}) == (
        f"teacher {missing}: no such file")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("given,message", [
    (dict(distill_weight=1.5), "distill_weight must be a number in [0, 1], got 1.5"),
    (dict(distill_weight=-0.1), "distill_weight must be a number in [0, 1], got -0.1"),
    (dict(distill_temperature=0), "distill_temperature must be a number > 0, got 0"),
    (dict(distill_temperature=-2.0), "distill_temperature must be a number > 0, got -2.0"),
    (dict(distill_views="all"), "distill_views must be one of 'model', 'plain', got 'all'"),
    (dict(teacher=[]), "teacher must be a saved model (a model.msgpack or its run folder) or "
                       "a list of them, got []"),
    (dict(teacher=3), "teacher must be a saved model (a model.msgpack or its run folder) or a "
                      "list of them, got 3"),
])
def test_impossible_distillation_keywords_are_refused(given, message):
    with pytest.raises(KeywordError) as refused:
        resolve({"teacher": "trained_models/default", **given})
    assert str(refused.value) == message


def test_distillation_keywords_without_a_teacher_are_refused():
    with pytest.raises(KeywordError, match=r"^distill_weight is given but teacher is not: "
                                           r"distillation needs teacher=MODEL$"):
        resolve({"distill_weight": 0.5})
