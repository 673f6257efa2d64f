"""The seam to model work done elsewhere (diffusion.remote), without Ray: a Studio whose backend is a second
Studio, every message pickled across, gives the local pictures; only marked methods cross."""

from __future__ import annotations

import inspect
import pickle
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from diffusion.remote import Call, StreamCodec, resolve
from diffusion.request import SampleRequest


class PickledBackend:
    """A backend in this process: each call runs on ``replica`` (a Studio of its own), and every message crosses as
    pickled bytes, as over a network; ``calls`` records what was sent."""

    def __init__(self, replica: Any):
        self.replica = replica
        self.calls: list[Call] = []

    def _send(self, value: Any) -> Any:
        return pickle.loads(pickle.dumps(value))

    def call(self, call: Call) -> Any:
        self.calls.append(self._send(call))
        return self._send(resolve(self.replica, call)(call.model_id, *call.args, **call.kwargs))

    def stream(self, call: Call) -> Iterator[Any]:
        self.calls.append(self._send(call))
        encoder, decoder = StreamCodec(), StreamCodec()
        for item in resolve(self.replica, call)(call.model_id, *call.args, **call.kwargs):
            yield decoder.decode(self._send(encoder.encode(item)))


@pytest.fixture(scope="module")
def front(tiny_ddpm_dir, tiny_sd_dir, tiny_autoencoders_dir):
    from diffusion.registry import Registry
    from diffusion.studio import Studio

    def make(**kwargs):
        return Studio(Registry.default([tiny_ddpm_dir, tiny_sd_dir]), device="cpu", precision="fp32", cache_bytes=0,
                      autoencoders=tiny_autoencoders_dir, **kwargs)

    backend = PickledBackend(make())
    return make(backend=backend), backend


def test_marked_methods_run_on_the_backend_and_equal_the_local_ones(front, studio) -> None:
    remote, backend = front
    request = SampleRequest("ddim", 4, 1, 7, prompt="a red circle", guidance_scale=3.0)
    *_, (_, _, there) = remote.trajectory("local/tiny-sd", request)
    *_, (_, _, here) = studio.trajectory("local/tiny-sd", request)
    assert [c.method for c in backend.calls] == ["trajectory"] and remote.store.loaded() == []  # nothing loaded here
    assert len(there.steps) == len(here.steps) == 4 and there.tokens == here.tokens
    for a, b in zip(there.steps, here.steps, strict=True):
        assert a.alpha_prod_t_prev == b.alpha_prod_t_prev
        np.testing.assert_array_equal(a.pred_x0, b.pred_x0)
    np.testing.assert_array_equal(there.final, here.final)
    lanes = (("ddim", 3), ("ddpm", 5))
    *_, far = remote.race("local/tiny-ddpm", SampleRequest(seed=3), lanes)
    *_, near = studio.race("local/tiny-ddpm", SampleRequest(seed=3), lanes)
    for a, b in zip(far, near, strict=True):
        assert a.alpha_prod == b.alpha_prod and len(a.pred_x0) == a.steps
        np.testing.assert_array_equal(a.final, b.final)
    np.testing.assert_array_equal(remote.sample("local/tiny-ddpm", SampleRequest("ddpm", 5, 2, 9)),
                                  studio.sample("local/tiny-ddpm", SampleRequest("ddpm", 5, 2, 9)))
    *_, (_, _, fig6) = remote.lessons.progressive("local/tiny-ddpm", SampleRequest("ddpm", 6, 2, 1), points=3)
    *_, (_, _, local6) = studio.lessons.progressive("local/tiny-ddpm", SampleRequest("ddpm", 6, 2, 1), points=3)
    np.testing.assert_array_equal(fig6.pred_x0, local6.pred_x0)
    assert remote.schedule("local/tiny-ddpm").alphas_cumprod.tolist() == studio.schedule("local/tiny-ddpm").alphas_cumprod.tolist()
    assert [c.method for c in backend.calls][-4:] == ["race", "generate", "lessons.progressive", "schedule"]


def test_a_bad_request_keeps_its_message_and_only_marked_methods_cross(front) -> None:
    remote, backend = front
    with pytest.raises(ValueError, match="Steps must be a whole number"):
        list(remote.generate("local/tiny-ddpm", SampleRequest("ddim", 0, 1, 0)))
    for name in ("prepare", "load", "_generate", "lessons._shared_latent", "store.get", "lessons.nearest_copies"):
        with pytest.raises(ValueError, match="not a model-work method"):
            resolve(backend.replica, Call(name, "local/tiny-ddpm"))


def test_the_studio_marks_every_public_method_that_loads_a_model() -> None:
    """A public method of the Studio (or of its lessons' views) that loads a model or prepares a run is model work,
    and marked: otherwise a Studio with a backend would run it, and load its model, in the app's process. The
    few that must stay (the checks themselves, recipes read against the served models) are named here."""
    from diffusion.lessons import LessonViews
    from diffusion.studio import Studio

    stays = {"load", "prepare", "read_recipe", "read_link", "sample", "check_budget", "run_steps"}
    for cls in (Studio, LessonViews):
        for name, method in inspect.getmembers(cls, inspect.isfunction):
            if name.startswith("_") or name in stays:
                continue
            source = inspect.getsource(inspect.unwrap(method))
            loads = any(f"{owner}.{call}(" in source for owner in ("self", "self.studio")
                        for call in ("load", "prepare", "run_steps"))
            marked = getattr(method, "model_work", None) is not None
            assert marked or not loads, f"{cls.__name__}.{name} loads a model but is not marked @model_work"
