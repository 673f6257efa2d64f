"""A captioned world of coloured shapes: the training data of the embedded ``ldm-shapes``.

Scenes are 64x64 RGB, drawn anti-aliased with Pillow (4x supersampled, box-filtered down),
with one object (most scenes) or two. Every attribute is discrete, so an analyser
(:mod:`diffusion.metrics.shape_judge`) can judge whether a generated image obeys its prompt:

- colour: 8 (``COLOURS``), shape: 6 (``SHAPES``), size: small / large,
- position: a 3x3 grid (``POSITIONS``: "top left" ... "bottom right", "center"),
- background: a few plain colours (``BACKGROUNDS``),
- two-object scenes state a relation: "a red circle left of a blue square".

Captions vary in wording and may leave attributes out ("red circle, top left", "a circle"),
so short prompts work too. ``HELD_OUT_PAIRS`` (colour, shape) never appear in training
scenes: they measure whether the model composes words it has only seen apart.

Randomness comes from a seeded ``numpy.random.Generator``: the same seed gives the same
scenes, captions and pixels.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 64
SUPERSAMPLE = 4

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (235, 215, 30),
    "green": (40, 160, 60),
    "cyan": (30, 200, 215),
    "blue": (40, 70, 225),
    "purple": (135, 55, 190),
    "pink": (245, 135, 195),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
    "black": (16, 16, 16),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "heart", "diamond")
SIZES: tuple[str, ...] = ("small", "large")
#: Radius (pixels at 64x64) of each size; an object fits in one grid cell.
RADIUS: dict[str, float] = {"small": 5.5, "large": 10.0}
#: Grid cell (row, col) -> its name in captions.
POSITIONS: dict[tuple[int, int], str] = {
    (0, 0): "top left", (0, 1): "top", (0, 2): "top right",
    (1, 0): "left", (1, 1): "center", (1, 2): "right",
    (2, 0): "bottom left", (2, 1): "bottom", (2, 2): "bottom right",
}
CELL_CENTRES = (12.0, 32.0, 52.0)
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
#: "a left of b" says the same as "b right of a".
INVERSE_RELATION: dict[str, str] = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {("purple", "star"), ("green", "heart"), ("orange", "triangle"), ("cyan", "diamond")})


@dataclass(frozen=True)
class ShapeObject:
    """One object: its attributes and where it is drawn (pixel centre and radius)."""

    colour: str
    shape: str
    size: str
    row: int
    col: int
    cx: float
    cy: float
    radius: float

    @property
    def position(self) -> str:
        return POSITIONS[(self.row, self.col)]


@dataclass(frozen=True)
class Scene:
    """One or two objects on a plain background; ``relation`` relates objects[0] to objects[1]."""

    objects: tuple[ShapeObject, ...]
    background: str
    relation: str | None = None


# ----- geometry -----
def shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    """Vertices of ``shape`` centred at (cx, cy) with radius r (None for the circle)."""
    if shape == "circle":
        return None
    if shape == "square":
        h = 0.86 * r
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":
        R = 1.12 * r
        off = 0.25 * R  # centre the triangle's bounding box on (cx, cy)
        return [(cx + R * math.cos(a), cy + off + R * math.sin(a))
                for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    if shape == "star":
        outer, inner = 1.12 * r, 0.48 * r
        pts = []
        for k in range(10):
            a = -math.pi / 2 + k * math.pi / 5
            rad = outer if k % 2 == 0 else inner
            pts.append((cx + rad * math.cos(a), cy + 0.06 * r + rad * math.sin(a)))
        return pts
    if shape == "heart":
        pts = []
        for k in range(64):
            t = 2 * math.pi * k / 64
            x = 16 * math.sin(t) ** 3
            y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            pts.append((cx + r * x / 16.5, cy - r * (y + 2.5) / 16.5))
        return pts
    if shape == "diamond":
        return [(cx, cy - 1.12 * r), (cx + 0.7 * r, cy), (cx, cy + 1.12 * r), (cx - 0.7 * r, cy)]
    raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")


def render(scene: Scene, size: int = IMAGE_SIZE) -> np.ndarray:
    """The scene as uint8 (size, size, 3), anti-aliased by supersampling."""
    s = SUPERSAMPLE * size / IMAGE_SIZE
    canvas = Image.new("RGB", (round(size * SUPERSAMPLE),) * 2, BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(canvas)
    for obj in scene.objects:
        fill = COLOURS[obj.colour]
        poly = shape_polygon(obj.shape, obj.cx * s, obj.cy * s, obj.radius * s)
        if poly is None:
            r = obj.radius * s
            draw.ellipse([obj.cx * s - r, obj.cy * s - r, obj.cx * s + r, obj.cy * s + r], fill=fill)
        else:
            draw.polygon(poly, fill=fill)
    return np.asarray(canvas.resize((size, size), Image.BOX))


@lru_cache(maxsize=None)
def unit_area(shape: str) -> float:
    """Area in pixels of ``shape`` drawn with radius 1 (measured on a large rendering)."""
    r = 100.0
    canvas = Image.new("L", (300, 300), 0)
    draw = ImageDraw.Draw(canvas)
    poly = shape_polygon(shape, 150, 150, r)
    if poly is None:
        draw.ellipse([50, 50, 250, 250], fill=255)
    else:
        draw.polygon(poly, fill=255)
    return float(np.asarray(canvas, dtype=np.float64).sum() / 255) / r**2


# ----- sampling -----
def place(colour: str, shape: str, size: str, row: int, col: int,
          rng: np.random.Generator | None = None) -> ShapeObject:
    """An object in grid cell (row, col), with a little jitter of position and radius."""
    jx, jy, js = (rng.uniform(-1.0, 1.0, 3) if rng is not None else (0.0, 0.0, 0.0))
    return ShapeObject(colour, shape, size, row, col, CELL_CENTRES[col] + jx, CELL_CENTRES[row] + jy,
                       RADIUS[size] * (1 + 0.06 * js))


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def random_object_attrs(rng: np.random.Generator, held_out: str = "exclude") -> tuple[str, str, str]:
    """(colour, shape, size); ``held_out`` is 'exclude', 'only' or 'any'."""
    while True:
        colour, shape = _pick(rng, list(COLOURS)), _pick(rng, SHAPES)
        is_held = (colour, shape) in HELD_OUT_PAIRS
        if held_out == "any" or (held_out == "exclude") != is_held:
            return colour, shape, _pick(rng, SIZES)


def random_scene(rng: np.random.Generator, two_object_prob: float = 0.25,
                 held_out: str = "exclude") -> Scene:
    """A random scene; training uses ``held_out='exclude'``."""
    background = _pick(rng, list(BACKGROUNDS))
    if rng.random() >= two_object_prob:
        colour, shape, size = random_object_attrs(rng, held_out)
        row, col = int(rng.integers(3)), int(rng.integers(3))
        return Scene((place(colour, shape, size, row, col, rng),), background)
    return random_two_object_scene(rng, background, held_out)


def random_two_object_scene(rng: np.random.Generator, background: str | None = None,
                            held_out: str = "exclude") -> Scene:
    """Two objects in different cells, related by a relation that holds in the picture."""
    background = background or _pick(rng, list(BACKGROUNDS))
    while True:
        a = random_object_attrs(rng, held_out)
        b = random_object_attrs(rng, held_out)
        if a[:2] != b[:2]:
            break
    cells = [(r, c) for r in range(3) for c in range(3)]
    while True:
        i, j = rng.choice(len(cells), size=2, replace=False)
        (ra, ca), (rb, cb) = cells[int(i)], cells[int(j)]
        # two large objects in side-by-side cells could touch: keep every object separable
        if not (a[2] == b[2] == "large" and abs(ra - rb) + abs(ca - cb) == 1):
            break
    relation = _pick(rng, true_relations((ra, ca), (rb, cb)))
    objs = (place(*a, ra, ca, rng), place(*b, rb, cb, rng))
    return Scene(objs, background, relation)


def true_relations(a: tuple[int, int], b: tuple[int, int]) -> list[str]:
    """Every relation r for which "a r b" holds between two grid cells (row, col): one or two of them."""
    (ra, ca), (rb, cb) = a, b
    return [rel for rel, ok in (("left of", ca < cb), ("right of", ca > cb), ("above", ra < rb), ("below", ra > rb))
            if ok]


def restate(scene: Scene, rng: np.random.Generator) -> Scene:
    """The same two-object picture described another true way: any relation that holds (a diagonal pair
    is both "left of" and "above"), named from either object ("a red circle left of a blue square" is
    also "a blue square right of a red circle"). The objects and pixels do not change."""
    a, b = scene.objects
    if rng.random() < 0.5:
        a, b = b, a
    return Scene((a, b), scene.background, _pick(rng, true_relations((a.row, a.col), (b.row, b.col))))


# ----- captions -----
_CORNER_PHRASES = ("in the {p} corner", "at the {p}", "in the {p}")
_EDGE_PHRASES = {"top": ("at the top",), "bottom": ("at the bottom",),
                 "left": ("on the left", "at the left"), "right": ("on the right", "at the right")}
_CENTRE_PHRASES = ("in the center", "in the middle", "at the center")


def position_phrase(position: str, rng: np.random.Generator | None = None, terse: bool = False) -> str:
    """'in the top left corner', 'on the left', 'in the center' (or 'top left' when terse)."""
    if terse:
        return "middle" if position == "center" and rng is not None and rng.random() < 0.3 else position
    if position == "center":
        options: tuple[str, ...] = _CENTRE_PHRASES
    elif position in _EDGE_PHRASES:
        options = _EDGE_PHRASES[position]
    else:
        options = _CORNER_PHRASES
    choice = options[0] if rng is None else _pick(rng, options)
    return choice.format(p=position)


def object_phrase(obj: ShapeObject, size: bool = True, colour: bool = True, shape: bool = True,
                  article: bool = True) -> str:
    """'a large red circle' with any of the attributes left out."""
    noun = obj.shape if shape else "shape"
    words = [w for w, keep in ((obj.size, size), (obj.colour, colour)) if keep] + [noun]
    return ("a " if article else "") + " ".join(words)


def full_caption(obj: ShapeObject) -> str:
    """The canonical prompt that states every attribute: 'a large red circle in the top left corner'."""
    return f"{object_phrase(obj)} {position_phrase(obj.position)}"


def two_object_caption(scene: Scene) -> str:
    """'a red circle left of a blue square' (sizes included)."""
    a, b = scene.objects
    return f"{object_phrase(a)} {scene.relation} {object_phrase(b)}"


def random_caption(scene: Scene, rng: np.random.Generator) -> str:
    """A caption of varied wording that may leave attributes out."""
    if len(scene.objects) == 2:
        a, b = scene.objects
        keep_size = rng.random() < 0.6
        text = (f"{object_phrase(a, size=keep_size)} {scene.relation} "
                f"{object_phrase(b, size=keep_size)}")
    else:
        (obj,) = scene.objects
        size, colour, position = rng.random() < 0.75, rng.random() < 0.9, rng.random() < 0.8
        shape = rng.random() < 0.92 or not colour
        terse = rng.random() < 0.25
        text = object_phrase(obj, size=size, colour=colour, shape=shape, article=not terse)
        if position:
            text += (", " if terse else " ") + position_phrase(obj.position, rng, terse=terse)
    if rng.random() < 0.15:
        text += f" on a {scene.background} background" if rng.random() < 0.7 else f" on {scene.background}"
    return text


def vocabulary() -> list[str]:
    """Every word a caption can contain (the tokenizer's vocabulary)."""
    words = set(COLOURS) | set(SHAPES) | set(SIZES) | set(BACKGROUNDS)
    words |= {"a", "shape", "background", "on", "in", "the", "at", "corner", "middle", "center", ",",
              "top", "bottom", "left", "right", "of", "above", "below"}
    return sorted(words)


@dataclass(frozen=True)
class CaptionedScene:
    """A rendered scene: uint8 (64, 64, 3) pixels, its caption and its ground truth."""

    image: np.ndarray
    caption: str
    scene: Scene


def stream(seed: int, two_object_prob: float = 0.25, held_out: str = "exclude") -> Iterator[CaptionedScene]:
    """Endless, seeded stream of captioned scenes."""
    rng = np.random.default_rng(seed)
    while True:
        scene = random_scene(rng, two_object_prob, held_out)
        yield CaptionedScene(render(scene), random_caption(scene, rng), scene)


def render_batch(n: int, seed: int, two_object_prob: float = 0.25,
                 held_out: str = "exclude") -> tuple[np.ndarray, list[Scene]]:
    """n scenes as uint8 (n, 64, 64, 3) and their ground truth."""
    rng = np.random.default_rng(seed)
    scenes = [random_scene(rng, two_object_prob, held_out) for _ in range(n)]
    return np.stack([render(s) for s in scenes]), scenes


def gate_prompts(n: int, seed: int, held_out: str = "exclude") -> list[Scene]:
    """n single-object scenes whose full captions state every attribute (for the quality gate)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        colour, shape, size = random_object_attrs(rng, held_out)
        row, col = int(rng.integers(3)), int(rng.integers(3))
        out.append(Scene((place(colour, shape, size, row, col),), "white"))
    return out

