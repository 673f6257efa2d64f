"""Recipes: everything that determines a set of images, as JSON that the CLI replays.

    python -m diffusion.sample --recipe recipe.json --out grid.png

A recipe names the model, the sampler and its full scheduler config, steps, seed, eta,
guidance and prompts, the UNet's precision, and the library versions that made it. Replaying it with the same
weights and versions gives the same pixels (sampling draws every random number from a CPU
``torch.Generator`` seeded by the recipe).
"""

from __future__ import annotations

import json
import logging
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

from diffusion.pipeline import SampleRequest
from diffusion.schedulers import make_scheduler

logger = logging.getLogger(__name__)

FORMAT = "diffusion-classroom/recipe@1"


def library_versions() -> dict[str, str]:
    import diffusers
    import numpy
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "numpy": numpy.__version__}


@dataclass(frozen=True)
class Recipe:
    """A replayable description of one sampling run."""

    model: str
    request: SampleRequest
    scheduler_config: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    precision: str = "fp32"  # the UNet's arithmetic: "fp32" or "bf16" (autocast)

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "model": self.model, "request": asdict(self.request),
                           "precision": self.precision, "scheduler_config": self.scheduler_config,
                           "versions": self.versions}, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(f"not a Diffusion Classroom recipe (format {data.get('format')!r}, expected {FORMAT!r})")
        known = SampleRequest.__dataclass_fields__
        unknown = set(data["request"]) - set(known)
        if unknown:
            raise ValueError(f"recipe has unknown request fields: {', '.join(sorted(unknown))}")
        precision = str(data.get("precision", "fp32"))
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"recipe precision must be fp32 or bf16, got {precision!r}")
        return cls(str(data["model"]), SampleRequest(**data["request"]), dict(data.get("scheduler_config", {})),
                   dict(data.get("versions", {})), precision)

    def version_mismatches(self) -> list[str]:
        """Library versions that differ from this process's (replays may then differ slightly)."""
        here = library_versions()
        return [f"{k}: recipe {v}, here {here.get(k)}" for k, v in self.versions.items() if here.get(k) != v]


def make_recipe(model_id: str, request: SampleRequest, base_scheduler_config: dict[str, Any],
                precision: str = "fp32") -> Recipe:
    """The recipe of ``request`` on a model whose scheduler config is ``base_scheduler_config``,
    run in ``precision`` ("fp32" or "bf16", :func:`diffusion.loading.precision_name`)."""
    scheduler = make_scheduler(request.sampler, base_scheduler_config)
    config = {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_") or k == "_class_name"}
    config["_class_name"] = type(scheduler).__name__
    return Recipe(model_id, request, json.loads(json.dumps(config, default=str)), library_versions(), precision)
