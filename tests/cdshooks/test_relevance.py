from cds_service.cdshooks.relevance import is_hip_imaging_order, relevant_orders
from cds_service.ehr import load_example


def order(code: str | None = None, text: str = "", system: str = "http://www.ama-assn.org/go/cpt") -> dict:
    resource = {"resourceType": "ServiceRequest", "id": "o1", "code": {"text": text}}
    if code:
        resource["code"]["coding"] = [{"system": system, "code": code}]
    return resource


def test_cpt_hip_and_pelvis_codes_are_relevant():
    assert is_hip_imaging_order(order("73502"))
    assert is_hip_imaging_order(order("72170"))


def test_chest_xray_is_not_relevant():
    assert not is_hip_imaging_order(order("71046", "XR chest 2 views"))


def test_text_needs_both_a_hip_word_and_an_imaging_word():
    assert is_hip_imaging_order(order(text="XR hip left"))
    assert not is_hip_imaging_order(order(text="Hip replacement referral"))


def test_only_service_requests_count():
    assert not is_hip_imaging_order({"resourceType": "MedicationRequest", "code": {"text": "hip x-ray"}})


def test_selections_limit_the_orders_considered():
    context = load_example("order-select.json")["context"]
    assert [o["id"] for o in relevant_orders(context)] == ["xr-hip-1"]
    context["selections"] = ["ServiceRequest/other"]
    assert relevant_orders(context) == []


def test_example_irrelevant_request_has_no_relevant_orders():
    assert relevant_orders(load_example("order-select-irrelevant.json")["context"]) == []


def test_loinc_coded_orders_are_relevant_by_default():
    assert is_hip_imaging_order(order("30768-6", system="http://loinc.org"))


def test_the_code_set_is_configurable():
    from cds_service.cdshooks.relevance import code_set

    snomed = code_set(["http://snomed.info/sct|12345"])
    assert is_hip_imaging_order(order("12345", system="http://snomed.info/sct"), snomed)
    assert not is_hip_imaging_order(order("73502"), snomed)
