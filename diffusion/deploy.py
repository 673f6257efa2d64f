"""Deploy the app as a Hugging Face Space, from this folder, independent of its git history.

    diffusion-classroom-deploy --dry-run                 # offline: what would be uploaded, the card checked
    diffusion-classroom-deploy --space USER/NAME         # create the Space if needed and upload
    diffusion-classroom-deploy --write-requirements      # requirements.txt from pyproject.toml's pins

The upload is one ``huggingface_hub`` ``upload_folder`` call on this folder: ``allow_patterns`` name what a
Space runs (``app.py``, the card ``README.md``, ``requirements.txt``, ``.gitattributes``, the ``demo/`` and
``diffusion/`` packages and ``assets/``), ``ignore_patterns`` leave out the training scripts, the benchmark and
the README's screenshots, and ``delete_patterns`` remove from the Space what is no longer uploaded. The
Space's ``requirements.txt`` is written from ``pyproject.toml`` (the one list of pins) with PyTorch's CPU
index first, so the Space installs the CPU-only torch. The token comes from ``hf auth login`` or
``HF_TOKEN``. Every failure, a missing network included, is one line and exit code 2.
"""

from __future__ import annotations

import argparse
import fnmatch
import logging
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
#: What a Space runs (``upload_folder``'s allow_patterns; a folder pattern takes everything under it).
SPACE_ALLOW = ("app.py", "README.md", "requirements.txt", ".gitattributes", "demo/*", "diffusion/*", "assets/*")
#: What it does not: caches, the training scripts, the benchmark, the README's pictures.
SPACE_IGNORE = ("*/__pycache__/*", "*.pyc", "*.pyi", "diffusion/training/*", "diffusion/bench.py",
                "assets/screenshot-*.png")
#: On the Space, every file that this upload does not bring is deleted (files removed here go there too).
SPACE_DELETE = ("*",)
#: Stored with Git LFS on the Hub (and in ``.gitattributes`` here).
LFS_PATTERNS = ("*.safetensors", "*.png", "*.jpg", "*.gif", "*.mp4")
HUB_FILE_LIMIT = 10 * 1024 * 1024  # the Hub refuses larger files outside LFS
SHORT_DESCRIPTION_LIMIT = 60
SUGGESTED_HARDWARE = "cpu-basic"
# pip reads options in a requirements file: with this index as well, ``torch==2.13.0`` resolves to the
# CPU-only wheel ``2.13.0+cpu`` (a local version sorts above the public one) instead of PyPI's Linux
# wheel, which is the CUDA build and pulls several GB of nvidia-* runtime wheels
CPU_TORCH_INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"


class DeployError(ValueError):
    """A deploy problem, said in one line."""


@dataclass(frozen=True)
class SpaceFile:
    path: str  # relative, with forward slashes
    size: int

    @property
    def lfs(self) -> bool:
        return matches_lfs(self.path, LFS_PATTERNS)


def matches_lfs(path: str, patterns: tuple[str, ...]) -> bool:
    """Whether ``path`` matches a ``.gitattributes`` pattern (a pattern without ``/`` matches the name)."""
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(path if "/" in p else name, p) for p in patterns)


