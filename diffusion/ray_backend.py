"""The model work on Ray Serve replicas: ``python app.py --backend ray`` (optional: requirements-scale.txt).

One machine serves a class; a course of hundreds, or a busy public demo, needs several. Ray Serve runs the
same code on a laptop (a local Ray instance) and on a cluster (``ray start --head`` / ``--address``, KubeRay).

* :class:`StudioReplica` is a Serve deployment; each replica holds its own :class:`~diffusion.studio.Studio`
  (the embedded models, and at most one hub model at a time) and requests the CPUs (or a GPU) it is given
  through ``ray_actor_options``. Models that are not embedded load through Serve's model multiplexing
  (:meth:`StudioReplica.hub_model`), and :class:`RayBackend` names them in each request, so Serve routes a
  request to a replica that holds its model already. A replica's requests share its model thread as in the
  app (its Studio's :class:`~diffusion.runners.FairRunner`).
* The Gradio app talks to the same Studio, built by :func:`ray_studio` with a :class:`RayBackend`: composition,
  not a subclass. Every Studio method marked as model work (:func:`diffusion.remote.model_work`: sampling and
  SDEdit, step-lab runs, the race, guidance, the forward process, the lessons' views) becomes a named, typed
  :class:`~diffusion.remote.Call` that a replica's Studio runs; cards, checks of per-user state and the UI stay in
  the Gradio process. Streams come back through streaming deployment handles (``handle.options(stream=True)``)
  as typed messages: a step-lab run or a race sends only what is new at each step
  (:class:`~diffusion.remote.StreamCodec`).
* Every request carries its own seed and its own fresh noise scheduler, so where it runs does not matter: the
  images are bit-identical to the in-process backend for the same request and precision (tested).
* Faults: a replica that dies mid-request gives a :class:`~diffusion.studio.BackendError` saying to press
  again (Serve starts a new replica); an address that cannot be reached fails at start naming ``--ray-address``;
  a cluster lost while serving fails each request with a message within ``stall_s``, and the page stays up.

Ray is imported only here, and this module only when ``--backend ray`` is asked for.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import serve
from ray.exceptions import RayError, RayTaskError

from diffusion.registry import Registry
from diffusion.remote import Call, Heartbeat, LanesStep, StreamCodec, TrajectoryStep, Whole, resolve
from diffusion.runners import Relay, ThreadRunner, drain
from diffusion.threads import configure_threads
from diffusion.remote import BackendError
from diffusion.studio import Studio

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
APP_NAME = "diffusion-classroom"
INSTALL_HINT = "pip install -r requirements-scale.txt"
RETRY = "Press the button again: a new model server is starting."
#: How often a replica sends a Heartbeat while a request waits for its turn (fair sharing can keep a long request
#: waiting for minutes): the caller's stall detection then measures whether the replica answers, not its progress.
HEARTBEAT_S = 5.0


@dataclass(frozen=True)
class RayOptions:
    """Where and how the replicas run.

    ``address``: a running cluster ("HOST:PORT" of its head, or "auto"); None starts a local Ray instance
    with ``local_cpus`` CPUs. ``replicas`` replicas of ``replica_cpus`` CPUs (and ``replica_gpus`` GPUs)
    each; ``stall_s``: how long a request may go without any update before it is reported as lost.
    """

    address: str | None = None
    replicas: int = 1
    replica_cpus: float = 1.0
    replica_gpus: float = 0.0
    local_cpus: int | None = None
    stall_s: float = 60.0
    # requests a replica takes at once: its fair runner shares the steps among all of them. Serve's
    # default (5) or 16 left the rest waiting in the router first come first served: under 30 students a
    # short request waited 529 s (measured, 1 replica of 2 CPUs with 16)
    max_ongoing_requests: int = 256

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError(f"--replicas must be at least 1, got {self.replicas}")
        if not self.replica_cpus > 0:
            raise ValueError(f"--replica-cpus must be positive, got {self.replica_cpus}")
        if self.replica_gpus < 0:
            raise ValueError(f"--replica-gpus must be 0 or more, got {self.replica_gpus}")


@dataclass(frozen=True)
class StudioSettings:
    """What each replica's Studio is built with (plain values: they travel to the replicas)."""

    model_dirs: tuple[str, ...] = ()
    device: str = "auto"
    precision: str = "auto"
    cache_bytes: int = 0
    work_budget_s: float | None = None
    hub_models_at_once: int = 1  # a replica holds the embedded models and at most one hub model
    threads: int = 0  # torch threads per replica (0: its CPU request, at least 1)


@dataclass(frozen=True)
class HeldModel:
    """What Serve's multiplexing keeps per replica for a model that is not embedded: its id (the model itself is
    in the replica's Studio)."""

    model_id: str


