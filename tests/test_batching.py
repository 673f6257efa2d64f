"""Cross-user batching (diffusion.batching): compatible requests' UNet calls share one batch only where that
gives every request exactly the bytes it gets alone."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from diffusion.batching import BatchingScheduler, MergeVerdicts, UNetCall, unet_forward
from diffusion.request import SampleRequest
from diffusion.runtime import ComputeGate, StepJob
from tests.test_class import run_jobs


class RowWise(torch.nn.Module):
    """A stand-in UNet whose every output row depends on its own row only, in elementwise float ops: merging
    calls cannot change a bit. ``skew`` adds batch size x 1e-3 instead: merged rows then always differ."""

    def __init__(self, skew: bool = False):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(0.5))
        self.skew = skew
        self.batches: list[int] = []  # the batch size of every forward pass

    def forward(self, x: torch.Tensor, t: torch.Tensor, **kwargs: torch.Tensor) -> SimpleNamespace:
        self.batches.append(x.shape[0])
        t = t.reshape(-1).expand(x.shape[0]) if t.numel() == 1 else t
        out = x * self.scale + t.to(x.dtype).view(-1, *[1] * (x.ndim - 1)) * 1e-3
        if "encoder_hidden_states" in kwargs:
            out = out + kwargs["encoder_hidden_states"].mean(dim=(1, 2)).view(-1, *[1] * (x.ndim - 1))
        if self.skew:
            out = out + x.shape[0] * 1e-3
        return SimpleNamespace(sample=out)


def toy_steps(unet: torch.nn.Module, seed: int, rows: int, steps: int, gate: ComputeGate | None = None,
              states: bool = False):
    """A request: ``steps`` steps, each one UNet call through :func:`unet_forward` in inference mode; yields the
    sample after each step."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 1, 4, 4, generator=generator)
    context = torch.randn(rows, 3, 2, generator=generator) if states else None

    def run():
        nonlocal x
        for i in range(steps):
            with torch.inference_mode():
                extra = {"encoder_hidden_states": context} if states else {}
                x = x - 0.1 * unet_forward(unet, x, torch.tensor(steps - i), None, **extra)
                x = x + 0.01 * torch.randn(x.shape, generator=generator)  # the request's own draws
            yield x.clone()

    return gate.steps(run()) if gate is not None else run()


def alone(unet, seed, rows, steps, states=False) -> torch.Tensor:
    *_, last = toy_steps(unet, seed, rows, steps, states=states)
    return last


def test_compatible_requests_share_one_unet_batch_and_get_their_own_bytes() -> None:
    unet = RowWise()
    sizes = {"a": 1, "b": 3, "c": 2, "d": 4}
    expected = {name: alone(unet, seed, rows, 6, states=True) for seed, (name, rows) in enumerate(sizes.items())}
    gate = ComputeGate(1)
    scheduler = BatchingScheduler("test-batch")
    unet.batches.clear()
    items, _ = run_jobs(scheduler, {name: toy_steps(unet, seed, rows, 6, gate, states=True)
                                    for seed, (name, rows) in enumerate(sizes.items())})
    for name in sizes:
        assert torch.equal(items[name][-1], expected[name]), name
    assert scheduler.verdicts.merged_calls > 0  # most steps ran merged ...
    assert max(unet.batches) == sum(sizes.values())  # ... all four requests in one batch of 10 rows
    assert gate.peak == 1  # one pass at a time: a parked step lets go of the gate, the UNet takes it


def test_a_combination_that_changes_the_bytes_is_never_merged() -> None:
    unet = RowWise(skew=True)  # batched output differs from each request's own
    expected = {name: alone(unet, seed, 2, 5) for seed, name in enumerate("abc")}
    scheduler = BatchingScheduler("test-skew")
    items, _ = run_jobs(scheduler, {name: toy_steps(unet, seed, 2, 5) for seed, name in enumerate("abc")})
    for name in "abc":
        assert torch.equal(items[name][-1], expected[name]), name
    assert scheduler.verdicts.merged_calls == 0 and scheduler.verdicts.verified >= 1
    assert not any(v for v in scheduler.verdicts._verdicts.values())


