"""The load harness's baseline: first come, first served, as the app's queue worked before the fair runner.

    python -m tests.first_come [app options]     # the app, with whole requests served in arrival order
    python -m tests.load --first-come            # the class harness against it

Not a product option: it exists to measure the fair runner against (docs/serving.md).
"""

from __future__ import annotations

from diffusion.runners import FairRunner, StepJob


class FirstComeRunner(FairRunner):
    """First come, first served, still one step per turn on the one model thread: the oldest request runs to
    its end before the next starts (a cancelled one is ended at once; one that waits for an identical
    request's run lets the others go)."""

    def _take(self) -> StepJob:
        with self._cv:
            while not self._ring:
                self._cv.wait()
            for job in self._ring:
                if job.cancelled.is_set():
                    return job
            self._waiting_or_sleep()
            return next(job for job in self._ring if not job.waiting)


def main(argv: list[str] | None = None) -> None:
    from demo.launch import parse_args, serve

    serve(parse_args(argv), runner=FirstComeRunner("first-come"))


if __name__ == "__main__":
    main()
