"""The site-dependence control catches a planted shortcut, and does not flag a score without one."""

from __future__ import annotations

import numpy as np

from cds_service.training.dataset import CropSet
from cds_service.training.evaluation.planted import planted_shortcut, site_dependence


def _crops(site: list[str], fractured: list[bool]) -> CropSet:
    n = len(site)
    return CropSet(
        np.zeros((n, 4, 4), np.uint8),
        np.array([1 if f else 0 for f in fractured]),
        np.full((n, 4), np.nan, np.float32),
        np.array(site),
        np.full((n, 4), np.nan, np.float32),
    )


def test_a_score_that_ignores_the_site_is_not_flagged_and_one_that_reads_it_is():
    rng = np.random.default_rng(1)
    n = 400
    site = ["a" if i % 4 < 2 else "b" for i in range(n)]  # both hips of a study share its site
    fractured = [bool(i % 2 == 0 and rng.random() < 0.5) for i in range(n)]
    data = _crops(site, fractured)
    honest = np.array(fractured, float) * 0.8 + rng.random(n) * 0.2
    assert not site_dependence(honest, data, 200)["flagged"]
    shortcut = honest + np.where(data.site == "b", 0.5, 0.0)
    found = site_dependence(shortcut, data, 200)
    assert found["flagged"] and set(found["flagged_sites"]) == {"a", "b"}


def test_the_control_flags_a_model_trained_with_a_planted_site_label_correlation():
    """A real model (the histogram baseline) trained where every fracture came from one site learns the
    site; on test data with labels independent of the site its normal hips' scores betray it."""
    result = planted_shortcut(seed=11, studies=60, resamples=200)
    assert result["caught"] and result["planted"]["flagged"]
    # The planted model separates the sites' normal hips almost perfectly.
    assert max(abs(v[0] - 0.5) for v in result["planted"]["auc_by_site"].values()) > 0.35
