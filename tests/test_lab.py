"""The step lab's computations: forward process, SDEdit, guidance decomposition, recipes, exports."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from diffusion.export import trajectory_frames, write_animation
from diffusion.recipe import Recipe, make_recipe
from diffusion.request import SampleRequest


def digit_like(size: int = 32) -> np.ndarray:
    img = np.zeros((size * 2, size * 3), np.uint8)  # not square: the lab centre-crops
    img[size // 2: size * 3 // 2, size + 8: size * 2 - 8] = 255
    return img


def test_forward_process_endpoints(studio):
    image = digit_like()
    start = next(studio.forward_process("local/tiny-ddpm", image, 0, seed=1))
    assert start.x_t.shape == (8, 8) and start.x0.shape == (8, 8)
    assert np.abs(start.x_t.astype(int) - start.x0.astype(int)).max() <= 8  # t = 0 keeps the image
    assert start.signal_coef == pytest.approx(start.alpha_prod_t ** 0.5)
    end = next(studio.forward_process("local/tiny-ddpm", image, 99, seed=1))
    assert end.signal_coef < 0.05 and end.noise_coef > 0.99
    assert end.x_t_std == pytest.approx(1.0, abs=0.35)  # 64 pixels of almost pure N(0, 1)
    same = next(studio.forward_process("local/tiny-ddpm", image, 99, seed=1))
    assert np.array_equal(same.x_t, end.x_t)  # one fixed noise draw per seed
    with pytest.raises(ValueError, match="t must be a whole number between 0 and 99"):
        studio.forward_process("local/tiny-ddpm", image, 100)
    strip = next(studio.forward_strip("local/tiny-ddpm", image, [0, 40, 99], seed=1))
    for frame, t in zip(strip, [0, 40, 99], strict=True):  # the same draw as forward's, encoded once
        assert np.array_equal(frame, next(studio.forward_process("local/tiny-ddpm", image, t, seed=1)).x_t)


def test_forward_process_on_a_latent_model_reports_reconstruction(studio):
    view = next(studio.forward_process("local/tiny-sd", np.full((40, 40, 3), 128, np.uint8), 50, seed=0))
    assert view.x_t.shape == (16, 16, 3) and view.latents is not None and view.latents.shape == (8, 35)
    assert view.reconstruction_psnr is not None and np.isfinite(view.reconstruction_psnr)


def test_sdedit_runs_the_tail_of_the_schedule(studio):
    image = digit_like()
    request = SampleRequest("ddim", 10, n=2, seed=0)
    *_, low = studio.generate("local/tiny-ddpm", request, previews=0, init_image=image, start_timestep=15)
    *_, high = studio.generate("local/tiny-ddpm", request, previews=0, init_image=image, start_timestep=99)
    assert low.num_steps == 2 and high.num_steps == 10  # DDIM-10 timesteps 90, 80, ..., 0
    assert low.images.shape == (2, 8, 8)
    again = studio.sample("local/tiny-ddpm", request)
    *_, full = studio.generate("local/tiny-ddpm", request, previews=0)
    assert np.array_equal(again, full.images)


def test_guidance_decomposition_reuses_the_cached_pair(studio):
    request = SampleRequest("ddim", 3, seed=4, prompt="a red circle", guidance_scale=3.0)
    *_, (_, _, traj) = studio.trajectory("local/tiny-sd", request)
    view = traj.steps[1]
    assert view.guidance is not None and view.guidance.uncond.shape == (4, 8, 8)
    decomposition = next(studio.guidance_view("local/tiny-sd", view, scales=(0.0, 1.0, 3.0)))
    assert len(decomposition.pred_x0) == 3 and decomposition.pred_x0[0].shape == (16, 16, 3)
    # the scale the run used reproduces the run's own predicted x0 (to float16 caching)
    assert np.abs(decomposition.pred_x0[2].astype(int) - view.pred_x0.astype(int)).max() <= 2
    assert decomposition.direction_norm > 0
    *_, (_, _, plain) = studio.trajectory("local/tiny-ddpm", SampleRequest("ddim", 2, seed=0))
    with pytest.raises(ValueError, match="no guidance record"):
        studio.guidance_view("local/tiny-ddpm", plain.steps[0])


@pytest.mark.slow
def test_recipe_round_trip_and_cli_replay_is_bit_identical(studio, tiny_sd_dir, tmp_path):
    request = SampleRequest("dpmpp-2m", 3, n=2, seed=11, prompt="a blue star", guidance_scale=2.5)
    model = studio.load("local/tiny-sd")
    recipe = make_recipe("local/tiny-sd", request, model.scheduler_config)
    text = recipe.to_json()
    assert json.loads(text)["scheduler_config"]["_class_name"] == "DPMSolverMultistepScheduler"
    assert Recipe.from_json(text) == recipe and recipe.version_mismatches() == []
    path = tmp_path / "recipe.json"
    path.write_text(text)
    out = subprocess.run([sys.executable, "-m", "diffusion.sample", "--model-dir", str(tiny_sd_dir), "--recipe",
                          str(path), "--out", str(tmp_path / "g.png"), "--save-npy", str(tmp_path / "s.npy")],
                         capture_output=True, text=True, timeout=300, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert out.returncode == 0, out.stderr
    assert np.array_equal(np.load(tmp_path / "s.npy"), studio.sample("local/tiny-sd", request))
    with pytest.raises(ValueError, match="not a Diffusion Classroom recipe"):
        Recipe.from_json('{"model": "x"}')


@pytest.mark.slow
def test_a_recipe_records_the_app_version_and_weights_and_other_weights_warn(studio, tiny_ddpm_dir, tmp_path):
    """A replay on other weights still runs, and says which weights the recipe ran on and which are here (the
    shipped weights changed twice in one week: an old recipe must not replay to other pixels silently)."""
    import shutil

    from diffusion import __version__
    from diffusion.loading import weights_digest

    *_, (_, _, traj) = studio.trajectory("local/tiny-ddpm", SampleRequest("ddim", 3, seed=2))
    data = json.loads(traj.recipe.to_json())
    assert data["versions"]["diffusion-classroom"] == __version__
    assert data["weights"] == weights_digest(tiny_ddpm_dir) == studio.load("local/tiny-ddpm").weights
    assert len(data["weights"]) == 12
    _, notes = studio.read_recipe(traj.recipe.to_json())
    assert notes == []  # the same weights and versions: nothing to say
    # the same recipe against changed weights: one file's bytes differ
    other = tmp_path / "tiny-ddpm"
    shutil.copytree(tiny_ddpm_dir, other)
    unet = next(other.rglob("*.safetensors"))
    raw = bytearray(unet.read_bytes())
    raw[-1] ^= 1
    unet.write_bytes(bytes(raw))
    assert weights_digest(other) != data["weights"]
    data["weights"] = weights_digest(other)
    _, notes = studio.read_recipe(json.dumps(data))
    assert notes[0] == (f"other weights: the recipe ran on local/tiny-ddpm weights {weights_digest(other)}, "
                        f"these are {weights_digest(tiny_ddpm_dir)}")
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(data))
    out = subprocess.run([sys.executable, "-m", "diffusion.sample", "--model-dir", str(tiny_ddpm_dir), "--recipe",
                          str(path), "--out", str(tmp_path / "g.png")], capture_output=True, text=True, timeout=300,
                         env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert out.returncode == 0, out.stderr  # it runs, and says so
    assert f"other weights: the recipe ran on local/tiny-ddpm weights {data['weights']}" in out.stderr
    with pytest.raises(ValueError, match="weights must be a hexadecimal digest"):
        Recipe.from_json(json.dumps({**data, "weights": "not hex"}))


def test_trajectory_exports(studio, tmp_path):
    *_, (_, _, traj) = studio.trajectory("local/tiny-ddpm", SampleRequest("ddpm", 12, seed=0))
    frames = trajectory_frames(traj.steps, "triptych", max_frames=5)
    assert len(frames) == 5 and frames[0].shape == (192, 3 * 192 + 16, 3)
    gif = write_animation(frames, tmp_path / "t.gif")
    assert iio.imread(gif, index=None).shape[0] == 5
    mp4 = write_animation(trajectory_frames(traj.steps, "pred_x0"), tmp_path / "t.mp4")
    assert mp4.stat().st_size > 1000
    with pytest.raises(ValueError, match="panel"):
        trajectory_frames(traj.steps, "bogus")


def test_sampler_race_aligns_lanes_by_noise_level(studio):
    from diffusion.lab.race import RACE_LEVELS, align_by_noise, labelled_race_grid, race_grid

    lanes_spec = (("ddpm", 100), ("ddim", 10), ("dpmpp-2m", 5), ("euler", 8))
    snapshots = []
    for lanes in studio.race("local/tiny-ddpm", SampleRequest(seed=3), lanes_spec):
        snapshots.append([(lane.model_calls, lane.done) for lane in lanes])
    assert [lane.model_calls for lane in lanes] == [100, 10, 5, 8] and all(lane.done for lane in lanes)
    # cheapest first: DPM-Solver++ (5 steps) finished before DDPM-100 started; DDPM streams in parts
    ddpm_started = next(s for s in snapshots if s[0][0] > 0)
    assert [done for _, done in ddpm_started[1:]] == [True, True, True]
    assert len([s for s in snapshots if 0 < s[0][0] < 100]) >= 10
    levels = np.array([0.05, 0.5, 0.95])
    for lane, picks in zip(lanes, align_by_noise(lanes, levels), strict=True):
        snr = np.log(lane.alpha_prod) - np.log1p(-np.asarray(lane.alpha_prod))
        for level, index in zip(levels, picks, strict=True):
            target = np.log(level) - np.log1p(-level)
            assert abs(snr[index] - target) == pytest.approx(np.abs(snr - target).min())
    # the same noise level is the same step for DDPM-100 and DDIM-10 when their timesteps coincide
    ddpm, ddim = lanes[0], lanes[1]
    for ab in ddim.alpha_prod:
        assert ab in ddpm.alpha_prod
    grid = race_grid(lanes, RACE_LEVELS)
    assert grid.shape == (4 * 10 + 2, len(RACE_LEVELS) * 10 + 2)
    # the labelled grid reads without its caption: sampler names on the left, noise levels on top
    labelled = labelled_race_grid(lanes, RACE_LEVELS, tile=96)
    tiles = labelled[-4 * 96:, -len(RACE_LEVELS) * 96:]
    assert labelled.ndim == 3 and tiles.shape == (4 * 96, len(RACE_LEVELS) * 96, 3)
    assert (labelled[-4 * 96:, : labelled.shape[1] - len(RACE_LEVELS) * 96] < 100).any()  # row labels drawn
    assert (labelled[: labelled.shape[0] - 4 * 96] < 100).any()  # column labels drawn


def test_a_race_read_on_another_thread_never_has_more_noise_levels_than_pictures() -> None:
    """The app's view of a race reads its lanes on the request's thread while the model thread runs the next step:
    a lane's alpha-bars (which pick its pictures) are appended after its picture, never before."""
    from diffusion.lab.race import RaceLane, run_race

    class Levels(list):
        def append(self, value: float) -> None:
            assert len(self) < len(lane.pred_x0), "an alpha-bar before its picture"
            super().append(value)

    class Record:
        def __init__(self, k: int, last: bool):
            self.timestep, self.is_last = 999 - k, last
            self.pred_original_sample = self.prev_sample = np.zeros((1, 4, 4), np.uint8)

    lane = RaceLane("ddim", 3, alpha_prod=Levels())
    steps = list(run_race([lane], [np.linspace(0.99, 0.01, 1000)], [lambda: (Record(k, k == 2) for k in range(3))],
                          lambda x: x))
    assert len(steps) == 3 and len(lane.alpha_prod) == len(lane.pred_x0) == 3 and lane.final is not None


