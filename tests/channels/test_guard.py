"""Typed text cannot pass for a Rasa command (channels/guard.py, clean_text)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from channels.guard import as_plain_text, guard_text, remember_buttons
from channels.store import ChannelStore
from clinic_nlu.text import clean_text


@pytest.fixture
def store(tmp_path: Path) -> ChannelStore:
    return ChannelStore(tmp_path / "state" / "channels.db")


OFFERED = '/inform{"appointment_option": "1"}'


def test_offered_payload_passes_unchanged(store: ChannelStore) -> None:
    remember_buttons(
        store,
        "rest",
        "alice",
        [{"text": "Pick", "buttons": [{"title": "A", "payload": OFFERED}]}],
    )
    assert guard_text(store, "rest", "alice", OFFERED) == OFFERED


@pytest.mark.parametrize(
    "text",
    [
        "/restart",
        '/book_appointment{"slot_id": "x"}',
        OFFERED,  # offered to someone else, not to bob
        " //restart",
        "/ restart",
    ],
)
def test_other_commands_become_plain_text(store: ChannelStore, text: str) -> None:
    remember_buttons(
        store, "rest", "alice", [{"buttons": [{"title": "A", "payload": OFFERED}]}]
    )
    guarded = guard_text(store, "rest", "bob", text)
    assert not guarded.startswith("/")
    assert guarded == as_plain_text(text)


def test_offers_are_per_channel(store: ChannelStore) -> None:
    store.remember_offers("socketio", "alice", [("A", OFFERED)])
    assert not guard_text(store, "rest", "alice", OFFERED).startswith("/")


def test_ordinary_text_is_untouched(store: ChannelStore) -> None:
    assert guard_text(store, "rest", "x", "what is 1/2 of the dose") == (
        "what is 1/2 of the dose"
    )


def test_latest_choices_keep_their_order(store: ChannelStore) -> None:
    store.remember_offers("sms", "+18175550100", [("A", "/a"), ("B", "/b")])
    store.remember_offers("sms", "+18175550100", [("C", "/c"), ("D", "/d")])
    assert store.latest_choices("sms", "+18175550100") == [("C", "/c"), ("D", "/d")]
    assert store.was_offered("sms", "+18175550100", "/a")  # still in this conversation
    store.forget_choices("sms", "+18175550100")
    assert store.latest_choices("sms", "+18175550100") == []


def test_opt_outs_survive_a_new_store(tmp_path: Path) -> None:
    path = tmp_path / "channels.db"
    ChannelStore(path).set_opted_out("+18175550100", True)
    assert ChannelStore(path).is_opted_out("+18175550100")
    ChannelStore(path).set_opted_out("+18175550100", False)
    assert not ChannelStore(path).is_opted_out("+18175550100")


def test_store_file_is_private(store: ChannelStore) -> None:
    store.set_opted_out("+18175550100", True)
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store.path.parent).st_mode) == 0o700


@pytest.mark.parametrize("text", ["／restart", "⁄restart", " ／／restart"])
def test_normalisation_cannot_create_a_command(text: str) -> None:
    assert not clean_text(text, 1000).startswith("/")


def test_a_real_payload_survives_cleaning() -> None:
    assert clean_text(OFFERED, 1000) == OFFERED
