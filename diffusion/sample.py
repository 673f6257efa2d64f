"""Sample images from the command line with the app's own loop.

    python -m diffusion.sample --model ddpm-mnist --sampler ddim --steps 50 --n 64 --seed 0 --out grid.png
    python -m diffusion.sample --model ldm-shapes --prompt "a red circle" --guidance 4 --out grid.png
    python -m diffusion.sample --recipe recipe.json --out grid.png      # replay the app's "recipe" export
    python -m diffusion.sample --n 1000 --batch-size 64 --save-npy samples.npy --out grid.png

The same arguments give byte-identical files. Large --n runs in batches of --batch-size images; batch b
uses seed + b, so the output equals the batches run one by one.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from tqdm import tqdm

from diffusion.images import make_grid
from diffusion.layout import LAYOUT_MODES
from diffusion.loading import PRECISIONS, ModelLoadError
from diffusion.recipe import Recipe
from diffusion.registry import Registry
from diffusion.request import MAX_BATCH, MAX_IMAGES, SampleRequest, in_batches
from diffusion.threads import configure_threads
from diffusion.schedulers import SAMPLERS
from diffusion.studio import Studio

logger = logging.getLogger("diffusion.sample")

MAX_GRID_IMAGES = 1024  # the PNG grid of a long run shows this many (32 x 32 tiles)


def parser() -> argparse.ArgumentParser:
    """The command line of ``diffusion-classroom-sample`` (``python -m diffusion.sample``)."""
    from diffusion import __version__

    p = argparse.ArgumentParser(prog="diffusion-classroom-sample", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--model", default="ddpm-mnist", help="a model id (see --list) or local/<folder name>")
    p.add_argument("--model-dir", type=Path, action="append", default=[],
                   help="an extra local diffusers pipeline folder (repeatable); its id is local/<name>")
    p.add_argument("--list", action="store_true", help="list the model ids and exit")
    p.add_argument("--recipe", type=Path, default=None,
                   help="replay a JSON recipe exported by the app (model, sampler, steps, seed, prompt, ...)")
    p.add_argument("--sampler", choices=sorted(SAMPLERS), default=None, help="default: the model's own")
    p.add_argument("--steps", type=int, default=None, help="default: the model's own")
    p.add_argument("--n", type=int, default=16, help=f"number of images (up to {MAX_IMAGES:,}, in batches)")
    p.add_argument("--batch-size", type=int, default=MAX_BATCH,
                   help=f"images per batch (1 to {MAX_BATCH}); batch b uses seed + b")
    p.add_argument("--seed", type=int, default=0, help="the first batch's seed (batch b uses seed + b)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM only: 0 deterministic, 1 DDPM-like")
    p.add_argument("--prompt", default="", help="what to draw (text models only)")
    p.add_argument("--negative-prompt", default="", help="what to steer away from (text models only)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale")
    p.add_argument("--attend-excite", action="store_true",
                   help="Attend-and-Excite (Chefer et al. 2023): excite neglected object words (text models; slower)")
    p.add_argument("--layout", choices=LAYOUT_MODES, default="auto",
                   help="auto: a prompt naming two objects ('a red circle left of a blue square') is drawn by a "
                        "planned layout, one region per object (text models); off: the plain model")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, else CPU), cpu, cuda, cuda:1, mps")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="UNet arithmetic: auto (bf16 autocast on CPUs with native bf16, else fp32), fp32, bf16; "
                        "a --recipe sets its own")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: the cores this process may use, capped by a container's CPU quota, "
                        "as in the app)")
    p.add_argument("--out", type=Path, default=Path("grid.png"), help="the grid of images (PNG; default grid.png)")
    p.add_argument("--save-npy", type=Path, default=None,
                   help="also save the raw samples as uint8 (N x H x W, or N x H x W x 3)")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return parser().parse_args(argv)


def cli(argv: list[str] | None = None) -> int:
    """The console script ``diffusion-classroom-sample``."""
    return main(parse_args(argv))


def main(args: argparse.Namespace) -> int:
    """Run the CLI; every failure is one line on stderr and exit code 2, never a traceback."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    configure_threads(args.threads)
    try:
        return _run(args)
    except CliError as error:
        logger.error("%s", error)
    except (ValueError, KeyError, ModelLoadError, FloatingPointError) as error:
        logger.error("%s", error.args[0] if error.args else error)
    return 2


