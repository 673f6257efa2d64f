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
attribute to be a fair judge). The gate that generates images for prompts and scores them with this
judge is :mod:`diffusion.metrics.shapes_gate`.
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
from diffusion.registry import ASSETS

ASSET = ASSETS / "shapes-analyser"
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
class Analysis:
    """What the analyser saw: the background's name and the objects, largest first, as the same
    records the data draws (:class:`diffusion.data.shapes.ShapeObject`: centre in the image's pixels,
    radius in the 64-pixel renders' units), with the classifier's confidence in each shape."""

    background: str
    objects: tuple[shapes.ShapeObject, ...]
    shape_confidence: tuple[float, ...] = ()


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
        objects, confidence = [], []
        for blob in blobs:
            shape = shapes.SHAPES[int(cls[k])]
            radius = math.sqrt(blob.area / shapes.unit_area(shape)) * shapes.IMAGE_SIZE / size
            objects.append(shapes.ShapeObject(
                colour=blob.colour, shape=shape, size="small" if radius < SIZE_THRESHOLD else "large",
                row=_cell(blob.cy, size), col=_cell(blob.cx, size), cx=blob.cx, cy=blob.cy, radius=radius))
            confidence.append(float(conf[k]))
            k += 1
        out.append(Analysis(background, tuple(objects), tuple(confidence)))
    return out


def relation_holds(a: shapes.ShapeObject, b: shapes.ShapeObject, relation: str, margin: float = 4.0) -> bool:
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

        def find(t: shapes.ShapeObject) -> shapes.ShapeObject | None:
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
