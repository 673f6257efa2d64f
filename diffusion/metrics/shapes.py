"""The judge of ``ldm-shapes``: read colour, shape, size and position off an image.

The analyser segments objects from the plain background (the median colour of the image's
border), then reads each object's attributes:

- colour: the nearest palette colour to the median of the object's core pixels,
- position: the 3x3 grid cell of its (coverage-weighted) centroid,
- size: the radius implied by its anti-aliased area for its shape (small / large),
- shape: a small CNN (:class:`ShapeClassifier`, trained by
  ``diffusion/training/train_shape_classifier.py`` on rendered scenes and shipped in
  ``assets/shapes-analyser``) applied to the object's coverage mask, cropped and rescaled.

:func:`validate` checks the judge on freshly rendered ground truth (it must reach 99% per
attribute to be a fair judge); :func:`prompt_gate` generates images for prompts and scores them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from PIL import Image
from scipy import ndimage
from torch import nn

from diffusion.data import shapes

ASSET = Path(__file__).resolve().parents[2] / "assets" / "shapes-analyser"
CROP = 32
FOREGROUND_DISTANCE = 40.0  # RGB distance from the background that counts as object
MIN_AREA = 8  # pixels; smaller blobs are noise
SIZE_THRESHOLD = math.sqrt(shapes.RADIUS["small"] * shapes.RADIUS["large"])  # geometric mean radius


class ShapeClassifier(ModelMixin, ConfigMixin):
    """Input: coverage masks (N, 1, 32, 32) in [0, 1]; output: logits (N, len(shapes.SHAPES))."""

    @register_to_config
    def __init__(self, num_classes: int = len(shapes.SHAPES), width: int = 32):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2),  # 16
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(), nn.MaxPool2d(2),  # 8
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU(), nn.MaxPool2d(2),  # 4
            nn.Flatten(), nn.Linear(4 * w * 16, 128), nn.ReLU(), nn.Linear(128, num_classes),
        )

    def forward(self, masks: torch.Tensor) -> torch.Tensor:
        return self.net(masks * 2 - 1)


def load_classifier(path: Path | str = ASSET) -> ShapeClassifier:
    """The shipped shape classifier in eval mode (safetensors, strict loading)."""
    return ShapeClassifier.from_pretrained(str(path), use_safetensors=True).eval()


@dataclass(frozen=True)
class Blob:
    """One segmented object before its shape is classified."""

    crop: np.ndarray  # (32, 32) float32 coverage mask in [0, 1]
    colour: str
    colour_distance: float  # RGB distance of the core colour to the named palette colour
    area: float  # coverage-weighted pixels
    cx: float
    cy: float


@dataclass(frozen=True)
class DetectedObject:
    """An object read off an image."""

    colour: str
    shape: str
    size: str
    row: int
    col: int
    cx: float
    cy: float
    area: float
    shape_confidence: float

    @property
    def position(self) -> str:
        return shapes.POSITIONS[(self.row, self.col)]


@dataclass(frozen=True)
class Analysis:
    """What the analyser saw: the background's name and the objects, largest first."""

    background: str
    objects: tuple[DetectedObject, ...]


