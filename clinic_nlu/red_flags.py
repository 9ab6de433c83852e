"""Red-flag phrases that must get emergency guidance, whatever the classifier says.

The ML classifier learns the ``emergency`` and ``crisis`` intents from examples, but a
missed emergency is the one error this assistant must not make, so these patterns are a
deterministic safety net on top of it. They are deliberately broad: a false alarm costs
the patient one extra message, a miss can cost far more.

Each entry is a regular expression matched case-insensitively against the whole
message. Add a pattern together with a test in ``tests/test_nlu_components.py``.
"""

from __future__ import annotations

import re
from typing import Optional, Pattern, Sequence, Tuple

# Symptoms that need emergency care now: cauda equina signs, infection, trauma, heart.
EMERGENCY_PATTERNS: Sequence[str] = (
    # loss of bladder or bowel control / incontinence
    r"\b(lost|losing|loss of|no|can'?t|cannot|couldn'?t|unable to)\b.{0,25}"
    r"\b(control|controll?ing)\b.{0,25}\b(bladder|bowels?|pee|poop|urine)",
    r"\b(bladder|bowels?)\b.{0,30}\b(control|accident|leak|incontinen)",
    r"\bincontinen(t|ce)\b",
    r"\b(wet|peed|pooped|soiled) (myself|my pants)\b",
    r"\bcan'?t (pee|urinate)\b",
    r"\bleak(s|ing)?\b.{0,20}\b(urine|pee|stool|poop)",
    r"\bcan'?t (stop|hold) (my |the )?(pee|urine|bladder|bowels?|poop)",
    r"\baccidents?\b.{0,20}\b(bladder|bowels?)\b",
    r"\b(bladder|bowels?)\b.{0,20}\b(stopped|quit|won'?t|isn'?t|not) work",
    # numbness in legs or groin / saddle area
    r"\bnumb(ness)?\b.{0,40}\b(leg|legs|groin|crotch|genital|saddle|inner thighs?|"
    r"buttocks|butt|feet|foot)\b",
    r"\b(leg|legs|groin|crotch|saddle|inner thighs?|feet)\b.{0,25}"
    r"\b(numb|no feeling|can'?t feel)",
    r"\bcan'?t feel (my )?(legs?|feet|foot|groin|crotch)",
    r"\bcan'?t feel (anything|a thing)\b.{0,15}"
    r"\b(legs?|feet|foot|groin|crotch|private|bottom|down there)",
    r"\b(lost|losing|lose|no) (all )?(the )?feeling in\b.{0,20}"
    r"\b(legs?|feet|foot|groin|crotch|private|genitals?|butt|buttocks|bottom)",
    # sudden leg weakness
    r"\b(legs?|knees?)\b.{0,20}\b(gave out|giving out|gave way|buckl|collaps|"
    r"won'?t hold|too weak|suddenly weak|went weak|paralyz)",
    r"\b(sudden|suddenly)\b.{0,30}\bweak",
    r"\bweak(ness)?\b.{0,25}\b(in )?(my |both )?legs?\b",
    r"\blegs?\b.{0,15}\b(feel|felt|feeling|are|is|went|gone|going)\s+(so )?(weak|dead)",
    r"\bcan'?t (move|lift|stand on) (my )?(legs?|feet|foot)\b",
    r"\bparaly[sz]",
    r"\blegs?\b.{0,25}\bweaker\b",
    # back pain with fever
    r"(?<!\bno )(?<!\bnot a )(?<!\bwithout )(?<!\bwithout a )\bfever(ish)?\b",
    r"\b(chills|shivering)\b",
    r"\b(running|have|got|with) a (high )?temperature\b",
    r"\btemperature of 10[0-9]",
    # serious fall or accident
    r"\b(car|auto|motorcycle|bike|serious|bad|major|work) (accident|crash|wreck)",
    r"\b(fell|fall|falling)\b.{0,30}\b(ladder|roof|stairs|height|hard|badly|"
    r"off|down)",
    r"\b(hit by a car|was in a wreck|rear[- ]ended)\b",
    r"\bwreck(ed)? (my|the|our) (car|truck|bike|motorcycle)\b",
    r"\b(slipped|tripped)\b.{0,40}\b(fell|landed|hard)\b",
    r"\blanded (hard|badly|flat)\b",
    r"\b(bad|big|nasty|hard) (spill|tumble|fall)\b",
    r"\b(spill|tumble)\b.{0,15}\b(off|down|from)\b",
    # chest pain / breathing
    r"\bchest\b.{0,20}\b(pain|pressure|tight|hurt|ache|aching|crushing)",
    r"\b(pain|hurts?|pressure) in (my )?chest\b",
    r"\b(crushing|squeezing|tightness|tight|heavy|pressure)\b.{0,25}\bchest\b",
    r"\b(can'?t|cannot|hard to|trouble|struggling to|barely|difficulty) "
    r"breath(e|ing)?\b",
    r"\bshort(ness)? of breath\b",
    r"\bheart attack\b",
    r"\bstroke\b",
)

# Thoughts of self-harm or suicide: crisis line first.
CRISIS_PATTERNS: Sequence[str] = (
    r"\bsuicid",
    r"\bkill(ing)? my ?self\b",
    r"\bend(ing)? (it all|my life|my own life|things)\b",
    r"\b(want|wanna|going|gonna|thinking|thought|think|urge|plan|planning|might)\b.{0,25}"
    r"\b(hurt|harm|cut)(ing)? my ?self\b",
    r"\bharm(ing)? my ?self\b",
    r"\bcutting my ?self\b",
    r"\bself[- ]harm",
    r"\b(want|wanna|wish I (could|was|were)|going) (to )?(die|be dead)\b",
    r"\bwant(ed)? to die\b",
    r"\bno (reason|point) (to |in )?(live|living|go on|going on)\b",
    r"\bdon'?t want to (live|be alive|wake up)\b",
    r"\bbetter off dead\b",
    r"\bwish (i|i'?m|i was|i were) (was )?dead\b",
    r"\bnot (to )?(wake|waking) up\b",
    r"\bcan'?t go on\b",
    r"\b(take|taking|took) my (own )?life\b",
    r"\brather be dead\b",
    r"\b(take|taking|swallow|swallowing) all (of )?my "
    r"(pills|meds|medications?|tablets)\b",
    r"\boverdose\b",
    r"\b(to|gonna|going to|want to|wanna) end it\b",
    r"\b(saving|stockpiling|hoarding) (up )?(my )?(pills|meds|tablets)\b",
    r"\b(don'?t|do not) (want|wanna) (to )?be here\b.{0,10}"
    r"\b(no more|anymore|any more)\b",
    r"\bbetter off\b.{0,20}\b(without me|if i (was|were|'?m) (gone|dead|not here))",
    r"\bthoughts? (of|about) (hurting|harming|killing) my ?self\b",
)


def _compile(patterns: Sequence[str]) -> Tuple[Pattern[str], ...]:
    return tuple(re.compile(pattern, re.IGNORECASE) for pattern in patterns)


_COMPILED = (
    ("crisis", _compile(CRISIS_PATTERNS)),
    ("emergency", _compile(EMERGENCY_PATTERNS)),
)


def match_red_flag(text: str) -> Optional[str]:
    """Returns ``"crisis"`` or ``"emergency"`` if the text has a red flag, else None.

    A crisis is checked first: someone who mentions both self-harm and a symptom needs
    the crisis line as well as 911, and the crisis answer gives both.
    """
    normalized = text.replace("\u2019", "'")
    for intent, patterns in _COMPILED:
        if any(pattern.search(normalized) for pattern in patterns):
            return intent
    return None
