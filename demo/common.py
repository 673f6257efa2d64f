"""Shared UI pieces: LaTeX delimiters, input checks, the model concurrency group, streaming."""

from __future__ import annotations

import asyncio
import functools
import inspect
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import gradio as gr

from diffusion.studio import (
    MAX_SEED,
    SAMPLERS,
    BackendError,
    Cancelled,
    ModelCard,
    ModelLoadError,
    Progress,
    Relay,
    Runner,
    SampleRequest,
    Studio,
    data_url_bytes,
    in_turn,
    read_image,
    whole_number,
)

# Every model event's work runs on the Studio's runner (``studio.runner``; by default one model thread, one step
# of each active request in turn, diffusion.runners.FairRunner): gradio may start this many model events at once
# and the runner interleaves their steps, so a short request is not stuck behind a long one. The queue's
# max_size still bounds what waits.
MAX_ACTIVE_JOBS = 64
MODEL_CONCURRENCY = {"concurrency_id": "model", "concurrency_limit": MAX_ACTIVE_JOBS}

# A progress-only update (a status line, a step's pictures) reaches the browser at most this often:
# every update costs the queue 10-100 ms of a 2-core CPU, more than a small model's step.
STREAM_EVERY_S = 0.25
UPDATES_PER_S = 10.0  # progress updates a second for all requests together, at most (about)

LATEX = [
    {"left": "$$", "right": "$$", "display": True},
    {"left": "$", "right": "$", "display": False},
]


def as_int(value: object, name: str, lo: int, hi: int) -> int:
    """A whole number in [lo, hi] from the UI (a step index, ...), else a ``gr.Error`` with the bounds."""
    with user_errors():
        return whole_number(value, name, lo, hi)


def random_seed() -> int:
    """A fresh seed in [0, 2^32 - 1]."""
    return secrets.randbelow(MAX_SEED + 1)


def readable(updates: Iterator[Any]) -> Iterator[Any]:
    """``updates`` with the model module's readable errors turned into ``gr.Error`` messages (:func:`user_errors`),
    for a handler that returns its generator."""
    with user_errors():
        yield from updates


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the model module's readable errors into ``gr.Error`` messages for the user."""
    try:
        yield
    except (ValueError, KeyError, ModelLoadError, FloatingPointError, BackendError) as error:
        message = error.args[0] if error.args else str(error)
        raise gr.Error(str(message)) from error


def kept(session: Any, attribute: str, first: str, what: str, again: str) -> Any:
    """What a user's session keeps under ``attribute`` (a recorded run, a trained model), or a ``gr.Error``: ``first``
    when there is no session yet (do that first), else, when the state budget has released it, that ``what`` was
    released, why, and ``again``."""
    if session is None:
        raise gr.Error(first)
    value = getattr(session, attribute)
    if value is None:
        raise gr.Error(f"{what} was released because {session.released}: {again}.")
    return value


GUIDANCE_SLIDER_MAX = 15.0  # the guidance sliders' range; the API checks up to MAX_GUIDANCE (diffusion.request)

# The samplers as (title, name) for a dropdown.
SAMPLER_CHOICES = [(spec.title, name) for name, spec in SAMPLERS.items()]


def card_request(card: ModelCard, sampler: object, steps: object, seed: object, n: object = 1,
                 prompt: object = "", negative_prompt: object = "", guidance: object = 1.0,
                 eta: object = 0.0, layout: object = "auto") -> SampleRequest:
    """A request from a form's values, as they come (the Studio checks and normalises it): text fields,
    guidance and the layout switch only for text models, whose card says so."""
    text = card.kind == "latent-text"
    return SampleRequest(sampler=str(sampler), steps=steps, n=n, seed=seed, eta=eta,  # type: ignore[arg-type]
                         prompt=str(prompt or "") if text else "",
                         negative_prompt=str(negative_prompt or "") if text else "",
                         guidance_scale=guidance if text else 1.0,  # type: ignore[arg-type]
                         layout=str(layout) if text else "auto")


def card_note(card: ModelCard) -> str:
    """The model card as the user should see it beside the model choice: what it is, who made it, its licence."""
    parts = [card.description, card.attribution, f"Licence: {card.license}." if card.license else ""]
    offline = "runs offline" if card.embedded else ("local folder" if card.local
                                                    else f"downloads about {card.download_mb or '?'} MB from the hub")
    return f"**{card.title}** ({offline}). " + " ".join(p for p in parts if p)


def describe_model(studio: Studio, model: gr.Dropdown, about: gr.Markdown) -> None:
    """Keep ``about`` showing the card of the model chosen in ``model`` (no model is loaded)."""
    model.change(lambda model_id: card_note(studio.card(model_id)), inputs=model, outputs=about,
                 api_visibility="private", queue=False)


