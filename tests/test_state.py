"""Per-user state is bounded across sessions, by bytes and by age."""

from __future__ import annotations


import time
from pathlib import Path

import pytest
from gradio_client.exceptions import AppError

from diffusion.budget import StateBudget
from tests.helpers import process_rss
from tests.load import app_server

class Held:
    def __init__(self):
        self.reason = None

    def release(self, reason: str) -> None:
        self.reason = reason


def test_state_budget_releases_the_oldest_and_the_expired() -> None:
    now = [0.0]
    budget = StateBudget(max_bytes=100, ttl_s=60, clock=lambda: now[0])
    items = [Held() for _ in range(5)]
    for i, item in enumerate(items):
        now[0] = i
        budget.admit(item, 30)
    assert [it.reason is None for it in items] == [False, False, True, True, True]  # 3 x 30 <= 100
    assert "newer runs" in items[0].reason and budget.total_bytes == 90
    huge = Held()
    budget.admit(huge, 500)  # the newest always stays, alone
    assert huge.reason is None and all(it.reason for it in items) and len(budget) == 1
    now[0] = 100
    assert budget.sweep() == 1 and huge.reason == "it expired" and budget.total_bytes == 0
    gone = Held()
    budget.admit(gone, 10)
    budget.discard(gone)
    assert gone.reason == "the session ended" and len(budget) == 0
    budget.discard(None)  # what the UI passes for a session that never ran




@pytest.mark.slow
def test_fifty_api_sessions_stay_within_the_state_budget(tmp_path: Path) -> None:
    """``python app.py --state-mb 16`` and 50 scripted sessions (no heartbeat), each recording a 16-image,
    10-step run of a 64x64 RGB model (about 6 MB; 300 MB if every session kept its run). The server's
    RSS is read from /proc: between the 25th and the 50th session it grows far less than 25 runs."""
    import uuid

    from gradio_client import Client

    from tests.tiny import save_tiny_ddpm

    save_tiny_ddpm(tmp_path / "rgb64", channels=3, sample_size=64, attention=False)
    with app_server(tmp_path, "--model-dir", str(tmp_path / "rgb64"), "--state-mb", "16",
                    "--precision", "fp32") as (pid, url):
        client = Client(url, verbose=False)
        run = ("local/rgb64", "ddpm", 10, 0, "", 1.0, 16)
        client.predict(*run, api_name="/lab_run")  # warm: the model is loaded
        sessions = [uuid.uuid4().hex for _ in range(50)]
        sizes: dict[int, int] = {}
        for i, session in enumerate(sessions, start=1):
            client.session_hash = session  # a new API session: its own gr.State, and no heartbeat
            client.predict(*run[:3], i, *run[4:], api_name="/lab_run")
            if i in (1, 10, 25, 50):
                sizes[i] = process_rss(pid)
        run_mb = 10 * 3 * (4 * 64) ** 2 * 3 / 2**20  # 3 pictures a step, each a 4x4 grid of 64x64 RGB
        print(f"\n50 API sessions x (16 images x 10 steps, {run_mb:.1f} MB each; {50 * run_mb:.0f} MB if all were "
              f"kept), budget 16 MB: server RSS after session 1 {sizes[1] / 2**20:.0f} MB, then +"
              f"{(sizes[10] - sizes[1]) / 2**20:.0f} MB at 10, +{(sizes[25] - sizes[1]) / 2**20:.0f} MB at 25, "
              f"+{(sizes[50] - sizes[1]) / 2**20:.0f} MB at 50")
        # keeping the last 25 runs would add at least 25 x 5.6 MB of arrays: they are not kept
        assert (sizes[50] - sizes[25]) / 2**20 < 0.75 * 25 * run_mb
        # the newest user still scrubs their run; the oldest is told to run again
        assert client.predict(1, api_name="/lab_show")[0] is not None
        client.session_hash = sessions[0]
        with pytest.raises(AppError, match="released because memory was needed for newer runs: run the reverse"):
            client.predict(1, api_name="/lab_show")
        client.close()


@pytest.mark.slow
def test_state_expires_for_api_clients(serve) -> None:
    budget = StateBudget(max_bytes=2**30, ttl_s=1.5)
    _, client, _ = serve(queue_size=8, state_budget=budget)
    client.predict("ddpm-mnist", "ddim", 2, 0, "", 1.0, api_name="/lab_run")
    assert client.predict(1, api_name="/lab_show")[0] is not None
    time.sleep(3.5)  # gradio drops expired state every second and calls the budget back
    with pytest.raises(AppError, match="Run the reverse process first|released because"):
        client.predict(1, api_name="/lab_show")
    assert len(budget) == 0
