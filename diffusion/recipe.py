"""Recipes: everything that determines a set of images, as JSON that the CLI replays.

    python -m diffusion.sample --recipe recipe.json --out grid.png

A recipe names the model and a digest of its weights, the sampler and its full scheduler config, steps, seed,
eta, guidance and prompts, the UNet's precision, and the app's and libraries' versions that made it. Replaying it
with the same weights and versions gives the same pixels (sampling draws every random number from a CPU
``torch.Generator`` seeded by the recipe); on other weights the replay runs and says so.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import platform
import urllib.parse
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

from diffusers.schedulers.scheduling_utils import SchedulerMixin

from diffusion.request import SampleRequest, check_request
from diffusion.schedulers import make_scheduler

logger = logging.getLogger(__name__)

FORMAT = "diffusion-classroom/recipe@1"


def library_versions() -> dict[str, str]:
    import diffusers
    import numpy
    import torch
    import transformers

    from diffusion import __version__

    return {"diffusion-classroom": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "diffusers": diffusers.__version__, "transformers": transformers.__version__, "numpy": numpy.__version__}


@dataclass(frozen=True)
class Recipe:
    """A replayable description of one sampling run."""

    model: str
    request: SampleRequest
    scheduler_config: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    precision: str = "fp32"  # the UNet's arithmetic: "fp32" or "bf16" (autocast)
    weights: str = ""  # diffusion.loading.weights_digest of the model's folder ("": a recipe from before digests)

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "model": self.model, "weights": self.weights,
                           "request": asdict(self.request), "precision": self.precision,
                           "scheduler_config": self.scheduler_config, "versions": self.versions}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        """Parse and validate a recipe; every problem is one readable ``ValueError``.

        The schema is strict: an object with known keys only, each of its type (whole numbers
        are not booleans or floats; NaN and Infinity fail the range checks), request values in range, and a
        ``scheduler_config`` of plain JSON values (checked against the model's on replay:
        :meth:`check_scheduler_config`).
        """
        if len(text) > MAX_RECIPE_CHARS:
            raise ValueError(f"a recipe is at most {MAX_RECIPE_CHARS} characters, got {len(text)}")
        try:
            data = json.loads(text)  # NaN and Infinity parse, then fail the type and range checks
        except RecursionError:
            raise ValueError("the recipe is nested too deeply to be a recipe") from None
        except json.JSONDecodeError as error:
            raise ValueError(f"the recipe is not valid JSON: {error}") from None
        data = _object(data, "the recipe", TOP_LEVEL)
        if data.get("format") != FORMAT:
            raise ValueError(f"not a Diffusion Classroom recipe (format {data.get('format')!r}, expected {FORMAT!r})")
        if "model" not in data or "request" not in data:
            raise ValueError("a recipe needs a model and a request")
        model = _typed(data["model"], str, "model")
        if not model or len(model) > 300:
            raise ValueError("model must be a model id of 1 to 300 characters")
        fields = _object(data["request"], "request", set(SampleRequest.__dataclass_fields__))
        values = {name: _typed(value, REQUEST_TYPES[name], f"request.{name}") for name, value in fields.items()}
        values.setdefault("layout", "off")  # a recipe from before layouts ran the plain model: so does its replay
        request = SampleRequest(**values)
        check_request(request, max_batch=MAX_RECIPE_IMAGES)  # ranges; the model's own step limit is checked on replay
        precision = _typed(data.get("precision", "fp32"), str, "precision")
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"recipe precision must be fp32 or bf16, got {precision!r}")
        config = _object(data.get("scheduler_config", {}), "scheduler_config", None)
        for key, value in config.items():
            if not isinstance(value, (str, int, float, bool, list, type(None))):
                raise ValueError(f"scheduler_config.{key} must be a plain JSON value, got {type(value).__name__}")
        versions = _object(data.get("versions", {}), "versions", None)
        weights = _typed(data.get("weights", ""), str, "weights")
        if len(weights) > 64 or not all(c in "0123456789abcdef" for c in weights):
            raise ValueError("weights must be a hexadecimal digest of at most 64 digits")
        return cls(model, request, config, {k: _typed(v, str, f"versions.{k}") for k, v in versions.items()},
                   precision, weights)

    def to_link(self) -> str:
        """The recipe as a short URL parameter (``?run=...``, a few hundred characters): its JSON without the
        scheduler config and versions (the replay rebuilds the config from the model and sampler, and warns on other
        weights), compressed with zlib, in URL-safe base64 without padding. :meth:`from_link` reads it back."""
        data = {"format": FORMAT, "model": self.model, "weights": self.weights, "request": asdict(self.request),
                "precision": self.precision}
        packed = zlib.compress(json.dumps(data, separators=(",", ":")).encode("utf-8"), 9)
        return base64.urlsafe_b64encode(packed).rstrip(b"=").decode("ascii")

    @classmethod
    def from_link(cls, token: str) -> Recipe:
        """The recipe of a :meth:`to_link` parameter; every problem is one readable ``ValueError``: too long, not
        URL-safe base64, not zlib data, more than :data:`MAX_LINK_JSON` bytes once inflated (refused while
        inflating), or a recipe that :meth:`from_json` refuses."""
        token = str(token).strip()
        if not token or len(token) > MAX_LINK_CHARS:
            raise ValueError(f"a shared run's link parameter is 1 to {MAX_LINK_CHARS} characters, got {len(token)}")
        if not set(token) <= _URL_SAFE:
            raise ValueError("a shared run's link parameter must be URL-safe base64 (A-Z, a-z, 0-9, - and _)")
        try:
            packed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            inflate = zlib.decompressobj()
            text = inflate.decompress(packed, MAX_LINK_JSON)
        except (binascii.Error, ValueError, zlib.error):
            raise ValueError("the shared run's link parameter is damaged (copy the whole link)") from None
        if inflate.unconsumed_tail:
            raise ValueError(f"a shared run is at most {MAX_LINK_JSON} bytes of JSON")
        if not inflate.eof:  # cut short: zlib returns what it could inflate without an error
            raise ValueError("the shared run's link parameter is damaged (copy the whole link)")
        try:
            return cls.from_json(text.decode("utf-8"))
        except UnicodeDecodeError:
            raise ValueError("the shared run's link parameter is damaged (copy the whole link)") from None

    def check_scheduler_config(self, base_scheduler_config: dict[str, Any]) -> None:
        """Raise ``ValueError`` when the recipe's scheduler config differs from the one this model and
        sampler build (the replay always builds its own; a recipe cannot change the schedule)."""
        if not self.scheduler_config:
            return
        rebuilt = make_recipe(self.model, self.request, base_scheduler_config).scheduler_config
        differ = sorted(k for k in set(rebuilt) | set(self.scheduler_config)
                        if rebuilt.get(k) != self.scheduler_config.get(k))
        if differ:
            shown = ", ".join(f"{k} (recipe {self.scheduler_config.get(k)!r}, model {rebuilt.get(k)!r})"
                              for k in differ[:5])
            raise ValueError(f"the recipe's scheduler config does not match {self.model}'s: {shown}")

    def version_mismatches(self) -> list[str]:
        """The app's and library versions that differ from this process's (replays may then differ slightly)."""
        here = library_versions()
        return [f"{k}: recipe {v}, here {here.get(k)}" for k, v in self.versions.items() if here.get(k) != v]

    def weights_mismatch(self, here: str) -> str | None:
        """What to tell the user when the model's weights here (digest ``here``) are not the recipe's: the
        replay runs, but its pixels will differ. ``None`` when they match or the recipe has no digest."""
        if not self.weights or not here or self.weights == here:
            return None
        return f"other weights: the recipe ran on {self.model} weights {self.weights}, these are {here}"

    def replay_notes(self, scheduler_config: dict[str, Any], weights: str, precision: str) -> list[str]:
        """Check the recipe against the model that would replay it (its scheduler config: ``ValueError``) and say
        what may make the replay differ: other weights, library versions or precision."""
        self.check_scheduler_config(scheduler_config)
        notes = self.version_mismatches()
        if (other := self.weights_mismatch(weights)) is not None:
            notes.insert(0, other)
        if self.precision != precision:
            notes.append(f"precision: recipe {self.precision}, here {precision}")
        return notes


MAX_RECIPE_CHARS = 1 << 20
MAX_LINK_CHARS = 4000  # a shared run's URL parameter (a prompt of 2,000 characters still fits)
MAX_LINK_JSON = 8192  # its JSON, inflated
_URL_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
MAX_RECIPE_IMAGES = 64
TOP_LEVEL = {"format", "model", "weights", "request", "precision", "scheduler_config", "versions"}
REQUEST_TYPES: dict[str, type] = {"sampler": str, "steps": int, "n": int, "seed": int, "eta": float,
                                  "prompt": str, "negative_prompt": str, "guidance_scale": float,
                                  "attend_excite": bool, "layout": str}
_TYPE_NAMES = {str: "a string", int: "a whole number", float: "a number", bool: "true or false"}


def _object(value: Any, what: str, allowed: set[str] | None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(value).__name__}")
    if allowed is not None and (unknown := set(value) - allowed):
        raise ValueError(f"{what} has unknown keys: {', '.join(sorted(map(repr, unknown)))[:200]}")
    return value


def _typed(value: Any, kind: type, what: str) -> Any:
    """``value`` if it is of ``kind`` (booleans are never numbers; a whole float is not an int)."""
    if kind is bool:
        ok = isinstance(value, bool)
    else:
        ok = (not isinstance(value, bool)) and (isinstance(value, (int, float)) if kind is float else isinstance(value, kind))
    if not ok:
        raise ValueError(f"{what} must be {_TYPE_NAMES[kind]}, got {json.dumps(value)[:40]}")
    return float(value) if kind is float else value


def make_recipe(model_id: str, request: SampleRequest, base_scheduler_config: dict[str, Any],
                precision: str = "fp32", scheduler: SchedulerMixin | None = None, weights: str = "") -> Recipe:
    """The recipe of ``request`` on a model whose scheduler config is ``base_scheduler_config``,
    run in ``precision`` ("fp32" or "bf16", :func:`diffusion.loading.precision_name`); ``scheduler``:
    the run's own, if built already (only its config is read); ``weights``: the model's weights digest."""
    scheduler = scheduler or make_scheduler(request.sampler, base_scheduler_config)
    config = {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_") or k == "_class_name"}
    config["_class_name"] = type(scheduler).__name__
    return Recipe(model_id, request, json.loads(json.dumps(config, default=str)), library_versions(), precision,
                  weights)


def recipe_from_link(link: str) -> Recipe:
    """The recipe of a shared run from a whole link (``...?run=TOKEN``, as pasted) or its parameter alone
    (:meth:`Recipe.to_link`); ``ValueError`` for a link too long, without a run, or damaged."""
    link = str(link).strip()
    if len(link) > MAX_LINK_CHARS + 2000:  # room for the page's own address
        raise ValueError(f"a shared link is at most {MAX_LINK_CHARS + 2000} characters, got {len(link)}")
    if "?" in link or "/" in link:  # a whole address, not the parameter alone
        link = urllib.parse.parse_qs(urllib.parse.urlsplit(link).query).get("run", [""])[0]
        if not link:
            raise ValueError("this link has no shared run in it (a shared run's link ends in ?run=...)")
    return Recipe.from_link(link)
