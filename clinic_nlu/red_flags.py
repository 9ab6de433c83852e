"""Red-flag phrases that must get emergency guidance, whatever the classifier says.

The ML classifier learns the ``emergency`` and ``crisis`` intents from examples, but a
missed emergency is the one error this assistant must not make, so these patterns are a
deterministic safety net on top of it. They are deliberately broad: a false alarm costs
the patient one extra message, a miss can cost far more.

Each entry is a regular expression matched case-insensitively against the whole
message. Add a pattern together with a test in ``tests/test_nlu_components.py``
(English) or ``tests/test_red_flags_es.py`` (Spanish).

Spanish red flags get the guidance in Spanish, so a match also says which language it
was written in (``find_red_flag``). The Spanish patterns are written in lower case
without accents and matched against the message with its accents taken off
("respiracion" matches "Respiración" and "respiracion"), because patients type Spanish
both ways.
"""

from __future__ import annotations

import re
import unicodedata
from typing import NamedTuple, Optional, Pattern, Sequence, Tuple

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


# The same two kinds of red flag as Spanish speakers write them: with or without
# accents (matched without), casual spellings ("kiero", "toy", "q") and Spanglish
# ("tengo chest pain"). An emergency here must stay a plain question's non-match:
# "me duele la espalda", "dolor de espalda", "quiero una cita" raise nothing.
EMERGENCY_PATTERNS_ES: Sequence[str] = (
    # loss of bladder or bowel control / incontinence
    r"\bno (puedo|puede|pude|podia|logro) (controlar|aguantar|detener|retener)\b.{0,25}"
    r"\b(orina|orinar|la pipi|el pipi|pis|vejiga|intestinos?|evacuar|popo|heces|"
    r"excremento|esfinter|del bano)",
    r"\b(perdi|pierdo|perdida del?|sin) (el )?control\b.{0,25}"
    r"\b(orina|vejiga|intestinos?|esfinter|del bano|pipi|popo)",
    r"\bno (puedo|puede|pude|podia) (orinar|hacer pipi|hacer pis|mear)\b",
    r"\bme (orino|orine|meo|mee|cago|cague|hago|hice|estoy haciendo)\b.{0,20}"
    r"\b(encima|en la ropa|en los pantalones|en el pantalon|sin (darme cuenta|querer|"
    r"sentir|control))",
    r"\bme (hice|he hecho) (pipi|pis|popo)\b",
    r"\bse me (sale|salio|escapa|escapo) (la |el )?(orina|pipi|pis|popo)\b",
    r"\bincontinencia\b",
    # numbness in legs, feet, groin or the saddle area
    r"\bse me (duermen|durmieron|durmio|duerme|entumen|entumieron|entumio|entume|"
    r"entumecen|entumecieron|entumecio|adormecen|adormecieron|adormecio|adormece)\b"
    r".{0,20}\b(piernas?|pies|pie|ingle|entrepierna|nalgas|pompis|muslos|genitales|"
    r"partes)\b",
    r"\b(piernas?|pies|ingle|entrepierna|nalgas|pompis|muslos|genitales|partes "
    r"intimas)\b.{0,25}\b(dormid[oa]s?|entumid[oa]s?|entumecid[oa]s?|"
    r"adormecid[oa]s?|adormilad[oa]s?|sin sensibilidad|insensibles?)\b",
    r"\b(entumecimiento|adormecimiento)\b.{0,30}\b(piernas?|pies|ingle|entrepierna|"
    r"nalgas|muslos|genitales)\b",
    r"\bno (siento|sentia|senti|puedo sentir|le siento)\b.{0,15}"
    r"\b(piernas?|pies|pie|ingle|entrepierna|nalgas|pompis|partes|genitales)\b",
    r"\b(perdi|pierdo|sin|perdida de) (la )?sensibilidad\b.{0,20}"
    r"\b(piernas?|pies|ingle|entrepierna|nalgas|genitales|partes)\b",
    # sudden leg weakness
    r"\b(piernas?|rodillas?)\b.{0,20}\b(no me responden?|no responden?|"
    r"no me (sostienen|sostiene|aguantan|aguanta)|se (me )?doblaron|se (me )?doblo|"
    r"me fallaron|me fallan|me fallo|fallaron|debiles|sin fuerzas?)",
    r"\bse me (doblaron|doblan|doblo|aflojaron|fueron) (las |la )?(piernas?|rodillas?)",
    r"\b(debilidad|sin fuerzas?|perdi (la )?fuerza|perdida de fuerza)\b.{0,20}"
    r"\bpiernas?\b",
    r"\bno (puedo|puede|pude|podia) (mover|levantar|parar(me|se) en) "
    r"(las |mis |la |mi )?(piernas?|pies|pie)\b",
    r"\bparaliza(d[oa]s?|ndo|r)?\b|\bparalisis\b",
    r"\b(de repente|de golpe|repentina|subita)\b.{0,30}\bdebil",
    # back pain with fever
    r"(?<!\bsin )(?<!\bno tengo )(?<!\bno tiene )(?<!\bni )(?<!\bnada de )"
    r"(?<!\bno hay )\b(fiebre|calentura|febril)\b",
    r"\bescalofrios\b",
    r"\btemperatura (alta|muy alta|de 3[89]|de 10[0-9])\b",
    # serious fall or accident
    r"\b(me cai|se cayo|nos caimos|me he caido|se ha caido|me resbale|se resbalo)\b"
    r".{0,30}\b(escaleras?|techo|azotea|altura|arbol|caballo|andamio|moto|bicicleta|"
    r"fuerte|feo|duro|de espaldas|de senton|no (me|se) (puedo|puede|pude|pudo) "
    r"(levantar|mover|parar))",
    r"\b(caida|caidon|madrazo|golpe)\b.{0,5}\b(fuerte|grave|feo|fea|dura|duro|mala|"
    r"malo|de la escalera|de las escaleras|del techo|de altura)\b",
    r"\b(fuerte|grave|mala|fea|tremenda) (caida|caidon)\b",
    r"\b(accidente|choque) (de|en) (carro|coche|auto|camioneta|troca|moto|"
    r"motocicleta|transito|trafico|trabajo)\b",
    r"\b(me chocaron|chocaron|me choco|choque con|choque el|choque la|tuve un choque|"
    r"tuvimos un choque|estuve en un choque|me atropell|lo atropell|la atropell|"
    r"atropellad[oa])",
    # chest pain, breathing, heart attack, stroke
    r"\b(dolor|duele|dolia|presion|opresion|apreton|punzada|ardor|peso)\b.{0,20}"
    r"\bpecho\b",
    r"\bpecho\b.{0,20}\b(duele|dolia|dolor|apretado|presion|oprimido|aprieta|arde|"
    r"pesado|aplastado)",
    r"\b(no (puedo|puede|pude|podia|pudo) |me cuesta |le cuesta |dificultad (para|al) |"
    r"trabajo para |problemas para )respir",
    r"\b(me|le|nos) falta (el )?(aire|aliento|respiracion)\b",
    r"\bfalta de (aire|aliento)\b",
    r"\bno me (entra|llega) (el )?aire\b",
    r"\bme (estoy )?ahog(o|ando)\b",
    r"\b(me desmaye|se desmayo|perdi[oa]? el conocimiento|inconsciente)\b",
    r"\binfarto\b",
    r"\bataque (al|del) corazon\b|\bataque cardiaco\b|\bparo cardiaco\b",
    r"\bderrame cerebral\b|\bembolia\b|\bataque cerebral\b|\bcerebrovascular\b",
    # Spanglish: a Spanish verb before the English name of the symptom
    r"\b(tengo|tiene|siento|me da|me dio|le dio|con)\b.{0,10}"
    r"\b(chest pain|heart attack|stroke|fever)\b",
)

