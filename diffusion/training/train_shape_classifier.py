"""Train the shape part of the ``ldm-shapes`` judge (:mod:`diffusion.metrics.shape_judge`).

Renders seeded scenes (held-out colour-shape pairs included: the judge must read every
pair), lightly degraded (pixel noise, blur) so that it stays fair on generated images,
segments them with the analyser's own code and trains a small CNN on the objects' coverage
masks. Saves safetensors to ``assets/shapes-analyser`` and prints its validation on freshly
rendered ground truth (:func:`diffusion.metrics.shape_judge.validate`).

    python -m diffusion.training.train_shape_classifier --out assets/shapes-analyser
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from diffusion.data import shapes
from diffusion.metrics.shape_judge import ASSET, ShapeClassifier, segment, validate

logger = logging.getLogger("train_shape_classifier")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ASSET)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scenes", type=int, default=16000)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--learning_rate", type=float, default=2e-3)
    return p.parse_args(argv)


def degrade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mild blur and pixel noise, as a generator's output might show."""
    img = Image.fromarray(image)
    if rng.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.2, 0.8))))
    arr = np.asarray(img).astype(np.float32) + rng.normal(0, rng.uniform(0, 6), image.shape)
    return np.clip(arr, 0, 255).round().astype(np.uint8)


def build_dataset(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Coverage-mask crops (M, 1, 32, 32) and shape labels (M,) from n rendered scenes."""
    rng = np.random.default_rng(seed)
    crops, labels = [], []
    for _ in range(n):
        scene = shapes.random_scene(rng, two_object_prob=0.3, held_out="any")
        _, blobs = segment(degrade(shapes.render(scene), rng))
        for blob in blobs:  # match each blob to the nearest true object
            obj = min(scene.objects, key=lambda o: (o.cx - blob.cx) ** 2 + (o.cy - blob.cy) ** 2)
            crops.append(blob.crop)
            labels.append(shapes.SHAPES.index(obj.shape))
    return torch.from_numpy(np.stack(crops))[:, None], torch.tensor(labels)


def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    x, y = build_dataset(args.scenes, args.seed)
    logger.info("%d crops from %d scenes in %.0fs", len(y), args.scenes, time.perf_counter() - start)
    model = ShapeClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=1e-4)
    steps = args.epochs * (len(y) // args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.learning_rate, total_steps=steps)
    gen = torch.Generator("cpu").manual_seed(args.seed)
    model.train()
    for epoch in range(args.epochs):
        order = torch.randperm(len(y), generator=gen)
        total, correct = 0.0, 0
        for i in range(0, len(y) - args.batch_size + 1, args.batch_size):
            idx = order[i:i + args.batch_size]
            logits = model(x[idx])
            loss = F.cross_entropy(logits, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            correct += int((logits.argmax(-1) == y[idx]).sum())
        logger.info("epoch %d loss %.4f train acc %.4f", epoch + 1, total / len(y), correct / len(y))
    model.eval()
    single, pairs = validate(model)
    logger.info("validation on fresh renders: %s; two objects: %s", single, pairs)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    (args.out / "validation.json").write_text(json.dumps(
        {"single_object": single, "two_objects": pairs, "seed": args.seed, "scenes": args.scenes,
         "epochs": args.epochs, "wall_s": round(time.perf_counter() - start)}, indent=2))
    logger.info("saved to %s in %.0fs", args.out, time.perf_counter() - start)


if __name__ == "__main__":
    main(parse_args())
