"""Recipes and the CLI never crash: a strict schema, one-line errors, exit code 2."""

from __future__ import annotations


import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diffusion.recipe import Recipe, make_recipe
from diffusion.request import SampleRequest
from diffusion.sample import main, parse_args

def recipe_text(**request) -> str:
    return json.dumps({"format": "diffusion-classroom/recipe@1", "model": "local/tiny-ddpm",
                       "request": {"sampler": "ddim", "steps": 2, "n": 1, **request}})


@pytest.mark.parametrize("text, message", [
    (recipe_text(steps="50"), "request.steps must be a whole number"),
    (recipe_text(n="4"), "request.n must be a whole number"),
    (recipe_text(eta="0"), "request.eta must be a number"),
    (recipe_text(n=1.5), "request.n must be a whole number"),
    (recipe_text(steps=2.5), "request.steps must be a whole number"),
    (recipe_text(steps=True), "request.steps must be a whole number"),
    (recipe_text(prompt=123), "request.prompt must be a string"),
    (recipe_text(sampler=["ddim"]), "request.sampler must be a string"),
    (recipe_text(sampler="bogus"), "unknown sampler"),
    (recipe_text(steps=0), "Steps must be a whole number between 1 and 1000"),
    (recipe_text(seed=2**40), "Seed must be a whole number between 0 and 4294967295"),
    (recipe_text(colour="red"), "request has unknown keys: 'colour'"),
    (recipe_text().replace('"n": 1', '"n": 1, "seed": Infinity'), "request.seed must be a whole number, got Infinity"),
    (recipe_text().replace('"n": 1', '"n": 1, "eta": NaN'), "eta must be a number between 0 and 1, got nan"),
    (recipe_text().replace('"n": 1', '"n": 1, "guidance_scale": -Infinity'), "Guidance scale must be a number between"),
    ("[1, 2]", "must be a JSON object, got list"),
    ('"recipe"', "must be a JSON object, got str"),
    ("{", "not valid JSON"),
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
    (json.dumps({"format": "diffusion-classroom/recipe@1", "model": "m", "request": {}, "extra": 1}),
     "unknown keys: 'extra'"),
    (json.dumps({"format": "other", "model": "m", "request": {}}), "not a Diffusion Classroom recipe"),
    (json.dumps({"format": "diffusion-classroom/recipe@1", "model": "m", "request": {},
                 "scheduler_config": {"x": {"y": 1}}}), "plain JSON value"),
])
def test_recipe_schema_refuses_each_bad_value_with_one_line(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        Recipe.from_json(text)
    assert "\n" not in str(info.value)


def test_recipe_round_trips_and_its_scheduler_config_is_checked(studio) -> None:
    model = studio.load("local/tiny-ddpm")
    request = SampleRequest(sampler="dpmpp-2m", steps=3, n=2, seed=5, eta=0.0)
    recipe = make_recipe("local/tiny-ddpm", request, model.scheduler_config, "fp32")
    again = Recipe.from_json(recipe.to_json())
    assert again == recipe
    again.check_scheduler_config(model.scheduler_config)
    data = json.loads(recipe.to_json())
    data["scheduler_config"]["beta_end"] = 0.5
    with pytest.raises(ValueError, match="scheduler config does not match.*beta_end"):
        Recipe.from_json(json.dumps(data)).check_scheduler_config(model.scheduler_config)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=15), inner, max_size=5),
    max_leaves=30,
)
request_like = st.fixed_dictionaries({}, optional={
    "sampler": st.sampled_from(["ddim", "ddpm", "euler", "x"]) | json_values,
    "steps": st.integers(-5, 2000) | json_values, "n": st.integers(-2, 100) | json_values,
    "seed": st.integers(-1, 2**33) | json_values, "eta": st.floats(-1, 2) | json_values,
    "prompt": json_values, "guidance_scale": json_values})


@settings(max_examples=300, deadline=None)
@given(data=json_values | st.fixed_dictionaries(
    {"format": st.just("diffusion-classroom/recipe@1") | json_values, "model": st.text(max_size=10) | json_values,
     "request": request_like | json_values},
    optional={"precision": st.sampled_from(["fp32", "bf16", "fp8"]) | json_values,
              "scheduler_config": json_values, "versions": json_values, "other": json_values}))
@pytest.mark.slow
def test_recipe_loader_only_ever_raises_value_error(data) -> None:
    try:
        recipe = Recipe.from_json(json.dumps(data))
    except ValueError as error:
        assert str(error) and "\n" not in str(error)
        return
    assert isinstance(recipe.request, SampleRequest) and 1 <= recipe.request.steps <= 1000


