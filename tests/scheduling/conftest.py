"""Fixtures shared by the FHIR backend's tests and the FHIR facade's own tests, and
the stores' tests on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.fakes.fhir_facade import FhirFacade
from tests.staff.pgkit import store_cluster, store_location  # noqa: F401 (fixtures)


@pytest.fixture
def facade() -> Iterator[FhirFacade]:
    """A fake FHIR R4 server, running for one test."""
    with FhirFacade() as running:
        yield running


@pytest.fixture
def schedule(facade: FhirFacade) -> str:
    """The id of one practitioner's Schedule on ``facade``."""
    return facade.seed_schedule("Practitioner/dr-valliant")
