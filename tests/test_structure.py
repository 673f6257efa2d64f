"""Import direction and safe-loading rules, checked on the source."""

from __future__ import annotations

import pytest

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.slow
def test_diffusion_never_imports_gradio() -> None:
    for path in (ROOT / "diffusion").rglob("*.py"):
        assert "gradio" not in imported_modules(path), path
    code = "import sys, diffusion.studio, diffusion.sample; print('gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def diffusion_imports(path: Path) -> set[str]:
    """The ``diffusion`` modules a file imports (absolute imports, at any depth)."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.split(".")[0] == "diffusion"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "diffusion":
            names.add(node.module)
    return names


def test_the_ui_goes_through_one_door() -> None:
    """``demo/`` imports the Studio's module and nothing else from ``diffusion``. The door is checked both ways:
    every name it takes from there is in the Studio's ``__all__`` (the Studio and plain values), and every name
    in ``__all__`` is used by ``demo/`` (or ``app.py``): nothing is exported for nobody."""
    from diffusion import studio

    used: set[str] = set()
    for path in [*(ROOT / "demo").rglob("*.py"), ROOT / "app.py"]:
        assert diffusion_imports(path) <= {"diffusion.studio"}, (path, diffusion_imports(path))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "diffusion.studio":
                names = {a.name for a in node.names}
                assert names <= set(studio.__all__), (path, names - set(studio.__all__))
                used |= names
    assert len(studio.__all__) == len(set(studio.__all__))
    assert set(studio.__all__) <= used, sorted(set(studio.__all__) - used)


def test_one_step_lab_run_builds_its_scheduler_once(studio, monkeypatch) -> None:
    """Counted by the scheduler classes' constructors: the run's scheduler is built once and serves the loop,
    the step terms (a copy is replayed), the schedule curves and the recipe."""
    from diffusers.configuration_utils import ConfigMixin

    from diffusion.request import SampleRequest
    from diffusion.schedulers import SAMPLERS

    built: list[str] = []
    original = ConfigMixin.from_config.__func__

    def counting(cls, *args, **kwargs):
        built.append(cls.__name__)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(ConfigMixin, "from_config", classmethod(counting))
    for model_id, request in (("local/tiny-ddpm", SampleRequest("dpmpp-2m", 3, seed=1)),
                              ("local/tiny-sd", SampleRequest("ddim", 2, prompt="a red circle", guidance_scale=3.0))):
        studio.load(model_id)  # loading builds the pipeline's own scheduler: not part of a run
        built.clear()
        *_, (_, _, traj) = studio.trajectory(model_id, request)
        assert len(traj.terms) == len(traj.steps) and traj.recipe is not None and traj.curves is not None
        assert built == [SAMPLERS[request.sampler].scheduler_cls.__name__], built


def test_demo_never_imports_torch() -> None:
    for path in (ROOT / "demo").rglob("*.py"):
        assert not imported_modules(path) & {"torch", "diffusers", "transformers"}, path
    assert not imported_modules(ROOT / "app.py") & {"torch", "diffusers", "transformers"}


def test_every_from_pretrained_uses_safetensors_and_no_remote_code() -> None:
    for path in [*ROOT.glob("diffusion/**/*.py"), *ROOT.glob("demo/**/*.py"), ROOT / "app.py"]:
        text = path.read_text()
        assert "trust_remote_code=True" not in text, path
        assert "custom_pipeline" not in text, path
        for line in text.splitlines():
            if ".from_pretrained(" in line and not line.lstrip().startswith(("#", '"', "'")):
                assert "use_safetensors=True" in line, f"{path}: {line.strip()}"


@pytest.mark.slow
def test_ray_is_optional_and_imported_only_by_its_backend() -> None:
    """Only diffusion/ray_backend.py imports Ray, and app.py imports that module only for --backend ray."""
    for path in [*(ROOT / "diffusion").rglob("*.py"), *(ROOT / "demo").rglob("*.py"), ROOT / "app.py"]:
        if path.name != "ray_backend.py":
            assert not {m for m in imported_modules(path) if m == "ray" or m.startswith("ray.")}, path
    code = "import sys, app, diffusion.studio, demo.app; print(any(m == 'ray' or m.startswith('ray.') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stderr[-2000:]
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.lower().startswith("ray")]
    assert "ray" not in (ROOT / "requirements.txt").read_text().lower()
    assert project["optional-dependencies"]["scale"] == ["ray[serve]==2.60.0"]
    assert "-e .[scale]" in (ROOT / "requirements-scale.txt").read_text()


SERVING = {"diffusion.runners", "diffusion.gate", "diffusion.threads", "diffusion.cache", "diffusion.budget",
           "diffusion.remote", "diffusion.ray_backend", "diffusion.studio"}


def test_the_model_layer_imports_no_serving_code() -> None:
    """The loop, the pipeline, the step lab's views, the playground and the planner know nothing of how requests
    are served: they take the compute gate as a parameter (``diffusion.loop.StepGate``) and import no serving
    module. Every serving module named here exists (a renamed one would make the check pass by default)."""
    for name in SERVING:
        assert (ROOT / (name.replace(".", "/") + ".py")).is_file(), name
    diffusion = ROOT / "diffusion"
    core = [diffusion / "loop.py", diffusion / "pipeline.py",
            *[path for package in ("lab", "playground", "planner") for path in (diffusion / package).rglob("*.py")]]
    assert len(core) > 20
    for path in core:
        assert not diffusion_imports(path) & SERVING, (path.name, diffusion_imports(path) & SERVING)


def test_no_module_global_runner_in_the_ui() -> None:
    """The Studio owns its runner (given once, when it is built); the UI passes ``studio.runner`` explicitly and keeps
    no runner of its own in a module global."""
    for path in (ROOT / "demo").rglob("*.py"):
        text = path.read_text()
        assert not any(isinstance(node, ast.Global) for node in ast.walk(ast.parse(text))), path
        assert "FairRunner(" not in text and "ThreadRunner(" not in text, path


def test_at_most_one_thread_local_in_the_model_module() -> None:
    """Control flow that no signature shows: at most one ``threading.local()`` in ``diffusion/``, documented
    where it is defined (a comment on its line)."""
    found = [(path, line) for path in (ROOT / "diffusion").rglob("*.py")
             for line in path.read_text().splitlines() if "threading.local()" in line]
    assert len(found) <= 1, found
    assert all("#" in line for _, line in found), found


def test_no_module_over_400_lines_outside_training() -> None:
    """One job per file: no module of the app, the model module or the tests is over 400 lines, except the training
    scripts (``diffusion/training/``, which follow diffusers' ``examples/*/train_*.py``: one script per model)."""
    paths = [ROOT / "app.py", *(ROOT / "demo").rglob("*.py"), *(ROOT / "diffusion").rglob("*.py"),
             *(ROOT / "tests").rglob("*.py")]
    assert len(paths) > 100
    long = {str(path.relative_to(ROOT)): n for path in paths
            if "training" not in path.relative_to(ROOT).parts
            and (n := len(path.read_text().splitlines())) > 400}
    assert not long, long
