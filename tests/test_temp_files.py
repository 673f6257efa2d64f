"""Temporary files do not pile up: one root, swept, removed at exit."""

from __future__ import annotations


import glob
import tempfile
import time
from pathlib import Path

import pytest
from gradio_client.exceptions import AppError

from diffusion.export import ExportDir

def classroom_dirs() -> set[str]:
    return set(glob.glob(str(Path(tempfile.gettempdir()) / "diffusion-classroom-*")))


def test_exports_without_a_run_create_nothing(served) -> None:
    _, client, _ = served
    before = classroom_dirs()
    for _ in range(20):
        with pytest.raises(AppError, match="Run the reverse process first"):
            client.predict(api_name="/lab_recipe")
    assert classroom_dirs() == before


def test_exports_share_one_root_that_is_swept_and_removed(tmp_path: Path) -> None:
    exports = ExportDir(max_age_s=60, interval_s=3600, prefix=str(tmp_path / "exp-"))
    assert exports.root is None
    paths = [exports.path("recipe.json") for _ in range(3)]
    for p in paths:
        p.write_text("{}")
    root = exports.root
    assert root is not None and all(p.parent.parent == root for p in paths) and len(set(paths)) == 3
    assert exports.sweep(now=time.time() + 30) == 0
    assert exports.sweep(now=time.time() + 120) == 3 and not any(p.exists() for p in paths)
    with pytest.raises(ValueError, match="plain file name"):
        exports.path("../escape.json")
    exports.remove()
    assert not root.exists()


def test_the_app_cleans_gradio_cache(served) -> None:
    app, _, _ = served
    assert app.delete_cache is not None and app.delete_cache[1] <= 24 * 3600
