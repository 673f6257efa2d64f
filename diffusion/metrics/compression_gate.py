"""The gate of the autoencoders compared by downsampling factor (Rombach et al. 2022, Sec. 4.1).

    python -m diffusion.metrics.compression_gate [--write]

For f = 1 (the image itself), 2, 4 and 8 (``assets/autoencoders/kl-f*``, one training recipe): the PSNR of
reconstructions of held-out scenes, and the shape judge (:mod:`diffusion.metrics.shape_judge`) on reconstructions
of the shapes gate's own scenes, single objects and two. Every sample of a latent model is a decoder output, so
these bound what a latent model at that factor could score. ``--write`` saves them to
``assets/autoencoders/compression_results.json``, which lesson 6 and docs/models.md read.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from diffusion.data import shapes
from diffusion.lab.compression import FACTORS, RESULTS_FILE, autoencoder_folder, load_autoencoder, psnr, reconstruct
from diffusion.metrics.cards import provenance
from diffusion.metrics.shape_judge import load_classifier, score_pairs, score_single
from diffusion.metrics.shapes_gate import pair_prompts, single_prompts
from diffusion.registry import ASSETS

logger = logging.getLogger(__name__)

PSNR_SEED = 1_000_003  # held-out scenes, as train_autoencoder.py evaluates (a seed its training stream never uses)


def reconstructions(vae, images: np.ndarray, batch: int = 50) -> np.ndarray:
    """uint8 D(E(x)) of uint8 images (B, H, W, 3), in batches (the images themselves for ``vae`` None)."""
    return np.concatenate([reconstruct(vae, images[i:i + batch]) for i in range(0, len(images), batch)])


def measure(folder: Path, n_psnr: int = 256, n_single: int = 200, n_pairs: int = 100) -> dict[str, dict[str, float]]:
    """{f: {"psnr": dB on ``n_psnr`` held-out scenes (the whole set as one signal), "exact", "colour", "shape",
    "size", "position": the judge on reconstructions of the gate's ``n_single`` single-object scenes, "both",
    "relation": on its ``n_pairs`` two-object scenes}} for every factor in :data:`FACTORS`."""
    classifier = load_classifier()
    held_out = shapes.render_batch(n_psnr, PSNR_SEED)[0]
    singles, pairs = single_prompts(n_single), pair_prompts(n_pairs)
    single_images = np.stack([shapes.render(s) for s in singles])
    pair_images = np.stack([shapes.render(s) for s in pairs])
    out: dict[str, dict[str, float]] = {}
    for f in FACTORS:
        vae = None if f == 1 else load_autoencoder(autoencoder_folder(folder, f))
        row: dict[str, float] = {}
        value = psnr(held_out, reconstructions(vae, held_out))
        if np.isfinite(value):
            row["psnr"] = round(value, 2)
        row.update({k: round(v, 3) for k, v in score_single(reconstructions(vae, single_images), singles,
                                                            classifier).accuracy().items()})
        two = score_pairs(reconstructions(vae, pair_images), pairs, classifier).accuracy()
        row.update({"both": round(two["both"], 3), "relation": round(two["relation"], 3)})
        if vae is not None:
            row["parameters"] = sum(p.numel() for p in vae.parameters())
            row["latent_channels"] = vae.config.latent_channels
        out[str(f)] = row
        logger.info("f = %d: %s", f, row)
    return out


def compression_table(record: dict) -> str:
    """The gate's figures as a Markdown table, one row per factor (docs/models.md holds this rendering of the
    shipped file, checked by a test)."""
    lines = ["| f | latent | PSNR (dB, held-out) | judge on reconstructions: all attributes | colour | shape | "
             "position | two objects: both | relation |", "|---|---|---|---|---|---|---|---|---|"]
    for f, row in sorted(record["factors"].items(), key=lambda item: int(item[0])):
        side = shapes.IMAGE_SIZE // int(f)
        latent = f"the image, {side}x{side}x3" if f == "1" else f"{side}x{side}x{int(row['latent_channels'])}"
        quality = f"{row['psnr']:.2f}" if "psnr" in row else "lossless"
        lines.append(f"| {f} | {latent} | {quality} | {row['exact']:.3f} | {row['colour']:.3f} | {row['shape']:.3f} | "
                     f"{row['position']:.3f} | {row['both']:.3f} | {row['relation']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m diffusion.metrics.compression_gate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--folder", type=Path, default=ASSETS / "autoencoders", help="holds kl-f2, kl-f4, kl-f8")
    p.add_argument("--write", action="store_true", help=f"save the figures to FOLDER/{RESULTS_FILE}")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    factors = measure(args.folder)
    print(compression_table({"factors": factors}), end="")
    if args.write:
        record = {"factors": factors, "scenes": {"psnr": 256, "single": 200, "pairs": 100},
                  **provenance("python -m diffusion.metrics.compression_gate --write")}
        target = args.folder / RESULTS_FILE
        target.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        print(f"Wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
