"""The review pictures: each tile's inset shows the hip under review; the companion picture's name."""

from pathlib import Path

import numpy as np

from cds_service.training.phantoms import contact_sheet, radiograph


def test_the_inset_holds_the_right_femoral_head_and_neck():
    trace: dict = {}
    phantom = radiograph.render(np.random.default_rng(11), "garden_II", "none", trace=trace)
    left, top, right, bottom = contact_sheet._inset_box(phantom)
    geometry, femur = trace["geometry"], trace["femurs"]["R"]
    rows, cols = geometry.project_points(np.stack([femur.head_centre, femur.neck_centre]))
    assert ((cols > left) & (cols < right) & (rows > top) & (rows < bottom)).all()
    image = contact_sheet.tile(phantom, "garden_II", "site-a")
    assert image.size == (contact_sheet.TILE[0] + 2 + contact_sheet.INSET, contact_sheet.INSET)


def test_every_label_and_mimic_is_on_the_sheet_and_the_comparison_goes_beside_it():
    cases = contact_sheet.contact_cases(("site-a", "site-b"))
    assert {c.label for c in cases} == set(contact_sheet.LABELS)
    assert {c.mimic for c in cases if c.mimic} == set(contact_sheet.MIMIC_CASES)
    assert {c.site for c in cases} == {"site-a", "site-b"}
    sheet = Path("docs/evaluation/phantoms_contact_sheet.png")
    assert contact_sheet.companion(sheet) == Path("docs/evaluation/phantoms_cartoon_vs_v2.png")
    assert contact_sheet.companion(Path("x/sheet.png")) == Path("x/sheet_cartoon_vs_v2.png")
