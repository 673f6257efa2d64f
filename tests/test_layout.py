"""Composition by layout (diffusion.layout): the parser and planner, the masks, the composed prediction
through the one loop, the switch (``off`` is the plain model, bit for bit), recipes, and the gate on the shipped
weights (layout on against off)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion import layout as L
from diffusion.data import shapes
from diffusion.request import SampleRequest, check_request

ROOT = Path(__file__).resolve().parents[1]


# ----- parsing and planning -----
@pytest.mark.parametrize("prompt, first, relation, second, background", [
    ("a red circle left of a blue square", "a red circle", "left of", "a blue square", None),
    ("A large Pink heart above a small cyan circle.", "a large pink heart", "above", "a small cyan circle", None),
    ("red circle to the right of blue square on black", "a red circle", "right of", "a blue square", "black"),
    ("a star below a green shape, on a white background", "a star", "below", "a green shape", "white"),
])
def test_two_object_prompts_are_parsed(prompt, first, relation, second, background) -> None:
    parsed = L.parse(prompt)
    assert parsed is not None
    assert (parsed.first.phrase, parsed.relation, parsed.second.phrase, parsed.background) == \
        (first, relation, second, background)


@pytest.mark.parametrize("prompt", ["a red circle", "a red circle in the top left corner", "a cat left of a dog",
                                    "a red circle left of a blue square left of a star", "", "left of"])
def test_other_prompts_have_no_layout(prompt) -> None:
    assert L.parse(prompt) is None
    assert L.plan(prompt, 0) is None


def test_the_parser_reads_every_two_object_caption_the_training_data_writes() -> None:
    """Every phrasing of diffusion.data.shapes (sizes kept or left out, either object named first, any true
    relation, "on a black background" or "on black") reads back as the scene's objects and relation."""
    rng = np.random.default_rng(0)
    seen: set[tuple[str, bool, bool]] = set()
    for _ in range(400):
        scene = shapes.random_two_object_scene(rng)
        for told in (scene, shapes.restate(scene, rng)):
            for caption in (shapes.random_caption(told, rng), shapes.two_object_caption(told)):
                parsed = L.parse(caption)
                assert parsed is not None, caption
                assert parsed.relation == told.relation, caption
                for words, obj in zip((parsed.first, parsed.second), told.objects, strict=True):
                    assert (words.colour, words.shape) == (obj.colour, obj.shape), caption
                    assert words.size in (None, obj.size), caption
                assert parsed.background in (None, told.background), caption
                seen.add((told.relation, parsed.first.size is None, parsed.background is None))
    assert len(seen) == 16  # every relation, with and without sizes, with and without a background


@pytest.mark.parametrize("prompt, reason", [
    ("a cat left of a dog", "cannot read 'a cat' or 'a dog' as an object of the shapes world"),
    ("a red circle above a blue balloon", "cannot read 'a blue balloon'"),
    ("a red circle left of a blue square left of a star", "draws two objects and this prompt relates 3"),
])
def test_a_prompt_the_planner_cannot_read_gets_a_reason_and_the_plain_model(prompt, reason, studio) -> None:
    assert L.plan(prompt, 0) is None
    assert reason in L.why_plain(prompt) and "drawn by the plain model" in L.why_plain(prompt)
    request = SampleRequest(prompt=prompt, layout="auto", n=1)
    assert studio.layouts(request) == [None] and reason in studio.layout_fallback(request)
    # nothing to explain: a single object, a planned layout, or the user's own choice of the plain model
    assert studio.layout_fallback(dataclasses.replace(request, layout="off")) is None
    assert studio.layout_fallback(dataclasses.replace(request, prompt="a red circle")) is None
    assert studio.layout_fallback(dataclasses.replace(request, prompt="a red circle left of a star")) is None


def test_every_planned_layout_satisfies_its_relation_and_the_seed_chooses_it() -> None:
    for relation in shapes.RELATIONS:
        prompt = f"a red circle {relation} a blue square"
        layouts = {L.plan(prompt, seed) for seed in range(60)}
        assert len(layouts) > 5  # the seed chooses among the valid layouts
        for layout in layouts:
            a, b = layout.objects
            assert relation in shapes.true_relations((a.row, a.col), (b.row, b.col))
        assert L.plan(prompt, 7) == L.plan(prompt, 7)


def test_each_object_gets_a_single_object_caption_at_its_cell_on_one_background() -> None:
    layout = L.plan("a small yellow star left of a purple circle", 3)
    captions = layout.captions()
    assert captions[0].startswith("a small yellow star ") and captions[1].startswith("a purple circle ")
    assert all(c.endswith(f"on a {layout.background} background") for c in captions)
    vocabulary = set(shapes.vocabulary())
    assert all(set(c.split()) <= vocabulary for c in captions)  # words the model was trained on


