"""Cross-user batching at the step level: the UNet calls of different users' requests run as one batch.

A class of 30 sends 30 compatible requests (same model, same precision), each run by the one loop
(:mod:`diffusion.loop`) on its own seeded generator and its own scheduler. Only the network's forward
pass is shared: :class:`BatchingScheduler` advances several requests one step each in a *round*; every
step runs on its request's own thread until the request calls the UNet through :func:`unet_forward`,
where the step waits. The scheduler's model thread then concatenates the waiting calls of one model
(x_t, per-row timesteps t, text embeddings) into one UNet batch, splits the output, and each step goes on
with its own rows: its guidance, its scheduler's update and its random draws stay its own. Only one
thread works at a time (the steps take turns, and the UNet runs on the model thread), so 2 cores are
never oversubscribed.

Bit-identical results. A convolution's output for one image can depend on the batch it runs in: oneDNN
picks its algorithm by batch size, and its choice differs between machines and thread counts (measured
here: a single image differs in its last bits batched or alone; 4 images in a batch of 5 to 39 are
identical with 2 threads, not in a batch of 20 with 1 thread). So every new combination of calls (the
models, shapes and row counts in their order) is verified the first times it occurs: each call is run
alone (these are the outputs returned) and the merged batch is run as well; the combination is merged from
then on only if every request's rows came out byte for byte equal :data:`VERIFICATIONS` times. A combination that differs is never
merged again; its requests run their calls one after another. Results are thus identical to running alone
on every machine, and batching pays wherever the hardware allows it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch

from diffusion.runtime import ComputeGate, FairScheduler, FirstComeScheduler, StepJob, begin_step, end_job, end_step, gate_released

logger = logging.getLogger(__name__)

#: The most rows (images, with both halves of classifier-free guidance counted) in one merged UNet batch:
#: measured here, a step of the embedded models costs 9.2 ms per image at 32 rows and 9.3 at 64 (ddpm-mnist),
#: 8.6 and 7.6 (ldm-shapes), against 15.4 and 9.7 at 16: little is gained beyond.
MAX_ROWS = 64
#: Identical verifications (on different data) a combination needs before it is merged; one that differs once is
#: never merged. In fp32 a batch's effect on a row is structural (the same shapes give the same kernels): one
#: verification decides. Under bf16 autocast the output's rounding can hide a difference for one input and not
#: for the next (measured here: a combination verified identical once then differed for 3 requests of 4).
VERIFICATIONS = 3
#: The most requests advanced in one round (a round's steps run one after another, then their merged calls).
MAX_JOBS = 8

_SLOT = threading.local()  # on a request's own thread while its step runs: the worker that parks its UNet calls


def unet_precision(device: torch.device, autocast_dtype: torch.dtype | None) -> AbstractContextManager:
    """The context the UNet runs in: ``torch.autocast`` in ``autocast_dtype``, or nothing (its own dtype)."""
    return torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None else nullcontext()


@dataclass
class UNetCall:
    """One request's UNet forward pass: ``sample`` x_t (rows, C, H, W) [or the model's own layout], ``timestep``
    t (a 0-d tensor or one per row), ``kwargs`` more batched tensors (``encoder_hidden_states`` (rows, L, D)),
    run under ``autocast_dtype`` (None: the weights' own dtype)."""

    unet: torch.nn.Module
    sample: torch.Tensor
    timestep: torch.Tensor
    autocast_dtype: torch.dtype | None
    kwargs: dict[str, torch.Tensor] = field(default_factory=dict)
    gate: ComputeGate | None = None  # the compute gate its step let go of while it waits (taken for the UNet)

    @property
    def rows(self) -> int:
        return int(self.sample.shape[0])

    def signature(self) -> tuple:
        """What must agree for two calls to share a batch: the model, precision, device, and every input's
        dtype and shape after the batch dimension."""
        return (id(self.unet), self.autocast_dtype, self.sample.device.type, self.sample.dtype,
                tuple(self.sample.shape[1:]), self.timestep.dtype,
                tuple((name, value.dtype, tuple(value.shape[1:])) for name, value in sorted(self.kwargs.items())))

    def run_alone(self) -> torch.Tensor:
        """The call's output (rows, ...) as the request would compute it alone (in inference mode: this runs
        on the model thread for a step that was in it)."""
        with torch.inference_mode():
            return self.run_here()

    def run_here(self) -> torch.Tensor:
        """The call's output on the calling thread, in its own autograd mode (Attend-and-Excite needs grads)."""
        with unet_precision(self.sample.device, self.autocast_dtype):
            return self.unet(self.sample, self.timestep, **self.kwargs).sample

    def timesteps(self) -> torch.Tensor:
        """t as one value per row (what the UNet makes of a 0-d t itself)."""
        t = self.timestep.reshape(-1)
        return t.expand(self.rows) if t.numel() == 1 else t


def run_merged(calls: Sequence[UNetCall]) -> list[torch.Tensor]:
    """One UNet batch for ``calls`` (all of one signature): their rows concatenated in order, the output split
    back (each part copied, so a request that keeps its output does not keep the whole batch alive)."""
    first = calls[0]
    with torch.inference_mode(), unet_precision(first.sample.device, first.autocast_dtype):
        sample = torch.cat([c.sample for c in calls])
        timestep = torch.cat([c.timesteps() for c in calls])
        kwargs = {name: torch.cat([c.kwargs[name] for c in calls]) for name in first.kwargs}
        out = first.unet(sample, timestep, **kwargs).sample
        return [part.clone() for part in out.split([c.rows for c in calls])]


def unet_forward(unet: torch.nn.Module, sample: torch.Tensor, timestep: torch.Tensor,
                 autocast_dtype: torch.dtype | None = None, **kwargs: torch.Tensor) -> torch.Tensor:
    """``unet(sample, timestep, **kwargs).sample`` under ``autocast_dtype``: the loop's one way to call a UNet.

    Inside a step run by a :class:`BatchingScheduler` (in inference mode) the call waits and may be merged
    with other requests' calls into one batch; the output is identical either way. Anywhere else (the CLI,
    the gate, Attend-and-Excite's gradients) it runs at once."""
    call = UNetCall(unet, sample, timestep, autocast_dtype, kwargs)
    worker: _Worker | None = getattr(_SLOT, "worker", None)
    if worker is None or not torch.is_inference_mode_enabled():
        return call.run_here()
    return worker.park(call)


def _attempt(call: UNetCall) -> torch.Tensor | Exception:
    """``call`` run alone: its output, or the error it raised (handed to its own request)."""
    try:
        return call.run_alone()
    except Exception as error:  # noqa: BLE001 - re-raised in the request's own step
        return error


class MergeVerdicts:
    """For each combination of calls (their signatures and rows, in order): may it run as one batch? Learnt
    the first times the combination occurs, by running it both ways (module docstring)."""

    def __init__(self, verifications: int = VERIFICATIONS) -> None:
        self.verifications = verifications
        self._verdicts: dict[tuple, bool] = {}
        self._agreed: dict[tuple, int] = {}  # identical verifications so far of a combination not decided yet
        self.merged_calls = 0  # calls that ran in a merged batch (read by tests and benchmarks)
        self.verified = 0  # combinations checked both ways

    @staticmethod
    def key(calls: Sequence[UNetCall]) -> tuple:
        return tuple((c.signature(), c.rows) for c in calls)

    def known_bad(self, calls: Sequence[UNetCall]) -> bool:
        return self._verdicts.get(self.key(calls)) is False

    def run(self, calls: Sequence[UNetCall]) -> list[torch.Tensor | Exception]:
        """The outputs of ``calls`` (one signature), each identical to its call run alone, or the error that
        call raises alone (one request's failing call never fails the others)."""
        if len(calls) == 1:
            return [_attempt(calls[0])]
        key = self.key(calls)
        verdict = self._verdicts.get(key)
        if verdict:
            try:
                merged = run_merged(calls)
            except Exception:  # noqa: BLE001 - one call's bad input: each runs alone and gets its own outcome
                logger.info("a merged batch failed; its %d calls run alone", len(calls))
            else:
                self.merged_calls += len(calls)
                return list(merged)
        alone = [_attempt(c) for c in calls]
        if verdict is None and all(isinstance(a, torch.Tensor) for a in alone):
            try:
                merged = run_merged(calls)
                same = all(torch.equal(a, m) for a, m in zip(alone, merged))
            except Exception:  # noqa: BLE001 - a combination that cannot run merged is never merged
                logger.exception("a merged batch failed where its calls ran alone")
                same = False
            self.verified += 1
            agreed = self._agreed.get(key, 0) + 1 if same else 0
            self._agreed[key] = agreed
            if not same or agreed >= self.verifications:
                self._verdicts[key] = same
                del self._agreed[key]  # decided: only the verdict is kept
                logger.info("batching %s rows of %d requests: %s", "+".join(str(c.rows) for c in calls), len(calls),
                            f"identical to running alone {agreed} times, merged from now on" if same else
                            "differs from running alone on this machine, never merged")
        return alone

    def plan(self, calls: Sequence[UNetCall], max_rows: int = MAX_ROWS) -> list[list[UNetCall]]:
        """``calls`` grouped into batches: one signature per batch, at most ``max_rows`` rows, and no
        combination already found to differ (then the call starts a batch of its own)."""
        ordered = sorted(calls, key=lambda c: -c.rows)  # one order for one set of sizes: one verdict to learn
        groups: list[list[UNetCall]] = []
        for call in ordered:
            for group in groups:
                if (group[0].signature() == call.signature() and sum(c.rows for c in group) + call.rows <= max_rows
                        and not self.known_bad([*group, call])):
                    group.append(call)
                    break
            else:
                groups.append([call])
        return groups


_GO, _CLOSE = object(), object()


class _Worker:
    """A request's own thread: it runs the request's steps when told to, and hands its UNet calls to the
    model thread. The model thread and the workers pass one baton: at most one of them runs at a time."""

    def __init__(self, job: StepJob):
        self.job = job
        self.inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()  # to the worker: _GO, a UNet output, _CLOSE
        self.outbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()  # to the model thread
        self.signature: tuple | None = None  # of the UNet call its last step made (None: none yet, or none)
        self.rows = 0
        self.thread = threading.Thread(target=self._serve, name=f"step-{job.name}", daemon=True)
        self.thread.start()

    # ----- on the worker's thread -----
    def _serve(self) -> None:
        _SLOT.worker = self
        while True:
            command = self.inbox.get()
            if command is _CLOSE:
                self.outbox.put(("closed", None))
                return
            begin_step()
            try:
                item = next(self.job.steps)
                result: tuple[str, Any] = ("item", item)
            except StopIteration:
                result = ("stop", None)
            except Exception as exc:  # noqa: BLE001 - handed to the job's owner, who raises it again
                result = ("error", exc)
            self.outbox.put((*result, *end_step()))

    def park(self, call: UNetCall) -> torch.Tensor:
        """Inside a step: hand ``call`` to the model thread and wait for its output."""
        with gate_released() as gate:  # the model thread takes the step's gate slot while it runs the UNet
            call.gate = gate
            self.outbox.put(("call", call))
            reply = self.inbox.get()
        if isinstance(reply, BaseException):
            raise reply  # the request's own call failed (alone): its step fails, as it would alone
        return reply

    # ----- on the model thread -----
    def close(self, error: BaseException | None) -> None:
        """End the job (its iterator closed, its owner told), then the thread."""
        end_job(self.job, error)
        self.inbox.put(_CLOSE)
        self.outbox.get()


@dataclass
class _Turn:
    """One request's part of a round: its worker, what its step has returned so far, and its own time."""

    worker: _Worker
    message: tuple = ()
    own_s: float = 0.0
    call: UNetCall | None = None  # the UNet call its step waits on
    reply: Any = None  # that call's output (or the error it raised), to send back

    def send(self, command: Any) -> None:
        """Let the worker run until its step waits for a UNet output or ends (the baton comes back)."""
        began = time.perf_counter()
        self.worker.inbox.put(command)
        self.message = self.worker.outbox.get()
        self.own_s += time.perf_counter() - began
        self.call = self.message[1] if self.message[0] == "call" else None


class BatchingScheduler(FairScheduler):
    """The fair scheduler (:class:`diffusion.runtime.FairScheduler`: a warm-up for every new request, then the
    least work left first) with cross-user batching of UNet calls (module docstring).

    Each round takes the job the fair order puts first and up to ``max_jobs - 1`` more, in the same order,
    whose last step called the same UNet with the same shapes (or that have not run yet), within
    ``max_rows`` rows; runs their steps up to their UNet calls; runs the calls merged where verified
    identical; lets the steps finish. Each job is charged its own time plus its rows' share of the merged
    calls, so the fair order still sees what each request cost.
    """

    def __init__(self, name: str = "model-steps", max_rows: int = MAX_ROWS, max_jobs: int = MAX_JOBS):
        super().__init__(name)
        self.max_rows, self.max_jobs = max_rows, max_jobs
        self.verdicts = MergeVerdicts()
        self._workers: dict[int, _Worker] = {}
        self.rounds = 0

    def _worker(self, job: StepJob) -> _Worker:
        worker = self._workers.get(id(job))
        if worker is None or worker.job is not job:
            worker = self._workers[id(job)] = _Worker(job)
        return worker

    def _round(self) -> list[StepJob]:
        """The jobs to advance in this round (the first is the fair order's), waiting while there is none."""
        lead = self._take()
        with self._cv:
            if lead.cancelled.is_set() or lead.waiting:
                return [lead]
            chosen = [lead]
            lead_worker = self._workers.get(id(lead))
            signature = lead_worker.signature if lead_worker is not None else None
            rows = lead_worker.rows if lead_worker is not None else 0
            for job in sorted(self._ring, key=StepJob.priority):
                if len(chosen) >= self.max_jobs:
                    break
                if job is lead or job.cancelled.is_set() or job.waiting:
                    continue
                worker = self._workers.get(id(job))
                if worker is None or worker.signature is None:  # a new request: its call is not known yet
                    if signature is None:
                        chosen.append(job)
                    continue
                if worker.signature == signature and rows + worker.rows <= self.max_rows:
                    chosen.append(job)
                    rows += worker.rows
            return chosen

    def _run(self) -> None:  # the model thread
        while True:
            jobs = self._round()
            self.rounds += 1
            turns: list[_Turn] = []
            for job in jobs:
                worker = self._worker(job)
                if job.cancelled.is_set():
                    self._leave(job)
                    self._workers.pop(id(job), None)
                    worker.close(None)
                    continue
                turn = _Turn(worker)
                turn.send(_GO)
                turns.append(turn)
            merged_s: dict[int, float] = {}
            while any(t.call is not None for t in turns):  # a step may call the UNet more than once
                waiting = [t for t in turns if t.call is not None]
                for turn in waiting:
                    turn.worker.signature, turn.worker.rows = turn.call.signature(), turn.call.rows
                for group in self.verdicts.plan([t.call for t in waiting], self.max_rows):
                    began = time.perf_counter()
                    try:
                        with ExitStack() as held:  # the gates the steps let go of: one UNet pass at a time
                            for gate in {id(c.gate): c.gate for c in group if c.gate is not None}.values():
                                held.enter_context(gate.hold())
                            outputs: list[Any] = self.verdicts.run(group)
                    except Exception as exc:  # noqa: BLE001 - the gate itself failed: the group's requests fail
                        outputs = [exc] * len(group)
                    spent = time.perf_counter() - began
                    total = sum(c.rows for c in group)
                    for call, output in zip(group, outputs):
                        turn = next(t for t in waiting if t.call is call)
                        merged_s[id(turn)] = merged_s.get(id(turn), 0.0) + spent * call.rows / total
                        turn.call = None
                        turn.reply = output
                for turn in waiting:
                    turn.send(turn.reply)
            for turn in turns:
                self._finish_step(turn, merged_s.get(id(turn), 0.0))

    def _finish_step(self, turn: _Turn, merged_s: float) -> None:
        """Charge the step and pass on what it returned: an item to emit, the end, or an error."""
        kind, payload, waited, progress = turn.message
        job = turn.worker.job
        self._account(job, turn.own_s + merged_s, waited)
        job.progress = progress or job.progress
        if kind in ("stop", "error"):
            self._leave(job)
            self._workers.pop(id(job), None)
            turn.worker.close(payload if kind == "error" else None)
            return
        job.steps_run += 1
        try:
            job.emit(payload)
        except Exception:  # noqa: BLE001 - a consumer's failure must not stop the other jobs
            logger.exception("a step job's consumer failed; the job is dropped")
            job.cancel()


#: How the app's requests share the model thread (``app.py --scheduling``): ``fair`` (the default: a warm-up for
#: every new request, then the least work left first), ``batching`` (the same, with compatible requests' UNet
#: calls merged where verified identical) or ``first-come`` (whole requests in arrival order: the baseline).
SCHEDULING = ("fair", "batching", "first-come")


def make_step_scheduler(scheduling: str, name: str = "model-steps") -> FairScheduler:
    """A new step scheduler of the kind ``scheduling`` names (:data:`SCHEDULING`; ``ValueError`` otherwise)."""
    kinds = {"fair": FairScheduler, "batching": BatchingScheduler, "first-come": FirstComeScheduler}
    if scheduling not in kinds:
        raise ValueError(f"scheduling must be one of {', '.join(SCHEDULING)}, got {scheduling!r}")
    return kinds[scheduling](name)
