"""Load harness: a class of students using the app at once, measured from outside.

    python -m tests.load --students 30                  # starts python app.py on a free port
    python -m tests.load --students 30 --url URL        # an app already running (127.0.0.1 only)
    python -m tests.load --students 30 --first-come     # the baseline: whole requests in arrival order

Each simulated student is one gradio_client session arriving at a random time within ``--spread``
seconds. It presses Sample (the tab's defaults, its own seed), then Generate on the text tab (the
defaults: 4 images), then Run in the step lab (the defaults). Meanwhile one more session, which
has already run the step lab, scrubs its step slider once a second. Printed per endpoint: p50 and
p95 time to the first update the browser would show (the status line, a preview), p50 and p95 time
to completion, and errors; then the scrub latency, the requests served a minute and the server's
peak RSS (read from /proc when this harness started the server).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ENDPOINTS = ("/sample", "/text_to_image", "/lab_run")
#: Every lesson's Show me with the inputs it starts with (demo/tab_lessons.py), as a teacher presses them.
LESSON_SHOWS = (("/lesson_forward", (0,)), ("/lesson_denoising", ()), ("/lesson_sampling", (0,)),
                ("/lesson_race", (0,)), ("/lesson_determinism", (0,)), ("/lesson_latent", ()),
                ("/lesson_text", ("a large red circle top left", 0)), ("/lesson_guidance", ("a blue star", 0)),
                ("/lesson_limits", (0,)), ("/lesson_layout", ("a red circle left of a blue square", 0)))


@dataclass
class Timing:
    endpoint: str
    first_s: float | None = None  # submit to the first streamed output
    done_s: float | None = None  # submit to the result
    error: str | None = None
    digest: str | None = None  # of the result's pictures (decoded pixels): equal runs give equal digests
    seed: int | None = None


@dataclass
class LoadReport:
    students: int
    timings: list[Timing] = field(default_factory=list)
    scrub_s: list[float] = field(default_factory=list)
    scrub_errors: list[str] = field(default_factory=list)  # a scrub (or the scrubber's own run) that failed
    wall_s: float = 0.0
    peak_rss: int | None = None
    probe: Timing | None = None  # a short request (1 image, 10 steps) sent once every student has arrived
    lessons: list[Timing] = field(default_factory=list)  # a teacher's Show me presses during the class
    warm_up_s: float | None = None  # the lessons' warm-up before the class

    def errors(self) -> list[Timing]:
        return [t for t in self.timings if t.error is not None]

    def results_digest(self, endpoint: str | None = None) -> str:
        """One digest of all results (or ``endpoint``'s), by endpoint and seed: two runs of the same class (the
        same --seed) that return the same pictures print the same digest, whatever the timing or backend."""
        import hashlib

        rows = sorted((t.endpoint, t.seed or 0, t.digest or "-") for t in self.timings
                      if endpoint is None or t.endpoint == endpoint)
        return hashlib.sha256(repr(rows).encode()).hexdigest()[:16]

    def lines(self) -> list[str]:
        def pct(values: list[float], q: float) -> str:
            return f"{np.percentile(values, q):6.1f} s" if values else "     -  "

        out = [f"{self.students} students, {self.wall_s:.0f} s wall:",
               "| endpoint | first update p50 | p95 | completion p50 | p95 | errors |", "|---|---|---|---|---|---|"]
        for endpoint in ENDPOINTS:
            rows = [t for t in self.timings if t.endpoint == endpoint]
            first = [t.first_s for t in rows if t.first_s is not None]
            done = [t.done_s for t in rows if t.done_s is not None]
            out.append(f"| {endpoint} | {pct(first, 50)} | {pct(first, 95)} | {pct(done, 50)} | {pct(done, 95)} | "
                       f"{sum(t.error is not None for t in rows)} |")
        served = sum(t.done_s is not None for t in self.timings)
        out.append(f"step-slider scrub under load: p50 {pct(self.scrub_s, 50).strip()}, p95 {pct(self.scrub_s, 95).strip()} "
                   f"({len(self.scrub_s)} scrubs, {len(self.scrub_errors)} failed); {served} requests served, "
                   f"{served / self.wall_s * 60:.1f} a minute")
        if self.probe is not None:
            out.append("a short request (1 image, DDIM 10) sent while the class works: "
                       + (f"completed in {self.probe.done_s:.1f} s" if self.probe.error is None
                          else f"failed: {self.probe.error}"))
        if self.warm_up_s is not None:
            out.append(f"lessons warmed up before the class in {self.warm_up_s:.0f} s")
        if self.lessons:
            done = [t.done_s for t in self.lessons if t.done_s is not None]
            out.append("a teacher presses every Show me while the class works, answered in: "
                       + ", ".join(f"{t.endpoint.removeprefix('/lesson_')} "
                                   + (f"{t.done_s:.1f} s" if t.error is None else "FAILED") for t in self.lessons)
                       + (f"; slowest {max(done):.1f} s" if done else ""))
        if self.peak_rss is not None:
            out.append(f"server peak RSS: {self.peak_rss / 2**30:.2f} GiB")
        out.append(f"results digest (every student's pictures, decoded): {self.results_digest()} ("
                   + ", ".join(f"{e} {self.results_digest(e)[:8]}" for e in ENDPOINTS) + ")")
        for t in [t for t in self.lessons if t.error is not None][:3]:
            out.append(f"error on {t.endpoint}: {t.error}")
        for t in self.errors()[:5]:
            out.append(f"error on {t.endpoint}: {t.error}")
        for error in self.scrub_errors[:3]:
            out.append(f"scrub error: {error}")
        return out


def result_digest(result: object) -> str:
    """SHA-256 over the decoded pixels of every picture in an endpoint's result (file paths or file dicts)."""
    import hashlib

    from PIL import Image

    digest = hashlib.sha256()
    for item in result if isinstance(result, (tuple, list)) else (result,):
        path = item.get("path") if isinstance(item, dict) else getattr(item, "path", item)  # FileData: not downloaded
        if isinstance(path, str) and path.lower().endswith((".png", ".webp", ".jpg", ".jpeg")) and Path(path).is_file():
            digest.update(np.asarray(Image.open(path)).tobytes())
    return digest.hexdigest()[:16]


