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
