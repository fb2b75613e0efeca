"""Mixed precision (dtype=bfloat16) against float32: the same training within a stated
tolerance, float32 parameters, statistics and logits, and the launcher's whole life (two
devices, a stopped and resumed run, evaluation, the saved model) in bfloat16."""
from __future__ import annotations

import os

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxpr_products import products_and_operands
from launcher_support import quick_config
from test_parallel import run_on_devices, stop_and_resume_on_devices
from test_resume import assert_same_run, final_model

from convnets.layers import conv_layer
from convnets.networks import Conv, Pool, build_convnet
from loaders.sample import ensure_sample_dataset
from utils.experiments.keywords import KeywordError, resolve
from utils.nn import cpu_bfloat16, precision
from utils.models.model_io import load_model
from utils.training.optim import make_optimizer, make_schedule
from utils.predict import EmotionModel
from utils.support import host_tuning
from utils.training.steps import Steps

# bfloat16 keeps 8 significant bits (relative rounding 2^-9 = 0.2 %). From the same
# parameters the first cost agrees within 0.5 % (measured 0.08 %); the trajectories then drift
# apart as SGD amplifies the rounding: within 2 % over 6 steps at learning rate 0.03
# (measured 1.2 %; at 0.1 the drift reaches 4 % in 8 steps).
FIRST_COST_RTOL, COST_RTOL = 5e-3, 2e-2


def small_network():
    return build_convnet("p", [Conv(8), Pool(), Conv(16), Conv(16), Pool()], im_dim=[16, 16],
                         n_hidden=[32], p_dropConv=[0.1, 0.2, 0.0], gaussian_std=0.05)


def train(dtype: str, n_steps: int = 6, learning_rate: float = 0.03):
    steps = Steps(small_network(), make_optimizer("sgd", learning_rate),
                  make_schedule("constant", learning_rate), dtype=dtype)
    state = steps.init_state(0, 1)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((32, 16, 16, 1), dtype=np.float32))
    y = jnp.asarray(rng.integers(0, 7, 32).astype(np.int32))
    costs = []
    for _ in range(n_steps):
        state, metrics = steps.train(state, x, y)
        costs.append(float(metrics["cost"]))
    return steps, state, np.array(costs), x


def test_bfloat16_trains_like_float32_from_the_same_seed_and_keeps_float32_state():
    _, state32, costs32, x = train("float32")
    steps16, state16, costs16, _ = train("bfloat16")
    np.testing.assert_allclose(costs16[0], costs32[0], rtol=FIRST_COST_RTOL)
    np.testing.assert_allclose(costs16, costs32, rtol=COST_RTOL)
    assert costs16[-1] < costs16[0]  # it learns
    for tree in (state16.params, state16.bn_state, state16.opt_state):
        leaves = jax.tree_util.tree_leaves(tree)
        assert {leaf.dtype for leaf in leaves if jnp.issubdtype(leaf.dtype, jnp.floating)} \
            == {jnp.dtype(jnp.float32)}
    assert steps16.eval(state16.params, state16.bn_state, x).dtype == jnp.float32
    # The same seed gives the same bits in bfloat16 too.
    _, again, costs_again, _ = train("bfloat16")
    np.testing.assert_array_equal(costs_again, costs16)
    for a, b in zip(jax.tree_util.tree_leaves(again.params),
                    jax.tree_util.tree_leaves(state16.params)):
        np.testing.assert_array_equal(a, b)


def test_bfloat16_runs_the_products_on_bfloat16_values():
    # The dense layers' products take bfloat16 operands. Every conv here has fewer than 128
    # channels: on a CPU its layer computes in float32 (cpu_bfloat16.float32_layer: from its
    # bfloat16 input widened, with the float32 weights; the next test); elsewhere on bfloat16
    # operands.
    steps, state, _, x = train("bfloat16", n_steps=1)
    products = products_and_operands(
        jax.make_jaxpr(steps._eval_step)(state.params, state.bn_state, x).jaxpr)
    convs = [dtypes for eqn, dtypes in products if eqn.primitive.name == "conv_general_dilated"]
    dots = [dtypes for eqn, dtypes in products if eqn.primitive.name == "dot_general"]
    assert len(convs) == 2 and len(dots) == 2  # the 3x3 on the image is its taps summed
    bfloat16, float32 = jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32)
    assert dots == [{bfloat16}] * 2
    on_cpu = jax.default_backend() == "cpu"
    assert convs == [{float32} if on_cpu else {bfloat16}] * 2


