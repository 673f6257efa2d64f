"""Diffusion Classroom: run the app (``diffusion-classroom``, or ``python app.py`` in a clone).

    diffusion-classroom                      # http://127.0.0.1:7860 with the embedded models
    diffusion-classroom --model-dir PATH     # add a local diffusers pipeline folder

Gradio's usage analytics are off unless a deployer sets ``GRADIO_ANALYTICS_ENABLED=True`` (a class's use is
nobody else's business).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

# before anything imports gradio, which reads it: analytics only where a deployer asks for them
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from diffusion.studio import (  # noqa: E402 - after the setting above
    DEFAULT_CACHE_BYTES,
    DEFAULT_STATE_BYTES,
    DEFAULT_STATE_TTL_S,
    PRECISIONS,
    Registry,
    Runner,
    Speedups,
    StateBudget,
    Studio,
    __version__,
    configure_threads,
    ray_backend,
)

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 7860
PROG = "diffusion-classroom"


def listen_address(host: str | None, port: int | None, environ: Mapping[str, str]) -> tuple[str, int]:
    """Where to serve: the flag, else the platform's ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT``
    (a Hugging Face Space sets 0.0.0.0 and 7860), else 127.0.0.1:7860. A bad port is a ``ValueError``."""
    host = host or environ.get("GRADIO_SERVER_NAME") or DEFAULT_HOST
    if port is None:
        text = environ.get("GRADIO_SERVER_PORT", "").strip()
        if text and not text.isdigit():
            raise ValueError(f"GRADIO_SERVER_PORT must be a port number, got {text!r}")
        port = int(text) if text else DEFAULT_PORT
    if not 0 < port < 65536:
        raise ValueError(f"the port must be between 1 and 65535, got {port}")
    return host, port


# Space mode: what one request may ask for, in estimated seconds of compute on the Space's CPU (2 vCPUs on
# the free tier); a student's 16 digits at DDIM-50 need about 4 s, a DDPM-1000 batch of 64 about 300 s.
SPACE_WORK_BUDGET_S = 60.0


def parser() -> argparse.ArgumentParser:
    """The command line (every flag has help)."""
    p = argparse.ArgumentParser(prog=PROG,
                                description="Diffusion Classroom: an interactive app that teaches diffusion models.")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--host", default=None,
                   help="address to serve on (0.0.0.0 for a LAN); default: $GRADIO_SERVER_NAME (a Space sets it), "
                        f"else {DEFAULT_HOST}")
    p.add_argument("--port", type=int, default=None,
                   help=f"port; default: $GRADIO_SERVER_PORT (a Space sets it), else {DEFAULT_PORT}")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, else CPU), cpu, cuda, cuda:1, mps")
    p.add_argument("--model-dir", type=Path, action="append", default=[], metavar="PATH",
                   help="an extra local diffusers pipeline folder (repeatable)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="UNet arithmetic on the CPU: auto (bf16 autocast where the CPU has native bf16, else fp32), "
                        "fp32 (bit-for-bit as diffusers' pipelines), bf16")
    p.add_argument("--channels-last", action="store_true", help="UNets in channels_last memory format")
    p.add_argument("--compile", action="store_true", help="torch.compile the UNets (slow first request per shape)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: the cores this process may use, capped by a container's CPU quota)")
    p.add_argument("--queue-size", type=int, default=32, help="requests waiting beyond this are refused")
    p.add_argument("--state-mb", type=float, default=DEFAULT_STATE_BYTES / 2**20, metavar="MB",
                   help="memory for the step lab's recorded runs of all users together; the oldest are released "
                        "first (default %(default).0f)")
    p.add_argument("--state-minutes", type=float, default=DEFAULT_STATE_TTL_S / 60, metavar="MIN",
                   help="how long a recorded run is kept (default %(default).0f)")
    p.add_argument("--cache-mb", type=float, default=DEFAULT_CACHE_BYTES / 2**20, metavar="MB",
                   help="results kept for identical requests, which also share runs in flight (0: off; "
                        "default %(default).0f)")
    p.add_argument("--space-mode", action="store_true",
                   help="serve many strangers on a small machine: hub models load one at a time and each request "
                        f"may ask for about {SPACE_WORK_BUDGET_S:.0f} s of compute (on automatically where "
                        "$SPACE_ID is set, as on a Hugging Face Space)")
    p.add_argument("--work-budget-s", type=float, default=None, metavar="S",
                   help="the most estimated compute one request may ask for (default: none; Space mode "
                        f"{SPACE_WORK_BUDGET_S:.0f})")
    p.add_argument("--presenter", action="store_true",
                   help="start every page in presenter mode: large type for a projector (a toggle in the page too)")
    p.add_argument("--warm", action="store_true",
                   help="run every lesson's Show me once at start-up (in the background, a few minutes), so that in "
                        "class each answers at once with the same pictures (the Lessons tab has the same button)")
    p.add_argument("--share", action="store_true", help="create a public gradio.live link (off by default)")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="where the model work runs: in this process (default) or on Ray Serve replicas "
                        "(pip install -r requirements-scale.txt)")
    p.add_argument("--ray-address", default=None, metavar="HOST:PORT",
                   help="a running Ray cluster's head (or 'auto'); default: start Ray on this machine")
    p.add_argument("--replicas", type=int, default=1, help="Ray Serve replicas, each with its own models")
    p.add_argument("--replica-cpus", type=float, default=1.0, help="CPUs each replica requests")
    p.add_argument("--replica-gpus", type=float, default=0.0, help="GPUs each replica requests")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser()
    args = p.parse_args(argv)
    if not (args.state_mb > 0 and args.state_minutes > 0):  # also refuses nan
        p.error("--state-mb and --state-minutes must be positive")
    if not args.cache_mb >= 0:
        p.error("--cache-mb must be 0 or more")
    if args.work_budget_s is not None and not args.work_budget_s > 0:
        p.error("--work-budget-s must be positive")
    if args.backend == "local" and (args.ray_address is not None or args.replicas != 1 or args.replica_cpus != 1.0
                                    or args.replica_gpus != 0.0):
        p.error("--ray-address, --replicas, --replica-cpus and --replica-gpus need --backend ray")
    return args


def ray_studio(args: argparse.Namespace, registry: Registry, studio_kwargs: dict) -> Studio:
    """The Studio whose model work runs on Ray Serve replicas (exit code 2 with one line when it cannot)."""
    try:
        backend = ray_backend()
        RayOptions, StudioSettings = backend.RayOptions, backend.StudioSettings
    except ImportError as error:
        sys.stderr.write(f"{PROG}: --backend ray needs Ray Serve ({error}): pip install -e \".[scale]\"\n")
        raise SystemExit(2) from None
    from diffusion.studio import BackendError

    try:
        options = RayOptions(args.ray_address, args.replicas, args.replica_cpus, args.replica_gpus)
        settings = StudioSettings(tuple(str(d) for d in args.model_dir), args.device, args.precision,
                                  cache_bytes=studio_kwargs["cache_bytes"],
                                  work_budget_s=studio_kwargs["work_budget_s"])
        studio = backend.ray_studio(registry, options, settings, **studio_kwargs)
    except (ValueError, BackendError) as error:
        sys.stderr.write(f"{PROG}: {error}\n")
        raise SystemExit(2) from None
    # a stop signal (a container, a Space, a test) exits through Python's shutdown, so Ray cleans up
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    return studio


def main(argv: list[str] | None = None) -> None:
    """The console script ``diffusion-classroom`` (and ``python app.py``): parse ``argv`` and serve."""
    serve(parse_args(argv))


def serve(args: argparse.Namespace, runner: Runner | None = None) -> None:
    """Build the app for ``args`` and serve it until stopped. ``runner``: how the requests share the model (default:
    the Studio's fair runner; the load harness passes its first-come baseline, ``tests/first_come.py``)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        host, port = listen_address(args.host, args.port, os.environ)
    except ValueError as error:
        sys.stderr.write(f"{PROG}: {error}\n")
        raise SystemExit(2) from None
    from demo.app import (  # after the check: gradio reads GRADIO_SERVER_PORT when imported
        CSS,
        build_app,
    )

    configure_threads(args.threads)
    try:
        registry = Registry.default(args.model_dir)
    except ValueError as error:  # one line and exit code 2, as the CLI (no traceback)
        sys.stderr.write(f"{PROG}: --model-dir: {error}\n")
        raise SystemExit(2) from None
    space = args.space_mode or bool(os.environ.get("SPACE_ID"))
    budget_s = args.work_budget_s if args.work_budget_s is not None else (SPACE_WORK_BUDGET_S if space else None)
    studio_kwargs = dict(device=args.device, precision=args.precision,
                         speedups=Speedups(channels_last=args.channels_last, compile=args.compile),
                         cache_bytes=int(args.cache_mb * 2**20), work_budget_s=budget_s,
                         hub_models_at_once=1 if space else None)
    studio = (Studio(registry, runner=runner, **studio_kwargs) if args.backend == "local"
              else ray_studio(args, registry, studio_kwargs))
    if space:
        logging.getLogger("app").info("Space mode: one hub model at a time, %.0f s of compute a request", budget_s)
    for model_id in studio.store.missing_embedded():
        logging.getLogger("app").error(
            "embedded model %s is missing from assets/ (re-install the app); its tab will say so when used", model_id)
    budget = StateBudget(max_bytes=int(args.state_mb * 2**20), ttl_s=args.state_minutes * 60)
    app = build_app(studio, queue_size=args.queue_size, state_budget=budget, presenter=args.presenter,
                    warm=args.warm)
    app.launch(server_name=host, server_port=port, share=args.share, max_file_size="5mb",
               css=CSS)


if __name__ == "__main__":
    main()