def _nearest(colour: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> tuple[str, float]:
    names = list(palette)
    dist = np.linalg.norm(np.asarray([palette[n] for n in names], dtype=np.float32) - colour, axis=1)
    i = int(np.argmin(dist))
    return names[i], float(dist[i])


def _cell(v: float, size: int) -> int:
    return min(2, max(0, int(v * 3 // size)))


def segment(image: np.ndarray, max_objects: int = 2) -> tuple[str, list[Blob]]:
    """uint8 (H, W, 3) -> (background name, up to ``max_objects`` blobs, largest first)."""
    img = image.astype(np.float32)
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    bg = np.median(border, axis=0)
    background, _ = _nearest(bg, shapes.BACKGROUNDS)
    diff = np.linalg.norm(img - bg, axis=-1)
    labels, count = ndimage.label(diff > FOREGROUND_DISTANCE, structure=np.ones((3, 3)))
    blobs: list[Blob] = []
    h, w = diff.shape
    for index in range(1, count + 1):
        member = labels == index
        if member.sum() < MIN_AREA:
            continue
        core_level = np.percentile(diff[member], 75)
        core = member & (diff >= 0.7 * core_level)
        core_colour = np.median(img[core], axis=0)
        colour, colour_distance = _nearest(core_colour, shapes.COLOURS)
        # Coverage: anti-aliased edges count fractionally (distance relative to the core's).
        region = ndimage.binary_dilation(member, iterations=1)
        full = np.linalg.norm(core_colour - bg) + 1e-6
        coverage = np.where(region, np.clip(diff / full, 0, 1), 0).astype(np.float32)
        area = float(coverage.sum())
        ys, xs = np.mgrid[0:h, 0:w]
        cx, cy = float((coverage * (xs + 0.5)).sum() / area), float((coverage * (ys + 0.5)).sum() / area)
        rows, cols = np.nonzero(region)
        y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        side = max(y1 - y0, x1 - x0)
        square = np.zeros((side, side), np.float32)
        oy, ox = (side - (y1 - y0)) // 2, (side - (x1 - x0)) // 2
        square[oy:oy + y1 - y0, ox:ox + x1 - x0] = coverage[y0:y1, x0:x1] * region[y0:y1, x0:x1]
        crop = np.asarray(Image.fromarray(square, mode="F").resize((CROP - 4, CROP - 4), Image.BILINEAR))
        crop = np.pad(crop, 2)
        blobs.append(Blob(crop.astype(np.float32), colour, colour_distance, area, cx, cy))
    blobs.sort(key=lambda b: -b.area)
    return background, blobs[:max_objects]


@torch.inference_mode()
def analyse_batch(images: np.ndarray | Sequence[np.ndarray], classifier: ShapeClassifier,
                  max_objects: int = 2) -> list[Analysis]:
    """Analyse uint8 images (N, H, W, 3); every image gets up to ``max_objects`` objects."""
    segmented = [segment(np.asarray(img), max_objects) for img in images]
    crops = [b.crop for _, blobs in segmented for b in blobs]
    if crops:
        logits = classifier(torch.from_numpy(np.stack(crops))[:, None])
        probs = logits.softmax(-1)
        conf, cls = probs.max(-1)
    out, k = [], 0
    for (background, blobs), img in zip(segmented, images, strict=True):
        size = np.asarray(img).shape[0]
        objects = []
        for blob in blobs:
            shape = shapes.SHAPES[int(cls[k])]
            radius = math.sqrt(blob.area / shapes.unit_area(shape)) * shapes.IMAGE_SIZE / size
            objects.append(DetectedObject(
                colour=blob.colour, shape=shape, size="small" if radius < SIZE_THRESHOLD else "large",
                row=_cell(blob.cy, size), col=_cell(blob.cx, size), cx=blob.cx, cy=blob.cy, area=blob.area,
                shape_confidence=float(conf[k])))
            k += 1
        out.append(Analysis(background, tuple(objects)))
    return out


def relation_holds(a: DetectedObject, b: DetectedObject, relation: str, margin: float = 4.0) -> bool:
    """Does ``a <relation> b`` hold between the two centroids (pixels, y down)?"""
    if relation == "left of":
        return a.cx < b.cx - margin
    if relation == "right of":
        return a.cx > b.cx + margin
    if relation == "above":
        return a.cy < b.cy - margin
    if relation == "below":
        return a.cy > b.cy + margin
    raise ValueError(f"unknown relation {relation!r}")


ATTRIBUTES = ("colour", "shape", "size", "position")


@dataclass
class Score:
    """Per-attribute and exact-match accuracy over a set of single-object prompts."""

    n: int = 0
    correct: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ATTRIBUTES, 0))
    exact: int = 0
    found: int = 0  # images where an object was found at all

    def add(self, truth: shapes.ShapeObject, analysis: Analysis) -> None:
        self.n += 1
        if not analysis.objects:
            return
        self.found += 1
        obj = analysis.objects[0]
        hits = {"colour": obj.colour == truth.colour, "shape": obj.shape == truth.shape,
                "size": obj.size == truth.size, "position": (obj.row, obj.col) == (truth.row, truth.col)}
        for name, ok in hits.items():
            self.correct[name] += int(ok)
        self.exact += int(all(hits.values()))

    def accuracy(self) -> dict[str, float]:
        acc = {name: self.correct[name] / max(self.n, 1) for name in ATTRIBUTES}
        acc["exact"] = self.exact / max(self.n, 1)
        return acc


@dataclass
class PairScore:
    """Two-object prompts: both objects present (colour and shape) and the relation right."""

    n: int = 0
    first: int = 0
    second: int = 0
    both: int = 0
    relation: int = 0  # both present and the relation holds

    def add(self, scene: shapes.Scene, analysis: Analysis) -> None:
        self.n += 1
        a, b = scene.objects

        def find(t: shapes.ShapeObject) -> DetectedObject | None:
            return next((o for o in analysis.objects if (o.colour, o.shape) == (t.colour, t.shape)), None)

        fa, fb = find(a), find(b)
        self.first += fa is not None
        self.second += fb is not None
        if fa is not None and fb is not None and fa is not fb:
            self.both += 1
            self.relation += int(relation_holds(fa, fb, scene.relation or ""))

    def accuracy(self) -> dict[str, float]:
        n = max(self.n, 1)
        return {"first": self.first / n, "second": self.second / n, "both": self.both / n,
                "relation": self.relation / n}


def validate(classifier: ShapeClassifier, n: int = 2000, n_pairs: int = 500, seed: int = 20_261_129,
             batch: int = 256) -> tuple[dict[str, float], dict[str, float]]:
    """The judge on freshly rendered ground truth: single-object accuracy and two-object scores."""
    rng = np.random.default_rng(seed)
    single = [shapes.random_scene(rng, two_object_prob=0.0, held_out="any") for _ in range(n)]
    pairs = [shapes.random_two_object_scene(rng, held_out="any") for _ in range(n_pairs)]
    score, pair_score = Score(), PairScore()
    for i in range(0, n, batch):
        chunk = single[i:i + batch]
        for scene, analysis in zip(chunk, analyse_batch([shapes.render(s) for s in chunk], classifier), strict=True):
            score.add(scene.objects[0], analysis)
    for i in range(0, n_pairs, batch):
        chunk = pairs[i:i + batch]
        for scene, analysis in zip(chunk, analyse_batch([shapes.render(s) for s in chunk], classifier), strict=True):
            pair_score.add(scene, analysis)
    return score.accuracy(), pair_score.accuracy()


# ---------------------------------------------------------------------------- the prompt gate

GATE_SEED = 2026  # the fixed prompt lists
TARGETS = {"colour": 0.95, "shape": 0.90, "size": 0.90, "position": 0.90, "exact": 0.80}


@dataclass(frozen=True)
class GateConfig:
    """What the gate generates: prompt counts, sampler, steps, guidance and the sweep."""

    n_prompts: int = 200
    n_held_out: int = 100
    n_pairs: int = 100
    guidance: float = 4.0
    sweep: tuple[float, ...] = (1.0, 2.0, 4.0, 7.0)
    sampler: str = "ddim"
    steps: int = 25
    seed: int = 0
    batch: int = 50


@dataclass
class GateReport:
    """Scores of one gate run (accuracies in [0, 1])."""

    config: GateConfig
    single: dict[str, float]
    held_out: dict[str, float] | None
    pairs: dict[str, float] | None
    sweep: dict[float, dict[str, float]]
    wall_s: float
    ceiling: dict[str, float] | None = None  # the judge on autoencoder reconstructions of the same scenes

    def passes(self) -> bool:
        return all(self.single[k] >= v for k, v in TARGETS.items())


def generate(model, prompts: Sequence[str], guidance: float, config: GateConfig) -> np.ndarray:
    """uint8 images (N, H, W, 3), one per prompt, with the app's own sampling code."""
    from diffusion.pipeline import SampleRequest, decode_latents, latent_steps, to_uint8

    out = []
    for i in range(0, len(prompts), config.batch):
        chunk = list(prompts[i:i + config.batch])
        request = SampleRequest(sampler=config.sampler, steps=config.steps, n=len(chunk),
                                seed=config.seed + i, guidance_scale=guidance)
        *_, last = latent_steps(model, request, prompts=chunk)
        out.append(to_uint8(decode_latents(model, last.prev_sample)))
    return np.concatenate(out)


# Two prompt pairs that differ only in position, or in colour, size and shape (the same seeds).
SENSITIVITY_PAIRS = {
    "position": ("a large red circle in the top left corner", "a large red circle in the bottom right corner"),
    "colour, size and shape": ("a large red circle in the top left corner", "a small blue square in the top left corner"),
}


@torch.inference_mode()
def prompt_sensitivity(model, a: str, b: str, timestep: int = 999, n: int = 8, seed: int = 0) -> float:
    """How much the caption moves the model's first guess: the RMS difference of the predicted x0
    (latent space, DDPM Eq. 15) between prompts ``a`` and ``b`` at ``timestep``, on the same n noises.

    At t = T the image is all noise, so only the caption can say where the object goes; a model
    whose "position" figure is near 0 places objects by the noise alone.
    """
    from diffusion.loop import predict_original_sample
    from diffusion.pipeline import encode_prompt, make_generator, sample_noise
    from diffusion.schedulers import make_scheduler

    scheduler = make_scheduler("ddpm", model.scheduler_config)
    size = model.card.resolution // model.vae_scale_factor
    x = sample_noise((n, model.unet.config.in_channels, size, size), make_generator(seed), model.device, model.dtype)
    t = torch.tensor(timestep)
    x0 = [predict_original_sample(scheduler, x, model.unet(x, t, encoder_hidden_states=encode_prompt(model, [p] * n))
                                  .sample.float(), timestep) for p in (a, b)]
    return float((x0[0] - x0[1]).pow(2).mean().sqrt())


@torch.inference_mode()
def autoencoder_ceiling(model, scenes: Sequence[shapes.Scene], classifier: ShapeClassifier,
                        batch: int = 50) -> dict[str, float]:
    """The judge on the model's own autoencoder reconstructions (decode(mean of q(z | x))) of the
    rendered scenes: what a perfect latent model could score, since every sample is decoded."""
    from diffusion.pipeline import from_uint8, to_uint8

    vae = model.vae
    out = []
    for i in range(0, len(scenes), batch):
        x = from_uint8(np.stack([shapes.render(s) for s in scenes[i:i + batch]])).to(model.device, vae.dtype)
        out.append(to_uint8(vae.decode(vae.encode(x).latent_dist.mode()).sample))
    return score_single(np.concatenate(out), scenes, classifier).accuracy()


def score_single(images: np.ndarray, scenes: Sequence[shapes.Scene], classifier: ShapeClassifier) -> Score:
    score = Score()
    for scene, analysis in zip(scenes, analyse_batch(images, classifier, max_objects=1), strict=True):
        score.add(scene.objects[0], analysis)
    return score


def score_pairs(images: np.ndarray, scenes: Sequence[shapes.Scene], classifier: ShapeClassifier) -> PairScore:
    score = PairScore()
    for scene, analysis in zip(scenes, analyse_batch(images, classifier, max_objects=2), strict=True):
        score.add(scene, analysis)
    return score


def single_prompts(n: int, held_out: str = "exclude") -> list[shapes.Scene]:
    """The gate's fixed single-object scenes (every attribute stated in the prompt)."""
    return shapes.gate_prompts(n, GATE_SEED if held_out == "exclude" else GATE_SEED + 1, held_out)


def pair_prompts(n: int) -> list[shapes.Scene]:
    rng = np.random.default_rng(GATE_SEED + 2)
    return [shapes.random_two_object_scene(rng, "white") for _ in range(n)]


def run_gate(model, classifier: ShapeClassifier, config: GateConfig = GateConfig()) -> GateReport:
    """Generate for the fixed prompt lists and score them (single, held-out pairs, two objects, sweep)."""
    import time

    start = time.perf_counter()
    scenes = single_prompts(config.n_prompts)
    prompts = [shapes.full_caption(s.objects[0]) for s in scenes]
    sweep: dict[float, dict[str, float]] = {}
    for w in sorted(set(config.sweep) | {config.guidance}):
        sweep[w] = score_single(generate(model, prompts, w, config), scenes, classifier).accuracy()
    held = pairs = None
    if config.n_held_out:
        held_scenes = single_prompts(config.n_held_out, held_out="only")
        images = generate(model, [shapes.full_caption(s.objects[0]) for s in held_scenes], config.guidance, config)
        held = score_single(images, held_scenes, classifier).accuracy()
    if config.n_pairs:
        pair_scenes = pair_prompts(config.n_pairs)
        images = generate(model, [shapes.two_object_caption(s) for s in pair_scenes], config.guidance, config)
        pairs = score_pairs(images, pair_scenes, classifier).accuracy()
    ceiling = autoencoder_ceiling(model, scenes, classifier)
    return GateReport(config, sweep[config.guidance], held, pairs,
                      {w: sweep[w] for w in config.sweep}, time.perf_counter() - start, ceiling)


def format_report(report: GateReport, judge: tuple[dict[str, float], dict[str, float]] | None = None) -> str:
    """A plain-text table of the gate (what the CLI prints and the README quotes)."""
    c = report.config
    lines = []
    if judge is not None:
        single, two = judge
        lines.append("Judge on fresh renders: " + ", ".join(f"{k} {v:.3f}" for k, v in single.items())
                     + " | two objects: " + ", ".join(f"{k} {v:.3f}" for k, v in two.items()))
    head = f"{'':28s}" + "".join(f"{k:>10s}" for k in (*ATTRIBUTES, "exact"))
    lines += [f"{c.sampler.upper()} {c.steps} steps, guidance {c.guidance:g}, seed {c.seed}", head]

    def row(name: str, acc: dict[str, float]) -> str:
        return f"{name:28s}" + "".join(f"{acc[k]:10.3f}" for k in (*ATTRIBUTES, "exact"))

    lines.append(row(f"{c.n_prompts} prompts", report.single))
    lines.append(row("target", TARGETS))
    if report.ceiling is not None:
        lines.append(row("autoencoder ceiling", report.ceiling))
    if report.held_out is not None:
        lines.append(row(f"{c.n_held_out} held-out pairs", report.held_out))
    if report.pairs is not None:
        lines.append(f"{c.n_pairs} two-object prompts: " + ", ".join(f"{k} {v:.3f}" for k, v in report.pairs.items()))
    lines.append("Guidance sweep (exact match on the prompts above):")
    lines.append("  " + "".join(f"{'w=' + format(w, 'g'):>8s}" for w in report.sweep))
    lines.append("  " + "".join(f"{acc['exact']:8.3f}" for acc in report.sweep.values()))
    lines.append(f"gate {'PASSES' if report.passes() else 'FAILS'} ({report.wall_s:.0f} s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m diffusion.metrics.shapes [--quick]``: validate the judge, run the gate, print."""
    import argparse
    import logging

    from diffusion.loading import choose_device, load_pipeline
    from diffusion.registry import Registry, local_card

    p = argparse.ArgumentParser(description="Quality gate of the latent shapes model")
    p.add_argument("--model-dir", type=Path, default=None, help="default: the embedded ldm-shapes")
    p.add_argument("--quick", action="store_true", help="40 prompts, 20 held-out, 20 two-object")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    card = local_card(args.model_dir) if args.model_dir else Registry.default().get("ldm-shapes")
    model = load_pipeline(card, choose_device(args.device))
    classifier = load_classifier()
    config = GateConfig(n_prompts=40, n_held_out=20, n_pairs=20) if args.quick else GateConfig()
    judge = validate(classifier)
    report = run_gate(model, classifier, config)
    sensitivity = {k: prompt_sensitivity(model, a, b) for k, (a, b) in SENSITIVITY_PAIRS.items()}
    lines = [format_report(report, judge),
             "Prompt sensitivity at t = 999 (RMS change of the predicted x0 between two prompts): "
             + ", ".join(f"{k} {v:.4f}" for k, v in sensitivity.items())]
    print("\n".join(lines))  # noqa: T201 - the command's output
    return 0 if report.passes() else 1


if __name__ == "__main__":
    raise SystemExit(main())
