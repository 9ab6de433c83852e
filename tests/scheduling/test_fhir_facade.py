"""The FHIR R4 facade behaves as the specification says, over real HTTP.

These tests pin the server behaviour the FHIR scheduler backend relies on, so that
the backend's tests mean something: version-aware updates, conditional create,
atomic transactions and the search semantics.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional

import pytest
import requests

from tests.fakes.fhir_facade import Fault, FhirFacade

CENTRAL = timezone(timedelta(hours=-5))
NINE = datetime(2030, 3, 5, 9, 0, tzinfo=CENTRAL)
SYSTEM = "urn:test:visit-type"
FHIR_JSON = {"Content-Type": "application/fhir+json"}
TIMEOUT = 5


@pytest.fixture
def slots(facade: FhirFacade, schedule: str) -> List[str]:
    """Free slots at 09:00, 10:00 and 11:00 Central."""
    starts = [NINE + timedelta(hours=h) for h in range(3)]
    return facade.seed_slots(schedule, starts, (SYSTEM, "new"), minutes=60)


def get(facade: FhirFacade, path: str, **kwargs: Any) -> requests.Response:
    return requests.get(f"{facade.base_url}/{path}", timeout=TIMEOUT, **kwargs)


def put(
    facade: FhirFacade, path: str, resource: Dict[str, Any], if_match: Optional[str]
) -> requests.Response:
    headers = dict(FHIR_JSON)
    if if_match is not None:
        headers["If-Match"] = if_match
    return requests.put(
        f"{facade.base_url}/{path}", json=resource, headers=headers, timeout=TIMEOUT
    )


def post(
    facade: FhirFacade, path: str, resource: Dict[str, Any], **headers: str
) -> requests.Response:
    return requests.post(
        f"{facade.base_url}/{path}".rstrip("/"),
        json=resource,
        headers={**FHIR_JSON, **headers},
        timeout=TIMEOUT,
    )


def search_ids(facade: FhirFacade, resource_type: str, params: Any) -> List[str]:
    response = get(facade, resource_type, params=params)
    assert response.status_code == 200, response.text
    return [e["resource"]["id"] for e in response.json().get("entry", [])]


def appointment(identifier: str = "k-1", slot_id: str = "s") -> Dict[str, Any]:
    return {
        "resourceType": "Appointment",
        "status": "booked",
        "identifier": [{"system": "urn:test:key", "value": identifier}],
        "start": NINE.isoformat(),
        "end": (NINE + timedelta(hours=1)).isoformat(),
        "slot": [{"reference": f"Slot/{slot_id}"}],
        "participant": [{"actor": {"display": "someone"}, "status": "accepted"}],
    }


def busy(facade: FhirFacade, slot_id: str) -> Dict[str, Any]:
    slot = facade.read_resource("Slot", slot_id)
    assert slot is not None
    return {**slot, "status": "busy"}


def is_outcome(response: requests.Response) -> bool:
    body = response.json()
    return body["resourceType"] == "OperationOutcome" and bool(body["issue"])


# --- read and update (http.html#read, #update, #concurrency) ------------------------


def test_read_answers_the_version_as_etag_and_meta(
    facade: FhirFacade, slots: List[str]
) -> None:
    response = get(facade, f"Slot/{slots[0]}")

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/fhir+json")
    assert response.headers["ETag"] == 'W/"1"'
    assert "GMT" in response.headers["Last-Modified"]
    body = response.json()
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].endswith("Z")


def test_read_of_unknown_id_or_type_is_404_with_an_outcome(facade: FhirFacade) -> None:
    for path in ("Slot/nope", "Observation/1"):
        response = get(facade, path)
        assert response.status_code == 404
        assert is_outcome(response)


def test_update_with_a_stale_if_match_is_412_and_changes_nothing(
    facade: FhirFacade, slots: List[str]
) -> None:
    first = put(facade, f"Slot/{slots[0]}", busy(facade, slots[0]), 'W/"1"')
    assert first.status_code == 200
    assert first.headers["ETag"] == 'W/"2"'

    stale = busy(facade, slots[0]) | {"status": "free"}
    second = put(facade, f"Slot/{slots[0]}", stale, 'W/"1"')

    assert second.status_code == 412
    assert is_outcome(second)
    stored = facade.read_resource("Slot", slots[0])
    assert stored is not None
    assert (stored["status"], stored["meta"]["versionId"]) == ("busy", "2")


def test_old_versions_stay_readable(facade: FhirFacade, slots: List[str]) -> None:
    put(facade, f"Slot/{slots[0]}", busy(facade, slots[0]), 'W/"1"')

    assert get(facade, f"Slot/{slots[0]}/_history/1").json()["status"] == "free"
    assert get(facade, f"Slot/{slots[0]}/_history/2").json()["status"] == "busy"


def test_update_needs_the_url_id_in_the_body(
    facade: FhirFacade, slots: List[str]
) -> None:
    body = busy(facade, slots[0]) | {"id": slots[1]}

    assert put(facade, f"Slot/{slots[0]}", body, None).status_code == 400


def test_update_of_a_missing_resource(facade: FhirFacade, slots: List[str]) -> None:
    body = busy(facade, slots[0]) | {"id": "new-one"}

    assert put(facade, "Slot/new-one", body, None).status_code == 405
    assert put(facade, "Slot/new-one", body, 'W/"1"').status_code == 412
    facade.update_create = True
    assert put(facade, "Slot/new-one", body, None).status_code == 201


def test_bodies_must_be_fhir_json(facade: FhirFacade, slots: List[str]) -> None:
    response = requests.put(
        f"{facade.base_url}/Slot/{slots[0]}",
        data="{}",
        headers={"Content-Type": "text/plain"},
        timeout=TIMEOUT,
    )

    assert response.status_code == 415


def test_invalid_resources_are_refused(facade: FhirFacade) -> None:
    no_participant = appointment() | {"participant": []}
    naive_start = appointment() | {"start": "2030-03-05T09:00:00"}
    start_only = {k: v for k, v in appointment().items() if k != "end"}

    for body in (no_participant, naive_start, start_only):
        assert post(facade, "Appointment", body).status_code == 400
    assert facade.inspect("Appointment") == []


# --- create and conditional create (http.html#create, #ccreate) ---------------------


def test_create_assigns_the_id_and_answers_the_location(facade: FhirFacade) -> None:
    response = post(facade, "Appointment", appointment() | {"id": "mine"})

    assert response.status_code == 201
    created = response.json()
    assert created["id"] != "mine"
    assert response.headers["Location"] == f"Appointment/{created['id']}/_history/1"
    assert response.headers["ETag"] == 'W/"1"'


def test_if_none_exist_creates_once_then_returns_the_match(facade: FhirFacade) -> None:
    condition = "identifier=urn:test:key|k-1"

    first = post(facade, "Appointment", appointment(), **{"If-None-Exist": condition})
    again = post(facade, "Appointment", appointment(), **{"If-None-Exist": condition})

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert len(facade.inspect("Appointment")) == 1


def test_if_none_exist_with_several_matches_is_412(facade: FhirFacade) -> None:
    post(facade, "Appointment", appointment())
    post(facade, "Appointment", appointment())

    response = post(
        facade,
        "Appointment",
        appointment(),
        **{"If-None-Exist": "identifier=urn:test:key|k-1"},
    )

    assert response.status_code == 412
    assert len(facade.inspect("Appointment")) == 2


def test_if_none_exist_takes_only_a_query(facade: FhirFacade) -> None:
    condition = "Appointment?identifier=urn:test:key|k-1"

    response = post(
        facade, "Appointment", appointment(), **{"If-None-Exist": condition}
    )

    assert response.status_code == 400


# --- search (search.html) -----------------------------------------------------------


def at(hour: int) -> str:
    return (NINE.replace(hour=hour)).isoformat()


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        ([f"ge{at(10)}"], [1, 2]),
        ([f"gt{at(10)}"], [2]),
        ([f"lt{at(10)}"], [0]),
        ([f"le{at(10)}"], [0, 1]),
        ([at(10)], [1]),
        ([f"eq{at(10)}"], [1]),
        ([f"ne{at(10)}"], [0, 2]),
        (["ge2030-03-05T15:00:00Z"], [1, 2]),  # 10:00 Central in UTC
        (["eq2030-03-05T10:00-05:00"], [1]),  # minute precision: 10:00:00-10:00:59
        (["eq2030-03-05"], [0, 1, 2]),  # day precision
        (["gt2030-03-05"], []),
        ([f"ge{at(9)}", f"lt{at(11)}"], [0, 1]),  # repeated parameters: AND
        ([f"lt{at(10)},gt{at(10)}"], [0, 2]),  # comma: OR
    ],
)
def test_slot_start_date_prefixes(
    facade: FhirFacade, slots: List[str], start: List[str], expected: List[int]
) -> None:
    params = [("start", value) for value in start] + [("_sort", "start")]

    assert search_ids(facade, "Slot", params) == [slots[i] for i in expected]


@pytest.mark.parametrize(
    "value", ["2030-03-05T10:00:00", "ap2030-03-05", "2030-13-01", "tomorrow"]
)
def test_bad_dates_are_refused(
    facade: FhirFacade, slots: List[str], value: str
) -> None:
    assert get(facade, "Slot", params={"start": value}).status_code == 400


def test_an_unencoded_plus_in_a_date_is_refused(
    facade: FhirFacade, slots: List[str]
) -> None:
    response = get(facade, "Slot?start=ge2030-03-05T10:00:00+05:00")

    assert response.status_code == 400


@pytest.mark.parametrize(
    ("token", "matches"),
    [
        (f"{SYSTEM}|new", True),
        ("new", True),
        (f"{SYSTEM}|", True),
        ("|new", False),  # "no system", but the coding has one
        (f"{SYSTEM}|follow-up", False),
        ("urn:other|new", False),
    ],
)
def test_service_type_tokens(
    facade: FhirFacade, slots: List[str], token: str, matches: bool
) -> None:
    found = search_ids(facade, "Slot", {"service-type": token})

    assert (sorted(found) == sorted(slots)) if matches else found == []


def test_schedule_reference_forms_and_status(
    facade: FhirFacade, schedule: str, slots: List[str]
) -> None:
    other = facade.seed_schedule("Practitioner/dr-b")
    [other_slot] = facade.seed_slots(other, [NINE], (SYSTEM, "new"))
    put(facade, f"Slot/{slots[0]}", busy(facade, slots[0]), 'W/"1"')

    assert sorted(search_ids(facade, "Slot", {"schedule": f"Schedule/{schedule}"})) == (
        sorted(slots)
    )
    assert search_ids(facade, "Slot", {"schedule": other}) == [other_slot]
    both = f"Schedule/{schedule},Schedule/{other}"
    assert len(search_ids(facade, "Slot", {"schedule": both})) == 4
    assert search_ids(facade, "Slot", {"status": "busy", "schedule": schedule}) == [
        slots[0]
    ]


def test_sort_count_and_the_searchset_bundle(
    facade: FhirFacade, slots: List[str]
) -> None:
    response = get(facade, "Slot", params={"_sort": "-start", "_count": "2"})
    bundle = response.json()

    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "searchset"
    assert bundle["total"] == 3
    assert [e["resource"]["id"] for e in bundle["entry"]] == [slots[2], slots[1]]
    assert bundle["entry"][0]["fullUrl"] == f"{facade.base_url}/Slot/{slots[2]}"
    assert bundle["entry"][0]["search"] == {"mode": "match"}


def test_pages_follow_next_links_within_count_and_the_servers_page_size(
    facade: FhirFacade, slots: List[str]
) -> None:
    facade.page_size = 2
    pages: List[List[str]] = []
    url: Optional[str] = f"{facade.base_url}/Slot?_sort=start&_count=5"
    while url is not None:
        bundle = requests.get(url, timeout=TIMEOUT).json()
        assert bundle["total"] == 3
        pages.append([e["resource"]["id"] for e in bundle.get("entry", [])])
        nexts = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        url = nexts[0] if nexts else None
    assert pages == [slots[:2], slots[2:]]
    # _count below the page size wins; _count=0 is the total only, with no next.
    assert search_ids(facade, "Slot", {"_sort": "start", "_count": "1"}) == slots[:1]
    empty = get(facade, "Slot", params={"_count": "0"}).json()
    assert [link["relation"] for link in empty["link"]] == ["self"]


def test_a_page_offset_the_server_never_gave_is_refused(
    facade: FhirFacade, slots: List[str]
) -> None:
    assert get(facade, "Slot", params={"_getpagesoffset": "-1"}).status_code == 400


@pytest.mark.parametrize(
    "params",
    [
        {"colour": "blue"},
        {"status:not": "busy"},
        {"_sort": "status"},
        {"_count": "many"},
        {"_include": "Slot:schedule"},
    ],
)
def test_unsupported_search_parameters_are_refused(
    facade: FhirFacade, slots: List[str], params: Dict[str, str]
) -> None:
    assert get(facade, "Slot", params=params).status_code == 400


def test_unknown_parameters_are_ignored_when_asked_to_be_lenient(
    facade: FhirFacade, slots: List[str]
) -> None:
    response = get(
        facade,
        "Slot",
        params={"colour": "blue"},
        headers={"Prefer": "handling=lenient"},
    )

    assert response.json()["total"] == 3


def test_identifier_tokens_honour_escapes(facade: FhirFacade) -> None:
    post(facade, "Appointment", appointment(identifier="a|b,c"))
    post(facade, "Appointment", appointment(identifier="a"))

    found = search_ids(facade, "Appointment", {"identifier": r"urn:test:key|a\|b\,c"})

    assert len(found) == 1


# --- transactions (http.html#transaction) -------------------------------------------


def transaction(*entries: Dict[str, Any]) -> Dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def put_entry(resource: Dict[str, Any], if_match: Optional[str]) -> Dict[str, Any]:
    request = {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}
    if if_match:
        request["ifMatch"] = if_match
    return {"resource": resource, "request": request}


def post_entry(
    resource: Dict[str, Any], full_url: str = "", if_none_exist: str = ""
) -> Dict[str, Any]:
    entry: Dict[str, Any] = {
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"]},
    }
    if full_url:
        entry["fullUrl"] = full_url
    if if_none_exist:
        entry["request"]["ifNoneExist"] = if_none_exist
    return entry


def test_transaction_applies_every_entry_and_answers_in_request_order(
    facade: FhirFacade, slots: List[str]
) -> None:
    patient_url = "urn:uuid:0c6c7cbb-1f6f-4c3d-9a55-5d4fb2d0a8f1"
    booked = appointment(slot_id=slots[0]) | {
        "participant": [{"actor": {"reference": patient_url}, "status": "accepted"}]
    }
    patient = {"resourceType": "Patient", "name": [{"text": "Pat"}]}

    response = post(
        facade,
        "",
        transaction(
            post_entry(booked),  # refers to the Patient created after it
            put_entry(busy(facade, slots[0]), 'W/"1"'),
            post_entry(patient, full_url=patient_url),
        ),
    )

    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in bundle["entry"]]
    assert statuses == ["201 Created", "200 OK", "201 Created"]
    [stored_patient] = facade.inspect("Patient")
    [stored] = facade.inspect("Appointment")
    actor = stored["participant"][0]["actor"]["reference"]
    assert actor == f"Patient/{stored_patient['id']}"
    assert bundle["entry"][1]["response"]["etag"] == 'W/"2"'
    assert bundle["entry"][0]["response"]["location"].startswith("Appointment/")


def test_transaction_is_all_or_nothing(facade: FhirFacade, slots: List[str]) -> None:
    put(facade, f"Slot/{slots[0]}", busy(facade, slots[0]), 'W/"1"')  # now v2

    response = post(
        facade,
        "",
        transaction(
            post_entry(appointment(slot_id=slots[0])),
            put_entry(busy(facade, slots[1]), 'W/"1"'),  # would succeed alone
            put_entry(busy(facade, slots[0]), 'W/"1"'),  # stale
        ),
    )

    assert response.status_code == 412
    assert is_outcome(response)
    assert facade.inspect("Appointment") == []
    stored = facade.read_resource("Slot", slots[1])
    assert stored is not None
    assert (stored["status"], stored["meta"]["versionId"]) == ("free", "1")


def test_an_invalid_entry_fails_the_transaction(
    facade: FhirFacade, slots: List[str]
) -> None:
    response = post(
        facade,
        "",
        transaction(
            put_entry(busy(facade, slots[0]), 'W/"1"'),
            post_entry(appointment() | {"participant": []}),
        ),
    )

    assert response.status_code == 400
    stored = facade.read_resource("Slot", slots[0])
    assert stored is not None
    assert stored["status"] == "free"


def test_reads_in_a_transaction_see_its_writes(
    facade: FhirFacade, slots: List[str]
) -> None:
    read = {"request": {"method": "GET", "url": f"Slot/{slots[0]}"}}

    response = post(
        facade, "", transaction(read, put_entry(busy(facade, slots[0]), 'W/"1"'))
    )

    assert response.json()["entry"][0]["resource"]["status"] == "busy"


def test_conditional_create_in_a_transaction_returns_the_match(
    facade: FhirFacade,
) -> None:
    condition = "identifier=urn:test:key|k-1"
    entry = post_entry(appointment(), if_none_exist=condition)

    first = post(facade, "", transaction(entry))
    second = post(facade, "", transaction(entry))

    assert first.json()["entry"][0]["response"]["status"] == "201 Created"
    assert second.json()["entry"][0]["response"]["status"] == "200 OK"
    assert len(facade.inspect("Appointment")) == 1


def test_one_resource_twice_in_a_transaction_is_refused(
    facade: FhirFacade, slots: List[str]
) -> None:
    entry = put_entry(busy(facade, slots[0]), None)

    response = post(facade, "", transaction(entry, entry))

    assert response.status_code == 400
    assert facade.inspect("Slot")[0]["meta"]["versionId"] == "1"


def test_only_transaction_bundles_are_processed(facade: FhirFacade) -> None:
    bundle = transaction(post_entry(appointment())) | {"type": "batch"}

    assert post(facade, "", bundle).status_code == 400
    assert facade.inspect("Appointment") == []


def test_concurrent_transactions_are_serialised(
    facade: FhirFacade, slots: List[str]
) -> None:
    bundle = transaction(put_entry(busy(facade, slots[0]), 'W/"1"'))
    barrier = threading.Barrier(20)
    statuses: List[int] = []

    def attempt() -> None:
        barrier.wait()
        statuses.append(post(facade, "", bundle).status_code)

    threads = [threading.Thread(target=attempt) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [200] + [412] * 19
    stored = facade.read_resource("Slot", slots[0])
    assert stored is not None
    assert stored["meta"]["versionId"] == "2"


# --- test controls ------------------------------------------------------------------


def test_faults_delay_or_fail_requests(facade: FhirFacade, slots: List[str]) -> None:
    facade.inject(Fault(delay=1.0, times=1))
    with pytest.raises(requests.Timeout):
        requests.get(f"{facade.base_url}/Slot", timeout=0.2)
    facade.inject(Fault(status=503, method="GET", resource_type="Slot", times=1))

    assert get(facade, "Slot").status_code == 503
    assert get(facade, "Slot").status_code == 200


def test_a_fault_after_processing_keeps_the_change(
    facade: FhirFacade, slots: List[str]
) -> None:
    facade.inject(Fault(status=500, after=True, method="PUT"))

    response = put(facade, f"Slot/{slots[0]}", busy(facade, slots[0]), 'W/"1"')

    assert response.status_code == 500
    stored = facade.read_resource("Slot", slots[0])
    assert stored is not None
    assert stored["status"] == "busy"


def test_a_required_token_is_enforced() -> None:
    with FhirFacade(required_token="s3cret") as facade:
        assert get(facade, "metadata").status_code == 401
        ok = get(facade, "metadata", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        assert ok.json()["fhirVersion"] == "4.0.1"


def test_requests_outside_the_base_path_are_404(facade: FhirFacade) -> None:
    url = facade.base_url.replace("/fhir", "/other/Slot")

    assert requests.get(url, timeout=TIMEOUT).status_code == 404