class CliError(Exception):
    """A readable reason to stop, already phrased for the user."""


def _run(args: argparse.Namespace) -> int:
    recipe = None
    if args.recipe is not None:
        try:
            recipe = Recipe.from_json(args.recipe.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as error:
            raise CliError(f"cannot read recipe {args.recipe}: {error}") from None
        args.model, args.precision = recipe.model, recipe.precision
    try:
        registry = Registry.default(args.model_dir)
    except ValueError as error:
        raise CliError(f"--model-dir: {error}") from None
    # the CLI runs its own batches (--batch-size, at most MAX_BATCH) for text models too
    studio = Studio(registry, device=args.device, precision=args.precision, max_text_batch=MAX_BATCH)
    if args.list:
        for card in studio.cards():
            sys.stdout.write(f"{card.id:45s} {card.kind:12s} {card.title}\n")
        return 0
    card = studio.card(args.model)
    request = SampleRequest(
        sampler=args.sampler or card.default_sampler, steps=args.steps or card.default_steps, n=args.n,
        seed=args.seed, eta=args.eta, prompt=args.prompt, negative_prompt=args.negative_prompt,
        guidance_scale=card.default_guidance if args.guidance is None else args.guidance,
        attend_excite=args.attend_excite, layout=args.layout,
    )
    if recipe is not None:
        request = recipe.request
        model = studio.load(card.id)
        recipe.check_scheduler_config(model.scheduler_config)
        if (other := recipe.weights_mismatch(model.weights)) is not None:
            logger.warning("%s: the pixels will differ from the recipe's", other)
        for mismatch in recipe.version_mismatches():
            logger.warning("recipe made with other library versions (%s): pixels may differ slightly", mismatch)
    if card.kind == "latent-text" and (fallback := studio.layout_fallback(request)) is not None:
        logger.warning("%s", fallback)
    batches = in_batches(request, args.batch_size)
    images, calls, wall, final = [], 0, 0.0, None
    with tqdm(total=request.steps * len(batches), desc=f"{card.id} {request.sampler}", unit="step") as bar:
        for batch in batches:
            done = bar.n
            for update in studio.generate(card.id, batch, previews=0):
                bar.update(done + update.step - bar.n)
                final = update
            images.append(final.images)
            calls, wall = calls + final.model_calls, wall + final.wall_s
    images = np.concatenate(images)
    if final.prompt is not None and final.prompt.unknown_words:
        logger.warning("unknown words ignored by the text encoder: %s", ", ".join(final.prompt.unknown_words))
    if final.prompt is not None and final.prompt.truncated_words:
        logger.warning("prompt too long; dropped: %s", " ".join(final.prompt.truncated_words))
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(args.out, final.grid if len(batches) == 1 else make_grid(images[:MAX_GRID_IMAGES]))
        if args.save_npy:
            np.save(args.save_npy, images.astype(np.uint8))
    except OSError as error:
        raise CliError(f"cannot write the output: {error}") from None
    if len(images) > MAX_GRID_IMAGES:
        logger.info("the grid shows the first %d images; --save-npy keeps all", MAX_GRID_IMAGES)
    logger.info("%d images in %d batch(es), %d model calls, %.2f s -> %s", len(images), len(batches), calls, wall,
                args.out)
    if args.save_npy:
        logger.info("raw samples %s %s -> %s", images.shape, images.dtype, args.save_npy)
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