@pytest.mark.parametrize("c_in,c_out,matmul_convs,in_float32", [
    (128, 128, True, False), (64, 128, True, True), (128, 64, True, True),
    (128, 128, False, True)])
def test_a_conv_layer_computes_in_float32_on_a_cpu_where_bfloat16_has_no_kernel_for_it(
        monkeypatch, c_in, c_out, matmul_convs, in_float32):
    # Both the forward (c_in) and the input gradient (c_out) must be bfloat16 products.
    monkeypatch.setattr(precision, "bfloat16_matmul_convs", lambda: matmul_convs)
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    x, w = jnp.zeros((1, 4, 4, c_in), jnp.bfloat16), jnp.zeros((3, 3, c_in, c_out))
    assert cpu_bfloat16.float32_layer(x, w) is in_float32
    assert not cpu_bfloat16.float32_layer(x.astype(jnp.float32), w)  # nothing to decide
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert not cpu_bfloat16.float32_layer(x, w)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU's bfloat16 layers")
def test_a_narrow_conv_layer_in_bfloat16_is_its_float32_layer_on_the_widened_input():
    layer = conv_layer(16, pool=2, p_drop=0.25)
    _, params, state = layer.init(jax.random.key(0), (8, 8, 8))
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 8)).astype(jnp.bfloat16)
    g = jax.random.normal(jax.random.key(2), (4, 4, 4, 16))
    for train in (True, False):
        def run(x, p, train=train):
            return layer.apply(p, state, x, train=train, key=jax.random.key(3))
        (y16, state16), vjp16 = jax.vjp(run, x, params)
        (y32, state32), vjp32 = jax.vjp(run, x.astype(jnp.float32), params)
        assert y16.dtype == jnp.bfloat16
        np.testing.assert_array_equal(y16, y32.astype(jnp.bfloat16))
        for a, b in zip(jax.tree_util.tree_leaves(state16), jax.tree_util.tree_leaves(state32)):
            np.testing.assert_array_equal(a, b)
        zero_state = jax.tree_util.tree_map(jnp.zeros_like, state)
        dx16, dp16 = vjp16((g.astype(jnp.bfloat16), zero_state))
        dx32, dp32 = vjp32((g.astype(jnp.bfloat16).astype(jnp.float32), zero_state))
        assert dx16.dtype == jnp.bfloat16
        np.testing.assert_array_equal(dx16, dx32.astype(jnp.bfloat16))
        for a, b in zip(jax.tree_util.tree_leaves(dp16), jax.tree_util.tree_leaves(dp32)):
            np.testing.assert_array_equal(a, b)


def test_a_dtype_that_is_not_a_compute_dtype_is_refused():
    with pytest.raises(ValueError, match="dtype must be one of float32, bfloat16"):
        Steps(small_network(), make_optimizer("sgd", 0.1), make_schedule("constant", 0.1),
              dtype="float16")
    with pytest.raises(KeywordError, match=r"got 'bfloat61' \(did you mean 'bfloat16'\?\)"):
        resolve({"dtype": "bfloat61"})
    assert resolve({"dtype": "bfloat16"})["dtype"] == "bfloat16"


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return ensure_sample_dataset("mirror", folder=tmp_path_factory.mktemp("sample"))


