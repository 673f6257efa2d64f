"""Stage 1 of ``ldm-shapes``: the KL autoencoder (Rombach et al. 2022, Sec. 3.1 and App. G).

A diffusers ``AutoencoderKL`` with downsampling factor f=4 (64x64x3 -> 16x16x4, the paper's
LDM-4), trained on freshly rendered shapes scenes with an L1 + L2 reconstruction loss and a
small KL term (weight 1e-6, as the paper's "KL-reg" models). The latent scaling factor is
computed from data as in the paper (Sec. 4.3.2 / App. G): 1 / std of latents on held-out
scenes, stored in the saved config's ``scaling_factor``.

Follows diffusers' ``examples/*/train_*.py`` (``parse_args()`` / ``main(args)``, accelerate,
``--resume latest``):

    python -m diffusion.training.train_autoencoder --output_dir runs/ldm-shapes-vae --max_train_steps 2000

``--decoder_from VAE_FOLDER`` fine-tunes only the decoder of a trained autoencoder (as Stable
Diffusion's ``sd-vae-ft-mse``): the encoder, ``quant_conv`` and ``scaling_factor`` stay as they
are, so every latent, and every latent diffusion model trained on them, stays valid.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from diffusers.optimization import get_cosine_schedule_with_warmup

from diffusion.data import shapes
from diffusion.images import from_uint8
from diffusion.training.common import (
    add_run_args,
    resume,
    save_args,
    save_checkpoint,
    setup_run,
)

logger = logging.getLogger("train_autoencoder")

EVAL_SEED = 1_000_003  # held-out scenes: a seed the training stream never uses


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", type=Path, default=Path("runs/ldm-shapes-vae"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train_batch_size", type=int, default=16)
    p.add_argument("--max_train_steps", type=int, default=2000)
    p.add_argument("--learning_rate", type=float, default=1e-3)
    p.add_argument("--lr_warmup_steps", type=int, default=100)
    p.add_argument("--block_out_channels", type=int, nargs="+", default=[32, 64, 64])
    p.add_argument("--latent_channels", type=int, default=4)
    p.add_argument("--kl_weight", type=float, default=1e-6)
    p.add_argument("--init_logvar", type=float, default=-8.0, help="initial posterior log-variance")
    p.add_argument("--decoder_from", type=Path, default=None,
                   help="a saved AutoencoderKL folder: train only its decoder (encoder and latents frozen)")
    add_run_args(p, checkpointing_steps=250)
    p.add_argument("--eval_images", type=int, default=256)
    p.add_argument("--two_object_prob", type=float, default=0.25,
                   help="share of two-object scenes in the training stream (the LDM's data: 0.25)")
    return p.parse_args(argv)


def build_vae(args: argparse.Namespace) -> AutoencoderKL:
    """f = 2^(len(block_out_channels) - 1) = 4 for three blocks."""
    n = len(args.block_out_channels)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, sample_size=shapes.IMAGE_SIZE,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(args.block_out_channels), layers_per_block=1,
        latent_channels=args.latent_channels, norm_num_groups=16,
    )
    # Start with a narrow posterior (log-variance about args.init_logvar, std ~ e^-4): with
    # the default init (std ~ 1) the decoder sees mostly noise and learns a blur for the
    # first thousands of steps. With KL weight 1e-6 the variance stays small, as in the
    # paper's KL-f4 models.
    with torch.no_grad():
        vae.quant_conv.bias[args.latent_channels:] = args.init_logvar
    return vae


def load_for_decoder_finetune(path: Path) -> AutoencoderKL:
    """A saved autoencoder whose encoder side (``encoder``, ``quant_conv``) is frozen: only
    ``post_quant_conv`` and ``decoder`` train, so z ~ q(z | x) is the same function of x as before."""
    vae = AutoencoderKL.from_pretrained(path, use_safetensors=True)
    vae.encoder.requires_grad_(False)
    vae.quant_conv.requires_grad_(False)
    return vae


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1], measured on the [0, 1] range after clamping."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio((a.clamp(-1, 1) + 1) / 2, (b.clamp(-1, 1) + 1) / 2, data_range=1.0))


@torch.inference_mode()
def evaluate(vae: AutoencoderKL, images: torch.Tensor, batch: int = 64) -> tuple[float, float]:
    """(PSNR of mean-latent reconstructions in dB, std of sampled latents)."""
    recon, latents = [], []
    for chunk in images.split(batch):
        dist = vae.encode(chunk).latent_dist
        latents.append(dist.sample(generator=torch.Generator("cpu").manual_seed(0)))
        recon.append(vae.decode(dist.mode()).sample)
    return psnr(torch.cat(recon), images), float(torch.cat(latents).std())


def main(args: argparse.Namespace) -> None:
    accelerator = setup_run(args)

    decoder_only = args.decoder_from is not None
    vae = load_for_decoder_finetune(args.decoder_from) if decoder_only else build_vae(args)
    trainable = [p for p in vae.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.learning_rate, weight_decay=0.0)
    lr_scheduler = get_cosine_schedule_with_warmup(
        optimizer, num_warmup_steps=args.lr_warmup_steps, num_training_steps=args.max_train_steps)
    vae, optimizer, lr_scheduler = accelerator.prepare(vae, optimizer, lr_scheduler)
    eval_images = from_uint8(shapes.render_batch(args.eval_images, EVAL_SEED)[0]).to(accelerator.device)

    ckpt_dir = args.output_dir / "checkpoints"
    global_step = resume(accelerator, ckpt_dir, args.resume, logger)
    if accelerator.is_main_process:
        save_args(args)
        logger.info("VAE parameters: %d, trained: %d", sum(p.numel() for p in vae.parameters()),
                    sum(p.numel() for p in trainable))

    # Fresh scenes every step; the stream's seed depends on the process and the resume point.
    scenes = shapes.stream(args.seed * 7919 + accelerator.process_index * 104729 + global_step,
                           two_object_prob=args.two_object_prob)
    sample_gen = torch.Generator("cpu").manual_seed(args.seed + global_step)
    start, running = time.perf_counter(), 0.0
    vae.train()
    while global_step < args.max_train_steps:
        batch = from_uint8(np.stack([next(scenes).image for _ in range(args.train_batch_size)]))
        batch = batch.to(accelerator.device)
        with accelerator.autocast():
            with torch.set_grad_enabled(not decoder_only):
                posterior = accelerator.unwrap_model(vae).encode(batch).latent_dist
            z = posterior.sample(generator=sample_gen)  # reparameterised draw, z = mu + sigma * eps
            recon = accelerator.unwrap_model(vae).decode(z).sample
        recon = recon.float()
        loss = F.l1_loss(recon, batch) + F.mse_loss(recon, batch)
        if not decoder_only:  # with the encoder frozen the KL term has no gradient
            loss = loss + args.kl_weight * posterior.kl().mean()
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        global_step += 1
        running += loss.item()
        if global_step % args.logging_steps == 0 and accelerator.is_main_process:
            logger.info("step %d loss %.4f lr %.2e elapsed %.0fs", global_step, running / args.logging_steps,
                        lr_scheduler.get_last_lr()[0], time.perf_counter() - start)
            running = 0.0
        if (global_step % args.checkpointing_steps == 0 or global_step == args.max_train_steps) \
                and accelerator.is_main_process:
            path = save_checkpoint(accelerator, ckpt_dir, global_step, args.checkpoints_total_limit)
            vae.eval()
            model = accelerator.unwrap_model(vae)
            value, latent_std = evaluate(model, eval_images)
            if not decoder_only:  # a decoder fine-tune keeps the latents, so it keeps their scale
                # LDM App. G: rescale latents to unit variance with a factor computed from data.
                model.register_to_config(scaling_factor=round(1.0 / latent_std, 5))
            model.save_pretrained(args.output_dir / "vae", safe_serialization=True)
            vae.train()
            logger.info("checkpoint %s: held-out PSNR %.2f dB, latent std %.4f, scaling_factor %.5f",
                        path.name, value, latent_std, model.config.scaling_factor)
    accelerator.wait_for_everyone()
    logger.info("done: %d steps in %.0fs (this run)", global_step, time.perf_counter() - start)


if __name__ == "__main__":
    main(parse_args())
