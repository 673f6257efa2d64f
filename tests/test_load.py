"""The load harness (``python -m tests.load``) in small: six students on the tiny models. Its timings
are printed, not asserted; the 30-student figures on the shipped models are a benchmark (README)."""

from __future__ import annotations

import pytest

from tests.load import ENDPOINTS, run_load

pytestmark = pytest.mark.slow  # a class of clients against the app


@pytest.mark.slow
def test_six_students_all_complete_without_errors(serve) -> None:
    _, client, _ = serve(queue_size=64)
    report = run_load(client.src, students=6, spread_s=2.0)
    print("\n" + "\n".join(report.lines()))
    assert not report.errors()
    assert sorted(t.endpoint for t in report.timings) == sorted(ENDPOINTS * 6)
    assert all(t.done_s is not None and t.first_s is not None and t.first_s <= t.done_s for t in report.timings)
    assert report.scrub_s and not report.scrub_errors  # the slider was scrubbed while the class worked
    assert report.probe is not None and report.probe.error is None  # the short request got through


def test_the_harness_only_sends_traffic_to_this_machine() -> None:
    with pytest.raises(ValueError, match="127.0.0.1"):
        run_load("https://example.org/", students=1)
