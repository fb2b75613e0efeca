"""The export's pieces without a network: views made in JAX against the framework's (OpenCV's
versions, the online views), and the layer's plain forms against its fast paths."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from loaders.augment import VARIANTS
from loaders.sample import SAMPLE_CSV
from loaders.sources import read_csv
from utils import rna
from utils.evaluation.onnx_model import as_input
from utils.export import views
from utils.training.online_augmentation import parse
from utils.training.views import OnlineViews


@pytest.fixture(scope="module", name="faces")
def faces_fixture():
    return read_csv(SAMPLE_CSV).images[::2]  # 350 real faces


@pytest.mark.parametrize("name", ["raw", "mirror", "crop5"])
def test_crop_and_mirror_versions_equal_opencvs_exactly(faces, name):
    variant = VARIANTS[name]
    made = jax.jit(lambda x: views.versions(variant, x))(as_input(faces))
    got = np.stack([np.asarray(version) for version in made], axis=1)[..., 0]
    np.testing.assert_array_equal(got, as_input(variant.augment(faces))[..., 0])


def test_variant14_rotations_are_exact_and_resizes_within_one_level_on_few_pixels(faces):
    variant = VARIANTS["variant14"]
    made = jax.jit(lambda x: views.versions(variant, x))(as_input(faces))
    levels = np.rint(np.stack([np.asarray(v) for v in made], axis=1)[..., 0] * 255)
    want = variant.augment(faces).astype(np.float64)
    assert levels.shape == want.shape == (len(faces), 14, 42, 42)
    # versions 0-9: the crops, shifted crops and both rotations (+ mirrors), exactly.
    np.testing.assert_array_equal(levels[:, :10], want[:, :10])
    # OpenCV's rotations interpolate: the map is no selection, and still exact.
    assert not np.array_equal(want[:, 6], want[:, 0])
    resized = np.abs(levels[:, 10:] - want[:, 10:])
    assert resized.max() == 1 and (resized > 0).mean() < 1e-4


@pytest.mark.parametrize("augment, mirrored", [("crop:4", False), ("crop:4,flip", False),
                                               ("crop_to:40,flip", False), ("crop_to:40", True),
                                               (None, False), ("flip", False)])
def test_online_views_cut_statically_equal_the_training_views(augment, mirrored):
    online = OnlineViews.matching(parse(augment), mirrored)
    x = jax.random.uniform(jax.random.key(0), (3, 48, 48, 1))
    got = jnp.stack(views.online_views(online, x), axis=1).reshape(-1, *online.all(x).shape[1:])
    assert len(views.online_views(online, x)) == online.n_views
    np.testing.assert_array_equal(got, online.all(x))
    np.testing.assert_array_equal(views.plain_view(VARIANTS["raw"], online, x)[0],
                                  online.plain(x))


def test_unknown_variant_is_refused_by_name():
    fake = VARIANTS["raw"].__class__("blur3", 48, (), False)
    with pytest.raises(views.UnknownVariant, match="'blur3' has no exported views"):
        views.versions(fake, jnp.zeros((1, 48, 48, 1)))


def test_plain_forms_switch_conv_and_pooling_to_plain_lax_only_inside_the_block():
    x = jax.random.uniform(jax.random.key(1), (2, 12, 12, 1))
    w = jax.random.normal(jax.random.key(2), (3, 3, 1, 4))

    def layer(x):
        return rna.max_pool(rna.conv2d(x, w), 2)

    # Fresh functions for each trace: JAX caches a trace by the function, not by the switch.
    fast = layer(x)
    with rna.plain_forms():
        plain = layer(x)
        inside = str(jax.make_jaxpr(lambda x: layer(x))(x))
    outside = str(jax.make_jaxpr(lambda x: layer(x))(x))
    assert "conv_general_dilated" in inside and "reduce_window_max" in inside
    assert "conv_general_dilated" not in outside and "reduce_window_max" not in outside
    np.testing.assert_allclose(plain, fast, rtol=1e-6, atol=1e-6)