CRISIS_PATTERNS_ES: Sequence[str] = (
    r"\b(quiero|kiero|quisiera|deseo|ganas de) morir(me)?\b",
    r"\bme (quiero|kiero|quisiera) morir\b",
    r"\b(quiero|kiero|voy a|pienso|pensando|ganas de|gustaria|quisiera|intente) "
    r"(en )?matarme\b",
    r"\bme (quiero|kiero|voy a|pienso|quisiera|gustaria) matar\b",
    r"\bsuicid(arme|arse|arte|andome|io|a|as)\b",
    r"\bno (quiero|kiero) (seguir )?(vivir|viviendo)\b",
    r"\bno (quiero|kiero) (despertar|existir|estar vivo|estar viva)\b",
    # "ya no quiero seguir" alone, not "ya no quiero seguir con la terapia"
    r"\bya no (quiero|kiero) seguir\b(?!\s+(con|el|la|los|las|en|esperando|tomando|"
    r"yendo|pagando|viniendo)\b)",
    r"\bya no puedo (seguir|mas)\b(?!\s+(con|el|la|los|las|en|esperando|tomando|"
    r"yendo|pagando|viniendo)\b)",
    r"\bquitar(me|se)? la vida\b",
    r"\b(acabar|terminar) con (mi vida|todo)\b(?!\s+(el|la|los|las|este|esto|eso)\b)",
    r"(?<!\bno )\b(quiero|kiero|voy a|pienso en|pensando en|ganas de|gustaria) "
    r"(hacerme dano|lastimarme|herirme)\b",
    r"(?<!\bno )\bme (quiero|kiero|voy a) (hacer dano|lastimar|herir)\b",
    r"\bautolesion",
    r"\bcortar(me|se) las venas\b",
    r"\bcortarme\b(?!\s+(el|los|las|la|mi|mis|un|una|con)\b)",
    r"\bme (estoy cortando|he estado cortando|corto|he cortado)\b"
    r"(?!\s+(el|los|las|la|mi|mis|un|una|con)\b)",
    r"\b(tomarme|me tome|me voy a tomar|me quiero tomar|tragarme|me trague) "
    r"(todas|todo)\b.{0,8}\b(pastillas|pildoras|medicinas|medicamentos|frasco|bote)\b",
    r"\bsobredosis\b",
    r"\b(mejor|mas vale|preferiria|prefiero) (estar|estaria|estuviera) muert[oa]s?\b",
    r"\b(estaria|estarian|estarias|estarian todos) mejor sin mi\b",
    r"\bestaria (yo )?mejor muert[oa]\b",
    r"\b(quisiera|quiero|ojala) (estar|estuviera) muert[oa]\b",
    r"\bojala me (muera|muriera|muero)\b",
    r"\bno vale la pena (vivir|seguir viviendo|seguir asi|seguir)\b(?!\s+con\b)",
    r"\b(la )?vida no vale la pena\b",
    r"\bno tiene (sentido|caso) (vivir|seguir viviendo|seguir asi)\b",
    # Spanglish
    r"\b(quiero|kiero|voy a|ganas de)\b.{0,5}\b(kill myself|die|end it)\b",
)