def test_launcher_in_bfloat16_on_two_devices_resumes_and_saves_a_float32_model(sample,
                                                                               tmp_path):
    settings = dict(n_epochs=2, anneal_epochs=1, batch_size=24, devices=2, dtype="bfloat16")
    reference = quick_config(tmp_path / "reference", sample, **settings)
    assert "devices: 2 x cpu" in run_on_devices(reference)

    config = quick_config(tmp_path / "interrupted", sample, **settings)
    stop_and_resume_on_devices(config)
    assert_same_run(final_model(tmp_path / "interrupted" / "run"),
                    final_model(tmp_path / "reference" / "run"))

    path = tmp_path / "reference" / "run" / "model.msgpack"
    model = load_model(path)
    assert model.header["config"]["dtype"] == "bfloat16"
    for leaf in jax.tree_util.tree_leaves((model.params, model.bn_state)):
        assert leaf.dtype == np.float32
    # Prediction reads it like any model (and computes in float32: the parameters are).
    with h5py.File(sample, "r") as file:
        faces = file["test/images"][:5]
    logits = EmotionModel(path).logits(faces, augment=False)
    assert logits.shape == (5, 7) and np.isfinite(logits).all()


@pytest.mark.parametrize("flags,expected", [
    ("", True),  # the measured jaxlib's default: every matmul through YNNPACK
    ("--xla_cpu_experimental_ynn_fusion_type=individual_dot", True),  # Intel's choice
    ("--xla_cpu_experimental_ynn_fusion_type=", False),  # Zen 3 and 4's: classic kernels
    ("--xla_cpu_experimental_ynn_fusion_type=+individual_convolution", True),
    ("--xla_cpu_experimental_ynn_fusion_type=-individual_dot", False),
])
def test_ynn_matmuls_reads_the_processes_xla_flags(monkeypatch, flags, expected):
    monkeypatch.setenv("XLA_FLAGS", flags)
    monkeypatch.setattr(host_tuning, "_jaxlib_series", lambda: "0.10")
    assert host_tuning.ynn_matmuls() is expected
    monkeypatch.setattr(host_tuning, "_jaxlib_series", lambda: "0.9")
    assert host_tuning.ynn_matmuls() is False  # flags of a series never measured


@pytest.mark.parametrize("vendor,family,flag", [
    ("GenuineIntel", 6, "individual_dot"),  # every Intel family measured so far: Sapphire Rapids
    ("AuthenticAMD", 26, "individual_dot"),  # Zen 5: YNN's float32 matmuls trained 5-11 % faster
    ("AuthenticAMD", 25, ""),  # Zen 3 and Zen 4: YNN's matmuls erratic, classic kernels
    ("AuthenticAMD", 23, ""),  # a kind never measured keeps the classic kernels
    ("", None, ""),  # /proc/cpuinfo unreadable
])
def test_the_xla_kernels_are_chosen_by_the_cpu_kind_measured(vendor, family, flag):
    assert host_tuning.kernel_flag(vendor, family) == (
        "--xla_cpu_experimental_ynn_fusion_type=" + flag)


def test_the_cpu_family_is_read_from_proc_cpuinfo():
    if not os.path.exists("/proc/cpuinfo"):
        pytest.skip("no /proc/cpuinfo on this system")
    with open("/proc/cpuinfo") as cpuinfo:
        line = next(line for line in cpuinfo if line.startswith("cpu family"))
    assert host_tuning.cpu_family() == int(line.split(":")[1])


@pytest.mark.parametrize("features,ynn,says", [
    ([], True, "this CPU has no bfloat16 instructions, so bfloat16 trains no faster"),
    (["avx512_bf16"], False, "widen bfloat16 to float32, so bfloat16 trains no faster"),
    (["avx512_bf16", "amx_bf16"], True, "run as bfloat16 matrix products"),
])
def test_the_bfloat16_note_says_what_this_cpu_does_and_when_to_take_float32(
        monkeypatch, features, ynn, says):
    monkeypatch.setattr(precision, "cpu_bfloat16_features", lambda: features)
    monkeypatch.setattr(host_tuning, "ynn_matmuls", lambda: ynn)
    precision.bfloat16_matmul_convs.cache_clear()
    try:
        note = precision.bfloat16_cpu_note()
    finally:
        precision.bfloat16_matmul_convs.cache_clear()
    assert says in note
    # bfloat16 has paid on none of the CPUs measured (on the Zen 5, paired: 0.98-1.03x)
    assert "dtype=float32 is as fast" in note
