"""Composition by layout: a two-object prompt -> a planned layout -> one masked prediction per object.

A text encoder of three layers does not bind word order to place: in "a red circle left of a blue square"
the words "red", "circle" and "left" all attend to the same object. Single objects, though, are solved
(position and colour right nearly always). So the prompt is split into its two objects, each is given a
cell of the 3x3 grid where the relation holds, and each object's region of the latent canvas follows that
object's own single-object caption ("a red circle on the left").

- **Planning** (:func:`plan`) is the "LLM -> layout" stage of LLM-grounded Diffusion (Lian et al. 2023),
  done by a parser because the shapes world has a grammar: ``a [size] [colour] [shape] REL a [size]
  [colour] [shape] [on a ... background]``. The seed chooses among the layouts where the relation holds,
  so a layout is deterministic per seed. A prompt the parser cannot read goes to the plain model.
- **Sampling** (:func:`compose`, :func:`phase`; the loop is driven by ``diffusion.pipeline.layout_steps``):
  for the first half of the steps both objects share one x_t whose conditional prediction is the masked
  composition of MultiDiffusion (Bar-Tal et al. 2023, Eq. 5: a per-pixel weighted average of the regions'
  predictions; each object's soft mask takes its own caption's prediction, the objects' predictions are
  averaged outside, and both captions name one background), guided with one shared unconditional prediction.
  From the middle on each object follows its own trajectory with its own guidance, unguided for the last
  fifth (:data:`PHASES`); the picture is the trajectories' composition with the same weights.

Everything here is plain data and tensors: no randomness except the seeded planner's choice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from diffusion.data import shapes

LAYOUT_MODES = ("auto", "off")  # auto: prompts that name two objects are drawn by layout; off: the plain model
#: Soft masks, in the 64-pixel canvas's units: a box of this half-width around the cell's centre (a cell is
#: 21.3 px; a large star reaches 11.2 px from its centre), then a cosine fall-off over ``FEATHER`` pixels.
HALF_WIDTH = 12.0
#: The backgrounds the planner chooses from when the prompt names none. The shipped model draws shapes on grey
#: less faithfully: each object of the gate's 100 two-object prompts drawn alone at its cell (DDIM 25, w = 4),
#: shape right on grey 0.83 / 0.95 (first / second object), on white 0.95 / 1.00, on black 0.97 / 0.99; colour
#: 1.00 on all three. A prompt that asks for grey ("... on a gray background") still gets it.
FEATHER = 6.0
PLANNED_BACKGROUNDS = ("white", "black")
#: The phases of a layout-grounded run, as fractions of its steps (:func:`phase`). Measured on the gate's 100
#: two-object prompts (DDIM 25, w = 4): composing every step gave both objects right in 0.88; the objects
#: apart from the middle on, 0.92 with guidance to the end and 0.92 with it stopped at 0.8 (cheaper); apart from
#: the start, 0.96 at twice the plain path's UNet rows.
JOINT_UNTIL = 0.5
GUIDED_UNTIL = 0.8
PHASES = ("joint", "apart", "apart, unguided")

_SIZE = "|".join(shapes.SIZES)
_COLOUR = "|".join(shapes.COLOURS)
_SHAPE = "|".join((*shapes.SHAPES, "shape"))
_OBJECT = re.compile(rf"^(?:an?\s+)?(?:(?P<size>{_SIZE})\s+)?(?:(?P<colour>{_COLOUR})\s+)?(?P<shape>{_SHAPE})$")
#: Relation phrasings -> the captions' four relations.
_RELATIONS = {"left of": "left of", "to the left of": "left of", "right of": "right of",
              "to the right of": "right of", "above": "above", "below": "below", "under": "below",
              "beneath": "below", "over": "above"}
_RELATION = re.compile(r"\s+(" + "|".join(sorted(map(re.escape, _RELATIONS), key=len, reverse=True)) + r")\s+")
_BACKGROUND = re.compile(rf"\s*,?\s+on\s+(?:an?\s+)?(?P<bg>{'|'.join(shapes.BACKGROUNDS)})(?:\s+background)?$")


@dataclass(frozen=True)
class ObjectPhrase:
    """One object as the prompt names it: its words (any may be missing but the noun) and their phrase."""

    phrase: str  # "a large red circle" (as canonical words: article, size, colour, noun)
    colour: str | None
    shape: str  # a shape name, or "shape" when the prompt names none
    size: str | None


@dataclass(frozen=True)
class TwoObjects:
    """A prompt read as ``first RELATION second`` (on an optional background)."""

    first: ObjectPhrase
    relation: str  # one of shapes.RELATIONS
    second: ObjectPhrase
    background: str | None = None


@dataclass(frozen=True)
class PlacedObject:
    """An object and the grid cell (row, col in 0..2; row 0 at the top) it is planned in."""

    words: ObjectPhrase
    row: int
    col: int

    @property
    def position(self) -> str:
        return shapes.POSITIONS[(self.row, self.col)]

    @property
    def box(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of the object's region in the 64-pixel canvas (before feathering)."""
        cx, cy = shapes.CELL_CENTRES[self.col], shapes.CELL_CENTRES[self.row]
        return cx - HALF_WIDTH, cy - HALF_WIDTH, cx + HALF_WIDTH, cy + HALF_WIDTH