def test_the_schedule_picture_is_drawn_once_and_only_its_marker_moves(studio) -> None:
    from demo.figures import MARKER, schedule_picture

    curves = studio.schedule("local/tiny-ddpm")
    picture = schedule_picture(curves)
    assert np.array_equal(picture.at(None), picture.base)
    columns = []
    for t in (0, 50, 99):
        changed = np.nonzero((picture.at(t) != picture.base).any(axis=(0, 2)))[0]
        assert len(changed) <= 2 * len(picture.panels)  # two pixel columns per panel, nothing else
        assert (picture.at(t)[:, changed] == MARKER).all(axis=-1).any(axis=0).all()
        columns.append(changed)
    assert all(a[0] < b[0] for a, b in zip(columns, columns[1:]))  # later t, further right
    # drawn once per schedule: every run of the model shares it, read-only; another schedule is drawn anew
    assert schedule_picture(studio.schedule("local/tiny-ddpm")) is picture and not picture.base.flags.writeable
    other = schedule_picture(studio.schedule("local/tiny-sd"))
    assert other is not picture and not np.array_equal(other.base, picture.base)


def test_progressive_generation_shows_each_samples_x0_as_t_falls(studio) -> None:
    """Ho et al. 2020, Fig. 6 live: evenly spaced steps, the last column the sample itself (the same pixels as
    sampling the request), the first the rough x0 estimate at t = T."""
    request = SampleRequest("ddpm", 20, n=3, seed=4)
    updates = list(studio.lessons.progressive("local/tiny-ddpm", request, points=5))
    assert [u[:2] for u in updates[:-1]] == [(i, 20) for i in range(1, 20)] and all(u[2] is None for u in updates[:-1])
    view = updates[-1][2]
    assert view.steps == (1, 6, 11, 15, 20) and view.pred_x0.shape == (3, 5, 8, 8)
    assert view.timesteps[0] > view.timesteps[-2] > view.timesteps[-1]
    np.testing.assert_array_equal(view.pred_x0[:, -1], studio.sample("local/tiny-ddpm", request))
    assert not np.array_equal(view.pred_x0[:, 0], view.pred_x0[:, -1])


