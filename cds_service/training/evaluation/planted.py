"""A shortcut control that can fail: does p(fracture) depend on the site among hips of one label?

The global-statistics baseline and the marker swap cannot fail on the phantoms by construction: every
label is drawn independently of site, acquisition and marker. A model can still have learnt a
shortcut (a site's look that went with fractures in its training data); on a test set whose labels
are independent of the site, such a model scores the **normal** hips of one site higher than those of
another. :func:`site_dependence` measures that: per site, the AUC with which p(fracture) tells that
site's normal hips from the other sites' (0.5 = no dependence), with study-clustered intervals.

:func:`planted_shortcut` shows the control catches what it is for: it trains the same kind of model
twice on fixed-profile phantoms of two training sites — once with labels independent of the site, once
with a planted site–label correlation (every fracture from one site, every normal from the other) —
and runs :func:`site_dependence` on both against a test set whose labels are independent of the site.
The planted model must be flagged; a control that does not flag it measures nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cds_service.training.dataset import CropSet, generate
from cds_service.training.evaluation.controls import histogram_features
from cds_service.training.metrics import bootstrap, roc_auc

#: A site is flagged when its normal hips are told from the other sites' with an AUC whose whole 95 %
#: interval lies outside 0.5 ± FLAG_MARGIN (a strong, not a marginal, site effect).
FLAG_MARGIN = 0.25
#: The two training sites of the planted control: fixed profiles whose looks differ (MONOCHROME1 with a
#: gamma of 0.8 at 10 bits vs MONOCHROME2 with a gamma of 1.25 at 8 bits), so a site is learnable.
PLANTED_SITES = ("site-b", "site-c")
#: Studies per split of the planted control (fixed: it must be able to catch the plant in a fast run too).
PLANTED_STUDIES = 60


def site_dependence(score: np.ndarray, data: CropSet, resamples: int) -> dict:
    """Per site, the AUC (study-clustered 95 % CI) with which ``score`` separates that site's normal hips
    from the other sites' normal hips; ``flagged`` when any site's interval lies outside 0.5 ± FLAG_MARGIN."""
    normal = ~data.fractured
    sites = sorted(set(data.site[normal].tolist()))
    by_site: dict[str, list[float]] = {}
    if len(sites) >= 2:
        for site in sites:
            is_site = data.site[normal] == site
            by_site[site] = list(
                bootstrap(roc_auc, is_site, score[normal], resamples=resamples, clusters=data.study[normal])
            )
    flagged = [s for s, (_, low, high) in by_site.items() if low > 0.5 + FLAG_MARGIN or high < 0.5 - FLAG_MARGIN]
    return {
        "normal_hips": int(normal.sum()),
        "auc_by_site": by_site,
        "flagged_sites": flagged,
        "flagged": bool(flagged),
    }


def _histogram_model(train: CropSet) -> Callable[[np.ndarray], np.ndarray]:
    """Logistic regression on intensity histograms (the baseline's model), fitted on ``train``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(histogram_features(train.images))
    model = LogisticRegression(max_iter=2000).fit(scaler.transform(histogram_features(train.images)), train.fractured)
    return lambda images: model.predict_proba(scaler.transform(histogram_features(images)))[:, 1]


def planted_shortcut(seed: int, studies: int, resamples: int, size: int = 128) -> dict:
    """The control on a model with a planted site–label correlation and on the same model without it.

    Both are trained on the same fixed-profile phantoms of :data:`PLANTED_SITES` (every study with one
    fractured hip, so each site has fractured and normal hips); the planted one keeps only the fractures
    of the second site and the normal hips of the first. Each is tested on new studies of both sites
    with labels independent of the site.
    """
    train = generate(studies, seed, size, PLANTED_SITES, p_fracture=1.0, vary=False, progress=False)
    test = generate(studies, seed + 1, size, PLANTED_SITES, p_fracture=0.5, vary=False, progress=False)
    first, second = PLANTED_SITES
    planted = train.subset((train.fractured & (train.site == second)) | (~train.fractured & (train.site == first)))
    result = {}
    for name, data in (("independent", train), ("planted", planted)):
        score = _histogram_model(data)(test.images)
        result[name] = {
            "auc": list(bootstrap(roc_auc, test.fractured, score, resamples=resamples, clusters=test.study)),
            **site_dependence(score, test, resamples),
        }
    result["caught"] = bool(result["planted"]["flagged"])
    return result