@dataclass(frozen=True)
class Layout:
    """The plan for one image: two objects in two cells where ``relation`` holds between them."""

    prompt: str
    objects: tuple[PlacedObject, PlacedObject]
    relation: str
    background: str

    def captions(self) -> list[str]:
        """Each object's own single-object caption at its cell: 'a red circle on the left' (the words the
        captions of single-object training scenes use, :func:`diffusion.data.shapes.position_phrase`)."""
        return [f"{o.words.phrase} {shapes.position_phrase(o.position)} on a {self.background} background"
                for o in self.objects]

    def describe(self) -> str:
        return "; ".join(f"{o.words.phrase} at the {o.position}" for o in self.objects) + \
            f"; {self.background} background"


def parse(prompt: str) -> TwoObjects | None:
    """The two objects and the relation of ``prompt``, or None when it is not a two-object prompt of the
    shapes grammar ("a red circle left of a blue square", "small pink heart above a cyan circle on black")."""
    background, parts = _split(prompt)
    if len(parts) != 3:
        return None
    left, relation, right = parts
    objects = [_object(left.strip(" ,")), _object(right.strip(" ,"))]
    if objects[0] is None or objects[1] is None:
        return None
    return TwoObjects(objects[0], _RELATIONS[relation], objects[1], background)


def _split(prompt: str) -> tuple[str | None, list[str]]:
    """The prompt's background word (or None) and its text split at its relation phrases:
    [object, relation, object, ...]."""
    text = " ".join(str(prompt).lower().replace(",", " , ").split()).replace(" ,", ",").strip(" .")
    background = None
    if match := _BACKGROUND.search(text):
        background, text = match.group("bg"), text[:match.start()]
    return background, _RELATION.split(text)


def why_plain(prompt: str) -> str | None:
    """Why a prompt that relates things ("a cat left of a dog") is drawn by the plain model, in a sentence for
    the user; None when the planner reads it as two objects, or when it names no relation at all (a
    single-object prompt, which the plain model draws well)."""
    if parse(prompt) is not None:
        return None
    _, parts = _split(prompt)
    if len(parts) == 1:
        return None
    if len(parts) > 3:
        return (f"the layout planner draws two objects and this prompt relates {len(parts) // 2 + 1}; "
                "it is drawn by the plain model")
    unread = [side.strip(" ,") for side in (parts[0], parts[2]) if _object(side.strip(" ,")) is None]
    return (f"the layout planner cannot read {' or '.join(repr(u) for u in unread)} as an object of the shapes "
            "world ([size] [colour] shape, e.g. \"a small red circle\"); it is drawn by the plain model")


def _object(text: str) -> ObjectPhrase | None:
    match = _OBJECT.match(text)
    if match is None:
        return None
    size, colour, shape = match.group("size"), match.group("colour"), match.group("shape")
    phrase = "a " + " ".join(w for w in (size, colour, shape) if w)
    return ObjectPhrase(phrase, colour, shape, size)


