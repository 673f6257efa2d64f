"""Import direction and safe-loading rules, checked on the source."""

from __future__ import annotations

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


def test_diffusion_never_imports_gradio() -> None:
    for path in (ROOT / "diffusion").rglob("*.py"):
        assert "gradio" not in imported_modules(path), path
    code = "import sys, diffusion.service, diffusion.sample; print('gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


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
