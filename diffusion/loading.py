"""Loading model cards into components: lazy, cached, safe and quick to fail offline.

* ``DiffusionPipeline.from_pretrained(..., use_safetensors=True)`` only: pickle weights are
  refused, no ``trust_remote_code``, no custom pipelines.
* Each model loads once per process, even when two first requests arrive together.
* A hub model that is not in the local cache fails within seconds with a message that names
  the model and the remedies, instead of hanging or showing a traceback.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import socket
import threading
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from diffusers import DiffusionPipeline

from diffusion.attention import install_recorders
from diffusion.registry import ModelCard, Registry

logger = logging.getLogger(__name__)

# Fail fast when a hub is unreachable rather than waiting for the default time-outs.
os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "5")
os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "10")


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message is written for the person using the app."""


@dataclass
class PixelModel:
    """An unconditional pixel-space model: a UNet2DModel and its scheduler config."""

    card: ModelCard
    unet: torch.nn.Module
    scheduler_config: dict[str, Any]
    device: torch.device
    dtype: torch.dtype
    autocast_dtype: torch.dtype | None = None  # the UNet runs under torch.autocast in this dtype (bf16 on CPU)
    weights: str = ""  # :func:`weights_digest` of the folder it was loaded from (recipes record it)


@dataclass
class LatentTextModel:
    """A latent text-to-image model (LDM / Stable Diffusion layout).

    ``vae`` maps images (B, 3, H, W) in [-1, 1] to latents (B, C, H/f, W/f) with
    ``f = vae_scale_factor``; the UNet works on latents multiplied by ``scaling_factor``.
    """

    card: ModelCard
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: Any
    scheduler_config: dict[str, Any]
    device: torch.device
    dtype: torch.dtype
    vae_scale_factor: int
    scaling_factor: float
    cross_attention_layers: int = 0  # layers whose maps diffusion.attention can record
    autocast_dtype: torch.dtype | None = None  # the UNet runs under torch.autocast in this dtype (bf16 on CPU)
    weights: str = ""  # :func:`weights_digest` of the folder it was loaded from (recipes record it)
    tokenizer_lock: threading.Lock = field(default_factory=threading.Lock)


LoadedModel = PixelModel | LatentTextModel


def choose_device(preference: str = "auto") -> torch.device:
    """``auto``: CUDA if present, then Apple MPS, else the CPU; or an explicit device string."""
    if preference != "auto":
        return torch.device(preference)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


PRECISIONS = ("auto", "fp32", "bf16")


def cpu_has_native_bf16() -> bool:
    """Does oneDNN run bfloat16 natively here (AVX-512 BF16 or AMX)? Emulated bf16 is slower than fp32."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def choose_autocast(precision: str, device: torch.device) -> torch.dtype | None:
    """The UNet's autocast dtype for ``precision``: None (its weights' dtype) or bfloat16.

    ``auto`` is bf16 autocast on CPUs with native bf16 (measured by ``python -m diffusion.bench``:
    1.5-1.7x faster for the embedded DDPM, FLD 15.58 vs 15.68 in fp32 at n = 500), else fp32; on CUDA the
    weights are already float16. The VAE and the text encoder always run in their own dtype.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32" or device.type != "cpu":
        return None
    if precision == "bf16" or cpu_has_native_bf16():
        return torch.bfloat16
    return None


@dataclass(frozen=True)
class Speedups:
    """Optional UNet speed-ups that ``python -m diffusion.bench`` measures but the app does not
    turn on by default: channels_last memory format (1.07x here) and ``torch.compile`` (1.15x here,
    after a warm-up of tens of seconds per new input shape)."""

    channels_last: bool = False
    compile: bool = False


def unet_precision(device: torch.device, autocast_dtype: torch.dtype | None) -> AbstractContextManager:
    """The context the UNet runs in: ``torch.autocast`` in ``autocast_dtype``, or nothing (its own dtype)."""
    return torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None else nullcontext()


