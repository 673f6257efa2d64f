"""What the training scripts share: logging to the run folder, resuming from and rotating
accelerate checkpoints, and the run's arguments saved next to them."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed


def add_run_args(p: argparse.ArgumentParser, checkpointing_steps: int) -> None:
    """The options every training script takes: precision, threads, checkpoints, resume, logging."""
    p.add_argument("--mixed_precision", default="bf16", choices=["no", "fp16", "bf16"])
    p.add_argument("--num_threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    p.add_argument("--checkpointing_steps", type=int, default=checkpointing_steps)
    p.add_argument("--checkpoints_total_limit", type=int, default=2)
    p.add_argument("--resume", default=None, help="'latest' or a checkpoint folder name")
    p.add_argument("--logging_steps", type=int, default=50)


def setup_run(args: argparse.Namespace) -> Accelerator:
    """Create ``args.output_dir``, log to the console and to ``train.log`` there, set torch's CPU
    threads (``--num_threads``) and the seed; return the run's ``Accelerator``."""
    args.output_dir.mkdir(parents=True, exist_ok=True)
    fmt = "%(asctime)s %(name)s %(message)s"
    logging.basicConfig(level=logging.INFO, format=fmt)  # console (no-op when logging is configured)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    log_file = str((args.output_dir / "train.log").resolve())
    if not any(isinstance(h, logging.FileHandler) and h.baseFilename == log_file for h in root.handlers):
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter(fmt))
        root.addHandler(handler)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    set_seed(args.seed)
    return accelerator


def save_args(args: argparse.Namespace) -> None:
    """The run's arguments as ``args.json`` in the run folder."""
    (args.output_dir / "args.json").write_text(json.dumps(
        {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, indent=2))


def _checkpoints(ckpt_dir: Path) -> list[Path]:
    return sorted(ckpt_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))


def resume(accelerator: Accelerator, ckpt_dir: Path, which: str | None, logger: logging.Logger) -> int:
    """Load ``which`` ('latest' or a checkpoint folder name) if given and present; return its step."""
    if not which:
        return 0
    names = [p.name for p in _checkpoints(ckpt_dir)]
    name = names[-1] if which == "latest" and names else which
    if name and (ckpt_dir / name).exists():
        accelerator.load_state(str(ckpt_dir / name))
        logger.info("resumed from %s", name)
        return int(name.split("-")[1])
    logger.info("no checkpoint to resume from; starting fresh")
    return 0


def save_checkpoint(accelerator: Accelerator, ckpt_dir: Path, step: int, keep: int) -> Path:
    """``accelerator.save_state`` to ``checkpoint-<step>``, keeping the newest ``keep``."""
    path = ckpt_dir / f"checkpoint-{step}"
    accelerator.save_state(str(path))
    old = _checkpoints(ckpt_dir)
    for stale in old[: max(0, len(old) - keep)]:
        shutil.rmtree(stale)
    return path
