"""Train the embedded pixel-space DDPM ``ddpm-mnist`` (Ho et al. 2020, Algorithm 1).

Follows diffusers' ``examples/unconditional_image_generation/train_unconditional.py``:
``parse_args()`` / ``main(args)`` with HF accelerate, so the same script runs on this CPU,
one GPU or several (``accelerate launch -m diffusion.training.train_ddpm ...``). It
checkpoints with ``accelerator.save_state`` and resumes with ``--resume latest``; at every
checkpoint it exports the EMA weights as a diffusers ``DDPMPipeline`` folder and a preview
grid drawn by the app's own sampling code.

    python -m diffusion.training.train_ddpm --output_dir runs/ddpm-mnist --max_train_steps 10000
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import imageio.v3 as iio
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel, compute_snr

from diffusion.data.mnist import IMAGE_SIZE, load_split
from diffusion.images import make_grid, to_uint8
from diffusion.pipeline import pixel_steps
from diffusion.request import SampleRequest
from diffusion.training.common import (
    add_run_args,
    resume,
    save_args,
    save_checkpoint,
    setup_run,
)

logger = logging.getLogger("train_ddpm")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", type=Path, default=Path("runs/ddpm-mnist"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train_batch_size", type=int, default=64)
    p.add_argument("--max_train_steps", type=int, default=10000)
    p.add_argument("--learning_rate", type=float, default=5e-4)
    p.add_argument("--lr_warmup_steps", type=int, default=200)
    p.add_argument("--adam_weight_decay", type=float, default=0.0)
    p.add_argument("--block_out_channels", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--layers_per_block", type=int, default=1)
    p.add_argument("--norm_num_groups", type=int, default=16)
    p.add_argument("--beta_schedule", default="linear",
                   choices=["linear", "scaled_linear", "squaredcos_cap_v2"])
    p.add_argument("--num_train_timesteps", type=int, default=1000)
    p.add_argument("--clip_sample", action=argparse.BooleanOptionalAction, default=True,
                   help="the exported scheduler clips each step's predicted x0 to [-1, 1] (diffusers' default); "
                        "training does not depend on it, sampling does")
    p.add_argument("--snr_gamma", type=float, default=5.0,
                   help="Min-SNR loss weighting (Hang et al. 2023); 0 disables it")
    p.add_argument("--ema_max_decay", type=float, default=0.999)
    p.add_argument("--ema_power", type=float, default=0.75)
    add_run_args(p, checkpointing_steps=500)
    p.add_argument("--preview_images", type=int, default=16)
    p.add_argument("--init_from", type=Path, default=None,
                   help="a saved DDPMPipeline folder whose UNet weights start the run (fine-tuning); "
                        "the EMA starts from them too")
    return p.parse_args(argv)


def build_unet(args: argparse.Namespace) -> UNet2DModel:
    """32x32 grayscale UNet; self-attention only at the 8x8 level."""
    n = len(args.block_out_channels)
    return UNet2DModel(
        sample_size=IMAGE_SIZE,
        in_channels=1,
        out_channels=1,
        block_out_channels=tuple(args.block_out_channels),
        layers_per_block=args.layers_per_block,
        norm_num_groups=args.norm_num_groups,
        attention_head_dim=32,
        down_block_types=("DownBlock2D",) * (n - 1) + ("AttnDownBlock2D",),
        up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (n - 1),
    )


def export(accelerator: Accelerator, unet: torch.nn.Module, ema: EMAModel, scheduler: DDPMScheduler,
           args: argparse.Namespace, step: int) -> Path:
    """Save the EMA weights as a DDPMPipeline (safetensors) and draw a preview grid."""
    ema_unet = build_unet(args)
    ema_unet.load_state_dict(accelerator.unwrap_model(unet).state_dict(), strict=True)
    ema.copy_to(ema_unet.parameters())
    ema_unet.eval()
    out = args.output_dir / "pipeline"
    DDPMPipeline(unet=ema_unet, scheduler=scheduler).save_pretrained(out, safe_serialization=True)
    request = SampleRequest(sampler="ddim", steps=25, n=args.preview_images, seed=0)
    *_, last = pixel_steps(ema_unet, dict(scheduler.config), request)
    grid = make_grid(to_uint8(last.prev_sample))
    iio.imwrite(args.output_dir / f"preview-{step:06d}.png", grid)
    return out


def main(args: argparse.Namespace) -> None:
    accelerator = setup_run(args)

    data = load_split("train").tensor()  # (4000, 1, 32, 32) in [-1, 1]
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(data), batch_size=args.train_batch_size, shuffle=True,
        drop_last=True, generator=torch.Generator("cpu").manual_seed(args.seed),
    )
    unet = build_unet(args)
    if args.init_from is not None:
        init = UNet2DModel.from_pretrained(args.init_from / "unet", use_safetensors=True)
        unet.load_state_dict(init.state_dict(), strict=True)  # the architecture must match
    noise_scheduler = DDPMScheduler(num_train_timesteps=args.num_train_timesteps,
                                    beta_schedule=args.beta_schedule, prediction_type="epsilon",
                                    clip_sample=args.clip_sample)
    ema = EMAModel(unet.parameters(), decay=args.ema_max_decay, use_ema_warmup=True,
                   power=args.ema_power, model_cls=UNet2DModel, model_config=unet.config)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=args.learning_rate,
                                  weight_decay=args.adam_weight_decay)
    lr_scheduler = get_cosine_schedule_with_warmup(
        optimizer, num_warmup_steps=args.lr_warmup_steps, num_training_steps=args.max_train_steps)
    unet, optimizer, loader, lr_scheduler = accelerator.prepare(unet, optimizer, loader, lr_scheduler)
    accelerator.register_for_checkpointing(ema)

    ckpt_dir = args.output_dir / "checkpoints"
    global_step = resume(accelerator, ckpt_dir, args.resume, logger)
    if accelerator.is_main_process:
        save_args(args)
        logger.info("UNet parameters: %d", sum(p.numel() for p in unet.parameters()))

    start = time.perf_counter()
    running = 0.0
    epoch = 0
    while global_step < args.max_train_steps:
        epoch += 1
        unet.train()
        for (clean_images,) in loader:
            # DDPM Algorithm 1: t ~ U{0..T-1}, eps ~ N(0, I), descend on ||eps - eps_theta(x_t, t)||^2
            noise = torch.randn_like(clean_images)
            timesteps = torch.randint(0, args.num_train_timesteps, (clean_images.shape[0],),
                                      device=clean_images.device)
            noisy_images = noise_scheduler.add_noise(clean_images, noise, timesteps)  # q_sample, Eq. 4
            with accelerator.autocast():
                model_output = unet(noisy_images, timesteps).sample
            loss = F.mse_loss(model_output.float(), noise, reduction="none").mean(dim=(1, 2, 3))
            if args.snr_gamma > 0:
                # Min-SNR-gamma weighting for epsilon prediction: min(SNR, gamma) / SNR
                snr = compute_snr(noise_scheduler, timesteps)
                loss = loss * torch.clamp(snr, max=args.snr_gamma) / snr
            loss = loss.mean()
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(unet.parameters(), 1.0)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            ema.step(unet.parameters())
            global_step += 1
            running += loss.item()

            if global_step % args.logging_steps == 0 and accelerator.is_main_process:
                logger.info("step %d loss %.4f lr %.2e ema_decay %.4f elapsed %.0fs",
                            global_step, running / args.logging_steps, lr_scheduler.get_last_lr()[0],
                            ema.cur_decay_value or 0.0, time.perf_counter() - start)
                running = 0.0
            if (global_step % args.checkpointing_steps == 0 or global_step == args.max_train_steps) \
                    and accelerator.is_main_process:
                path = save_checkpoint(accelerator, ckpt_dir, global_step, args.checkpoints_total_limit)
                unet.eval()
                export(accelerator, unet, ema, noise_scheduler, args, global_step)
                unet.train()
                logger.info("checkpoint %s and EMA pipeline saved", path.name)
            if global_step >= args.max_train_steps:
                break
    accelerator.wait_for_everyone()
    logger.info("done: %d steps in %.0fs (this run)", global_step, time.perf_counter() - start)


if __name__ == "__main__":
    main(parse_args())