@serve.deployment(name="StudioReplica")
class StudioReplica:
    """One replica: a Studio and its models. Streams are generators of plain records (pickled by Ray)."""

    def __init__(self, settings: StudioSettings, replica_cpus: float):
        configure_threads(settings.threads or max(1, int(replica_cpus)))
        registry = Registry.default([Path(d) for d in settings.model_dirs])
        self.studio = Studio(registry, device=settings.device, precision=settings.precision,
                             cache_bytes=settings.cache_bytes, work_budget_s=settings.work_budget_s,
                             hub_models_at_once=settings.hub_models_at_once)
        # Serve runs the constructor on the replica's event loop and the (sync) request methods on a thread pool:
        # the loop is where the multiplexed loader runs
        self._loop = asyncio.get_running_loop()
        logger.info("replica %d ready with %d models", os.getpid(), len(registry.cards))

    @serve.multiplexed(max_num_models_per_replica=1)
    async def hub_model(self, model_id: str) -> HeldModel:
        """Load a model that is not embedded through Serve's model multiplexing: Serve then routes the requests
        that name it (``multiplexed_model_id``) to this replica, and keeps at most one per replica (least
        recently used out; the Studio's store, with ``hub_models_at_once=1``, unloads it when the next loads)."""
        await asyncio.to_thread(self.studio.load, model_id)
        return HeldModel(model_id)

    def _hold(self, model_id: str) -> None:
        """On a request's thread, before its work: a model that is not embedded is loaded through
        :meth:`hub_model` (embedded models are on every replica)."""
        if not self.studio.card(model_id).embedded:
            asyncio.run_coroutine_threadsafe(self.hub_model(model_id), self._loop).result()

    def loaded(self) -> tuple[int, list[str]]:
        """(this replica's process id, the models its Studio holds now): for the tests of the routing."""
        return os.getpid(), self.studio.store.loaded()

    def _fairly(self, steps: Iterator[Any], name: str) -> Iterator[Any]:
        """``steps`` run on the replica Studio's fair runner, one step per turn with its other requests; what they
        yield is passed on, a :class:`~diffusion.remote.Heartbeat` while nothing comes. A request cancelled by its
        caller (the stream is closed) starts no further step."""
        return Relay(self.studio.runner, steps, name).items(HEARTBEAT_S, Heartbeat)

    def pid(self) -> int:
        """The process id of the replica (the tests use it to find the replica they stop)."""
        return os.getpid()

    def stream(self, call: Call) -> Iterator[Whole | TrajectoryStep | LanesStep | Heartbeat]:
        """A streaming model-work method of the replica's Studio (:func:`diffusion.remote.model_work`): checked and
        its model loaded on this request's thread, its steps on the replica's fair runner, each update encoded so
        that only what is new crosses the network."""
        self._hold(call.model_id)
        updates = resolve(self.studio, call)(call.model_id, *call.args, **call.kwargs)
        codec = StreamCodec()
        for item in self._fairly(iter(updates), call.method):
            yield item if isinstance(item, Heartbeat) else codec.encode(item)

    def call(self, call: Call) -> Any:
        """A one-shot model-work method of the replica's Studio, run on its fair runner as a job of one step."""
        self._hold(call.model_id)

        def once() -> Iterator[Any]:
            yield resolve(self.studio, call)(call.model_id, *call.args, **call.kwargs)

        return next(item for item in self._fairly(once(), call.method) if not isinstance(item, Heartbeat))


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """``BackendError`` naming ``--ray-address`` when nothing listens at HOST:PORT (ray.init would wait for
    minutes). "auto" and ray:// client addresses are left to Ray."""
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise BackendError(f"--ray-address must be HOST:PORT (the head node's GCS port, 6379 by default) or "
                           f"auto, got {address!r}")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as error:
        raise BackendError(f"cannot reach the Ray cluster at --ray-address {address}: {error}. Start one with "
                           f"`ray start --head` on that machine, or leave --ray-address out to start Ray here.") \
            from None


