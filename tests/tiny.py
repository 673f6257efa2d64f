"""Tiny random diffusers pipelines, built and saved locally (no hub): sample_size 8, 2 steps."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDPMPipeline,
    DDPMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
    UNet2DModel,
)
from transformers import CLIPTextConfig, CLIPTextModel

from diffusion.text import build_word_tokenizer

WORDS = "a an the red green blue circle square star small large left right top bottom of".split()


def tiny_unet(channels: int = 1, seed: int = 0, sample_size: int = 8, attention: bool = True) -> UNet2DModel:
    """A two-level UNet2DModel; ``attention=False`` leaves out the self-attention (cheap at large sizes)."""
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=sample_size, in_channels=channels, out_channels=channels, block_out_channels=(8, 16),
        layers_per_block=1, norm_num_groups=4, attention_head_dim=8,
        down_block_types=("DownBlock2D", "AttnDownBlock2D" if attention else "DownBlock2D"),
        up_block_types=("AttnUpBlock2D" if attention else "UpBlock2D", "UpBlock2D"),
    ).eval()


def tiny_ddpm_pipeline(channels: int = 1, sample_size: int = 8, attention: bool = True) -> DDPMPipeline:
    scheduler = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2")
    return DDPMPipeline(unet=tiny_unet(channels, sample_size=sample_size, attention=attention), scheduler=scheduler)


def save_tiny_ddpm(folder: Path, channels: int = 1, sample_size: int = 8, attention: bool = True) -> Path:
    tiny_ddpm_pipeline(channels, sample_size, attention).save_pretrained(folder, safe_serialization=True)
    return folder


TINY_SD_SIDE = 16  # the tiny latent model's own image side: an 8x8x4 latent, decoded by an f = 2 autoencoder


def tiny_sd_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """16x16 images, a VAE with factor 2 (8x8x4 latents), a 2-layer CLIP text encoder."""
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        sample_size=16,
    )
    tokenizer = build_word_tokenizer(WORDS, model_max_length=8)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_attention_heads=2,
        num_hidden_layers=2, max_position_embeddings=8, pad_token_id=0, bos_token_id=2, eos_token_id=3))
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        cross_attention_dim=16, norm_num_groups=8, attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    )
    scheduler = DDPMScheduler(num_train_timesteps=100, beta_schedule="scaled_linear",
                              beta_start=0.00085, beta_end=0.012, clip_sample=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_sd(folder: Path) -> Path:
    tiny_sd_pipeline().save_pretrained(folder, safe_serialization=True)
    return folder


def save_tiny_autoencoders(folder: Path, seed: int = 0) -> Path:
    """Random KL autoencoders with f = 2, 4 and 8 (``folder/kl-f*``), as ``assets/autoencoders`` ships them."""
    for blocks in (2, 3, 4):
        torch.manual_seed(seed + blocks)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8,) * blocks, layers_per_block=1,
            norm_num_groups=4, down_block_types=("DownEncoderBlock2D",) * blocks,
            up_block_types=("UpDecoderBlock2D",) * blocks, sample_size=16)
        vae.save_pretrained(folder / f"kl-f{2 ** (blocks - 1)}", safe_serialization=True)
    return folder
