"""The playground: point data, Algorithm 1 on 2-D points, the views through the one loop, the measured
quality gate, exports and recipes."""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from diffusion.data.points import BUILT_IN, built_in, drawing_mask, point_set, word_mask
from diffusion.loop import denoise
from diffusion.metrics.points import sliced_wasserstein
from diffusion.playground.model import PointDenoiser
from diffusion.playground.service import Playground
from diffusion.playground.training import (
    PointConfig,
    check_config,
    make_denoiser,
    pack_mask,
    scheduler_config,
    train_points,
    unpack_mask,
)
from diffusion.gate import ComputeGate

SHORT = PointConfig(steps=300)


@pytest.fixture(scope="module")
def playground() -> Playground:
    return Playground(ComputeGate(1))


@pytest.fixture(scope="module")
def short_model(playground):
    *_, last = playground.train(SHORT)
    return last.model


# ----- data -----
@pytest.mark.parametrize("name", list(BUILT_IN))
def test_every_built_in_set_is_normalised_and_seeded(name) -> None:
    points = built_in(name).sample(4000, torch.Generator().manual_seed(3))
    assert points.shape == (4000, 2) and points.dtype == torch.float32
    assert points.mean(0).abs().max() < 0.1
    assert 0.9 < float(points.pow(2).sum(1).mean().div(2).sqrt()) < 1.1
    again = built_in(name).sample(4000, torch.Generator().manual_seed(3))
    assert torch.equal(points, again)


def test_a_word_and_a_drawing_become_point_sets() -> None:
    mask = word_mask("Hi")
    assert mask.any() and mask.shape[1] > mask.shape[0]  # a word is wider than tall
    points = point_set("word", "Hi").sample(1000, torch.Generator().manual_seed(0))
    assert float(points[:, 0].std()) > float(points[:, 1].std())
    sketch = np.full((200, 300, 3), 255, np.uint8)
    sketch[90:110, 20:280] = 0  # a horizontal black bar
    ink = drawing_mask(sketch)
    assert ink.shape == (85, 128) and 0.04 < ink.mean() < 0.15
    assert np.array_equal(unpack_mask(pack_mask(ink)), ink)
    cloud = check_config(PointConfig(dataset="drawing", drawing=pack_mask(ink))).point_set().sample(
        500, torch.Generator().manual_seed(0))
    assert float(cloud[:, 0].std()) > 5 * float(cloud[:, 1].std())  # a bar: wide and flat


@pytest.mark.parametrize("config, message", [
    (PointConfig(dataset="nope"), "unknown data set"),
    (PointConfig(dataset="word", word=""), "type a word"),
    (PointConfig(dataset="word", word="x" * 13), "at most 12"),
    (PointConfig(dataset="word", word="a<b"), "not '<'"),
    (PointConfig(dataset="drawing"), "draw something"),
    (PointConfig(dataset="drawing", drawing="3,3,@@"), "packed mask"),
    (PointConfig(schedule="sigmoid"), "schedule must be"),
    (PointConfig(num_train_timesteps=5), "T \\(training timesteps\\)"),
    (PointConfig(steps=20_001), "Training steps"),
    (PointConfig(steps=2.5), "Training steps"),
    (PointConfig(seed=-1), "Seed"),
    (PointConfig(learning_rate=float("nan")), "learning rate"),
])
def test_bad_configs_are_refused_with_a_readable_message(config, message) -> None:
    with pytest.raises(ValueError, match=message):
        check_config(config).point_set()


def test_a_blank_drawing_is_refused(playground) -> None:
    with pytest.raises(ValueError, match="inked pixels"):
        playground.drawing(np.full((64, 64, 3), 255, np.uint8))


# ----- the model and the loop -----
def test_the_denoiser_saves_and_loads_as_a_diffusers_model(tmp_path) -> None:
    model = make_denoiser(PointConfig(hidden=16, layers=2))
    model.save_pretrained(tmp_path, safe_serialization=True)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = PointDenoiser.from_pretrained(tmp_path).eval()
    x, t = torch.randn(5, 2), torch.tensor([0, 10, 100, 500, 999])
    with torch.inference_mode():
        assert torch.equal(model(x, t), loaded(x, t))
        assert torch.equal(model(x, torch.tensor(7.0)), model(x, torch.full((5,), 7.0)))  # scalar t broadcasts


def test_the_one_loop_runs_points_exactly_as_a_plain_diffusers_loop() -> None:
    """No image-shape assumption is left in the loop: on (n, 2) points it equals the scheduler's own loop."""
    config = PointConfig(hidden=16, layers=1)
    model = make_denoiser(config)
    sched_config = scheduler_config(config)
    for cls, sampler in ((DDPMScheduler, "ddpm"), (DDIMScheduler, "ddim")):
        noise = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
        ours = list(denoise(lambda x, t: model(x, t), cls.from_config(sched_config), noise, 10,
                            torch.Generator().manual_seed(2)))[-1].prev_sample
        scheduler, g, x = cls.from_config(sched_config), torch.Generator().manual_seed(2), noise.clone()
        scheduler.set_timesteps(10)
        with torch.inference_mode():
            for t in scheduler.timesteps:
                x = scheduler.step(model(x, t), t, x, generator=g).prev_sample
        assert torch.equal(ours, x), sampler