def connect(options: RayOptions, settings: StudioSettings) -> Any:
    """Start (or join) Ray, deploy the replicas and return the deployment's handle (``BackendError`` when the
    cluster cannot be reached or the replicas cannot start)."""
    if options.address is not None:
        check_reachable(options.address)
    # the replicas import this package: point them at it (a cluster needs the app at the same path)
    runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                                             os.environ.get("PYTHONPATH")]))}}
    try:
        if not ray.is_initialized():
            ray.init(address=options.address, num_cpus=options.local_cpus if options.address is None else None,
                     runtime_env=runtime_env, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
        serve.start(proxy_location="Disabled")  # handles only: no HTTP proxy
        app = StudioReplica.options(
            num_replicas=options.replicas, max_ongoing_requests=options.max_ongoing_requests,
            ray_actor_options={"num_cpus": options.replica_cpus, "num_gpus": options.replica_gpus},
        ).bind(settings, options.replica_cpus)
        return serve.run(app, name=APP_NAME, route_prefix=None)
    except (RayError, ConnectionError, RuntimeError, TimeoutError) as error:
        where = f"--ray-address {options.address}" if options.address else "a local Ray instance"
        raise BackendError(f"could not start the model servers on {where}: {error}") from None


def readable(error: BaseException) -> BaseException:
    """What the user sees: the replica's own readable error (a bad request: ValueError and kin), else a
    :class:`BackendError` that says what happened and what to do."""
    if isinstance(error, RayTaskError):
        cause = error.cause
        if isinstance(cause, (ValueError, KeyError, FloatingPointError)) or type(cause).__name__ == "ModelLoadError":
            return cause
        return BackendError(f"The model server failed on this request ({type(cause).__name__}: {cause}). {RETRY}")
    if isinstance(error, RayError):
        return BackendError(f"A model server stopped while working on your request ({type(error).__name__}). "
                            f"{RETRY}")
    return error


class RayBackend:
    """Runs the Studio's model work on Ray Serve replicas (:class:`diffusion.remote.Backend`): each marked method
    becomes a :class:`~diffusion.remote.Call` to a replica (one that holds its model, for a model that is not
    embedded), and its stream comes back decoded. ``options`` (mutable: a test shortens ``stall_s``)."""

    def __init__(self, registry: Registry, options: RayOptions, settings: StudioSettings):
        self.registry = registry
        self.options = options
        self.handle = connect(options, settings)
        self.streaming = self.handle.options(stream=True)

    def _to(self, model_id: str, handle: Any) -> Any:
        """``handle`` for a request on ``model_id``: a model that is not embedded is named as the multiplexed
        model, so Serve sends it to a replica that holds it already (if any), instead of loading it on another.
        An unknown id fails here, before any remote call."""
        try:
            card = self.registry.get(model_id)
        except KeyError as error:
            raise ValueError(error.args[0]) from None
        return handle if card.embedded else handle.options(multiplexed_model_id=card.id)

    def stream(self, call: Call) -> Iterator[Any]:
        """The updates of a streaming call, read by a pump thread (the replica runs ahead of a slow reader; the
        runner's turn never waits on the network for more than one item). Stops the remote request when the
        consumer stops; ``BackendError`` when nothing arrives for ``stall_s``. The request is sent at the first
        ``next()``: a stream made and never read (a view's second run, after a cancel) sends nothing."""
        yield from self._read(self._to(call.model_id, self.streaming).stream.remote(call))

    def _read(self, response: Any) -> Iterator[Any]:
        box: queue.Queue[tuple[str, Any]] = queue.Queue()

        def pump() -> None:
            try:
                for item in response:
                    box.put(("item", item))
                box.put(("end", None))
            except BaseException as error:  # noqa: BLE001 - handed to the reader, which raises it
                box.put(("end", error))

        def stalled() -> None:
            raise BackendError(f"No answer from the model servers for {self.options.stall_s:.0f} s: the Ray "
                               f"cluster may be lost. {RETRY}")

        threading.Thread(target=pump, name="ray-stream", daemon=True).start()
        codec = StreamCodec()
        try:
            for message in drain(box, self.options.stall_s, stalled):
                if isinstance(message, Heartbeat):  # the replica answers; the request waits its turn
                    continue
                yield codec.decode(message)
        except RayError as error:
            raise readable(error) from None
        finally:
            response.cancel()  # best effort: a cancelled or finished request stops on its replica

    def call(self, call: Call) -> Any:
        response = self._to(call.model_id, self.handle).call.remote(call)
        try:
            return response.result(timeout_s=self.options.stall_s)
        except TimeoutError:
            response.cancel()
            raise BackendError(f"No answer from the model servers for {self.options.stall_s:.0f} s. {RETRY}") \
                from None
        except RayError as error:
            raise readable(error) from None


def ray_studio(registry: Registry, options: RayOptions, settings: StudioSettings, **studio_kwargs: Any) -> Studio:
    """The Studio whose model work runs on Ray Serve replicas: the same Studio, given a :class:`RayBackend` and a
    runner that gives each request a thread of its own (its steps wait on the network)."""
    return Studio(registry, runner=ThreadRunner("remote-steps"), backend=RayBackend(registry, options, settings),
                  **studio_kwargs)


def shutdown() -> None:
    """Remove the application and leave Ray (what a test does after its cluster)."""
    try:
        serve.shutdown()
    finally:
        ray.shutdown()


def replica_pids(handle: Any, replicas: int, tries: int = 50) -> set[int]:
    """The process ids of the running replicas, found by asking until ``replicas`` distinct ones answered."""
    seen: set[int] = set()
    for _ in range(tries):
        seen.add(handle.pid.remote().result(timeout_s=60))
        if len(seen) >= replicas:
            break
    return seen


__all__: Sequence[str] = ("RayBackend", "RayOptions", "StudioReplica", "StudioSettings", "connect", "ray_studio",
                          "shutdown")