def test_verdicts_are_learnt_once_per_combination() -> None:
    unet = RowWise()
    verdicts = MergeVerdicts(verifications=1)
    calls = [UNetCall(unet, torch.ones(2, 1, 4, 4), torch.tensor(5), None),
             UNetCall(unet, torch.zeros(3, 1, 4, 4), torch.tensor(7), None)]
    unet.batches.clear()
    first = verdicts.run(calls)
    assert unet.batches == [2, 3, 5] and verdicts.verified == 1  # alone, alone, merged: compared
    second = verdicts.run(calls)
    assert unet.batches[3:] == [5] and verdicts.merged_calls == 2  # known identical: one pass
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    # by default a combination is verified on several inputs before it is merged (bf16 rounding can hide a
    # difference for one input): three runs both ways, then one pass
    cautious = MergeVerdicts()
    unet.batches.clear()
    for _ in range(4):
        cautious.run(calls)
    assert unet.batches == [2, 3, 5] * 3 + [5] and cautious.verified == 3 and cautious.merged_calls == 2
    # another signature (other sample shape) never shares a batch
    other = UNetCall(unet, torch.zeros(1, 1, 8, 8), torch.tensor(3), None)
    assert [len(g) for g in verdicts.plan([*calls, other])] in ([2, 1], [1, 2])


def test_real_models_through_the_batching_scheduler_are_bit_identical(studio) -> None:
    """The tiny DDPM and tiny text model: several compatible requests, each identical to running alone whether
    this machine's verdicts merge them or not."""
    requests = {
        "a": ("local/tiny-ddpm", SampleRequest("ddim", 8, n=2, seed=1)),
        "b": ("local/tiny-ddpm", SampleRequest("ddim", 8, n=2, seed=2)),
        "c": ("local/tiny-ddpm", SampleRequest("ddim", 8, n=4, seed=3)),
        "t1": ("local/tiny-sd", SampleRequest("ddim", 5, n=2, seed=4, prompt="a red circle", guidance_scale=3.0)),
        "t2": ("local/tiny-sd", SampleRequest("ddim", 5, n=2, seed=5, prompt="a blue square", guidance_scale=3.0)),
    }
    expected = {name: studio.sample(model_id, request) for name, (model_id, request) in requests.items()}
    scheduler = BatchingScheduler("test-real")
    items, _ = run_jobs(scheduler, {name: studio.generate(model_id, request, previews=2)
                                    for name, (model_id, request) in requests.items()})
    for name in requests:
        np.testing.assert_array_equal(items[name][-1].images, expected[name])
    assert scheduler.verdicts.verified >= 1
    print(f"tiny models: {scheduler.verdicts.merged_calls} calls merged, {scheduler.verdicts.verified} "
          f"combinations verified, {scheduler.rounds} rounds")


def test_a_short_request_behind_long_ones_finishes_first_and_a_cancelled_one_stops() -> None:
    unet = RowWise()
    scheduler = BatchingScheduler("test-fair")
    items, finished = run_jobs(scheduler, {"long1": toy_steps(unet, 1, 2, 300), "long2": toy_steps(unet, 2, 2, 300),
                                           "short": toy_steps(unet, 3, 1, 3)})
    assert finished[0] == "short"
    closed = threading.Event()
    seen: list[int] = []

    def endless():
        try:
            yield from toy_steps(unet, 4, 1, 10**6)
        finally:
            closed.set()

    job = scheduler.submit(StepJob(endless(), lambda item: seen.append(1), lambda error: None, "endless"))
    deadline = time.monotonic() + 10
    while len(seen) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    job.cancel()
    assert closed.wait(10)
    count = len(seen)
    time.sleep(0.2)
    assert len(seen) == count and scheduler.active == 0


