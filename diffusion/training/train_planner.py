"""Train the maze trajectory planner ``planner-mazes`` (Janner et al. 2022, Diffuser; DDPM Algorithm 1 on
whole trajectories, predicting the clean trajectory by default as Diffuser does for mazes).

Follows diffusers' ``examples/*/train_*.py``: ``parse_args()`` / ``main(args)`` with HF accelerate, so the
same script runs on this CPU, one GPU or several (``accelerate launch -m diffusion.training.train_planner
...``). It checkpoints with ``accelerator.save_state`` and resumes with ``--resume latest``; at every
checkpoint it exports the EMA weights as a planner folder (``unet/``, ``scheduler/``, ``planner.json``)
and logs the gate on a few held-out start-goal pairs per layout.

The data are :func:`diffusion.data.mazes.training_set` paths (near-shortest clear paths between random
starts and goals of the training cell pairs), made once from ``--seed`` and kept in the run folder.

    python -m diffusion.training.train_planner --output_dir runs/planner --max_train_steps 12000
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import UNet1DModel
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel

from diffusion.data.mazes import HORIZON, LAYOUT_NAMES, layout_fingerprint, maze, training_set
from diffusion.metrics.planner_gate import run_gate
from diffusion.planner.model import FOURIER_PERIODS, Planner, build_scheduler, build_unet, fix_ends, network_input
from diffusion.training.common import (
    add_run_args,
    resume,
    save_args,
    save_checkpoint,
    setup_run,
)

logger = logging.getLogger("train_planner")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", type=Path, default=Path("runs/planner"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layouts", nargs="+", default=list(LAYOUT_NAMES), choices=list(LAYOUT_NAMES))
    p.add_argument("--paths_per_layout", type=int, default=12000)
    p.add_argument("--horizon", type=int, default=HORIZON)
    p.add_argument("--train_batch_size", type=int, default=64)
    p.add_argument("--max_train_steps", type=int, default=12000)
    p.add_argument("--learning_rate", type=float, default=1e-3)
    p.add_argument("--lr_warmup_steps", type=int, default=200)
    p.add_argument("--block_out_channels", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--num_train_timesteps", type=int, default=100)
    p.add_argument("--prediction_type", default="sample", choices=["sample", "epsilon"],
                   help="what the network predicts: the clean trajectory (Diffuser's maze setting) or the noise")
    p.add_argument("--ema_max_decay", type=float, default=0.999)
    p.add_argument("--ema_power", type=float, default=0.75)
    p.add_argument("--fourier_periods", type=float, nargs="*", default=list(FOURIER_PERIODS),
                   help="periods (cells) of the position features the network reads; none: raw positions only")
    p.add_argument("--eval_pairs", type=int, default=20, help="held-out pairs per layout checked at each checkpoint")
    add_run_args(p, checkpointing_steps=1000)
    p.set_defaults(mixed_precision="no")  # fp32, as the shipped planner was trained (--mixed_precision bf16 switches)
    return p.parse_args(argv)


def load_data(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """(paths (N, 2, H) normalised to [-1, 1], layout indices (N,)), made once and cached in the run folder."""
    cache = args.output_dir / "data.npz"
    if cache.exists():
        data = np.load(cache)
        if (list(data["layouts"]) == args.layouts and int(data["per_layout"]) == args.paths_per_layout
                and int(data["seed"]) == args.seed and data["paths"].shape[-1] == args.horizon
                and str(data.get("walls", "")) == layout_fingerprint(args.layouts)):
            return torch.from_numpy(data["paths"]), torch.from_numpy(data["index"])
    began = time.perf_counter()
    paths, index = [], []
    for i, name in enumerate(args.layouts):
        cells = training_set(name, args.paths_per_layout, seed=args.seed * 1000 + i, horizon=args.horizon)
        paths.append(np.swapaxes(maze(name).normalise(cells), 1, 2).astype(np.float32))
        index.append(np.full(len(cells), i, np.int64))
    paths_np, index_np = np.concatenate(paths), np.concatenate(index)
    np.savez(cache, paths=paths_np, index=index_np, layouts=np.array(args.layouts), per_layout=args.paths_per_layout,
             seed=args.seed, walls=layout_fingerprint(args.layouts))
    logger.info("made %d training paths in %.0fs", len(paths_np), time.perf_counter() - began)
    return torch.from_numpy(paths_np), torch.from_numpy(index_np)


def export(accelerator: Accelerator, unet: torch.nn.Module, ema: EMAModel, args: argparse.Namespace,
           scheduler_config: dict) -> Planner:
    """The EMA weights as a planner folder ``output_dir/planner``."""
    ema_unet = build_unet(len(args.layouts), args.horizon, tuple(args.block_out_channels), tuple(args.fourier_periods))
    ema_unet.load_state_dict(accelerator.unwrap_model(unet).state_dict(), strict=True)
    ema.copy_to(ema_unet.parameters())
    planner = Planner(ema_unet.eval(), scheduler_config, tuple(args.layouts), args.horizon, tuple(args.fourier_periods))
    planner.save(args.output_dir / "planner")
    return planner


def main(args: argparse.Namespace) -> None:
    accelerator = setup_run(args)
    paths, index = load_data(args)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(paths, index), batch_size=args.train_batch_size, shuffle=True,
        drop_last=True, generator=torch.Generator("cpu").manual_seed(args.seed),
    )
    unet = build_unet(len(args.layouts), args.horizon, tuple(args.block_out_channels), tuple(args.fourier_periods))
    noise_scheduler = build_scheduler(args.num_train_timesteps, args.prediction_type)
    ema = EMAModel(unet.parameters(), decay=args.ema_max_decay, use_ema_warmup=True, power=args.ema_power,
                   model_cls=UNet1DModel, model_config=unet.config)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=args.learning_rate, weight_decay=0.0)
    lr_scheduler = get_cosine_schedule_with_warmup(
        optimizer, num_warmup_steps=args.lr_warmup_steps, num_training_steps=args.max_train_steps)
    unet, optimizer, loader, lr_scheduler = accelerator.prepare(unet, optimizer, loader, lr_scheduler)
    accelerator.register_for_checkpointing(ema)

    ckpt_dir = args.output_dir / "checkpoints"
    global_step = resume(accelerator, ckpt_dir, args.resume, logger)
    if accelerator.is_main_process:
        save_args(args)
        logger.info("UNet1D parameters: %d; %d training paths", sum(p.numel() for p in unet.parameters()),
                    len(paths))

    start = time.perf_counter()
    running = 0.0
    n_layouts = len(args.layouts)
    grids = {maze(name).shape for name in args.layouts}
    if len(grids) != 1:
        raise SystemExit(f"the layouts must share one grid size to train together, got {sorted(grids)}")
    grid = grids.pop()
    while global_step < args.max_train_steps:
        unet.train()
        for clean, layouts in loader:
            # DDPM Algorithm 1 on trajectories: t ~ U{0..T-1}, eps ~ N(0, I), x_t = q_sample(tau_0, t, eps)
            noise = torch.randn_like(clean)
            timesteps = torch.randint(0, args.num_train_timesteps, (clean.shape[0],), device=clean.device)
            noisy = noise_scheduler.add_noise(clean, noise, timesteps)  # DDPM Eq. 4
            noisy = fix_ends(noisy, clean[:, :, 0], clean[:, :, -1])  # the known start and goal, as when sampling
            net_input = network_input(noisy, layouts, n_layouts, grid, tuple(args.fourier_periods))
            with accelerator.autocast():
                prediction = unet(net_input, timesteps).sample
            target = clean if args.prediction_type == "sample" else noise
            # the inpainted ends are known: the loss is on the waypoints between them
            loss = F.mse_loss(prediction[:, :, 1:-1].float(), target[:, :, 1:-1])
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(unet.parameters(), 1.0)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            ema.step(unet.parameters())
            global_step += 1
            running += loss.item()

            if global_step % args.logging_steps == 0 and accelerator.is_main_process:
                logger.info("step %d loss %.4f lr %.2e elapsed %.0fs", global_step, running / args.logging_steps,
                            lr_scheduler.get_last_lr()[0], time.perf_counter() - start)
                running = 0.0
            if (global_step % args.checkpointing_steps == 0 or global_step == args.max_train_steps) \
                    and accelerator.is_main_process:
                path = save_checkpoint(accelerator, ckpt_dir, global_step, args.checkpoints_total_limit)
                planner = export(accelerator, unet, ema, args, dict(noise_scheduler.config))
                if args.eval_pairs:
                    for row in run_gate(planner, pairs=args.eval_pairs, sampler="ddim", steps=20):
                        logger.info("gate step %d: %s", global_step, row.line())
                logger.info("checkpoint %s and EMA planner saved", path.name)
            if global_step >= args.max_train_steps:
                break
    accelerator.wait_for_everyone()
    logger.info("done: %d steps in %.0fs (this run)", global_step, time.perf_counter() - start)


if __name__ == "__main__":
    main(parse_args())
