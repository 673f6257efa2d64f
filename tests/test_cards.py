"""Every shipped model folder has a Hub-grade card: valid metadata (read by huggingface_hub), a model-index
written from its gate's results file where it has a gate, version requirements, and facts that match the code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diffusion.registry import ASSETS
from tests.helpers import card_metrics

MODEL_FOLDERS = sorted({ASSETS / p.relative_to(ASSETS).parts[0] for p in ASSETS.rglob("*.safetensors")})
GATED = {"ddpm-mnist", "ldm-shapes", "planner-mazes"}  # the generative models: each has a gate


def test_every_model_folder_is_found() -> None:
    assert {p.name for p in MODEL_FOLDERS} == {"ddpm-mnist", "ldm-shapes", "planner-mazes", "lenet-mnist",
                                               "shapes-analyser", "autoencoders"}


@pytest.mark.parametrize("folder", MODEL_FOLDERS, ids=lambda p: p.name)
def test_the_card_is_valid_and_states_its_requirements(folder: Path) -> None:
    from huggingface_hub import ModelCard, ModelCardData

    card = ModelCard.load(folder / "README.md", ignore_metadata_errors=False)  # parses model-index strictly
    assert isinstance(card.data, ModelCardData) and card.data.license == "mit"
    assert card.data.library_name in {"diffusers", "pytorch"}
    assert "stable-diffusion" not in (card.data.tags or [])  # none of them is Stable Diffusion
    assert "Python >= 3.11" in card.text or "diffusers >= 0.42" in card.text, "state the version requirements"
    assert '"assets/' not in card.text or folder.name in {"ddpm-mnist", "ldm-shapes"}  # a path that works anywhere


@pytest.mark.parametrize("name", sorted(GATED))
def test_the_model_index_is_the_gate_results_file(name: str) -> None:
    from huggingface_hub import ModelCard

    folder = ASSETS / name
    record = json.loads((folder / "gate_results.json").read_text())
    assert record["measured"] and record["machine"] and "gate" in record["command"] and "--write" in record["command"]
    card = ModelCard.load(folder / "README.md")
    shown = {r.metric_name: r.metric_value for r in card.data.eval_results}
    expected = {m.name: m for m in card_metrics(folder, record)}
    assert shown.keys() == expected.keys() and len(shown) >= 3
    from diffusion.metrics.cards import value_at

    for metric_name, metric in expected.items():
        assert shown[metric_name] == value_at(record, metric.path), metric_name


def test_the_cards_training_facts_match_the_code() -> None:
    from diffusion.data.mnist import N_TRAIN

    text = (ASSETS / "ddpm-mnist" / "README.md").read_text()
    assert f"Trained on {N_TRAIN:,} of the 5,000 MNIST digits" in text
    assert "transformers >= 5" in (ASSETS / "ldm-shapes" / "README.md").read_text()