def status_line(update: Progress) -> str:
    """A sampling run's progress as one Markdown line (step, images, UNet calls, time)."""
    n = update.request.n if update.request is not None else 0
    if update.cached:
        return (f"**Done** · {n} image{'s' if n != 1 else ''} · the stored result of an identical request "
                "(same model, sampler, steps, seed and settings): no model call")
    rate = f", {update.wall_s / max(1, update.model_calls) * 1000:.0f} ms per step" if update.model_calls else ""
    return (f"**Step {update.step}/{update.num_steps}** · {n} image{'s' if n != 1 else ''} · {update.model_calls} "
            f"UNet calls · {update.wall_s:.2f} s{rate}")


class CheckedImage(gr.Image):
    """An image input that decodes only what fits the app's byte and pixel limits.

    Gradio's own preprocessing decodes any image Pillow accepts, of any pixel count, and an
    inline ``data:`` URL skips the upload size limit. This component hands the handler the same
    uint8 RGB array (H, W, 3), but through :func:`diffusion.images.read_image`, which checks the
    bytes and the header's pixel count before decoding and names the limit it refused.
    """

    is_template = True  # drawn by the frontend's Image component

    def preprocess(self, payload):  # noqa: ANN001, ANN201 - gradio's signature
        if payload is None:
            return None
        try:
            if payload.url and payload.url.startswith("data:"):
                return read_image(data_url_bytes(payload.url))
            if payload.path is None:
                raise ValueError("no image file was received")
            return read_image(payload.path)
        except ValueError as error:
            raise gr.Error(f"Image refused: {error}.") from None


class CheckedSketchpad(gr.Sketchpad):
    """A sketchpad whose layers are decoded only when they fit the app's byte and pixel limits.

    The editor's files (background, layers, composite) come from the browser or any API client; each is
    checked by :func:`diffusion.images.read_image` (bytes, then the header's pixel count) before gradio
    decodes it, so a pixel bomb posted as a "drawing" is refused with the limit it broke.
    """

    is_template = True

    def get_block_name(self) -> str:  # drawn by the frontend's ImageEditor (Sketchpad is itself its template)
        return "imageeditor"

    def get_block_class(self) -> str:
        return "imageeditor"

    def convert_and_format_image(self, file, flatten_on_white: bool = False):  # noqa: ANN001, ANN201 - gradio's
        if file is not None:
            try:
                read_image(getattr(file, "path", None) or bytes(file))
            except ValueError as error:
                raise gr.Error(f"Drawing refused: {error}.") from None
        return super().convert_and_format_image(file, flatten_on_white)


@dataclass(frozen=True)
class Tick:
    """A progress-only update of a streamed handler: sent only when the last update sent is old enough
    (:func:`stream_interval`). ``preview``: it carries a picture; the newest preview that was held back
    is sent in place of the next status-only Tick. Any other value a handler yields is always sent."""

    value: Any
    preview: bool = False


def stream_interval(active_jobs: int) -> float:
    """Seconds between two progress updates of one request: :data:`STREAM_EVERY_S`, stretched so that all
    active requests together send about :data:`UPDATES_PER_S` (each update costs the queue 10-100 ms of CPU)."""
    return max(STREAM_EVERY_S, active_jobs / UPDATES_PER_S)


_END = object()


@dataclass(frozen=True)
class Drawn:
    """An update made only when it is sent: the value of a :class:`Tick` whose pictures cost time to make (a
    figure, a token view), which the stream's thinning would most often drop; ``draw()`` makes it, on the
    request's own thread."""

    draw: Callable[[], Any]


@dataclass(frozen=True)
class Shown:
    """A model event's work and its view, apart: what a streamed (or one-step) handler returns.

    ``streams``: the Studio's streams the event needs (model work only; each checked and loaded when the Studio made
    it). The runner advances them as one job, one step per turn, one after the other
    (:func:`diffusion.runners.in_turn`), on the model thread. ``show(*streams)``: the tab's updates, given one
    iterator per stream that yields what that stream produced; it runs on the request's own thread, never on the
    model thread, and a stream it does not read to the end is skipped over."""

    streams: tuple[Iterator[Any], ...]
    show: Callable[..., Iterator[Any]]

    def headed(self, wrap: Callable[[Iterator[Any]], Iterator[Any]]) -> Shown:
        """The same work, its updates passed through ``wrap``."""
        return Shown(self.streams, lambda *streams: wrap(self.show(*streams)))


def parts(items: Iterator[tuple[int, Any]], count: int) -> list[Iterator[Any]]:
    """``count`` iterators over the (stream index, item) pairs of :func:`diffusion.runners.in_turn`: the k-th yields
    the items of stream k; read in order, as the streams ran (a part not read to its end is skipped)."""
    ahead: list[tuple[int, Any]] = []

    def part(k: int) -> Iterator[Any]:
        while True:
            if ahead:
                index, item = ahead.pop()
            else:
                try:
                    index, item = next(items)
                except StopIteration:
                    return
            if index > k:
                ahead.append((index, item))
                return
            if index == k:
                yield item

    return [part(k) for k in range(count)]


