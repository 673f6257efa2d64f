"""The planner's endpoints in the real app, driven through gradio_client."""

from __future__ import annotations

import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")

from tests.helpers import settled_steps  # noqa: E402
from tests.helpers import load as picture  # noqa: E402

SIDE = 9 * 56  # a 9 x 9 maze at 56 pixels a cell
PLAN = ("u-maze", 1.5, 1.5, 1.5, 7.5, 4, "ddim", 10, 0)  # layout, start x, y, goal x, y, plans, sampler, steps, seed


@pytest.mark.slow
def test_every_planner_endpoint_works_in_order(served) -> None:
    _, client, studio = served
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/planner_layout", "/planner_maze", "/planner_plan", "/planner_frame", "/planner_step"} <= names
    maze, sx, sy, gx, gy, target = client.predict("pillars", api_name="/planner_layout")
    assert picture(maze).shape == (SIDE, SIDE, 3) and (sx, sy, gx, gy, target) == (1.5, 1.5, 7.5, 7.5, "start")
    maze, sx, sy, gx, gy = client.predict("u-maze", 1.02, 1.98, 1.5, 7.5, api_name="/planner_maze")
    assert (sx, sy, gx, gy) == (1.25, 1.75, 1.5, 7.5)  # moved clear of the walls, into the cell's middle
    result, table, frame, step, which, gif, status = client.predict(*PLAN, api_name="/planner_plan")
    assert picture(result).shape == (SIDE, SIDE, 3)
    assert table["headers"][:3] == ["plan", "clear of walls", "reaches goal"] and len(table["data"]) == 4
    assert "of 4 plans clear" in status and "shortest clear path is 12.49 cells" in status
    assert "straight line from start to goal meets a wall" in status
    assert frame["maximum"] == 10 and step["maximum"] == 9 and which["maximum"] == 4
    assert Image.open(gif).n_frames >= 11
    assert picture(client.predict(0, api_name="/planner_frame")).shape == (SIDE, SIDE, 3)
    image, caption = client.predict(9, 4, api_name="/planner_step")
    assert picture(image).shape[1] > 2 * SIDE and "Eq. 4, solved for the noise" in caption and "Step 10 of 10" in caption
    # the same request plans the same paths
    again = client.predict(*PLAN, api_name="/planner_plan")
    assert again[1]["data"] == table["data"]
    assert settled_steps(studio) > 0


@pytest.mark.parametrize("args, message", [
    (("u-maze", 0.5, 0.5, 1.5, 7.5, 4, "ddim", 10, 0), "inside a wall"),
    (("u-maze", 1.5, 1.5, 3.5, 4.5, 4, "ddim", 10, 0), "goal .* inside a wall"),
    (("u-maze", 1.5, 1.5, 99, 7.5, 4, "ddim", 10, 0), "goal x must be a number between 0 and 9|greater than maximum value 9"),
    (("u-maze", 1.5, 1.5, 1.5, 7.5, 33, "ddim", 10, 0), "Plans|greater than maximum"),
    (("u-maze", 1.5, 1.5, 1.5, 7.5, 4, "euler", 10, 0), "samples with|not in the list of choices"),
    (("u-maze", 1.5, 1.5, 1.5, 7.5, 4, "ddim", 101, 0), "Steps|greater than maximum"),
    (("spiral", 1.5, 1.5, 1.5, 7.5, 4, "ddim", 10, 0), "layout|not in the list of choices"),
])
def test_bad_planner_input_gets_a_clear_message(served, args, message) -> None:
    _, client, _ = served
    with pytest.raises(gradio_client.exceptions.AppError, match=message):
        client.predict(*args, api_name="/planner_plan")


@pytest.mark.slow
def test_views_before_planning_say_what_to_do(serve) -> None:
    _, client, _ = serve(queue_size=8)  # a fresh session: nothing planned
    with pytest.raises(gradio_client.exceptions.AppError, match="Plan first"):
        client.predict(0, api_name="/planner_frame")
    with pytest.raises(gradio_client.exceptions.AppError, match="Plan first"):
        client.predict(0, 1, api_name="/planner_step")