def test_a_failing_unet_call_fails_its_request_only() -> None:
    class Broken(RowWise):
        def forward(self, x, t, **kwargs):
            if x.shape[0] == 3:
                raise RuntimeError("boom")
            return super().forward(x, t, **kwargs)

    unet = Broken()
    scheduler = BatchingScheduler("test-error")
    errors: dict[str, BaseException | None] = {}
    done = threading.Event()

    def finish(name):
        def f(error):
            errors[name] = error
            if len(errors) == 2:
                done.set()
        return f

    scheduler.submit(StepJob(toy_steps(unet, 1, 3, 4), lambda item: None, finish("bad"), "bad"))
    scheduler.submit(StepJob(toy_steps(unet, 2, 2, 4), lambda item: None, finish("good"), "good"))
    assert done.wait(20)
    assert isinstance(errors["bad"], RuntimeError) and errors["good"] is None
    # in one group, whatever the rounds were: each call gets its own outcome
    outcomes = MergeVerdicts().run([UNetCall(unet, torch.zeros(3, 1, 4, 4), torch.tensor(1), None),
                                    UNetCall(unet, torch.zeros(2, 1, 4, 4), torch.tensor(1), None)])
    assert isinstance(outcomes[0], RuntimeError) and isinstance(outcomes[1], torch.Tensor)


def test_outside_the_scheduler_unet_forward_keeps_autograd() -> None:
    """Attend-and-Excite differentiates through the UNet: the call runs at once in the caller's mode."""
    unet = RowWise()
    x = torch.ones(2, 1, 4, 4, requires_grad=True)
    out = unet_forward(unet, x, torch.tensor(3))
    out.sum().backward()
    assert x.grad is not None and torch.all(x.grad == 0.5)


@pytest.mark.parametrize("rows", [64])
def test_plan_caps_rows(rows: int) -> None:
    unet = RowWise()
    calls = [UNetCall(unet, torch.zeros(20, 1, 4, 4), torch.tensor(1), None) for _ in range(4)]
    groups = MergeVerdicts().plan(calls, max_rows=rows)
    assert all(sum(c.rows for c in g) <= rows for g in groups) and sum(len(g) for g in groups) == 4


def test_the_app_flag_chooses_how_requests_share_the_model(tiny_ddpm_dir) -> None:
    from app import parse_args
    from diffusion.batching import make_step_scheduler
    from diffusion.registry import Registry
    from diffusion.runtime import FirstComeScheduler
    from diffusion.studio import Studio

    assert parse_args([]).scheduling == "fair" and parse_args(["--scheduling", "batching"]).scheduling == "batching"
    with pytest.raises(SystemExit):
        parse_args(["--scheduling", "random"])
    registry = Registry.default([tiny_ddpm_dir])
    assert isinstance(Studio(registry, device="cpu", cache_bytes=0, scheduling="batching").step_runner,
                      BatchingScheduler)
    assert isinstance(Studio(registry, device="cpu", cache_bytes=0, scheduling="first-come").step_runner,
                      FirstComeScheduler)
    assert Studio(registry, device="cpu", cache_bytes=0).step_runner is None  # the UI's own fair scheduler
    with pytest.raises(ValueError, match="scheduling must be one of"):
        make_step_scheduler("random")


def test_first_come_runs_whole_requests_in_arrival_order() -> None:
    """The benchmark's baseline: a short request behind a long one waits for it (the fair scheduler's opposite)."""
    from diffusion.runtime import FirstComeScheduler

    unet = RowWise()
    _, finished = run_jobs(FirstComeScheduler("test-fcfs"), {"long": toy_steps(unet, 1, 2, 50),
                                                            "short": toy_steps(unet, 2, 1, 2)})
    assert finished == ["long", "short"]