# ----- training -----
@pytest.mark.slow
def test_training_lowers_the_loss_and_the_distance_and_is_reproducible(playground, short_model) -> None:
    model = short_model
    losses = np.asarray(model.losses)
    assert len(losses) == 300 and losses[-50:].mean() < 0.8 * losses[:50].mean()
    first, last = model.snapshots[0], model.snapshots[-1]
    assert (first.step, last.step) == (100, 300)
    assert last.distance < first.distance
    *_, again = playground.train(SHORT)
    assert again.model.weights == model.weights  # bit-identical
    assert np.array_equal(again.model.snapshots[-1].cloud, last.cloud)
    *_, other = playground.train(replace(SHORT, seed=1))
    assert other.model.weights != model.weights


@pytest.mark.slow
def test_the_default_budget_fits_two_moons_within_twice_the_data_floor(playground) -> None:
    """The playground's gate: the default config (two moons, 3,000 steps) reaches at most 2x the floor."""
    *_, last = playground.train(PointConfig())
    model = last.model
    assert model.config.dataset == "moons" and model.config.steps == 3000
    assert 0.02 < model.floor < 0.08
    assert model.distance <= 2 * model.floor, (model.distance, model.floor)


def test_a_distance_is_small_only_for_the_same_distribution() -> None:
    g = torch.Generator().manual_seed(0)
    moons = built_in("moons")
    a, b = moons.sample(2000, g).numpy(), moons.sample(2000, g).numpy()
    gauss = torch.randn(2000, 2, generator=g).numpy()
    assert sliced_wasserstein(a, b) < 0.3 * sliced_wasserstein(a, gauss)
    assert sliced_wasserstein(a, b) == sliced_wasserstein(a, b)  # fixed projections
    assert sliced_wasserstein(a, np.full_like(b, np.nan)) == float("inf")


# ----- views -----
def test_sampling_streams_every_step_and_is_reproducible(playground, short_model) -> None:
    updates = list(playground.sample(short_model, "ddpm", 20, 200, 5))
    assert [u.done for u in updates] == list(range(1, 21)) and updates[-1].run is not None
    run = updates[-1].run
    assert run.x_t.shape == (21, 200, 2) and run.pred_x0.shape == (20, 200, 2) and run.timesteps.shape == (20,)
    *_, again = playground.sample(short_model, "ddpm", 20, 200, 5)
    assert np.array_equal(again.run.x_t, run.x_t)
    *_, other = playground.sample(short_model, "ddpm", 20, 200, 6)
    assert not np.array_equal(other.run.x_t, run.x_t)
    with pytest.raises(ValueError, match="samples with"):
        next(playground.sample(short_model, "euler", 20, 10, 0))
    with pytest.raises(ValueError, match="Steps"):
        next(playground.sample(short_model, "ddim", 1001, 10, 0))
    with pytest.raises(ValueError, match="Particles"):
        next(playground.sample(short_model, "ddim", 10, 5000, 0))


@pytest.mark.slow
def test_the_noise_field_points_toward_the_data_at_small_t(playground) -> None:
    *_, last = playground.train(replace(SHORT, steps=1500))
    model = last.model
    field = next(playground.field(model, 20, 15))
    assert field.points.shape == field.eps.shape == field.score.shape == (15, 15, 2)
    np.testing.assert_allclose(field.score, -field.eps / np.sqrt(1 - field.alpha_bar), rtol=1e-5)
    data = playground.data(model.config, 2000)
    grid = field.points.reshape(-1, 2)
    nearest = data[np.argmin(((grid[:, None] - data[None]) ** 2).sum(-1), axis=1)]
    toward = nearest - grid
    far = np.linalg.norm(toward, axis=1) > 0.3  # off the data, where the direction is clear
    arrows = field.score.reshape(-1, 2)[far]
    cosine = (arrows * toward[far]).sum(1) / (np.linalg.norm(arrows, axis=1) * np.linalg.norm(toward[far], axis=1))
    assert far.sum() > 100 and np.median(cosine) > 0.9, np.median(cosine)


