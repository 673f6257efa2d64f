"""Train a playground point model from the command line, or replay a recipe the app exported.

    python -m diffusion.training.train_points --dataset moons --output_dir runs/moons
    python -m diffusion.training.train_points --recipe point-recipe.json --output_dir runs/replay

The training is the app's own (:func:`diffusion.playground.training.train_points`, Algorithm 1 with every
random number from generators seeded by the recipe), so a recipe replays the app's weights bit for bit on
the same CPU and library versions; the SHA-256 of the weights is printed to compare. A 75k-parameter MLP
trains in seconds on one core: unlike the image models' scripts, this one does not use ``accelerate``
(a device or process group would change nothing but the arithmetic order, and with it the bytes).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
from dataclasses import fields
from pathlib import Path

import torch

from diffusion.playground.training import (
    PointConfig,
    check_config,
    save_folder,
    train_points,
)

logger = logging.getLogger("train_points")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", type=Path, default=None, help="a point-recipe.json exported by the app")
    defaults = PointConfig()
    for f in fields(PointConfig):
        if f.name != "drawing":  # a drawing comes only in a recipe
            p.add_argument(f"--{f.name}", type=type(getattr(defaults, f.name)), default=None,
                           help=f"(default {getattr(defaults, f.name)!r}; overrides the recipe)")
    p.add_argument("--output_dir", type=Path, required=True)
    p.add_argument("--num_threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    return p.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    config = PointConfig.from_json(args.recipe.read_text()) if args.recipe else PointConfig()
    overrides = {f.name: getattr(args, f.name) for f in fields(PointConfig)
                 if f.name != "drawing" and getattr(args, f.name) is not None}
    config = check_config(PointConfig(**{**config.__dict__, **overrides}))
    logger.info("training %s", config)
    for update in train_points(config):
        if update.samples is not None:
            logger.info("step %d/%d: loss %.4f, distance %.4f", update.step, update.total,
                        sum(update.losses[-100:]) / len(update.losses[-100:]), update.distance)
    model = update.model
    assert model is not None
    root = save_folder(model, args.output_dir)
    digest = hashlib.sha256(model.weights).hexdigest()
    print(f"trained {config.steps} steps in {model.train_s:.1f} s; sliced Wasserstein {model.distance:.4f} "
          f"(floor {model.floor:.4f}, {model.distance / model.floor:.2f}x); weights sha256 {digest}; saved {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
