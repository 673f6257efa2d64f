"""Train the LeNet judge of the MNIST quality gate on the 4,000 training digits.

    python -m diffusion.training.train_lenet --output_dir assets/lenet-mnist

Reports its accuracy on the 1,000 held-out digits (never trained on).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed

from diffusion.data.mnist import load_split
from diffusion.metrics.lenet import ASSET, LeNet

logger = logging.getLogger("train_lenet")


# The model card (Hub metadata, the exact command, a usage snippet), as in assets/lenet-mnist/README.md.
CARD = """---
license: mit
library_name: pytorch
pipeline_tag: image-classification
datasets:
  - ylecun/mnist
tags:
  - mnist
  - lenet
  - evaluation
---

# lenet-mnist

The judge of the `ddpm-mnist` quality gate, trained by
`python -m diffusion.training.train_lenet --seed {seed} --epochs {epochs}`
on the 4,000 training digits. Held-out accuracy: {acc:.4f}.

It is a diffusers `ModelMixin` / `ConfigMixin` class of this project (safetensors weights), so it is
project-internal: it loads wherever Diffusion Classroom is installed (Python >= 3.11, `pip install .` in a
clone), from any folder:

```python
from diffusion.metrics.lenet import LeNet
from diffusion.registry import ASSETS

judge = LeNet.from_pretrained(ASSETS / "lenet-mnist", use_safetensors=True).eval()
```
"""

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--output_dir", type=Path, default=ASSET)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--learning_rate", type=float, default=2e-3)
    p.add_argument("--max_shift", type=int, default=2, help="random translation augmentation (pixels)")
    return p.parse_args(argv)


def augment(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Random integer translations in [-max_shift, max_shift] (zero background)."""
    if max_shift == 0:
        return images
    out = torch.zeros_like(images)
    shifts = torch.randint(-max_shift, max_shift + 1, (len(images), 2), generator=generator)
    padded = F.pad(images, (max_shift,) * 4)
    size = images.shape[-1]
    for i, (dy, dx) in enumerate(shifts.tolist()):
        out[i] = padded[i, :, max_shift + dy: max_shift + dy + size, max_shift + dx: max_shift + dx + size]
    return out


@torch.no_grad()
def accuracy(model: LeNet, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    return (model(images).argmax(1) == labels).float().mean().item()


def main(args: argparse.Namespace) -> float:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    accelerator = Accelerator()
    set_seed(args.seed)
    train, held_out = load_split("train"), load_split("held_out")
    x = (train.tensor() + 1) / 2  # [0, 1]
    y = torch.from_numpy(train.labels)
    model = LeNet()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=1e-4)
    steps_per_epoch = len(x) // args.batch_size
    lr_scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.learning_rate, total_steps=args.epochs * steps_per_epoch)
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    generator = torch.Generator("cpu").manual_seed(args.seed)
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        for b in range(steps_per_epoch):
            idx = order[b * args.batch_size: (b + 1) * args.batch_size]
            images = augment(x[idx], args.max_shift, generator).to(accelerator.device)
            loss = F.cross_entropy(model(images), y[idx].to(accelerator.device), label_smoothing=0.05)
            accelerator.backward(loss)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()
        if (epoch + 1) % 5 == 0:
            logger.info("epoch %d loss %.4f", epoch + 1, loss.item())
    model = accelerator.unwrap_model(model).eval()
    acc = accuracy(model, (held_out.tensor() + 1) / 2, torch.from_numpy(held_out.labels))
    logger.info("held-out accuracy %.4f (1,000 digits never trained on)", acc)
    if accelerator.is_main_process:
        model.save_pretrained(str(args.output_dir), safe_serialization=True)
        (args.output_dir / "README.md").write_text(CARD.format(seed=args.seed, epochs=args.epochs, acc=acc))
    return acc


if __name__ == "__main__":
    main(parse_args())