def test_masks_cover_their_cells_and_the_weights_sum_to_one() -> None:
    layout = L.plan("a red circle above a blue square", 0)
    masks = L.layout_masks(layout, 16)
    assert masks.shape == (2, 16, 16) and float(masks.min()) >= 0 and float(masks.sum(0).max()) <= 1 + 1e-6
    for obj, mask in zip(layout.objects, masks, strict=True):
        cy, cx = (int(shapes.CELL_CENTRES[v] * 16 / 64) for v in (obj.row, obj.col))
        assert mask[cy, cx] == 1.0
        assert float(mask.sum()) < 0.4 * 16 * 16  # a region, not the canvas
    weights = L.region_weights(masks)
    torch.testing.assert_close(weights.sum(0), torch.ones(16, 16))
    predictions = torch.randn(1, 2, 4, 16, 16)
    composed = L.compose(predictions, weights[None])
    a, b = layout.objects
    ra, rb = (int(shapes.CELL_CENTRES[v] * 16 / 64) for v in (a.row, b.row))
    ca, cb = (int(shapes.CELL_CENTRES[v] * 16 / 64) for v in (a.col, b.col))
    torch.testing.assert_close(composed[0, :, ra, ca], predictions[0, 0, :, ra, ca])  # each object's own prediction
    torch.testing.assert_close(composed[0, :, rb, cb], predictions[0, 1, :, rb, cb])


def test_the_switch_is_checked() -> None:
    with pytest.raises(ValueError, match="layout must be one of auto, off"):
        check_request(SampleRequest(prompt="a", layout="sometimes"))


# ----- sampling (a tiny text model) -----
def _run(studio, prompt: str, layout: str, steps: int = 3):
    from diffusion.pipeline import latent_steps

    model = studio.load("local/tiny-sd")
    request = SampleRequest(sampler="ddim", steps=steps, n=2, seed=5, prompt=prompt, guidance_scale=3.0, layout=layout)
    return list(latent_steps(model, request, record_attention=False))