def unet_forward(unet: torch.nn.Module, sample: torch.Tensor, timestep: torch.Tensor,
                 autocast_dtype: torch.dtype | None = None, **kwargs: torch.Tensor) -> torch.Tensor:
    """``unet(sample, timestep, **kwargs).sample`` under ``autocast_dtype``: the loop's one way to call a UNet,
    in the caller's own autograd mode (Attend-and-Excite needs gradients)."""
    with unet_precision(sample.device, autocast_dtype):
        return unet(sample, timestep, **kwargs).sample


def precision_name(dtype: torch.dtype | None) -> str:
    """"bf16" for bfloat16 autocast, "fp32" for none (the name recipes record)."""
    return "bf16" if dtype == torch.bfloat16 else "fp32"


def choose_dtype(device: torch.device) -> torch.dtype:
    """float16 on CUDA (the VAE stays float32), float32 elsewhere."""
    return torch.float16 if device.type == "cuda" else torch.float32


def _remedies(card: ModelCard) -> str:
    return (
        f"Model '{card.id}' is not available offline and the hub could not be reached. "
        f"Remedies: allow access to the Hugging Face hub (about {card.download_mb or '?'} MB to download), "
        f"populate the local cache once with `huggingface-cli download {card.source}`, "
        f"or download the pipeline folder elsewhere and pass it with `python app.py --model-dir PATH`."
    )


def hub_reachable(timeout: float = 3.0) -> bool:
    """Can a TCP connection to the hub endpoint open within ``timeout`` seconds?

    Name resolution is not covered by socket time-outs, so the probe runs in a daemon thread
    that is abandoned when it takes too long. huggingface_hub's own retries can take a minute
    to give up on an unreachable network; this answers in seconds.
    """
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _resolve_source(card: ModelCard) -> str:
    """A local folder to load from: the card's own folder, or the hub snapshot in the cache."""
    if card.local:
        path = Path(card.source)
        if not (path / "model_index.json").is_file():
            raise ModelLoadError(
                f"Model '{card.id}': folder {path} is missing or is not a diffusers pipeline "
                "(no model_index.json). Re-install the app's assets or pass a valid --model-dir.")
        return str(path)
    try:
        return DiffusionPipeline.download(card.source, local_files_only=True, use_safetensors=True)
    except (OSError, ValueError) as cached_error:
        logger.info("%s not in the local cache (%s)", card.source, cached_error)
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"} or not hub_reachable():
        raise ModelLoadError(_remedies(card))
    try:
        return DiffusionPipeline.download(card.source, use_safetensors=True)
    except Exception as error:  # noqa: BLE001 - any hub/network failure becomes one clear message
        logger.warning("download of %s failed: %r", card.source, error)
        raise ModelLoadError(_remedies(card)) from error


WEIGHTS_DIGEST_CHARS = 12


def weights_digest(folder: str | Path) -> str:
    """A short fingerprint of a pipeline folder's weights: SHA-256 over every ``*.safetensors`` file's path
    (relative, sorted) and bytes, first :data:`WEIGHTS_DIGEST_CHARS` hex digits. Two folders with the same
    digest hold the same weights; recipes record it so that a replay on other weights says so."""
    root = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.safetensors")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        with path.open("rb") as f:  # a hub snapshot's files are links into the cache: read what they name
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:WEIGHTS_DIGEST_CHARS]


