"""Deploy the app as a Hugging Face Space, independent of this repository's git history.

    python -m diffusion.deploy --dry-run                 # list the files and sizes, check the card and LFS
    python -m diffusion.deploy --space USER/NAME         # build a clean folder and upload it
    python -m diffusion.deploy --space USER/NAME --cpu-torch   # the same, with PyTorch's CPU-only build

The Space gets only what it runs: ``app.py``, the card (``README.md``), ``requirements.txt``, the
``demo/`` and ``diffusion/`` packages and ``assets/``, plus a ``.gitattributes`` that stores weights and
images with Git LFS (the Hub refuses files over 10 MB that are not in LFS). The upload goes through
``huggingface_hub``'s ``upload_folder``, which moves LFS files itself; the token comes from
``huggingface-cli login`` or ``HF_TOKEN``. Every failure is one line and exit code 2.
"""

from __future__ import annotations

import argparse
import fnmatch
import logging
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
#: What a Space runs: files and folders relative to the repository root.
SPACE_PATHS = ("app.py", "README.md", "requirements.txt", "demo", "diffusion", "assets")
SKIP_PARTS = {"__pycache__", ".pytest_cache", ".hypothesis"}
SKIP_SUFFIXES = {".pyc", ".pyi"}
#: Stored with Git LFS on the Hub (and in ``.gitattributes`` here).
LFS_PATTERNS = ("*.safetensors", "*.png", "*.jpg", "*.gif", "*.mp4")
HUB_FILE_LIMIT = 10 * 1024 * 1024  # the Hub refuses larger files outside LFS
SHORT_DESCRIPTION_LIMIT = 60


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


def gitattributes(patterns: tuple[str, ...] = LFS_PATTERNS) -> str:
    return "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in patterns)


def lfs_patterns(text: str) -> tuple[str, ...]:
    """The patterns a ``.gitattributes`` text stores with LFS."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) > 1 and not fields[0].startswith("#") and "filter=lfs" in fields[1:]:
            out.append(fields[0])
    return tuple(out)


def space_files(root: Path = ROOT) -> list[SpaceFile]:
    """The files a Space needs, sorted, with their sizes."""
    files = []
    for entry in SPACE_PATHS:
        base = root / entry
        if not base.exists():
            raise DeployError(f"{entry} is missing from {root}")
        for path in [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file()):
            rel = path.relative_to(root)
            if SKIP_PARTS & set(rel.parts) or path.suffix in SKIP_SUFFIXES:
                continue
            files.append(SpaceFile(rel.as_posix(), path.stat().st_size))
    return sorted(files, key=lambda f: f.path)


def check_card(readme: Path) -> dict:
    """Validate the Space card with huggingface_hub's own classes; returns its metadata."""
    from huggingface_hub import SpaceCard, SpaceCardData

    card = SpaceCard.load(readme)
    data = card.data
    if not isinstance(data, SpaceCardData):
        raise DeployError(f"{readme.name}: the front matter is not a Space card")
    meta = data.to_dict()
    for key in ("title", "sdk", "sdk_version", "python_version", "app_file", "short_description"):
        if not meta.get(key):
            raise DeployError(f"{readme.name}: the Space card needs {key!r}")
    if len(meta["short_description"]) > SHORT_DESCRIPTION_LIMIT:
        raise DeployError(f"{readme.name}: short_description is {len(meta['short_description'])} characters; "
                          f"the Hub allows {SHORT_DESCRIPTION_LIMIT}")
    return meta


def check_lfs(files: list[SpaceFile], patterns: tuple[str, ...] = LFS_PATTERNS) -> None:
    """Every file over the Hub's 10 MB limit must be stored with LFS."""
    big = [f.path for f in files if f.size > HUB_FILE_LIMIT and not matches_lfs(f.path, patterns)]
    if big:
        raise DeployError(f"files over 10 MB outside Git LFS (add a pattern to .gitattributes): {', '.join(big)}")


# pip reads options in a requirements file: with this index as well, ``torch==2.13.0`` resolves to the
# CPU-only wheel ``2.13.0+cpu`` (a local version sorts above the public one) instead of PyPI's Linux
# wheel, which is the CUDA build and pulls several GB of nvidia-* runtime wheels
CPU_TORCH_INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"


def build(dest: Path, root: Path = ROOT, cpu_torch: bool = False) -> list[SpaceFile]:
    """Copy the Space's files into ``dest`` (empty or new) and write its ``.gitattributes``; ``cpu_torch``:
    the Space's requirements also name PyTorch's CPU index (:data:`CPU_TORCH_INDEX`)."""
    files = space_files(root)
    check_card(root / "README.md")
    check_lfs(files)
    if dest.exists() and any(dest.iterdir()):
        raise DeployError(f"{dest} is not empty")
    for f in files:
        target = dest / f.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / f.path, target)
    (dest / ".gitattributes").write_text(gitattributes())
    if cpu_torch:
        requirements = dest / "requirements.txt"
        requirements.write_text(f"{CPU_TORCH_INDEX}\n{requirements.read_text()}")
    return files


def upload(folder: Path, space: str, private: bool = False) -> str:
    """Create the Space (if needed) and upload ``folder``; returns the Space's URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(space, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=space, repo_type="space",
                      commit_message="Deploy Diffusion Classroom")
    return f"https://huggingface.co/spaces/{space}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m diffusion.deploy", description=__doc__.split("\n\n")[0])
    p.add_argument("--space", metavar="USER/NAME", help="the Space to create or update")
    p.add_argument("--dry-run", action="store_true", help="list the files and sizes, check the card and LFS; upload nothing")
    p.add_argument("--private", action="store_true", help="create the Space as private")
    p.add_argument("--out", type=Path, help="build the Space folder here (default: a temporary folder)")
    p.add_argument("--cpu-torch", action="store_true",
                   help="install PyTorch's CPU-only build on the Space (PyPI's Linux wheel is the CUDA build)")
    args = p.parse_args(argv)
    if not args.dry_run and not args.space:
        p.error("give --space USER/NAME, or --dry-run")
    if args.space and args.space.count("/") != 1:
        p.error(f"--space must be USER/NAME, got {args.space!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.dry_run:
            files = space_files()
            meta = check_card(ROOT / "README.md")
            check_lfs(files)
            for f in files:
                print(f"{f.size / 2**20:9.2f} MB  {'LFS' if f.lfs else '   '}  {f.path}")
            print(f"{len(files)} files, {sum(f.size for f in files) / 2**20:.1f} MB; card: {meta['title']!r}, "
                  f"gradio {meta['sdk_version']}, Python {meta['python_version']}; every file over 10 MB is in LFS")
            return 0
        with tempfile.TemporaryDirectory(prefix="diffusion-classroom-space-") as tmp:
            folder = args.out or Path(tmp)
            files = build(folder, cpu_torch=args.cpu_torch)
            logger.info("built %d files in %s", len(files), folder)
            print(upload(folder, args.space, args.private))
        return 0
    except (DeployError, OSError) as error:
        sys.stderr.write(f"deploy: {error}\n")
        return 2


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    raise SystemExit(main())