def test_layout_off_and_single_object_prompts_are_the_plain_path_bit_for_bit(studio) -> None:
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    model = studio.load("local/tiny-sd")
    for prompt, layout in (("a red circle left of a blue square", "off"), ("a red circle", "auto")):
        records = _run(studio, prompt, layout)
        assert all(r.layout is None for r in records)
        pipe = StableDiffusionPipeline(vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer,
                                       unet=model.unet, scheduler=DDIMScheduler.from_config(model.scheduler_config),
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        expected = pipe(prompt, num_inference_steps=3, guidance_scale=3.0, num_images_per_prompt=2,
                        generator=torch.Generator("cpu").manual_seed(5), output_type="latent").images
        torch.testing.assert_close(records[-1].prev_sample, expected, rtol=0, atol=0)


def test_layout_auto_composes_the_objects_predictions_in_their_regions(studio) -> None:
    prompt = "a red circle left of a blue square"
    plain, by_layout = _run(studio, prompt, "off"), _run(studio, prompt, "auto")
    assert not torch.equal(plain[-1].prev_sample, by_layout[-1].prev_sample)
    step = by_layout[0].layout
    assert step is not None and step.layouts == [L.plan(prompt, 5), L.plan(prompt, 6)]
    assert step.predictions.shape == (2, 2, *plain[0].sample.shape[1:])
    # the record's conditional prediction is exactly the composition of the two objects' predictions
    torch.testing.assert_close(by_layout[0].noise_pred_text, L.compose(step.predictions, step.weights))
    assert not torch.equal(step.predictions[:, 0], step.predictions[:, 1])
    # the same request, the same pixels
    torch.testing.assert_close(_run(studio, prompt, "auto")[-1].prev_sample, by_layout[-1].prev_sample, rtol=0, atol=0)


def test_the_objects_share_one_state_then_go_apart_guided_then_unguided(studio) -> None:
    records = _run(studio, "a red circle left of a blue square", "auto", steps=10)
    phases = [r.layout.phase for r in records]
    assert phases == ["joint"] * 5 + ["apart"] * 3 + ["apart, unguided"] * 2
    assert [L.phase(i, 10) for i in range(10)] == phases
    for record in records:
        step = record.layout
        same = torch.equal(step.inputs[:, 0], step.inputs[:, 1])
        assert same == (record.index <= 5)  # one state; the first apart step forks it into one trajectory per object
        unguided = step.phase == "apart, unguided"
        assert (record.guidance_scale is None) == unguided and (step.uncond is None) == unguided
        # the record is the composition of the trajectories: its output is the composed guided prediction
        if not unguided:
            guided = step.uncond + 3.0 * (step.predictions - step.uncond)
            torch.testing.assert_close(record.model_output, L.compose(guided, step.weights))
            torch.testing.assert_close(record.model_input, L.compose(step.inputs, step.weights))
    # the budget counts these UNet rows: 3 joint, 4 apart, 2 unguided per image and step
    assert L.unet_rows(10, True) == 5 * 3 + 3 * 4 + 2 * 2 and L.unet_rows(10, False) == 20
    card = studio.card("local/tiny-sd")
    request = SampleRequest(sampler="ddim", steps=10, n=2, prompt="a red circle left of a blue square",
                            guidance_scale=3.0)
    budget = studio.work_budget_s
    try:
        studio.work_budget_s = 2 * L.unet_rows(10, True) * card.image_step_ms / 1000
        studio.check_budget(card, [request])
        studio.work_budget_s *= 0.99
        with pytest.raises(ValueError, match="needs about"):
            studio.check_budget(card, [request])
        studio.check_budget(card, [dataclasses.replace(request, layout="off")])  # 2 rows a step: fits
    finally:
        studio.work_budget_s = budget


def test_the_studio_reports_each_images_layout_and_a_recipe_replays_it(studio) -> None:
    from diffusion.recipe import Recipe, make_recipe

    request = SampleRequest(sampler="ddim", steps=2, n=3, seed=9, prompt="a pink heart above a cyan circle",
                            guidance_scale=2.0)
    assert studio.layouts(request) == [L.plan(request.prompt, 9 + i) for i in range(3)]
    assert studio.layouts(dataclasses.replace(request, layout="off")) == [None] * 3
    assert studio.layouts(dataclasses.replace(request, attend_excite=True)) == [None] * 3
    model = studio.load("local/tiny-sd")
    recipe = Recipe.from_json(make_recipe("local/tiny-sd", request, model.scheduler_config).to_json())
    assert recipe.request.layout == "auto"
    replayed = studio.sample("local/tiny-sd", recipe.request)
    np.testing.assert_array_equal(replayed, studio.sample("local/tiny-sd", request))
    # a recipe written before layouts existed ran the plain model, and so does its replay
    old = json.loads(make_recipe("local/tiny-sd", request, model.scheduler_config).to_json())
    del old["request"]["layout"]
    assert Recipe.from_json(json.dumps(old)).request.layout == "off"


def test_the_cli_takes_the_switch(tiny_sd_dir, tmp_path) -> None:
    from diffusion.sample import main, parse_args

    outs = []
    for mode in ("auto", "off"):
        out = tmp_path / f"{mode}.npy"
        assert main(parse_args(["--model-dir", str(tiny_sd_dir), "--model", "local/tiny-sd", "--prompt",
                     "a red circle left of a blue square", "--n", "2", "--steps", "2", "--guidance", "2",
                     "--layout", mode, "--out", str(tmp_path / f"{mode}.png"), "--save-npy", str(out),
                     "--precision", "fp32"])) == 0
        outs.append(np.load(out))
    assert not np.array_equal(*outs)


# ----- the shipped weights -----
@pytest.mark.slow
@pytest.mark.skipif(not (ROOT / "assets" / "ldm-shapes" / "model_index.json").is_file(), reason="not shipped")
def test_the_layout_draws_two_object_prompts_better_on_the_shipped_weights() -> None:
    """The gate's first 40 two-object prompts, layout off and on, held to the layout's targets (both
    objects right and the relation right in at least 90%; measured on all 100: off 0.53 / 0.25, on 0.92 / 0.92)."""
    from diffusion.loading import load_pipeline
    from diffusion.metrics import shape_judge as judge
    from diffusion.metrics import shapes_gate as gate
    from diffusion.registry import Registry

    model = load_pipeline(Registry.default().get("ldm-shapes"), torch.device("cpu"))
    classifier = judge.load_classifier()
    scenes = gate.pair_prompts(40)
    prompts = [shapes.two_object_caption(s) for s in scenes]
    scores = {}
    for mode in ("off", "auto"):
        config = gate.GateConfig(n_pairs=40, layout=mode)
        scores[mode] = judge.score_pairs(gate.generate(model, prompts, config.guidance, config), scenes,
                                         classifier).accuracy()
    print("40 two-object prompts:", {mode: {k: round(v, 3) for k, v in s.items()} for mode, s in scores.items()})
    assert scores["auto"]["both"] >= 0.90 and scores["auto"]["relation"] >= 0.90, scores
    assert scores["auto"]["relation"] >= scores["off"]["relation"] + 0.4, scores


def test_the_step_lab_records_each_objects_region_and_prediction(studio) -> None:
    request = SampleRequest(sampler="ddim", steps=3, seed=2, prompt="a red circle left of a blue square",
                            guidance_scale=3.0)
    *_, (done, total, traj) = studio.trajectory("local/tiny-sd", request)
    assert done == total == 3
    for view in traj.steps:
        assert view.regions is not None and len(view.regions) == 2
        assert view.attention is None  # no maps of the prompt's words: each region read its own caption
        layout = L.plan(request.prompt, 2)
        assert [r.caption for r in view.regions] == layout.captions()
        for region in view.regions:
            assert region.weight.shape == view.pred_x0.shape[:2] and region.weight.dtype == np.uint8
            assert region.weight.max() == 255 and region.weight.min() < 255
            assert region.pred_x0.shape == view.pred_x0.shape
    plain = list(studio.trajectory("local/tiny-sd", dataclasses.replace(request, layout="off")))[-1][2]
    assert all(view.regions is None for view in plain.steps)
