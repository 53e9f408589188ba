import io

import numpy as np
from PIL import Image

from cds_service.explain.heatmap import HipHeatmap, heat_canvas, normalise_cam, render_overlay_png


def test_normalise_is_relu_then_min_max():
    cam = normalise_cam(np.array([[-2.0, 0.0], [1.0, 4.0]]))
    np.testing.assert_allclose(cam, [[0, 0], [0.25, 1]])
    assert normalise_cam(np.full((2, 2), -1.0)).max() == 0


def test_hot_spot_lands_on_the_right_hip_half_and_is_unmirrored():
    cam = np.zeros((4, 4), np.float32)
    cam[0, 0] = 1.0  # top-left of the crop
    left = HipHeatmap("R", np.zeros((4, 4), np.float32), False, (0, 0, 100, 80))
    right = HipHeatmap("L", cam, True, (100, 0, 200, 80))
    canvas = heat_canvas([left, right], (80, 200), (80, 200))
    y, x = np.unravel_index(np.argmax(canvas), canvas.shape)
    assert x >= 175 and y < 20  # mirrored back: the crop's left edge is the image's far right


def test_overlay_png_has_the_display_size():
    display = np.full((60, 120), 128, np.uint8)
    hips = [HipHeatmap("R", np.ones((4, 4), np.float32), False, (0, 0, 240, 120))]
    png = render_overlay_png(display, hips, (120, 240))
    image = Image.open(io.BytesIO(png))
    assert image.size == (120, 60) and image.mode == "RGB"
    assert np.asarray(image).std() > 0  # colour was blended in