def candidate_cells(relation: str) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Every pair of cells (first, second) two cells apart along the relation's axis, so the relation
    holds with room to spare and two large objects never touch: nine layouts per relation."""
    out = []
    for a in range(3):
        for b in range(3):
            if relation == "left of":
                out.append(((a, 0), (b, 2)))
            elif relation == "right of":
                out.append(((a, 2), (b, 0)))
            elif relation == "above":
                out.append(((0, a), (2, b)))
            elif relation == "below":
                out.append(((2, a), (0, b)))
            else:
                raise ValueError(f"unknown relation {relation!r}")
    return out


def plan(prompt: str, seed: int) -> Layout | None:
    """The layout of ``prompt`` for ``seed`` (None when the prompt does not name two objects): a seeded ``numpy``
    generator picks one of :func:`candidate_cells` and, when the prompt names none, the background (from
    :data:`PLANNED_BACKGROUNDS`). Both
    objects' captions then name the same background, so the two regions agree on it (without it each region
    chose its own, and the picture showed patches). The same seed gives the same layout."""
    parsed = parse(prompt)
    if parsed is None:
        return None
    rng = np.random.default_rng(seed)
    cells = candidate_cells(parsed.relation)
    (ra, ca), (rb, cb) = cells[int(rng.integers(len(cells)))]
    background = parsed.background or PLANNED_BACKGROUNDS[int(rng.integers(len(PLANNED_BACKGROUNDS)))]
    return Layout(str(prompt), (PlacedObject(parsed.first, ra, ca), PlacedObject(parsed.second, rb, cb)),
                  parsed.relation, background)


def phase(index: int, steps: int) -> str:
    """The phase of step ``index`` (0-based) of a layout run of ``steps`` steps (:data:`PHASES`): "joint" while
    index < JOINT_UNTIL * steps, then "apart" while index < GUIDED_UNTIL * steps, then "apart, unguided"."""
    if index < JOINT_UNTIL * steps:
        return "joint"
    return "apart" if index < GUIDED_UNTIL * steps else "apart, unguided"


def unet_rows(steps: int, guided: bool) -> int:
    """UNet evaluations of one image over a layout run (the plain path: ``steps`` x 2 guided, x 1 unguided):
    joint steps evaluate the unconditional and both captions, apart steps each object with its own
    unconditional, unguided steps each object once."""
    rows = {"joint": 3 if guided else 2, "apart": 4 if guided else 2, "apart, unguided": 2}
    return sum(rows[phase(i, steps)] for i in range(steps))


def plan_images(prompts: list[str], seed: int, mode: str) -> list[Layout | None]:
    """One layout per image of a request (image i plans with seed + i, so a batch shows several valid
    layouts); all None when ``mode`` is "off"."""
    if mode not in LAYOUT_MODES:
        raise ValueError(f"layout must be one of {', '.join(LAYOUT_MODES)}, got {mode!r}")
    if mode == "off":
        return [None] * len(prompts)
    return [plan(p, seed + i) for i, p in enumerate(prompts)]


def region_mask(box: tuple[float, float, float, float], size: int, canvas: float = shapes.IMAGE_SIZE) -> torch.Tensor:
    """A soft mask (size, size) in [0, 1] for ``box`` (canvas pixels): 1 inside, a cosine fall-off to 0 over
    :data:`FEATHER` pixels outside, averaged over each latent cell's footprint (``canvas / size`` pixels)."""
    fine = 4 * size  # evaluate at 4x the latent resolution, then average down
    centres = (torch.arange(fine, dtype=torch.float64) + 0.5) * canvas / fine
    x0, y0, x1, y1 = box

    def falloff(v: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        outside = torch.clamp(torch.maximum(lo - v, v - hi), min=0) / FEATHER
        return torch.where(outside >= 1, torch.zeros_like(v), 0.5 + 0.5 * torch.cos(torch.pi * outside.clamp(max=1)))

    mask = falloff(centres, y0, y1)[:, None] * falloff(centres, x0, x1)[None, :]
    return torch.nn.functional.avg_pool2d(mask[None, None], 4)[0, 0].float()


def layout_masks(layout: Layout, size: int) -> torch.Tensor:
    """The objects' soft masks (2, size, size), scaled where they overlap so that they sum to at most 1."""
    masks = torch.stack([region_mask(o.box, size) for o in layout.objects])
    total = masks.sum(0, keepdim=True)
    return masks / total.clamp(min=1.0)


def region_weights(masks: torch.Tensor) -> torch.Tensor:
    """Per-pixel weights (K, h, w) of the K objects' predictions, summing to 1 everywhere: an object's mask,
    plus an equal share of what the masks leave (the background, which every object's caption draws)."""
    rest = (1 - masks.sum(0, keepdim=True)).clamp(min=0)
    return masks + rest / masks.shape[0]


def compose(predictions: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The composed conditional prediction (B, C, h, w) from the objects' (B, K, C, h, w) and the weights
    (B, K, h, w): MultiDiffusion's per-pixel weighted average (Bar-Tal et al. 2023, Eq. 5)."""
    return (predictions * weights[:, :, None].to(predictions.dtype)).sum(1)


@dataclass
class LayoutStep:
    """What a layout-grounded step did, for the step lab, per image and object (K = 2): the per-pixel weights
    (B, K, h, w) that compose the objects, each object's conditional prediction (B, K, C, h, w) in model space,
    the input it saw (B, K, C, h, w: the same state in the joint phase, its own trajectory after) and its
    unconditional prediction (None where the step is unguided), for the images' layouts (None for an image
    whose prompt names no two objects: its first region is its whole prompt)."""

    layouts: list[Layout | None]
    weights: torch.Tensor
    predictions: torch.Tensor
    inputs: torch.Tensor | None = None
    uncond: torch.Tensor | None = None
    phase: str = "joint"  # one of PHASES