def streamed(runner: Runner) -> Callable[[Callable[..., Shown]], Callable[..., AsyncIterator[Any]]]:
    """Decorate a model event's handler to run its work on ``runner`` (the Studio's), one step per turn, and
    stream its updates.

    The handler runs in the request's own worker thread: its checks and the Studio calls that load the models (the
    Studio's streams check and load when called) happen before any work enters the runner. It returns a
    :class:`Shown`: the Studio's streams, which the runner advances one step at a time in turn with every other
    active request, and the view that maps their items to the tab's updates, which runs on a thread of this
    request's own. The model thread runs only the Studio's code.

    The view yields after every step (a :class:`Tick` where nothing new is shown); the Ticks that come sooner than
    :func:`stream_interval` after the last update sent are dropped. A :class:`Drawn` update is drawn on the view's
    thread. No further step starts once the request is no longer wanted: when the user cancels (or the queue closes
    the stream of a client that left) at most the step in flight finishes, and a request cancelled while it waits
    for its first turn never starts.
    """
    return functools.partial(_streamed, runner)


def _streamed(runner: Runner, handler: Callable[..., Shown]) -> Callable[..., AsyncIterator[Any]]:
    if inspect.isgeneratorfunction(handler):
        raise TypeError(f"{handler.__name__} is a generator function: it must return a Shown (the Studio's streams "
                        "and their view) after its checks and loading")

    @functools.wraps(handler)
    async def run(*args: Any) -> AsyncIterator[Any]:
        loop = asyncio.get_running_loop()
        inbox: asyncio.Queue[tuple[Any, BaseException | None]] = asyncio.Queue()

        def post(update: Any, error: BaseException | None = None) -> None:
            try:
                loop.call_soon_threadsafe(inbox.put_nowait, (update, error))
            except RuntimeError:  # the event loop has closed (the app is shutting down)
                relay.cancel()

        def view() -> None:  # the request's own thread: the tab's updates from the work's items
            last_sent, held = -float("inf"), None  # held: the newest preview not sent yet
            try:
                for update in shown.show(*parts(relay.items(), len(shown.streams))):
                    if isinstance(update, Tick):
                        if update.preview:
                            held = update
                        if time.monotonic() - last_sent < stream_interval(runner.active):
                            continue
                        update, held = (held or update).value, None
                    else:
                        held = None
                    if isinstance(update, Drawn):
                        update = update.draw()
                    last_sent = time.monotonic()
                    post(update)
            except Cancelled:
                return
            except Exception as error:  # noqa: BLE001 - raised again in the request's handler
                post(_END, error)
                return
            post(_END)

        shown = await asyncio.to_thread(handler, *args)  # checks and loading, off the model thread
        if not isinstance(shown, Shown):
            raise TypeError(f"{handler.__name__} returned {type(shown).__name__}, not a Shown")
        relay = Relay(runner, in_turn(*shown.streams), handler.__name__)
        threading.Thread(target=view, name=f"view-{handler.__name__}", daemon=True).start()
        try:
            while True:
                update, error = await inbox.get()
                if error is not None:
                    raise error
                if update is _END:
                    return
                yield update
        finally:
            relay.cancel()  # cancelled, closed or done: no further step starts

    return run


def one_step(runner: Runner, handler: Callable[..., Shown]) -> Callable[..., Any]:
    """Run a one-shot model event (a forward-process view, a guidance decomposition) on ``runner`` as a job of
    one step, in turn with the streamed runs, instead of beside them on another thread.

    As for :func:`streamed`, ``handler`` runs in the request's own handler (its checks, and the Studio's one-shot
    views, which check and load when called and return their work as a stream of one item,
    :func:`diffusion.later.later`) and returns a :class:`Shown` (:func:`shown`): the computation is the job's one
    step, and its view the event's one update, made off the model thread."""
    stream = _streamed(runner, handler)

    @functools.wraps(handler)
    async def run(*args: Any) -> Any:
        async for result in stream(*args):
            return result
        return None

    return run


def shown(items: Iterator[Any], show: Callable[[Any], Any]) -> Shown:
    """A one-shot view's work and view: the item of the Studio's stream of one (computed on the model thread, as
    the job's one step), shown by ``show`` off the model thread; readable errors become ``gr.Error`` messages."""

    def view(results: Iterator[Any]) -> Iterator[Any]:
        with user_errors():
            for item in results:
                yield show(item)

    return Shown((items,), view)


# Matplotlib's text layout (mathtext's parser, font caches) is not thread-safe: two figures drawn at
# once by two users' events failed with a ParseException in the load test. Every figure the app makes
# is built and drawn under this lock (see ``LockedPlot``).
FIGURE_LOCK = threading.RLock()


class LockedPlot(gr.Plot):
    """``gr.Plot`` whose drawing of a matplotlib figure (in gradio's postprocess) holds :data:`FIGURE_LOCK`."""

    is_template = True  # drawn by the frontend's Plot component

    def postprocess(self, value):  # noqa: ANN001, ANN201 - gradio's signature
        with FIGURE_LOCK:
            return super().postprocess(value)