def lfs_patterns(text: str) -> tuple[str, ...]:
    """The patterns a ``.gitattributes`` text stores with LFS."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) > 1 and not fields[0].startswith("#") and "filter=lfs" in fields[1:]:
            out.append(fields[0])
    return tuple(out)


def space_files(root: Path = ROOT) -> list[SpaceFile]:
    """The files ``upload_folder`` takes from ``root`` with :data:`SPACE_ALLOW` and :data:`SPACE_IGNORE`
    (huggingface_hub's own filter), sorted, with their sizes."""
    from huggingface_hub.utils import filter_repo_objects

    for entry in (pattern.removesuffix("/*") for pattern in SPACE_ALLOW):
        if not (root / entry).exists():
            raise DeployError(f"{entry} is missing from {root}")
    every = (p.relative_to(root).as_posix() for p in root.rglob("*")
             if p.is_file() and ".git" not in p.relative_to(root).parts[:1])
    chosen = filter_repo_objects(every, allow_patterns=list(SPACE_ALLOW), ignore_patterns=list(SPACE_IGNORE))
    return sorted((SpaceFile(path, (root / path).stat().st_size) for path in chosen), key=lambda f: f.path)


def hub_models() -> list[str]:
    """The Hub repositories the app's registry offers (the Space card's ``models``)."""
    from diffusion.registry import Registry

    return sorted(card.source for card in Registry.default().cards.values() if not card.local)


def check_card(readme: Path) -> dict:
    """Validate the Space card with huggingface_hub's own classes; returns its metadata."""
    from huggingface_hub import SpaceCard, SpaceCardData

    card = SpaceCard.load(readme)
    data = card.data
    if not isinstance(data, SpaceCardData):
        raise DeployError(f"{readme.name}: the front matter is not a Space card")
    meta = data.to_dict()
    for key in ("title", "sdk", "sdk_version", "python_version", "app_file", "short_description", "models",
                "suggested_hardware"):
        if not meta.get(key):
            raise DeployError(f"{readme.name}: the Space card needs {key!r}")
    if len(meta["short_description"]) > SHORT_DESCRIPTION_LIMIT:
        raise DeployError(f"{readme.name}: short_description is {len(meta['short_description'])} characters; "
                          f"the Hub allows {SHORT_DESCRIPTION_LIMIT}")
    offered = hub_models()
    if sorted(meta["models"]) != offered:
        raise DeployError(f"{readme.name}: models must list the registry's Hub models {offered}, "
                          f"got {sorted(meta['models'])}")
    preload = [line.split()[0] for line in meta.get("preload_from_hub") or []]
    if not set(preload) <= set(meta["models"]):
        raise DeployError(f"{readme.name}: preload_from_hub names models the card does not list: {preload}")
    if meta["suggested_hardware"] != SUGGESTED_HARDWARE:
        raise DeployError(f"{readme.name}: suggested_hardware must be {SUGGESTED_HARDWARE} (the app targets a CPU)")
    return meta


def check_lfs(files: list[SpaceFile], patterns: tuple[str, ...] = LFS_PATTERNS) -> None:
    """Every file over the Hub's 10 MB limit must be stored with LFS."""
    big = [f.path for f in files if f.size > HUB_FILE_LIMIT and not matches_lfs(f.path, patterns)]
    if big:
        raise DeployError(f"files over 10 MB outside Git LFS (add a pattern to .gitattributes): {', '.join(big)}")


def space_requirements(root: Path = ROOT) -> str:
    """``requirements.txt`` for the Space (and for ``pip install -r``): PyTorch's CPU index, then
    ``pyproject.toml``'s pinned dependencies, one per line."""
    with (root / "pyproject.toml").open("rb") as f:
        pins = tomllib.load(f)["project"]["dependencies"]
    return ("# Written by diffusion-classroom-deploy --write-requirements from pyproject.toml (the one list of pins);\n"
            "# edit pyproject.toml, not this file. A Space installs it before it copies the app. PyTorch's CPU\n"
            "# index makes torch==2.13.0 the CPU-only build on Linux (PyPI's Linux wheel is the CUDA build).\n"
            f"{CPU_TORCH_INDEX}\n" + "".join(f"{pin}\n" for pin in pins))


def check_requirements(root: Path = ROOT) -> None:
    if (root / "requirements.txt").read_text() != space_requirements(root):
        raise DeployError("requirements.txt is not what pyproject.toml pins: run diffusion-classroom-deploy "
                          "--write-requirements")


def check(root: Path = ROOT) -> tuple[list[SpaceFile], dict]:
    """Everything checked before an upload, offline: the files, the card, LFS and the requirements."""
    files = space_files(root)
    meta = check_card(root / "README.md")
    check_lfs(files, lfs_patterns((root / ".gitattributes").read_text()))
    check_requirements(root)
    return files, meta


def upload(space: str, private: bool = False, root: Path = ROOT) -> str:
    """Create the Space (if needed) and upload this folder's runtime files in one commit; returns its URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(space, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    api.upload_folder(repo_id=space, repo_type="space", folder_path=root, allow_patterns=list(SPACE_ALLOW),
                      ignore_patterns=list(SPACE_IGNORE), delete_patterns=list(SPACE_DELETE),
                      commit_message="Deploy Diffusion Classroom")
    return f"https://huggingface.co/spaces/{space}"


def parser() -> argparse.ArgumentParser:
    """The command line (every flag has help)."""
    from diffusion import __version__

    p = argparse.ArgumentParser(prog="diffusion-classroom-deploy", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--space", metavar="USER/NAME", help="the Space to create or update")
    p.add_argument("--dry-run", action="store_true",
                   help="offline: list what would be uploaded and deleted, check the card, LFS and requirements")
    p.add_argument("--private", action="store_true", help="create the Space as private")
    p.add_argument("--write-requirements", action="store_true",
                   help="write requirements.txt from pyproject.toml's pins (with PyTorch's CPU index) and exit")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser()
    args = p.parse_args(argv)
    if not (args.dry_run or args.space or args.write_requirements):
        p.error("give --space USER/NAME, --dry-run or --write-requirements")
    if args.space and args.space.count("/") != 1:
        p.error(f"--space must be USER/NAME, got {args.space!r}")
    return args


def _network_errors() -> tuple[type[BaseException], ...]:
    """What a missing network or a refusing Hub raises: huggingface_hub's errors and those of the HTTP
    client it runs on (``httpx2`` in huggingface_hub 2, ``httpx`` before)."""
    import importlib

    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    errors: list[type[BaseException]] = [HfHubHTTPError, OfflineModeIsEnabled]
    for client in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(client).HTTPError)
        except ImportError:
            continue
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    """The console script ``diffusion-classroom-deploy``; 0 on success, 2 with one line on any failure."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.write_requirements:
            (ROOT / "requirements.txt").write_text(space_requirements())
            print(f"wrote {ROOT / 'requirements.txt'}")
            return 0
        files, meta = check()
        if args.dry_run:
            for f in files:
                print(f"{f.size / 2**20:9.2f} MB  {'LFS' if f.lfs else '   '}  {f.path}")
            print(f"{len(files)} files, {sum(f.size for f in files) / 2**20:.1f} MB would be uploaded; any other "
                  f"file on the Space would be deleted. Card: {meta['title']!r}, gradio {meta['sdk_version']}, "
                  f"Python {meta['python_version']}, {meta['suggested_hardware']}; every file over 10 MB is in LFS")
            return 0
        print(upload(args.space, args.private))
        return 0
    except _network_errors() as error:
        sys.stderr.write(f"deploy: the Hugging Face Hub did not answer ({_first_line(error)}); nothing was uploaded\n")
        return 2
    except (DeployError, OSError) as error:
        sys.stderr.write(f"deploy: {_first_line(error)}\n")
        return 2


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


if __name__ == "__main__":
    raise SystemExit(main())