def test_ddim_paths_are_deterministic_and_ddpm_paths_follow_the_noise(playground, short_model) -> None:
    paths = next(playground.paths(short_model, 6, 3, 30))
    assert paths.ddim.shape == paths.ddpm.shape == (31, 6, 2)
    np.testing.assert_array_equal(paths.ddpm[0], paths.ddim[0])  # the same start
    again = next(playground.paths(short_model, 6, 3, 30))
    np.testing.assert_array_equal(paths.ddim, again.ddim)
    np.testing.assert_array_equal(paths.ddpm, again.ddpm)
    assert not np.allclose(paths.ddpm[-1], paths.ddpm_other_seed[-1], atol=1e-3)  # other noise, other end

    def wiggle(path: np.ndarray) -> float:  # mean turning: jittery paths turn a lot
        d = np.diff(path, axis=0)
        cos = (d[1:] * d[:-1]).sum(-1) / (np.linalg.norm(d[1:], axis=-1) * np.linalg.norm(d[:-1], axis=-1) + 1e-12)
        return float(np.mean(1 - cos))

    assert wiggle(paths.ddpm) > 3 * wiggle(paths.ddim)


def test_the_loss_is_hard_near_t0_and_easy_near_T(playground, short_model) -> None:
    ts, loss = next(playground.loss_by_t(short_model, bins=10))
    assert ts.shape == loss.shape == (10,) and ts[0] == 0 and ts[-1] == 999
    assert loss[0] > 0.5 and loss[-1] < 0.05 and loss[0] > loss[-1]


def test_the_forward_process_ends_in_a_standard_gaussian(playground) -> None:
    ts, alpha_bar, clouds = next(playground.forward(SHORT, n=2000))
    assert clouds.shape == (6, 2000, 2) and ts[0] == 0 and ts[-1] == 999
    np.testing.assert_allclose(clouds[0], playground.data(SHORT, 2000), atol=0.05)  # t = 0: the data, barely noised
    assert alpha_bar[-1] < 1e-3 and abs(float(clouds[-1].std()) - 1) < 0.05


# ----- exports -----
@pytest.mark.slow
def test_the_export_loads_back_and_the_recipe_replays_bit_identically(playground, short_model, tmp_path) -> None:
    archive = playground.export(short_model, tmp_path)
    with zipfile.ZipFile(archive) as z:
        names = set(z.namelist())
        z.extractall(tmp_path / "out")
    assert {"denoiser/config.json", "denoiser/diffusion_pytorch_model.safetensors", "scheduler/scheduler_config.json",
            "recipe.json", "metrics.json"} <= names
    loaded = PointDenoiser.from_pretrained(tmp_path / "out" / "denoiser").eval()
    scheduler = DDPMScheduler.from_pretrained(tmp_path / "out" / "scheduler")
    assert scheduler.config.beta_schedule == "squaredcos_cap_v2" and not scheduler.config.clip_sample
    net = make_denoiser(short_model.config, short_model.weights)
    x = torch.randn(8, 2)
    with torch.inference_mode():
        assert torch.equal(loaded(x, torch.tensor(3.0)), net(x, torch.tensor(3.0)))
    recipe = PointConfig.from_json((tmp_path / "out" / "recipe.json").read_text())
    assert recipe == short_model.config
    *_, replayed = train_points(recipe)
    assert hashlib.sha256(replayed.model.weights).digest() == hashlib.sha256(short_model.weights).digest()
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["floor"] == pytest.approx(short_model.floor)


@pytest.mark.parametrize("text, message", [
    ("nope", "not JSON"),
    ('{"format": "other"}', "not a playground recipe"),
    ('{"format": "diffusion-classroom/point-recipe@1", "config": {"evil": 1}}', "unknown recipe keys"),
    ('{"format": "diffusion-classroom/point-recipe@1", "config": {"steps": 1e9}}', "Training steps"),
])
def test_bad_recipes_are_refused(text, message) -> None:
    with pytest.raises(ValueError, match=message):
        PointConfig.from_json(text)


@pytest.mark.slow
def test_the_cli_replays_a_recipe(short_model, tmp_path, capsys) -> None:
    from diffusion.training import train_points as cli

    recipe = tmp_path / "recipe.json"
    recipe.write_text(short_model.config.to_json())
    assert cli.main(cli.parse_args(["--recipe", str(recipe), "--output_dir", str(tmp_path / "run")])) == 0
    out = capsys.readouterr().out
    assert hashlib.sha256(short_model.weights).hexdigest() in out
    assert (tmp_path / "run" / "denoiser" / "diffusion_pytorch_model.safetensors").is_file()


def test_dpm_solver_stays_finite_on_the_cosine_schedule(playground, short_model) -> None:
    """Without clipping log-SNR, DPM-Solver++'s first step on the cosine schedule diverged (distance 7.2)."""
    *_, last = playground.sample(short_model, "dpmpp-2m", 20, 2000, 0)
    cloud = last.run.x_t[-1]
    assert np.isfinite(cloud).all() and np.abs(cloud).max() < 10
    assert sliced_wasserstein(cloud, playground.fresh(short_model)) < 0.5
