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


def test_chart_image_is_small_jpeg_with_the_display_aspect():
    from cds_service.explain.heatmap import render_chart_image

    rng = np.random.default_rng(1)
    display = rng.integers(0, 256, (1380, 2039), dtype=np.uint8)  # worst case: pure noise
    heat = np.zeros((1380, 2039), np.float32)
    heat[400:900, 300:900] = 1.0
    hips = [
        HipHeatmap("R", np.ones((4, 4), np.float32), False, (0, 0, 1019, 1380)),
        HipHeatmap("L", np.zeros((4, 4), np.float32), True, (1019, 0, 2039, 1380)),
    ]
    chart = render_chart_image(display, heat, hips, (1380, 2039))
    assert chart.content_type == "image/jpeg" and len(chart.data) <= 150_000
    image = Image.open(io.BytesIO(chart.data))
    assert image.format == "JPEG" and image.size == chart.size and max(chart.size) <= 1024
    assert abs(chart.size[0] / chart.size[1] - 2039 / 1380) < 0.01
    r, g, b = np.asarray(image.convert("RGB"))[325, 300].astype(int)  # inside the hot area: coloured
    assert max(r, g, b) - min(r, g, b) > 30


def test_chart_image_keeps_a_small_overlay_and_shrinks_a_large_one():
    from cds_service.explain.heatmap import chart_image, png_bytes

    small = png_bytes(np.full((60, 120, 3), 100, np.uint8))
    assert chart_image(small) == (small, "image/png", (120, 60))
    large = png_bytes(np.random.default_rng(2).integers(0, 256, (1380, 2039, 3), dtype=np.uint8))
    assert len(large) > 150_000
    chart = chart_image(large)
    assert chart.content_type == "image/jpeg" and len(chart.data) <= 150_000 and max(chart.size) <= 1024


def test_the_overlay_table_blends_like_the_per_pixel_formula():
    """grey·(1 − α) + colour·α per pixel, α from the heat level (transparent below the floor), in 1/256 steps."""
    from cds_service.explain.heatmap import COLORMAP, heat_levels, overlay

    rng = np.random.default_rng(5)
    grey = rng.integers(0, 256, (64, 96)).astype(np.uint8)
    heat = (rng.random((64, 96)) * 1.2 - 0.1).astype(np.float32)  # out-of-range values are clipped
    level = np.clip(heat * 255, 0, 255).astype(np.int64)
    alpha = np.where(level / 255 >= 0.2, 0.45 * (0.5 + 0.5 * level / 255), 0.0)
    keep = np.round(256 * (1 - alpha))
    tint = np.round(256 * alpha[..., None] * COLORMAP[level].astype(np.float64))
    expected = ((grey[..., None] * keep[..., None] + tint + 128) // 256).astype(np.uint8)
    blended = overlay(grey, heat)
    assert blended.shape == (64, 96, 3) and blended.dtype == np.uint8
    assert np.array_equal(blended, expected)
    assert np.array_equal(blended[level < 0.2 * 255], np.repeat(grey[level < 0.2 * 255][:, None], 3, axis=1))
    # What an Analysis keeps (uint8 levels) blends exactly as the float map it came from.
    assert heat_levels(heat).dtype == np.uint8 and np.array_equal(heat_levels(heat), level)
    assert np.array_equal(overlay(grey, heat_levels(heat)), blended)


def _two_hips(cols: int, rows: int, right_side: str | None = "R", left_side: str | None = "L") -> list[HipHeatmap]:
    middle = cols // 2
    zero = np.zeros((4, 4), np.float32)
    return [
        HipHeatmap(right_side, zero, False, (0, 0, middle, rows)),
        HipHeatmap(left_side, zero, True, (middle, 0, cols, rows)),
    ]


def test_labels_are_drawn_where_the_laterality_is_and_nowhere_else():
    from cds_service.explain.heatmap import label_box, label_hips

    rng = np.random.default_rng(3)
    rows, cols = 690, 1020
    bare = np.repeat(rng.integers(40, 90, (rows, cols), dtype=np.uint8)[..., None], 3, axis=2)
    labelled = label_hips(bare, _two_hips(cols, rows), (rows, cols)).astype(int)
    changed = np.abs(labelled - bare).sum(axis=2) > 0
    boxes = [label_box(rows, cols, False, 0, cols // 2), label_box(rows, cols, True, cols // 2, cols)]
    for x0, y0, x1, y1 in boxes:
        assert changed[y0:y1, x0:x1].mean() > 0.95  # the label covers its box
        assert x0 >= 0 and x1 <= cols and y1 < rows // 4  # in a top corner
    assert boxes[0][0] < cols // 4 and boxes[1][2] > 3 * cols // 4  # R top-left, L top-right
    inside = np.zeros_like(changed)
    for x0, y0, x1, y1 in boxes:
        inside[y0:y1, x0:x1] = True
    assert not changed[~inside].any()  # no midline, nothing else drawn
    # The letters differ: the right hip's box is not the left hip's box with another position.
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = boxes
    assert not np.array_equal(labelled[ay0:ay1, ax0:ax1], labelled[by0:by1, bx0:bx1])


def test_a_flipped_image_is_labelled_l_on_the_left_and_unknown_sides_with_a_question_mark():
    from cds_service.explain.heatmap import label_box, label_hips

    rows, cols = 300, 400
    bare = np.zeros((rows, cols, 3), np.uint8)
    usual = label_hips(bare, _two_hips(cols, rows, "R", "L"), (rows, cols))
    flipped = label_hips(bare, _two_hips(cols, rows, "L", "R"), (rows, cols))
    unknown = label_hips(bare, _two_hips(cols, rows, None, None), (rows, cols))
    left = label_box(rows, cols, False, 0, cols // 2)
    right = label_box(rows, cols, True, cols // 2, cols)

    def crop(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        return image[box[1] : box[3], box[0] : box[2]]

    assert np.array_equal(crop(flipped, left), crop(usual, right))  # "L" drawn on the image left
    assert np.array_equal(crop(flipped, right), crop(usual, left))
    assert not np.array_equal(crop(unknown, left), crop(usual, left))  # "?" is neither letter
    assert not np.array_equal(crop(unknown, left), crop(usual, right))


def test_radiograph_round_trip_keeps_the_source_size():
    from cds_service.explain.heatmap import decode_radiograph, encode_radiograph, upsample_levels

    y, x = np.mgrid[0:300, 0:500]
    grey = ((x + y) % 256).astype(np.uint8)
    image = encode_radiograph(grey)
    assert image.content_type == "image/jpeg" and image.size == (500, 300) and image.data[:2] == b"\xff\xd8"
    decoded = decode_radiograph(image)
    assert decoded.shape == (300, 500) and np.abs(decoded.astype(int) - grey).mean() < 3
    levels = upsample_levels(np.full((30, 50), 200, np.uint8), 300, 500)
    assert levels.shape == (300, 500) and levels.dtype == np.uint8 and int(levels[150, 250]) in (199, 200)
