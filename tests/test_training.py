"""The latent model's training scripts end to end on tiny settings: checkpoints, resume, export."""

from __future__ import annotations

import json

from diffusers import AutoencoderKL, DiffusionPipeline

from diffusion.training import train_autoencoder, train_ldm


def test_autoencoder_then_ldm_train_resume_and_export(tmp_path):
    vae_dir = tmp_path / "vae-run"
    args = ["--output_dir", str(vae_dir), "--block_out_channels", "16", "16", "16", "--train_batch_size", "2",
            "--checkpointing_steps", "2", "--eval_images", "4", "--mixed_precision", "no", "--logging_steps", "1"]
    train_autoencoder.main(train_autoencoder.parse_args([*args, "--max_train_steps", "2"]))
    train_autoencoder.main(train_autoencoder.parse_args([*args, "--max_train_steps", "4", "--resume", "latest"]))
    assert sorted(p.name for p in (vae_dir / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert "resumed from checkpoint-2" in (vae_dir / "train.log").read_text()
    vae = AutoencoderKL.from_pretrained(vae_dir / "vae", use_safetensors=True)
    assert vae.config.scaling_factor != 1.0  # computed from data
    ldm_dir = tmp_path / "ldm-run"
    ldm_args = train_ldm.parse_args([
        "--vae", str(vae_dir / "vae"), "--output_dir", str(ldm_dir), "--bank_size", "16", "--train_batch_size", "4",
        "--max_train_steps", "2", "--checkpointing_steps", "2", "--block_out_channels", "32", "32", "32",
        "--text_hidden_size", "32", "--text_layers", "1", "--mixed_precision", "no", "--logging_steps", "1"])
    train_ldm.main(ldm_args)
    assert json.loads((ldm_dir / "args.json").read_text())["max_train_steps"] == 2
    assert (ldm_dir / "preview-000002.png").is_file()
    pipe = DiffusionPipeline.from_pretrained(ldm_dir / "pipeline", use_safetensors=True)
    assert type(pipe).__name__ == "StableDiffusionPipeline"
