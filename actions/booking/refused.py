"""The intents a form never takes as an answer, and what handles each instead.

While a form asks its question, a message with one of these intents is left to the
rules: the form's validation extracts nothing, the form is rejected and RulePolicy
predicts what the table says. ``tests/test_booking_rules.py`` checks the table
against data/rules/*.yml for every form of domain.yml, so the two cannot drift.
"""

from __future__ import annotations

from typing import Dict, FrozenSet

from clinic_common.settings import RETRIEVAL_INTENT

# data/rules/booking.yml has a rule for it in each form: the answer, then the form
# asks its question again (or, for "never mind" and red flags, the form stops).
IN_FORM_RULE = "in-form rule"
# The rule of the whole conversation answers (conversation.yml, clinic_info.yml);
# RulePolicy then runs the form again, which asks its question again. The same
# answer as outside a form is what a patient expects ("thanks" -> "You're welcome").
GENERAL_RULE = "general rule"
# The rule that starts a booking or a lookup (booking.yml): the new task replaces
# the form, as the patient asked for something else.
NEW_TASK = "new task"

REFUSED_INTENTS: Dict[str, str] = {
    RETRIEVAL_INTENT: IN_FORM_RULE,
    "stop": IN_FORM_RULE,
    # Also put first by SafetyPolicy (clinic_core/policy.py), whatever the rules say.
    "emergency": IN_FORM_RULE,
    "crisis": IN_FORM_RULE,
    "bot_challenge": IN_FORM_RULE,
    "request_human": IN_FORM_RULE,
    # In a form without the general rule's pointer to staff: the form goes on.
    "ask_insurance": IN_FORM_RULE,
    "ask_cost": IN_FORM_RULE,
    "ask_hours": IN_FORM_RULE,
    "ask_medication_advice": IN_FORM_RULE,
    "greet": GENERAL_RULE,
    "goodbye": GENERAL_RULE,
    "thank": GENERAL_RULE,
    "ask_capabilities": GENERAL_RULE,
    "ask_other_condition": GENERAL_RULE,
    # The name question reads these as a name when written like one
    # (``reads_as_name``); anything else is answered as outside a form.
    "other_language": GENERAL_RULE,
    "out_of_scope": GENERAL_RULE,
    "book_appointment": NEW_TASK,
    "reschedule_appointment": NEW_TASK,
    "cancel_appointment": NEW_TASK,
    "check_appointment": NEW_TASK,
}

NOT_AN_ANSWER: FrozenSet[str] = frozenset(REFUSED_INTENTS)
# Not refused, yet each form has a rule for it: an unsure reading may still be an
# answer (a name, a time), which the form's validation takes; when the form refuses
# it, action_clarify offers the likeliest topics and the form asks again.
CLARIFIED_IN_FORM: FrozenSet[str] = frozenset({"nlu_fallback"})
