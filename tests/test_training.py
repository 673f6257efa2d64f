"""The latent model's training scripts end to end on tiny settings: checkpoints, resume, export."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DiffusionPipeline

from diffusion.data import shapes
from diffusion.training import train_autoencoder, train_ddpm, train_ldm


def train_then_resume(script, run_dir, args: list[str]) -> None:
    """Train 2 steps, then resume from that checkpoint to step 4; both checkpoints kept."""
    script.main(script.parse_args([*args, "--max_train_steps", "2"]))
    script.main(script.parse_args([*args, "--max_train_steps", "4", "--resume", "latest"]))
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert "resumed from checkpoint-2" in (run_dir / "train.log").read_text()


@pytest.mark.slow
def test_autoencoder_then_ldm_train_resume_and_export(tmp_path):
    vae_dir = tmp_path / "vae-run"
    args = ["--output_dir", str(vae_dir), "--block_out_channels", "16", "16", "16", "--train_batch_size", "2",
            "--checkpointing_steps", "2", "--eval_images", "4", "--mixed_precision", "no", "--logging_steps", "1"]
    train_then_resume(train_autoencoder, vae_dir, args)
    vae = AutoencoderKL.from_pretrained(vae_dir / "vae", use_safetensors=True)
    assert vae.config.scaling_factor != 1.0  # computed from data
    ldm_dir = tmp_path / "ldm-run"
    tiny_ldm = ["--vae", str(vae_dir / "vae"), "--bank_size", "16", "--train_batch_size", "4", "--max_train_steps", "2",
                "--checkpointing_steps", "2", "--block_out_channels", "32", "32", "32", "--text_hidden_size", "32",
                "--text_layers", "1", "--mixed_precision", "no", "--logging_steps", "1"]
    train_ldm.main(train_ldm.parse_args([*tiny_ldm, "--output_dir", str(ldm_dir)]))
    assert json.loads((ldm_dir / "args.json").read_text())["max_train_steps"] == 2
    assert (ldm_dir / "preview-000002.png").is_file()
    pipe = DiffusionPipeline.from_pretrained(ldm_dir / "pipeline", use_safetensors=True)
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    # fine-tuning from that export with the position options of the shipped model's second stage
    tuned_dir = tmp_path / "ldm-tuned"
    train_ldm.main(train_ldm.parse_args([
        *tiny_ldm, "--output_dir", str(tuned_dir), "--init_from", str(ldm_dir / "pipeline"),
        "--reinit_words", "top", "left", "--position_caption_prob", "0.5", "--timestep_bias_strategy", "later"]))
    assert (tuned_dir / "pipeline" / "unet").is_dir()
    # a decoder-only fine-tune of that autoencoder keeps the latents (and so the latent model) valid
    ft_dir = tmp_path / "vae-decoder"
    train_autoencoder.main(train_autoencoder.parse_args([
        *args[2:], "--output_dir", str(ft_dir), "--decoder_from", str(vae_dir / "vae"), "--max_train_steps", "2",
        "--learning_rate", "1e-2"]))
    tuned = AutoencoderKL.from_pretrained(ft_dir / "vae", use_safetensors=True)
    assert tuned.config.scaling_factor == vae.config.scaling_factor
    before, after = vae.state_dict(), tuned.state_dict()
    frozen = [k for k in before if k.startswith(("encoder.", "quant_conv."))]
    trained = [k for k in before if k.startswith(("decoder.", "post_quant_conv."))]
    assert len(frozen) + len(trained) == len(before)
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert sum(not torch.equal(before[k], after[k]) for k in trained) > len(trained) // 2


def test_timestep_bias_later_draws_the_last_quarter_half_the_time():
    args = train_ldm.parse_args(["--timestep_bias_strategy", "later"])
    weights = train_ldm.timestep_weights(args, 1000)
    assert weights.sum().item() == pytest.approx(1.0)
    assert weights[750:].sum().item() == pytest.approx(0.5)  # 250 x 3 against 750 x 1
    assert weights[749].item() * 3 == pytest.approx(weights[750].item())
    uniform = train_ldm.timestep_weights(train_ldm.parse_args([]), 1000)
    assert torch.allclose(uniform, torch.full((1000,), 1e-3))


def test_position_only_captions_name_the_position_and_nothing_else():
    rng = np.random.default_rng(0)
    one = shapes.Scene((shapes.place("red", "circle", "large", 0, 0),), "white")
    two = shapes.random_two_object_scene(np.random.default_rng(1), "white")
    captions = {train_ldm.training_caption(one, rng, 1.0) for _ in range(50)}
    assert captions <= {"in the top left corner", "at the top left", "in the top left", "top left"}
    assert len(captions) > 1
    assert all(two.relation in train_ldm.training_caption(two, rng, 1.0) for _ in range(10))
    never = {train_ldm.training_caption(one, rng, 0.0) for _ in range(50)}
    assert any("circle" in c or "red" in c for c in never)


def test_reinit_words_redraws_only_those_embeddings():
    from diffusion.text import build_word_tokenizer

    tokenizer = build_word_tokenizer(shapes.vocabulary(), model_max_length=8)
    args = argparse.Namespace(text_hidden_size=32, text_layers=1, max_length=8)
    text_encoder = train_ldm.build_text_encoder(args, tokenizer)
    before = text_encoder.get_input_embeddings().weight.detach().clone()
    state = {k: v.clone() for k, v in text_encoder.state_dict().items()}
    train_ldm.reinit_word_embeddings(text_encoder, tokenizer, ["top", "left"], seed=0)
    after = text_encoder.get_input_embeddings().weight.detach()
    changed = (before != after).any(dim=1).nonzero().flatten().tolist()
    assert sorted(changed) == sorted(tokenizer.convert_tokens_to_ids(["top", "left"]))
    again = train_ldm.build_text_encoder(args, tokenizer)
    again.load_state_dict(state)
    train_ldm.reinit_word_embeddings(again, tokenizer, ["top", "left"], seed=0)
    assert torch.equal(again.get_input_embeddings().weight, after)  # seeded
    with pytest.raises(ValueError, match="zebra"):
        train_ldm.reinit_word_embeddings(text_encoder, tokenizer, ["zebra"], seed=0)


@pytest.mark.slow
def test_ddpm_train_resume_export_and_fine_tune(tmp_path):
    from diffusers import DDPMPipeline

    run = tmp_path / "ddpm-run"
    args = ["--output_dir", str(run), "--block_out_channels", "32", "32", "32", "--train_batch_size", "2",
            "--checkpointing_steps", "2", "--preview_images", "2", "--mixed_precision", "no", "--logging_steps", "1"]
    train_then_resume(train_ddpm, run, args)
    pipe = DDPMPipeline.from_pretrained(run / "pipeline", use_safetensors=True)
    assert pipe.scheduler.config.clip_sample is True
    # fine-tuning starts from the export (strict: the architecture must match) and can turn clipping off
    tuned = tmp_path / "ddpm-tuned"
    tune = [*args[2:], "--output_dir", str(tuned), "--checkpointing_steps", "1", "--max_train_steps", "1",
            "--init_from", str(run / "pipeline")]  # later options win over the run's
    train_ddpm.main(train_ddpm.parse_args([*tune, "--no-clip_sample"]))
    assert DDPMPipeline.from_pretrained(tuned / "pipeline", use_safetensors=True).scheduler.config.clip_sample is False
    wrong = [*tune, "--block_out_channels", "32", "64", "64", "--output_dir", str(tmp_path / "wrong")]
    with pytest.raises(RuntimeError, match="size mismatch"):
        train_ddpm.main(train_ddpm.parse_args(wrong))