# Words only a Spanish sentence has (none is also an English word), and English
# function words. ``looks_spanish`` weighs one against the other.
SPANISH_WORDS = (
    "el la los las del que en mi mis es un una por para con tengo tiene estoy esta "
    "quiero puedo siento muy pero se lo le su mucho mucha dolor ayuda necesito "
    "porque cuando donde como nada todo hoy ahora mas eso esto tambien hace tuve creo "
    "siempre nunca de estado kiero mejor hice cuesta muero estaria vida morir"
)
ENGLISH_WORDS = (
    "i i'm im my the an and to is it of in have am are was you this that with for"
)
_SPANISH_WORDS = frozenset(SPANISH_WORDS.split())
_ENGLISH_WORDS = frozenset(ENGLISH_WORDS.split())
_WORD = re.compile(r"[a-z']+")


def _compile(patterns: Sequence[str]) -> Tuple[Pattern[str], ...]:
    return tuple(re.compile(pattern, re.IGNORECASE) for pattern in patterns)


_COMPILED = (
    ("crisis", _compile(CRISIS_PATTERNS_ES), _compile(CRISIS_PATTERNS)),
    ("emergency", _compile(EMERGENCY_PATTERNS_ES), _compile(EMERGENCY_PATTERNS)),
)


class RedFlag(NamedTuple):
    """A red flag found in a message: its intent and the language it was written in."""

    intent: str  # "crisis" or "emergency"
    language: str  # "es" or "en": the language of the guidance to give


def fold_accents(text: str) -> str:
    """Lower-cases the text and takes the accents off ("Pecho ARDIÓ" -> "pecho ardio").

    ``ñ`` becomes ``n`` too, so "daño" and "dano" read the same.
    """
    decomposed = unicodedata.normalize("NFD", text.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def looks_spanish(text: str) -> bool:
    """Whether a message reads as Spanish: more Spanish words than English ones.

    Only words that exist in one of the two languages count ("me" and "no" are in
    both), so "tengo chest pain" is Spanish and "I have chest pain" is not.
    """
    words = _WORD.findall(fold_accents(text).replace("\u2019", "'"))
    spanish = sum(word in _SPANISH_WORDS for word in words)
    english = sum(word in _ENGLISH_WORDS for word in words)
    return spanish > english


def find_red_flag(text: str) -> Optional[RedFlag]:
    """The red flag in the text and the language of its guidance, or None.

    A crisis is checked first: someone who mentions both self-harm and a symptom needs
    the crisis line as well as 911, and the crisis answer gives both. A Spanish
    pattern answers in Spanish; an English one in English, unless the rest of the
    message is Spanish ("mi esposo tuvo un stroke").
    """
    english = text.replace("\u2019", "'")
    folded = fold_accents(english)
    for intent, spanish_patterns, english_patterns in _COMPILED:
        if any(pattern.search(folded) for pattern in spanish_patterns):
            return RedFlag(intent, "es")
        if any(pattern.search(english) for pattern in english_patterns):
            return RedFlag(intent, "es" if looks_spanish(english) else "en")
    return None


def match_red_flag(text: str) -> Optional[str]:
    """Returns ``"crisis"`` or ``"emergency"`` if the text has a red flag, else None.

    English and Spanish alike; ``find_red_flag`` also tells which language.
    """
    red_flag = find_red_flag(text)
    return red_flag.intent if red_flag else None
