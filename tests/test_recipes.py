"""Recipes follow the network: any network= with any recipe; a recipe's conv dropout is fitted
to the network in force, and a real conflict names where each value came from."""
import json
import re

import pytest

import run_experiment as launcher
from loaders.sample import ensure_sample_dataset
from utils.experiments.keywords import KeywordError, resolve
from utils.experiments.recipes import RECIPES, fit_conv_dropout


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return ensure_sample_dataset("mirror", folder=tmp_path_factory.mktemp("sample"))


@pytest.mark.parametrize("profile,n,want", [
    ([0.0, 0.0, 0.1, 0.2], 4, [0.0, 0.0, 0.1, 0.2]),  # its own network: unchanged
    ([0.0, 0.0, 0.1, 0.2], 0, []),
    # layer i of 6 at relative depth (i + 1/2) / 6 falls in layer floor((2i + 1) * 4 / 12)
    ([0.0, 0.0, 0.1, 0.2], 6, [0.0, 0.0, 0.0, 0.1, 0.2, 0.2]),
    ([0.0, 0.0, 0.1, 0.2], 8, [0.0, 0.0, 0.0, 0.0, 0.1, 0.1, 0.2, 0.2]),
    ([0.0, 0.0, 0.1, 0.2], 1, [0.1]),
    ([0.0] * 8, 4, [0.0] * 4),
    ([0.3], 3, [0.3, 0.3, 0.3]),
    ([], 2, [0.0, 0.0]),
])
def test_a_recipes_conv_dropout_is_stretched_over_the_networks_depth(profile, n, want):
    assert fit_conv_dropout(profile, n) == want


def test_every_network_takes_every_recipe():
    for recipe in RECIPES:
        for network, n_conv in [("A", 4), ("B", 6), ("C", 13), ("D", 4), ("S", 4), ("V", 8),
                                ("mlp", 0)]:
            config = resolve({"recipe": recipe, "network": network})
            assert config["p_dropConv"] is None or len(config["p_dropConv"]) == n_conv
    assert resolve({"network": "mlp"})["p_dropConv"] == []  # the issue's failing command
    assert resolve({"network": "V"})["p_dropConv"] == [0.0] * 4 + [0.1] * 2 + [0.2] * 2
    assert resolve({"recipe": "modern", "network": "S"})["p_dropConv"] == [0.0] * 4
    assert resolve({})["p_dropConv"] == RECIPES["sample"]["p_dropConv"]
    # Given values are never fitted: they win, or are refused.
    assert resolve({"network": "A", "p_dropConv": [0.5] * 4})["p_dropConv"] == [0.5] * 4


@pytest.mark.parametrize("given,message", [
    (["p_dropConv=[0.1,0.2]"], r"p_dropConv=\[0.1, 0.2\] \(from the command line\) has 2 values "
                               r"but network S \(from recipe 'sample'\) has 4 conv layers: give "
                               r"4 values, or leave p_dropConv out"),
    (["network=mlp", "p_dropConv=[0.1]"], r"p_dropConv=\[0.1\] \(from the command line\) has 1 "
                                          r"values but network mlp \(from the command line\) "
                                          r"has 0 conv layers: leave p_dropConv out"),
    (["recipe=modern", "n_epochs=2"], r"warmup_epochs=3 \(from recipe 'modern'\) is not shorter "
                                      r"than the run, n_epochs=2 \(from the command line\)"),
    (["recipe=modern", "bn_stats=ema"], r"ema_decay=0.9995 \(from recipe 'modern'\) needs "
                                        r"bn_stats='population'.*bn_stats='ema' \(from the "
                                        r"command line\)"),
    (["recipe=modern", "im_dim=[48,48]"], r"im_dim=\[48, 48\] \(from the command line\) but "
                                          r"augment='rotate:10,scale:0.1,crop_to:40,flip' \(from "
                                          r"recipe 'modern'\) makes 40x40 network inputs: use "
                                          r"im_dim=\[40, 40\] or leave im_dim out"),
])
def test_a_real_conflict_names_where_each_value_came_from(capsys, given, message):
    assert launcher.main(given) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert re.search(message, err), err


def test_from_python_the_given_values_are_named_as_given():
    with pytest.raises(KeywordError, match=r"n_epochs=1 \(given\)"):
        resolve({"recipe": "modern", "n_epochs": 1})


@pytest.mark.parametrize("keywords,p_dropConv", [
    (["recipe=sample", "network=mlp"], []),
    (["recipe=sample", "network=A", "val=False"], [0.0, 0.0, 0.1, 0.2]),
    (["recipe=modern", "network=S", "n_epochs=2", "warmup_epochs=1"], [0.0] * 4),
])
def test_the_issues_commands_run(sample, tmp_path, keywords, p_dropConv):
    # The recipe named, as the launcher takes it without dataset=; tiny epochs.
    tiny = ["n_epochs=1", "anneal_epochs=0", "bn_batches=2", "progress=False",
            f"dataset={sample}", f"savename={tmp_path / 'run'}",
            f"registry={tmp_path / 'experiments.csv'}"]
    given = {k.split("=")[0] for k in keywords}
    arguments = keywords + [k for k in tiny if k.split("=")[0] not in given]
    assert launcher.main(arguments) == 0
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["config"]["p_dropConv"] == p_dropConv
    assert saved["config"]["network"] == keywords[1].split("=")[1]
    assert 0 <= saved["results"]["test_error"] <= 1
