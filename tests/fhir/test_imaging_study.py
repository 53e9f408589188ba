import copy

from cds_service.ehr import imaging_study_bundle
from cds_service.fhir.imaging_study import select_study
from tests.factory import radiograph, ramp


def bundle() -> dict:
    return imaging_study_bundle(radiograph(ramp()), "p1", "file:///tmp/store")


def test_selects_the_study_with_its_endpoint_and_uids():
    study = select_study(bundle())
    assert study is not None
    assert study.endpoint_address == "file:///tmp/store"
    assert study.sop_instance_uid and study.series_instance_uid and study.study_instance_uid


def test_newest_study_wins():
    old, new = bundle(), bundle()
    old_study, new_study = old["entry"][0]["resource"], new["entry"][0]["resource"]
    old_study["started"], new_study["started"] = "2020-01-01T00:00:00Z", "2026-11-01T00:00:00Z"
    old_study["id"], new_study["id"] = "old", "new"
    merged = copy.deepcopy(old)
    merged["entry"].insert(0, new["entry"][0])
    assert select_study(merged).imaging_study_id == "new"


def test_non_radiograph_and_non_hip_studies_are_ignored():
    ct = bundle()
    ct["entry"][0]["resource"]["modality"] = [{"code": "CT"}]
    ct["entry"][0]["resource"]["series"][0]["modality"] = {"code": "CT"}
    assert select_study(ct) is None
    chest = bundle()
    chest["entry"][0]["resource"]["series"][0]["bodySite"] = {"code": "51185008", "display": "Thorax"}
    chest["entry"][0]["resource"]["description"] = "Chest PA"
    assert select_study(chest) is None


def test_study_without_a_dicomweb_endpoint_is_not_usable():
    broken = bundle()
    broken["entry"] = broken["entry"][:1]
    assert select_study(broken) is None


def test_empty_or_wrong_prefetch_yields_nothing():
    assert select_study(None) is None
    assert select_study({"resourceType": "OperationOutcome"}) is None


def test_studies_older_than_the_look_back_are_ignored():
    from datetime import UTC, datetime, timedelta

    old = bundle()
    old["entry"][0]["resource"]["started"] = "2020-01-01T00:00:00Z"
    now = datetime(2026, 11, 22, tzinfo=UTC)
    assert select_study(old, lookback=timedelta(days=30), now=now) is None
    assert select_study(old, lookback=None, now=now) is not None


def test_the_study_based_on_the_order_wins_over_a_newer_one():
    ordered, newer = bundle(), bundle()
    ordered["entry"][0]["resource"].update(
        id="ordered", started="2026-11-01T00:00:00Z", basedOn=[{"reference": "ServiceRequest/xr-hip-1"}]
    )
    newer["entry"][0]["resource"].update(id="newer", started="2026-11-20T00:00:00Z")
    merged = copy.deepcopy(ordered)
    merged["entry"].insert(0, newer["entry"][0])
    assert select_study(merged, order_ids={"xr-hip-1"}).imaging_study_id == "ordered"
    assert select_study(merged).imaging_study_id == "newer"


def test_the_ap_pelvis_series_and_instance_are_chosen():
    study_bundle = bundle()
    study = study_bundle["entry"][0]["resource"]
    lateral = copy.deepcopy(study["series"][0])
    lateral.update(uid="1.2.3.9", description="Right hip lateral", bodySite={"code": "24136001", "display": "Hip"})
    ap = study["series"][0]
    ap["description"] = "AP pelvis"
    ap["instance"] = [{"uid": "1.2.3.20", "title": "Lateral"}, {"uid": "1.2.3.21", "title": "AP"}]
    study["series"] = [lateral, ap]
    chosen = select_study(study_bundle)
    assert chosen.series_instance_uid == ap["uid"] and chosen.sop_instance_uid == "1.2.3.21"


def test_the_studys_own_orders_are_kept_for_the_reports_based_on():
    orders = bundle()
    orders["entry"][0]["resource"]["basedOn"] = [{"reference": "ServiceRequest/done-1"}, {"display": "no reference"}]
    assert select_study(orders).based_on == ("ServiceRequest/done-1",)
    assert select_study(bundle()).based_on == ()