@pytest.mark.parametrize("text", [
    recipe_text(steps="50"), "[1]", recipe_text(steps=2.5), "[" * 100000 + "]" * 100000,
    recipe_text().replace('"n": 1', '"n": 1, "seed": Infinity'),
])
def test_cli_recipe_errors_are_one_line_and_exit_2(tmp_path: Path, tiny_ddpm_dir: Path, capsys, text) -> None:
    path = tmp_path / "recipe.json"
    path.write_text(text)
    code = main(parse_args(["--model-dir", str(tiny_ddpm_dir), "--recipe", str(path), "--out",
                            str(tmp_path / "x.png")]))
    assert code == 2 and not (tmp_path / "x.png").exists()
    assert "Traceback" not in capsys.readouterr().err


def test_cli_model_dir_problems_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model_index.json").write_text("[]")
    assert main(parse_args(["--list", "--model-dir", "/etc"])) == 2
    assert main(parse_args(["--list", "--model-dir", str(bad)])) == 2
    (bad / "model_index.json").write_text("{not json")
    assert main(parse_args(["--list", "--model-dir", str(bad)])) == 2


@pytest.mark.slow
def test_app_model_dir_problems_are_one_line(tmp_path: Path) -> None:

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model_index.json").write_text("[]")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "app.py", "--model-dir", str(bad)], cwd=root, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "--model-dir" in out.stderr and "must hold a JSON object" in out.stderr


def test_a_shared_run_link_round_trips_and_refuses_damage() -> None:
    """``?run=``: the recipe without its scheduler config and versions, zlib-compressed, URL-safe base64; a few
    hundred characters. Every damaged or hostile parameter is one ValueError, an inflation bomb refused while
    inflating."""
    import base64
    import zlib

    from diffusion.recipe import MAX_LINK_JSON, Recipe, make_recipe
    from diffusion.request import SampleRequest

    request = SampleRequest(sampler="ddpm", steps=50, n=1, seed=7, prompt="a red circle left of a blue square")
    recipe = make_recipe("ddpm-mnist", request, {"num_train_timesteps": 1000}, weights="362764fa0e93")
    token = recipe.to_link()
    assert len(token) < 400 and set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    back = Recipe.from_link(token)
    assert (back.model, back.request, back.weights, back.precision) == ("ddpm-mnist", request, "362764fa0e93", "fp32")
    bomb = base64.urlsafe_b64encode(zlib.compress(b"{" + b" " * (50 * MAX_LINK_JSON) + b"}", 9)).rstrip(b"=").decode()
    hostile = {"": "1 to", "x" * 5000: "1 to", "abc$def": "URL-safe", token[:-8]: "damaged", bomb: "at most",
               base64.urlsafe_b64encode(zlib.compress(b'{"format": "x"}')).decode().rstrip("="): "not a Diffusion",
               base64.urlsafe_b64encode(zlib.compress(recipe.to_link().encode())).decode().rstrip("="): "not valid JSON"}
    for bad, message in hostile.items():
        with pytest.raises(ValueError, match=message):
            Recipe.from_link(bad)
    tampered = Recipe(recipe.model, SampleRequest(sampler="ddpm", steps=10**6, n=1, seed=7), weights="ab")
    with pytest.raises(ValueError, match="Steps must be a whole number"):
        Recipe.from_link(tampered.to_link())


def test_the_studio_opens_a_shared_run_from_a_pasted_link_or_its_parameter(studio) -> None:
    """A student pastes the whole link (any address in front, other parameters beside) or the parameter alone: the
    same checked recipe; a link without a run, or one too long to be a link, is a readable ValueError."""
    model = studio.load("local/tiny-ddpm")
    request = SampleRequest(sampler="ddim", steps=3, n=1, seed=5)
    token = make_recipe("local/tiny-ddpm", request, model.scheduler_config, weights=model.weights).to_link()
    for pasted in (token, f"http://127.0.0.1:7860/?run={token}", f"  https://x.hf.space/?presenter=1&run={token}#x "):
        recipe, notes = studio.read_link(pasted)
        assert (recipe.model, recipe.request, notes) == ("local/tiny-ddpm", request, [])
    for bad, message in (("http://127.0.0.1:7860/?lesson=3", "no shared run in it"),
                         ("https://x/?run=" + "A" * 9000, "a shared link is at most"),
                         (f"http://x/?run={token[:-6]}", "damaged")):
        with pytest.raises(ValueError, match=message):
            studio.read_link(bad)
