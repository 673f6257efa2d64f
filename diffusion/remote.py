"""The seam between the Studio and model work done elsewhere (Ray Serve replicas): calls and streams as named,
typed messages.

The Studio's methods that do model work are marked :func:`model_work`. Where the Studio has a :class:`Backend`
(``Studio(backend=...)``, :mod:`diffusion.ray_backend`), a marked method is not run here: it becomes a
:class:`Call` (its name and arguments) that the backend runs on a replica's own Studio, where the same method
runs unmarked. A method added to the Studio and marked runs on the replicas with no second definition.

A stream's items cross the seam through a :class:`StreamCodec`: a growing step-lab run or sampler race sends only
what each step added (:class:`TrajectoryStep`, :class:`LanesStep`); any other item travels whole (:class:`Whole`).
This module knows nothing of Ray.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

from diffusion.lab.race import RaceLane
from diffusion.lab.trajectory import StepView, Trajectory

F = TypeVar("F", bound=Callable[..., Any])


class BackendError(RuntimeError):
    """The model work could not be done where it runs (a Ray Serve replica died, the cluster was lost): a
    readable message that says what to do; the request itself was fine (diffusion.ray_backend)."""


@dataclass(frozen=True)
class Call:
    """A marked Studio method to run elsewhere: its (dotted) name, the model it is for (the first argument, which
    the backend may route by), and its arguments; ``stream``: it returns an iterator of updates."""

    method: str
    model_id: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    stream: bool = False


class Backend(Protocol):
    """Where marked methods run when the Studio has one (:class:`diffusion.ray_backend.RayBackend`)."""

    def call(self, call: Call) -> Any: ...

    def stream(self, call: Call) -> Iterator[Any]: ...


def model_work(stream: bool = False, name: str | None = None) -> Callable[[F], F]:
    """Mark a method (first argument ``model_id``) as model work: where its owner's ``backend`` is set, the method
    is sent there as a :class:`Call` named ``name`` (default: the method's own name) instead of running here.
    ``stream``: the method returns an iterator of updates."""

    def mark(method: F) -> F:
        called = name or method.__name__

        @functools.wraps(method)
        def run(self: Any, model_id: str, *args: Any, **kwargs: Any) -> Any:
            backend: Backend | None = getattr(self, "backend", None)
            if backend is None:
                return method(self, model_id, *args, **kwargs)
            call = Call(called, str(model_id), args, kwargs, stream)
            return backend.stream(call) if stream else backend.call(call)

        run.model_work = called  # type: ignore[attr-defined]
        return run  # type: ignore[return-value]

    return mark


def resolve(owner: Any, call: Call) -> Callable[..., Any]:
    """The method a :class:`Call` names, on ``owner`` (a replica's Studio), following dots ("lessons.progressive");
    ``ValueError`` for a name that is not a marked method (a message cannot call anything else)."""
    target: Any = owner
    for part in call.method.split("."):
        if part.startswith("_"):
            raise ValueError(f"not a model-work method: {call.method!r}")
        target = getattr(target, part, None)
    if not callable(target) or getattr(target, "model_work", None) != call.method:
        raise ValueError(f"not a model-work method: {call.method!r}")
    return target


# ----- streams across the seam -----
@dataclass(frozen=True)
class Whole:
    """A stream item sent as it is."""

    item: Any


@dataclass(frozen=True)
class Heartbeat:
    """Sent while a request waits for its turn on a replica: the replica answers (its stream is not stalled)."""


@dataclass(frozen=True)
class TrajectoryStep:
    """A step-lab run's (done, total, trajectory) update: the run without steps on the first message (``start``),
    then the views from step ``k`` on (the step before the newest is resent: its alpha-bar of the step it lands on
    is filled in when the next step is known)."""

    done: int
    total: int
    k: int
    views: list[StepView]
    wall_s: float
    final: np.ndarray | None
    attention_layers: dict[str, int] | None
    start: Trajectory | None = None


@dataclass(frozen=True)
class LaneChange:
    """What one lane of a sampler race gained since the last message."""

    lane: int
    alpha_prod: list[float]
    pred_x0: list[np.ndarray]
    model_calls: int
    wall_s: float
    final: np.ndarray | None


@dataclass(frozen=True)
class LanesStep:
    """A sampler race's update: the lanes without steps on the first message (``start``), then what each gained."""

    changes: list[LaneChange]
    start: list[RaceLane] | None = None


def _is_trajectory(item: Any) -> bool:
    return isinstance(item, tuple) and len(item) == 3 and isinstance(item[2], Trajectory)


def _is_lanes(item: Any) -> bool:
    return isinstance(item, list) and bool(item) and all(isinstance(lane, RaceLane) for lane in item)


class StreamCodec:
    """One stream's encoding (on the replica) or decoding (in the app): only what is new crosses the seam."""

    def __init__(self) -> None:
        self.sent = 0  # trajectory views sent so far
        self.seen: list[int] | None = None  # race: steps of each lane sent so far
        self.trajectory: Trajectory | None = None  # decoding: the run rebuilt so far
        self.lanes: list[RaceLane] = []

    def encode(self, item: Any) -> Whole | TrajectoryStep | LanesStep:
        if _is_trajectory(item):
            done, total, traj = item
            start = dataclasses.replace(traj, steps=[]) if self.sent == 0 else None
            k = max(0, self.sent - 1)
            message = TrajectoryStep(done, total, k, traj.steps[k:], traj.wall_s, traj.final, traj.attention_layers,
                                     start)
            self.sent = len(message.views) + k
            return message
        if _is_lanes(item):
            start = None
            if self.seen is None:
                start = [dataclasses.replace(lane, alpha_prod=[], pred_x0=[]) for lane in item]
                self.seen = [0] * len(item)
            changes = []
            for i, lane in enumerate(item):
                # the runner's thread may be running the next step meanwhile: take each lane's steps up to the
                # shorter of its two lists (a step appends to both), the rest comes with the next message
                n = min(len(lane.alpha_prod), len(lane.pred_x0))
                if n != self.seen[i] or lane.final is not None:
                    changes.append(LaneChange(i, lane.alpha_prod[self.seen[i]:n], lane.pred_x0[self.seen[i]:n],
                                              lane.model_calls, lane.wall_s, lane.final if n == lane.steps else None))
                    self.seen[i] = n
            return LanesStep(changes, start)
        return Whole(item)

    def decode(self, message: Whole | TrajectoryStep | LanesStep) -> Any:
        if isinstance(message, TrajectoryStep):
            if message.start is not None:
                self.trajectory = message.start
            traj = self.trajectory
            assert traj is not None, "a trajectory's first message carries the run"
            traj.steps[message.k:] = message.views
            traj.wall_s, traj.final, traj.attention_layers = message.wall_s, message.final, message.attention_layers
            return message.done, message.total, traj
        if isinstance(message, LanesStep):
            if message.start is not None:
                self.lanes = message.start
            for change in message.changes:
                lane = self.lanes[change.lane]
                lane.alpha_prod.extend(change.alpha_prod)
                lane.pred_x0.extend(change.pred_x0)
                lane.model_calls, lane.wall_s, lane.final = change.model_calls, change.wall_s, change.final
            return self.lanes
        return message.item
