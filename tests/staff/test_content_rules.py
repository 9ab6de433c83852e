"""The rules shared by the staff commands and tests/test_data.py."""

from __future__ import annotations

import pytest

from staff import content_rules


def test_an_answer_of_exactly_the_limit_is_accepted() -> None:
    limit = content_rules.MAX_FAQ_ANSWER
    assert content_rules.answer_problems("a" * limit) == []
    assert content_rules.answer_problems("a" * (limit + 1)) != []


def test_newlines_are_sms_safe_but_tabs_and_backticks_are_not() -> None:
    assert content_rules.answer_problems("One.\nTwo.") == []
    assert content_rules.answer_problems("One.\tTwo.") != []
    assert content_rules.answer_problems("Use `this`.") != []


@pytest.mark.parametrize(
    "topic", ["parking", "parking_info", "p2p_billing", "a" + "b" * 40]
)
def test_good_topic_names(topic: str) -> None:
    assert content_rules.topic_name_problems(topic) == []


@pytest.mark.parametrize(
    "topic",
    ["pa", "Parking", "parking info", "parking-info", "_parking", "a" + "b" * 41, ""],
)
def test_bad_topic_names(topic: str) -> None:
    assert content_rules.topic_name_problems(topic) != []


def test_stated_facts_names_every_kind_found() -> None:
    text = "Call 817-555-0100, $20 copay, Mon-Fri at 9am, www.example.com"
    assert set(content_rules.stated_facts(text)) == {
        "phone number",
        "price",
        "weekday",
        "time of day",
        "web or e-mail address",
    }
    assert content_rules.stated_facts("Most patients feel relief in 24-48 hours.") == []


def test_examples_are_cleaned_as_the_model_cleans_messages() -> None:
    assert content_rules.clean_example(" what\u00a0is  a\tspasm\u200b ") == (
        "what is a spasm"
    )
    assert content_rules.normalise("What is a SPASM?!") == "what is a spasm"