def _timed(client, endpoint: str, *args: object, **kwargs: object) -> Timing:
    timing = Timing(endpoint, seed=kwargs.get("seed"))  # type: ignore[arg-type]
    start = time.monotonic()
    try:
        job = client.submit(*args, api_name=endpoint, **kwargs)
        while not job.done():
            if timing.first_s is None and job.outputs():
                timing.first_s = time.monotonic() - start
            time.sleep(0.02)
        timing.digest = result_digest(job.result())
        timing.done_s = time.monotonic() - start
        if timing.first_s is None:
            timing.first_s = timing.done_s
    except Exception as error:  # noqa: BLE001 - any failure of a request is counted and reported
        timing.error = f"{type(error).__name__}: {str(error)[:200]}"
    return timing


def run_load(url: str, students: int, spread_s: float = 10.0, seed: int = 0, pid: int | None = None,
             scrub: bool = True, same: bool = False, probe: bool = True,
             only: str | None = None, lessons: str | None = None) -> LoadReport:
    """Run the class against ``url`` (127.0.0.1 only); bounded: each student sends three requests.
    ``same``: every student sends the same requests (the default seed 0), as a class pressing the buttons
    without changing anything; ``probe``: one short request is timed once everyone has arrived; ``only``:
    each student sends just this endpoint (e.g. "/sample"); ``lessons``: once everyone has arrived a teacher
    presses every lesson's Show me in turn (:data:`LESSON_SHOWS`), "warm" after the warm-up before the class,
    "cold" without it."""
    from gradio_client import Client

    if not url.startswith(("http://127.0.0.1:", "http://localhost:")):
        raise ValueError("the load harness only sends traffic to this machine (http://127.0.0.1:PORT/)")
    report = LoadReport(students)
    lock = threading.Lock()
    rng = random.Random(seed)
    arrivals = sorted(rng.uniform(0, spread_s) for _ in range(students))
    seeds = [0 if same else rng.randrange(2**32) for _ in range(students)]
    stop = threading.Event()

    def student(k: int) -> None:
        try:
            client = Client(url, verbose=False)
        except Exception as error:  # noqa: BLE001 - a student who cannot connect: each of its requests failed
            with lock:
                report.timings.extend(Timing(e, error=f"connect: {type(error).__name__}: {str(error)[:200]}",
                                             seed=seeds[k]) for e in ENDPOINTS if only in (None, e))
            return
        try:
            time.sleep(arrivals[k])
            for endpoint, kwargs in (("/sample", {"seed": seeds[k]}), ("/text_to_image", {"seed": seeds[k]}),
                                     ("/lab_run", {"seed": seeds[k], "prompt": ""})):  # its box starts empty
                if only is not None and endpoint != only:
                    continue
                timing = _timed(client, endpoint, **kwargs)
                with lock:
                    report.timings.append(timing)
        finally:
            client.close()

    def scrubber(ready: threading.Event) -> None:
        client = None
        try:
            client = Client(url, verbose=False)
            client.predict(steps=20, prompt="", api_name="/lab_run")
        except Exception as error:  # noqa: BLE001 - counted: nothing to scrub
            report.scrub_errors.append(f"setup: {type(error).__name__}: {str(error)[:200]}")
            ready.set()
            if client is not None:
                client.close()
            return
        ready.set()
        try:
            step = 1
            while not stop.is_set():
                start = time.monotonic()
                try:
                    client.predict(step, api_name="/lab_show")
                except Exception as error:  # noqa: BLE001 - a failed scrub is counted, the next one is tried
                    with lock:
                        report.scrub_errors.append(f"{type(error).__name__}: {str(error)[:200]}")
                else:
                    with lock:
                        report.scrub_s.append(time.monotonic() - start)
                step = step % 20 + 1
                stop.wait(1.0)
        finally:
            client.close()

    def watch_rss() -> None:
        while not stop.is_set() and pid is not None:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1]) * 1024
                        report.peak_rss = max(report.peak_rss or 0, rss)
            except OSError:
                return
            stop.wait(0.2)

    def prober() -> None:
        try:
            client = Client(url, verbose=False)
        except Exception as error:  # noqa: BLE001 - counted as the probe's failure
            report.probe = Timing("/sample", error=f"connect: {type(error).__name__}: {str(error)[:200]}")
            return
        try:
            if not stop.wait(spread_s + 1.0):
                report.probe = _timed(client, "/sample", sampler="ddim", steps=10, batch=1, seed=12345)
        finally:
            client.close()

    def teacher() -> None:
        try:  # timed to the answer (the result message), as a browser then loads its pictures in parallel
            client = Client(url, verbose=False, download_files=False)
        except Exception as error:  # noqa: BLE001 - counted as every Show me failing
            report.lessons = [Timing(e, error=f"connect: {type(error).__name__}") for e, _ in LESSON_SHOWS]
            return
        try:
            if not stop.wait(spread_s + 1.0):
                for endpoint, inputs in LESSON_SHOWS:
                    report.lessons.append(_timed(client, endpoint, *inputs))
        finally:
            client.close()

    if lessons == "warm":
        from gradio_client import Client as WarmClient

        began = time.monotonic()
        client = WarmClient(url, verbose=False)
        try:
            client.predict(api_name="/lessons_warm_up")
        finally:
            client.close()
        report.warm_up_s = time.monotonic() - began
    helpers = [threading.Thread(target=watch_rss, daemon=True)]
    if scrub:
        ready = threading.Event()
        helpers.append(threading.Thread(target=scrubber, args=(ready,), daemon=True))
    for t in helpers:
        t.start()
    if scrub:
        ready.wait(120)
    start = time.monotonic()
    threads = [threading.Thread(target=student, args=(k,), daemon=True) for k in range(students)]
    if probe:
        threads.append(threading.Thread(target=prober, daemon=True))
    if lessons is not None:
        threads.append(threading.Thread(target=teacher, daemon=True))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report.wall_s = time.monotonic() - start
    stop.set()
    for t in helpers:
        t.join(timeout=30)
    return report