def test_samples_that_share_an_x_t_agree_more_the_later_it_is(studio) -> None:
    """Ho et al. 2020, Fig. 7 live: one DDPM run continued three times from its x_t at t = 3/4, 1/2 and 1/4 of the
    way; the continuations start from that x_t itself (not re-noised), differ from each other, and agree more
    the later they start. The same request gives the same pictures."""
    request = SampleRequest("ddpm", 20, seed=3)
    *_, (done, total, shared) = studio.lessons.shared_latent("local/tiny-ddpm", request, samples=3)
    assert done == total == 20 + 15 + 10 + 5
    assert shared.x_t.shape == (3, 8, 8) and shared.samples.shape == (3, 3, 8, 8) and shared.original.shape == (8, 8)
    assert shared.timesteps[0] > shared.timesteps[1] > shared.timesteps[2]
    spread = [np.abs(row[:, None].astype(int) - row[None].astype(int)).mean() for row in shared.samples]
    assert spread[0] > spread[2] > 0, spread
    np.testing.assert_array_equal(shared.original, studio.sample("local/tiny-ddpm", dataclasses.replace(request, n=1))[0])
    *_, (_, _, again) = studio.lessons.shared_latent("local/tiny-ddpm", request, samples=3)
    assert again.samples.tobytes() == shared.samples.tobytes()
    with pytest.raises(ValueError, match="pixel models"):
        list(studio.lessons.shared_latent("local/tiny-sd", request))


def test_the_loop_continues_a_given_x_t_as_it_is() -> None:
    from diffusers import DDPMScheduler

    from diffusion.loop import denoise

    scheduler = DDPMScheduler(num_train_timesteps=100)
    x_t = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    records = list(denoise(lambda x, t: torch.zeros_like(x), scheduler, torch.zeros_like(x_t), 10,
                           generator=torch.Generator().manual_seed(1), start_sample=x_t, start_index=6))
    assert len(records) == 4 and torch.equal(records[0].sample, x_t) and records[0].timestep == 30