def load_pipeline(card: ModelCard, device: torch.device, precision: str = "fp32",
                  speedups: Speedups = Speedups()) -> LoadedModel:
    """Load a card's diffusers pipeline and keep the components the app needs.

    ``precision`` ("fp32", "bf16" or "auto", see :func:`choose_autocast`) sets the UNet's
    autocast dtype; the library default is fp32, which reproduces diffusers' own pipelines.
    """
    autocast_dtype = choose_autocast(precision, device)
    folder = _resolve_source(card)
    dtype = choose_dtype(device)
    try:
        pipe = DiffusionPipeline.from_pretrained(folder, use_safetensors=True, dtype=dtype)
    except Exception as error:  # noqa: BLE001 - corrupt files raise many types (SafetensorError, OSError, ...)
        logger.warning("loading %s from %s failed: %r", card.id, folder, error)
        reason = str(error).splitlines()[0][:300] if str(error) else type(error).__name__
        raise ModelLoadError(
            f"Model '{card.id}' could not be loaded from {folder}: {reason}. Only complete diffusers folders "
            "with safetensors weights are accepted (no pickle .bin/.ckpt files).") from error
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.requires_grad_(False)  # inference only: no autograd graph, whatever the thread
    unet = pipe.unet.to(device).eval()
    if speedups.channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    # Wrap the cross-attention processors once, before any request (none in unconditional UNets):
    # they record maps only when a step-lab run asks (diffusion.attention.recording).
    cross_attention_layers = install_recorders(unet)
    if speedups.compile:
        unet = torch.compile(unet)
    scheduler_config = dict(pipe.scheduler.config)
    weights = weights_digest(folder)
    if card.kind == "pixel":
        return PixelModel(card, unet, scheduler_config, device, dtype, autocast_dtype, weights)
    vae = getattr(pipe, "vae", None) or getattr(pipe, "vqvae", None)
    text_encoder = getattr(pipe, "text_encoder", None) or getattr(pipe, "bert", None)
    if vae is None or text_encoder is None or getattr(pipe, "tokenizer", None) is None:
        raise ModelLoadError(f"Model '{card.id}' is not a latent text-to-image pipeline "
                             "(it needs a VAE, a text encoder and a tokenizer).")
    vae = vae.to(device=device, dtype=torch.float32).eval()  # fp16 VAEs overflow; keep it fp32
    text_encoder = text_encoder.to(device).eval()
    return LatentTextModel(
        card=card, unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=pipe.tokenizer,
        scheduler_config=scheduler_config, device=device, dtype=dtype,
        vae_scale_factor=2 ** (len(vae.config.block_out_channels) - 1),
        scaling_factor=float(getattr(vae.config, "scaling_factor", 1.0) or 1.0),
        cross_attention_layers=cross_attention_layers, autocast_dtype=autocast_dtype, weights=weights,
    )


class ModelStore:
    """Loads each model on first use and keeps it; thread-safe (one lock per model).

    ``hub_models_at_once`` (a Space: 1) bounds the models that are not embedded: loading one more
    unloads the least recently loaded before it loads, so a 16 GB machine holds the embedded models and
    one hub model. A request already running on an unloaded model keeps its reference and finishes.
    """

    def __init__(self, registry: Registry, device: str = "auto", precision: str = "fp32",
                 speedups: Speedups = Speedups(), hub_models_at_once: int | None = None):
        self.registry = registry
        self.device = choose_device(device)
        self.precision = precision
        self.speedups = speedups
        self.hub_models_at_once = hub_models_at_once
        choose_autocast(precision, self.device)  # a bad name fails here, not at the first request
        self._models: dict[str, LoadedModel] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, model_id: str) -> LoadedModel:
        card = self.registry.get(model_id)
        with self._guard:
            lock = self._locks.setdefault(model_id, threading.Lock())
        with lock:
            if model_id not in self._models:
                if not card.embedded and self.hub_models_at_once is not None:
                    self._make_room(self.hub_models_at_once - 1)
                logger.info("loading %s from %s on %s", model_id, card.source, self.device)
                model = load_pipeline(card, self.device, self.precision, self.speedups)
                with self._guard:
                    self._models[model_id] = model
            return self._models[model_id]

    def loaded(self) -> list[str]:
        """The ids of the models in memory, oldest first."""
        with self._guard:
            return list(self._models)

    def _make_room(self, keep: int) -> None:
        """Unload the oldest models that are not embedded until at most ``keep`` remain."""
        with self._guard:
            others = [mid for mid in self._models if not self.registry.get(mid).embedded]
            for model_id in others[:max(0, len(others) - keep)]:
                logger.info("unloading %s to make room for another hub model", model_id)
                del self._models[model_id]
        gc.collect()

    def missing_embedded(self) -> list[str]:
        """Embedded models whose folder is missing (a broken install), for a start-up warning."""
        return [c.id for c in self.registry.cards.values()
                if c.embedded and not (Path(c.source) / "model_index.json").is_file()]