@contextmanager
def app_server(log_dir: Path, *args: str, space: bool = False, first_come: bool = False) -> Iterator[tuple[int, str]]:
    """``python app.py ARGS`` in its own process on a free port, waited for until it answers; yields
    (pid, url) and stops it afterwards. ``space``: started as a Hugging Face Space starts it (SPACE_ID,
    GRADIO_SERVER_NAME=0.0.0.0, the port in GRADIO_SERVER_PORT, no --port flag). ``first_come``: the app with
    the baseline runner instead (``python -m tests.first_come ARGS``)."""
    from tests.conftest import free_port

    port = free_port()
    env = dict(os.environ)
    if space:
        env.update(SPACE_ID="someone/diffusion-classroom", GRADIO_SERVER_NAME="0.0.0.0", GRADIO_SERVER_PORT=str(port))
    else:
        args = ("--port", str(port), *args)
    log_path = log_dir / f"app-{port}.log"
    with log_path.open("w") as log:
        entry = ["-m", "tests.first_come"] if first_come else ["app.py"]
        server = subprocess.Popen([sys.executable, *entry, *args], cwd=ROOT, env=env, stdout=log,
                                  stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                    break
                except httpx.TransportError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"the app did not start:\n{log_path.read_text()}") from None
                    time.sleep(0.5)
            yield server.pid, f"http://127.0.0.1:{port}/"
        finally:
            server.terminate()
            server.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.load", description=__doc__.split("\n\n")[0])
    p.add_argument("--students", type=int, default=30)
    p.add_argument("--spread", type=float, default=10.0, help="arrivals spread over this many seconds")
    p.add_argument("--url", help="an app already running on 127.0.0.1 (default: start python app.py)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--same", action="store_true", help="every student sends the same requests (seed 0)")
    p.add_argument("--only", choices=ENDPOINTS, help="each student sends just this endpoint")
    p.add_argument("--app-args", default="", help="extra arguments for python app.py (e.g. '--cache-mb 0')")
    p.add_argument("--first-come", action="store_true",
                   help="start the app with the baseline runner (whole requests in arrival order, tests/first_come.py)")
    p.add_argument("--lessons", choices=("warm", "cold"),
                   help="a teacher presses every lesson's Show me during the class, after the lessons' warm-up "
                        "(warm) or without it (cold)")
    args = p.parse_args(argv)
    if not 1 <= args.students <= 200:
        p.error("--students must be between 1 and 200")
    if args.url is not None:
        report = run_load(args.url, args.students, args.spread, args.seed, same=args.same, only=args.only,
                          lessons=args.lessons)
    else:
        with app_server(Path(tempfile.gettempdir()), "--queue-size", "128", *args.app_args.split(),
                        first_come=args.first_come) as (pid, url):
            report = run_load(url, args.students, args.spread, args.seed, pid=pid, same=args.same, only=args.only,
                              lessons=args.lessons)
    print("\n".join(report.lines()))
    return 1 if report.errors() else 0


if __name__ == "__main__":
    raise SystemExit(main())
