"""The report's figures: what the false-negative sheet magnifies."""

from __future__ import annotations

import numpy as np
import pytest

from cds_service.training.evaluation.figures import plot_false_negatives, zoom_window


@pytest.mark.parametrize(
    ("box", "window"),
    [
        # A Garden I box (60 × 40 px) in the middle: its longer side plus 30 % each way, centred on it.
        ((160.0, 150.0, 220.0, 190.0), (142, 122, 96)),
        # A tiny box: at least 48 px, so the line has context.
        ((100.0, 100.0, 104.0, 102.0), (78, 77, 48)),
        # At the crop's edge: moved inside, never cut.
        ((370.0, 0.0, 384.0, 20.0), (336, 0, 48)),
        # Larger than the crop allows: the whole crop.
        ((0.0, 0.0, 380.0, 300.0), (0, 0, 384)),
    ],
)
def test_the_zoom_window_is_a_square_around_the_box_inside_the_crop(box, window):
    x0, y0, side = zoom_window(np.array(box), 384)
    assert (x0, y0, side) == window
    assert 0 <= x0 <= 384 - side and 0 <= y0 <= 384 - side
    inner = box[2] - box[0] <= side and box[3] - box[1] <= side
    assert not inner or (x0 <= box[0] and box[2] <= x0 + side and y0 <= box[1] and box[3] <= y0 + side)


def test_the_false_negative_sheet_magnifies_each_missed_box(tmp_path, monkeypatch):
    import matplotlib.axes

    line = np.zeros((384, 384), np.uint8)
    line[170, 170:210] = 255  # a 1-px line the sheet's scale would lose
    box = np.array([160.0, 150.0, 220.0, 190.0], np.float32)
    no_box = np.full(4, np.nan, np.float32)
    insets = []
    original = matplotlib.axes.Axes.inset_axes

    def spy(self, *args, **kwargs):
        inset = original(self, *args, **kwargs)
        insets.append(inset)
        return inset

    monkeypatch.setattr(matplotlib.axes.Axes, "inset_axes", spy)
    misses = {"garden_I": [(line, box, 0.02, "external"), (line, no_box, 0.03, "hospital-x")], "ao_A1": []}
    plot_false_negatives(misses, tmp_path / "false_negatives.png")

    from PIL import Image

    with Image.open(tmp_path / "false_negatives.png") as sheet:
        assert sheet.height < 2 * 2.35 * 110  # one row: ao_A1, with no miss, is named in the title, not drawn
    assert len(insets) == 1  # the miss with a box; none for the one without
    shown = insets[0].get_images()[0].get_array()
    assert shown.shape == (96, 96)  # zoom_window's square around the box
    assert shown.max() == 255  # the line is in it


def test_a_sheet_with_nothing_missed_is_one_row(tmp_path):
    from PIL import Image

    plot_false_negatives({"garden_I": [], "ao_A1": []}, tmp_path / "sheet.png")
    with Image.open(tmp_path / "sheet.png") as sheet:
        assert sheet.height < 2 * 2.35 * 110
