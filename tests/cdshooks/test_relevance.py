import pytest

from cds_service.cdshooks.relevance import is_hip_imaging_order, relevant_orders
from cds_service.ehr import load_example

CPT_SYSTEM = "http://www.ama-assn.org/go/cpt"


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


# --- Radiograph, CT and MR of hip, pelvis and femur ---------------------------------------------


NEW_CPT = {
    "XR femur": ("73551", "73552"),
    "CT pelvis": ("72192", "72193", "72194"),
    "CT lower extremity": ("73700", "73701", "73702"),
    "MRI pelvis": ("72195", "72196", "72197"),
    "MRI lower extremity other than joint": ("73718", "73719", "73720"),
    "MRI lower extremity joint": ("73721", "73722", "73723"),
}


@pytest.mark.parametrize("code", [code for codes in NEW_CPT.values() for code in codes])
def test_each_new_cpt_code_is_relevant(code):
    assert is_hip_imaging_order(order(code))


@pytest.mark.parametrize("code", ["72191", "72198", "73706", "73725", "74712", "71046", "72125"])
def test_angiography_obstetric_and_other_cpt_codes_are_not(code):
    assert not is_hip_imaging_order(order(code))


@pytest.mark.parametrize(
    "code",
    ["30615-9", "24866-6", "36014-9", "36359-8", "36172-5", "30673-8", "30671-2", "30687-8", "36173-3", "36302-8"],
)
def test_ct_and_mr_loinc_codes_are_relevant(code):
    assert is_hip_imaging_order(order(code, system="http://loinc.org"))


def test_every_default_code_is_a_system_code_pair():
    from cds_service.cdshooks.relevance import DEFAULT_CODES, HIP_PELVIS_CODES, code_set

    assert code_set(DEFAULT_CODES) == HIP_PELVIS_CODES and len(HIP_PELVIS_CODES) == len(DEFAULT_CODES)


@pytest.mark.parametrize(
    "text",
    [
        "CT pelvis without contrast",
        "MR hip left",
        "MRI femur right",
        "Magnetic resonance imaging of the pelvis",
        "Computed tomography, left hip",
        "CAT scan pelvis",
        "XR femur 2 views",
    ],
)
def test_ct_and_mr_words_are_relevant(text):
    assert is_hip_imaging_order(order(text=text))


@pytest.mark.parametrize(
    "text",
    [
        "MRI fetal pelvis",
        "MR pelvis for pregnancy",
        "Obstetric MRI pelvis",
        "CT pelvis gestational dating",
        "CT angiography pelvis",
        "CTA pelvis and lower extremity",
        "MRA femoral arteries",
        "CT abdominal aorta bilateral iliofemoral runoff",
        "CT run-off lower extremity femoral",
        "XR venogram femoral vein",
        "MR angio hip",
    ],
)
def test_obstetric_and_angiography_orders_are_not_relevant(text):
    assert not is_hip_imaging_order(order(text=text))


def test_an_explicit_code_wins_over_excluding_words():
    assert is_hip_imaging_order(order("72195", "MRI fetal pelvis"))


@pytest.mark.parametrize(
    "resource",
    [
        None,
        "ServiceRequest",
        [],
        {"resourceType": "ServiceRequest", "code": "XR hip"},
        {"resourceType": "ServiceRequest", "code": {"coding": "73502"}},
        {"resourceType": "ServiceRequest", "code": {"coding": [None, "x", 3]}},
        {"resourceType": "ServiceRequest", "code": {"coding": [{"system": CPT_SYSTEM, "code": ["73502"]}]}},
        {"resourceType": "ServiceRequest", "code": {"coding": [{"system": CPT_SYSTEM, "code": {"a": 1}}]}},
        {"resourceType": "ServiceRequest", "code": {"coding": [{"system": [], "code": 73502}]}},
        {"resourceType": "ServiceRequest", "code": {"text": ["XR hip"], "coding": [{"display": {"x": 1}}]}},
    ],
)
def test_odd_resources_are_not_relevant_and_never_raise(resource):
    assert not is_hip_imaging_order(resource)


@pytest.mark.parametrize(
    "context",
    [
        None,
        [],
        "context",
        {},
        {"draftOrders": "bundle"},
        {"draftOrders": {"entry": "x"}},
        {"draftOrders": {"entry": {"resource": {}}}},
        {"draftOrders": {"entry": [None, 1, "x", [], {"resource": "x"}, {"resource": None}]}},
        {"draftOrders": {"entry": [{"resource": {"resourceType": "ServiceRequest", "code": {"coding": {}}}}]}},
        {"draftOrders": {"entry": [{"resource": order("73502")}]}, "selections": [{"x": 1}, ["y"]]},
        {"draftOrders": {"entry": [{"resource": order("73502")}]}, "selections": "ServiceRequest/o1"},
    ],
)
def test_junk_contexts_give_no_orders(context):
    assert relevant_orders(context) == []


def test_junk_beside_a_good_entry_keeps_the_good_one():
    context = {"draftOrders": {"entry": [None, {"resource": 3}, {"resource": order("73552")}]}}
    assert [o["id"] for o in relevant_orders(context)] == ["o1"]
