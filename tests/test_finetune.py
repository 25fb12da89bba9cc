"""Issue 3, part 3: the default field fine-tuning recipe (host.recipes) meets its floors in the
integer runtime, on the split and "new camera" shift of ../shared/notes/finetune.md.

(a) clean: the recipe ends within 1 point of the pretrained int8 model on the 200 test images, or above;
(b) shifted: it recovers at least half of the pretrained model's clean -> shifted drop, and is not
    worse than last-layer-only fine-tuning in the same runtime.
CI version of bench/finetune.py: the recipe's 5 epochs, seeds 0 and 1 (bench: 0-2), floors on the seed means.
The C core is bit-exact and deterministic, so these numbers are reproducible; docs/finetune.md
lists them per seed (means here: clean 84.5 vs floor 82.5; shifted 77.5 vs half-drop floor 74.25
and last-layer-only 76.25). Runtime about 1.5 minutes on 2 shared cores.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from shared_data import shared_path

from host import recipes
from host.model import Layer, Model

REPO = Path(__file__).resolve().parents[1]
VWW_TFLITE = ("datasets/mlperf-tiny-vww-models/benchmark/training/visual_wake_words/trained_models/"
              "vww_96_int8.tflite")
VWW_DATA = "datasets/vww01-eembc"
EPOCHS = recipes.RECIPE_EPOCHS
SEEDS = (0, 1)


def test_recipe_sets_every_layer():
    """Unit check of the recipe itself (no data): all weighted layers train, per-layer rates."""
    layers = [Layer(kind="conv", in_shape=(4, 4, 1), out_shape=(4, 4, 2), kernel=(3, 3), pad=(1, 1)),
              Layer(kind="dwconv", in_shape=(4, 4, 2), out_shape=(4, 4, 2), kernel=(3, 3), pad=(1, 1)),
              Layer(kind="avgpool", in_shape=(4, 4, 2), out_shape=(1, 1, 2), kernel=(4, 4), stride=(4, 4)),
              Layer(kind="fc", in_shape=(1, 1, 2), out_shape=(1, 1, 2))]
    model = Model(layers=layers, classes=2)
    for L in layers:
        L.trainable, L.lr, L.lls_m_lr = False, 1.0, 1.0
    recipes.finetune_recipe(model)
    assert [L.trainable for L in layers] == [True, True, False, True]
    assert [L.lr for L in layers[:2]] == [recipes.RECIPE_LR_HIDDEN] * 2
    assert layers[3].lr == recipes.RECIPE_LR_CLASSIFIER
    assert recipes.RECIPE_LR_CLASSIFIER >= 100 * recipes.RECIPE_LR_HIDDEN   # separate classifier rate
    assert all(L.lls_m_lr == 0.0 for L in layers)
    recipes.last_layer_recipe(model)
    assert [L.trainable for L in layers] == [False, False, False, True]
    assert layers[3].lr == recipes.LAST_LAYER_LR


@pytest.fixture(scope="module")
def study(shared_dir):
    """Pretrained, last-layer-only and recipe accuracies on the 200 test images (seed means)."""
    tflite, data = shared_path(VWW_TFLITE), shared_path(VWW_DATA)
    sys.path.insert(0, str(REPO))
    from bench import finetune as ft
    from host.tflite_import import import_tflite

    base = import_tflite(str(tflite))
    split = ft.load_split(str(data), base)

    def mean_acc(setup, cond):
        return float(np.mean([ft.finetune(base, setup, {}, split[cond], EPOCHS, s)[0] for s in SEEDS]))

    return {
        "pre_clean": ft.finetune(base, None, {}, split["clean"], 0, 0)[0],
        "pre_shifted": ft.finetune(base, None, {}, split["shifted"], 0, 0)[0],
        "last_shifted": mean_acc(recipes.last_layer_recipe, "shifted"),
        "recipe_clean": mean_acc(recipes.finetune_recipe, "clean"),
        "recipe_shifted": mean_acc(recipes.finetune_recipe, "shifted"),
    }


@pytest.mark.shared
def test_pretrained_baseline(study):
    # the import is bit-exact with LiteRT; on this split the float notes have 83.5 / 64.5
    assert study["pre_clean"] == pytest.approx(0.835, abs=1e-9)
    assert 0.60 <= study["pre_shifted"] <= 0.70, study


@pytest.mark.shared
def test_a_clean_within_one_point(study):
    assert study["recipe_clean"] >= study["pre_clean"] - 0.01, study


@pytest.mark.shared
def test_b_recovers_half_the_drop(study):
    drop = study["pre_clean"] - study["pre_shifted"]
    assert study["recipe_shifted"] - study["pre_shifted"] >= 0.5 * drop, study


@pytest.mark.shared
def test_b_not_worse_than_last_layer_only(study):
    assert study["recipe_shifted"] >= study["last_shifted"], study
