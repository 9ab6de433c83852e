"""Conversation lint: what no patient should ever read, checked over whole transcripts.

A transcript is a list of turns; each turn has what the patient sent and what came
back on the web (messages with text and buttons) and by SMS (the texts Twilio was
asked to send). :func:`problems` returns every rule a transcript breaks:

- an apology for input the patient did not give: a "Sorry, I didn't catch ..."
  (or another apology for the patient's answer) after a button the assistant itself
  offered, or two apologies in one reply (one answer cannot be wrong twice);
- the same message twice in one reply, or a question asked twice in one reply;
- an empty message;
- an SMS longer than Twilio's 1,600 characters, or with characters outside GSM-7's
  basic set (which would make every segment 70 characters instead of 160);
- a web message with choices whose SMS has no numbered list to reply with (when
  both channels got the same message: a turn that sends each channel its own, as
  after the read-back, where SMS answers the reminder question the web asks next,
  may be at another step on each).
"""

from __future__ import annotations

import re
from typing import Any, Dict, List

MAX_SMS_CHARACTERS = 1600
# GSM 03.38 basic character set (what keeps a segment at 160 characters).
GSM_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENDED = set("^{}\\[~]|€")
APOLOGY = re.compile(
    r"^Sorry, (I didn't catch|which|I couldn't read|that doesn't)", re.I
)
NUMBERED = re.compile(r"^1\. ", re.M)


def _web_texts(turn: Dict[str, Any]) -> List[str]:
    return [str(message.get("text") or "") for message in turn.get("web") or []]


def problems(turns: List[Dict[str, Any]]) -> List[str]:
    """Every rule the transcript breaks, as readable lines (empty if none)."""
    found: List[str] = []
    for number, turn in enumerate(turns, start=1):
        where = f"turn {number} ({turn.get('patient') or turn.get('choose')!r})"
        texts = _web_texts(turn)
        if any(not text.strip() for text in texts):
            found.append(f"{where}: an empty message")
        for first, second in zip(texts, texts[1:], strict=False):
            if first == second:
                found.append(f"{where}: the same message twice: {first!r}")
        questions = [t for t in texts if t.rstrip().endswith("?")]
        if len(set(questions)) < len(questions):
            found.append(f"{where}: a question asked twice")
        apologies = [t for t in texts if APOLOGY.match(t)]
        if apologies and "choose" in turn:
            found.append(f"{where}: apologises for input not given: {apologies[0]!r}")
        if len(apologies) > 1:
            found.append(f"{where}: {len(apologies)} apologies in one reply")
        for sms in turn.get("sms") or []:
            if not sms.strip():
                found.append(f"{where}: an empty SMS")
            if len(sms) > MAX_SMS_CHARACTERS:
                found.append(f"{where}: an SMS of {len(sms)} characters")
            odd = sorted(set(sms) - GSM_BASIC - GSM_EXTENDED)
            if odd:
                found.append(f"{where}: SMS characters outside GSM-7: {odd}")
        offers = any(message.get("buttons") for message in turn.get("web") or [])
        sms_text = "\n\n".join(turn.get("sms") or [])
        same = not any(isinstance(turn.get(key), dict) for key in ("patient", "choose"))
        if (
            offers
            and same
            and turn.get("sms") is not None
            and not NUMBERED.search(sms_text)
        ):
            found.append(f"{where}: choices on the web, no numbered list by SMS")
    return found
