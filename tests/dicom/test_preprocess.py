import numpy as np

from cds_service.dicom.decode import DecodedImage
from cds_service.dicom.preprocess import DISPLAY_MAX_EDGE, display_image, split_hips


def image(row_direction: str | None, rows: int = 200, cols: int = 300) -> DecodedImage:
    grey = np.zeros((rows, cols), np.uint8)
    grey[:, :20] = 255  # a bright band at the image's far left edge
    return DecodedImage(grey, row_direction, "B", "1.2.3")


def test_usual_orientation_puts_patient_right_on_image_left():
    crops = split_hips(image("L"), 64)
    assert [c.laterality for c in crops] == ["R", "L"]
    assert [c.mirrored for c in crops] == [False, True]
    assert crops[0].box == (0, 0, 150, 200) and crops[1].box == (150, 0, 300, 200)
    assert all(c.pixels.shape == (64, 64) and c.pixels.dtype == np.uint8 for c in crops)


def test_flipped_image_swaps_laterality():
    assert [c.laterality for c in split_hips(image("R"), 64)] == ["L", "R"]


def test_unknown_orientation_never_guesses():
    assert [c.laterality for c in split_hips(image(None), 64)] == [None, None]
    assert [c.laterality for c in split_hips(image("A"), 64)] == [None, None]


def test_image_right_half_is_mirrored_to_the_canonical_orientation():
    pixels = np.zeros((100, 200), np.uint8)
    pixels[:, 190:] = 255  # far right edge of the image = lateral side of the image-right hip
    crops = split_hips(DecodedImage(pixels, "L", "B", "1"), 50)
    # Mirrored, the lateral edge lands on the crop's left, where the image-left hip has its lateral side.
    assert crops[1].pixels[:, :3].mean() > 200 and crops[1].pixels[:, -3:].mean() < 20


def test_display_image_is_bounded():
    assert max(display_image(image("L", 3000, 2500)).shape) == DISPLAY_MAX_EDGE
    assert display_image(image("L", 100, 80), 1024).shape == (100, 80)


def test_unilateral_left_hip_view_is_one_mirrored_crop():
    pixels = np.zeros((100, 80), np.uint8)
    crops = split_hips(DecodedImage(pixels, "L", "L", "1"), 32)
    assert len(crops) == 1 and crops[0].laterality == "L" and crops[0].mirrored
    assert crops[0].box == (0, 0, 80, 100)


def test_unilateral_right_hip_view_is_not_mirrored():
    crops = split_hips(DecodedImage(np.zeros((100, 80), np.uint8), "L", "R", "1"), 32)
    assert [(c.laterality, c.mirrored) for c in crops] == [("R", False)]
