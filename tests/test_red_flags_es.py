"""Spanish red flags: patterns, language, the RedFlagDetector, the replies (issue 10).

A Spanish emergency or crisis message gets the Spanish guidance (911; 988, which
answers in Spanish); any other Spanish message still gets "English only for now".
"""

from __future__ import annotations

import asyncio
import os
import unicodedata
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest
import yaml
from rasa.core.agent import Agent
from rasa.core.nlg.generator import ResponseVariationFilter
from rasa.shared.core.domain import Domain
from rasa.shared.nlu.constants import ENTITIES, INTENT, INTENT_RANKING_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message
from test_nlu_components import (
    CRISES,
    EMERGENCIES,
    FORMER_FALSE_ALARMS,
    FORMERLY_MISSED_RED_FLAGS,
    ORDINARY,
    create,
    language_entity,
)
from testkit import DOMAIN_FILES, HELDOUT_FILE, PROJECT_ROOT, nlu_examples

from clinic_nlu.components import RedFlagDetector
from clinic_nlu.red_flags import (
    RedFlag,
    find_red_flag,
    fold_accents,
    looks_spanish,
    match_red_flag,
)

# Each phrasing of the issue, then the ways Spanish speakers also type it.
SPANISH_EMERGENCIES = [
    # chest pain or pressure, breathing
    "tengo dolor de pecho y no puedo respirar",
    "dolor en el pecho",
    "Tengo un dolor muy fuerte en el pecho",
    "siento presión en el pecho",
    "me duele el pecho",
    "el pecho me aprieta mucho",
    "no puedo respirar",
    "casi no puedo respirar",
    "me falta el aire",
    "le falta el aire a mi esposo",
    "me cuesta respirar",
    "tengo dificultad para respirar",
    "no me entra el aire",
    "siento que me ahogo",
    "tengo chest pain",
    "tengo chest pain y me siento mal",
    # loss of bladder or bowel control
    "no puedo controlar la orina",
    "no puedo controlar la vejiga",
    "no puedo controlar el intestino",
    "no puedo aguantar la pipi",
    "perdí el control de la vejiga",
    "me orino encima",
    "me hice pipí encima",
    "me hice pipi",
    "me hice popo sin darme cuenta",
    "no puedo orinar desde ayer",
    "se me sale la orina",
    # numbness in legs or groin
    "se me duermen las piernas",
    "se me entumen las piernas",
    "se me entumió la pierna derecha",
    "se me adormecen las piernas y la ingle",
    "tengo la entrepierna dormida",
    "no siento las piernas",
    "no siento nada en las piernas",
    "perdí la sensibilidad en las piernas",
    # sudden leg weakness
    "las piernas no me responden",
    "de repente las piernas no me responden",
    "la pierna no me responde",
    "se me doblaron las rodillas y me caí",
    "no puedo mover las piernas",
    "tengo las piernas débiles de repente",
    # fever
    "tengo fiebre",
    "tengo calentura",
    "tengo fiebre y dolor de espalda",
    "tengo escalofríos y me duele la espalda",
    # serious fall or car crash
    "me caí de la escalera",
    "me cai de las escaleras y me duele la espalda",
    "mi esposo se cayó del techo",
    "me caí y no me puedo levantar",
    "tuve una caída fuerte",
    "choque de carro",
    "tuve un accidente de carro",
    "accidente de coche esta mañana",
    "me chocaron por atrás en la autopista",
    # heart attack, stroke
    "creo que tengo un infarto",
    "me está dando un ataque al corazón",
    "ataque cardiaco",
    "mi papá tuvo un derrame cerebral",
    "mi esposo tuvo un stroke y no habla",
    # fainting
    "mi mamá se desmayó y no responde",
    "me desmayé en el baño",
    "mi esposo perdió el conocimiento",
]
SPANISH_CRISES = [
    "me quiero morir",
    "quiero morirme",
    "kiero morirme",
    "tengo ganas de morirme",
    "me quiero matar",
    "quiero matarme",
    "pienso en matarme",
    "quiero suicidarme",
    "pienso en suicidarme",
    "he pensado en el suicidio",
    "no quiero vivir",
    "ya no quiero vivir con este dolor",
    "ya no quiero seguir",
    "ya no puedo más",
    "quiero quitarme la vida",
    "voy a quitarme la vida",
    "quiero hacerme daño",
    "me quiero hacer daño",
    "quiero cortarme",
    "me estoy cortando",
    "quiero cortarme las venas",
    "voy a tomarme todas las pastillas",
    "me tomé todas las pastillas",
    "mejor estaría muerto",
    "mejor estaría muerta",
    "mi familia estaría mejor sin mí",
    "no vale la pena vivir",
    "la vida no vale la pena",
    "no quiero despertar mañana",
    "quiero acabar con todo",
    "quiero kill myself",
]
# Plain Spanish questions and sayings: they stay "English only for now".
SPANISH_ORDINARY = [
    "¿qué es un espasmo?",
    "me duele la espalda",
    "quiero una cita",
    "¿cuánto cuesta?",
    "dolor de espalda",
    "tengo mucho dolor de espalda",
    "mi esposo tiene dolor de espalda muy fuerte",
    "¿las inyecciones duelen?",
    "este dolor me está matando",
    "me muero de dolor",
    "me muero de ganas de saber si funciona",
    "no tengo fiebre",
    "sin fiebre, solo dolor de espalda",
    "ya no quiero seguir con la terapia",
    "ya no puedo seguir esperando la cita",
    "quiero cortarme el pelo antes de la cita",
    "no quiero hacerme daño con el ejercicio",
    "me corté el dedo cocinando",
    "¿puedo respirar hondo durante la inyección?",
    "quiero acabar con todo el dolor",
    "¿aceptan seguro médico?",
    "¿dónde está la clínica?",
    "tengo espasmos en la espalda",
]


def without_accents(text: str) -> str:
    """The text as typed on a phone without accents: "presión" -> "presion"."""
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def casual(text: str) -> str:
    """Lower case, no accents, no punctuation: how many patients text."""
    return without_accents(text).lower().strip("¿?¡!.")


# --- patterns and language ------------------------------------------------------------


@pytest.mark.parametrize("text", SPANISH_EMERGENCIES)
def test_spanish_emergencies_get_spanish_emergency_guidance(text: str) -> None:
    assert find_red_flag(text) == RedFlag("emergency", "es")
    assert find_red_flag(casual(text)) == RedFlag("emergency", "es")
    assert find_red_flag(text.upper()) == RedFlag("emergency", "es")


@pytest.mark.parametrize("text", SPANISH_CRISES)
def test_spanish_crises_get_the_spanish_crisis_line(text: str) -> None:
    assert find_red_flag(text) == RedFlag("crisis", "es")
    assert find_red_flag(casual(text)) == RedFlag("crisis", "es")
    assert find_red_flag(text.upper()) == RedFlag("crisis", "es")


def test_a_spanish_crisis_wins_over_a_spanish_symptom() -> None:
    text = "me duele el pecho y ya no quiero vivir"
    assert find_red_flag(text) == RedFlag("crisis", "es")


@pytest.mark.parametrize("text", SPANISH_ORDINARY)
def test_plain_spanish_messages_raise_no_red_flag(text: str) -> None:
    assert find_red_flag(text) is None
    assert find_red_flag(casual(text)) is None


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        *((text, "emergency") for text in EMERGENCIES),
        *((text, "crisis") for text in CRISES),
        *FORMERLY_MISSED_RED_FLAGS,
    ],
)
def test_english_red_flags_keep_their_intent_and_english(
    text: str, intent: str
) -> None:
    assert find_red_flag(text) == RedFlag(intent, "en")
    assert match_red_flag(text) == intent


@pytest.mark.parametrize("text", [*ORDINARY, *FORMER_FALSE_ALARMS])
def test_ordinary_english_messages_raise_no_red_flag(text: str) -> None:
    assert find_red_flag(text) is None


def _red_flag_examples() -> List[Tuple[str, str]]:
    examples = [
        *nlu_examples(PROJECT_ROOT / "data" / "nlu" / "emergency.yml"),
        *nlu_examples(HELDOUT_FILE),
    ]
    return [pair for pair in examples if pair[0] in ("emergency", "crisis")]


def test_spanish_training_examples_are_caught_by_the_spanish_patterns() -> None:
    spanish = [(i, text) for i, text in _red_flag_examples() if looks_spanish(text)]
    assert len(spanish) >= 30
    assert [(i, t) for i, t in spanish if find_red_flag(t) != RedFlag(i, "es")] == []


def test_english_training_examples_never_get_spanish_guidance() -> None:
    english = [(i, t) for i, t in _red_flag_examples() if not looks_spanish(t)]
    assert len(english) > 100
    assert [
        t for _, t in english if (find_red_flag(t) or RedFlag("", "en"))[1] != "en"
    ] == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Presión en el PECHO, no puedo respirar",
            "presion en el pecho, no puedo respirar",
        ),
        ("quiero hacerme daño", "quiero hacerme dano"),
        ("ÚLTIMAMENTE", "ultimamente"),
        ("chest pain", "chest pain"),
    ],
)
def test_fold_accents(text: str, expected: str) -> None:
    assert fold_accents(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("siento que me voy a desmayar y estoy sudando", True),
        ("tengo chest pain", True),
        ("mi esposo tuvo un stroke", True),
        ("Me siento muy mal", True),
        ("I feel like I'm going to pass out", False),
        ("I have chest pain, tengo miedo", False),
        ("see ya", False),
        ("yo my back is out", False),
        ("y do spasms happen", False),
        ("Maria Lopez", False),
        ("", False),
    ],
)
def test_looks_spanish(text: str, expected: bool) -> None:
    assert looks_spanish(text) is expected


# --- RedFlagDetector ------------------------------------------------------------------


def parsed(text: str, intent: str, confidence: float) -> Message:
    predicted = {"name": intent, "confidence": confidence}
    return Message(
        data={TEXT: text, INTENT: predicted, INTENT_RANKING_KEY: [predicted]}
    )


@pytest.mark.parametrize(
    ("text", "predicted", "expected"),
    [
        pytest.param(
            "tengo dolor de pecho y no puedo respirar",
            ("other_language", 0.9),
            ("emergency", 1.0),
            id="pattern-over-other-language",
        ),
        pytest.param(
            "me quiero morir",
            ("other_language", 0.8),
            ("crisis", 1.0),
            id="crisis-over-other-language",
        ),
        pytest.param(
            "me quiero morir",
            ("emergency", 0.7),
            ("crisis", 1.0),
            id="crisis-over-emergency",
        ),
        pytest.param(
            "no puedo respirar",
            ("emergency", 0.9),
            ("emergency", 0.9),
            id="already-emergency",
        ),
        pytest.param(
            "siento que me voy a desmayar y estoy sudando",
            ("emergency", 0.8),
            ("emergency", 0.8),
            id="classifier-only",
        ),
    ],
)
def test_red_flag_detector_answers_spanish_red_flags_in_spanish(
    text: str,
    predicted: Tuple[str, float],
    expected: Tuple[str, float],
    tmp_path: Path,
) -> None:
    message = parsed(text, *predicted)

    create(RedFlagDetector, tmp_path).process([message])

    intent = message.get(INTENT)
    assert (intent["name"], intent["confidence"]) == expected
    assert message.get(ENTITIES) == [language_entity("es", text)]


@pytest.mark.parametrize(
    "text", ["me duele la espalda", "¿cuánto cuesta la inyección?", "quiero una cita"]
)
def test_red_flag_detector_leaves_plain_spanish_to_other_language(
    text: str, tmp_path: Path
) -> None:
    message = parsed(text, "other_language", 0.9)

    create(RedFlagDetector, tmp_path).process([message])

    assert message.get(INTENT) == {"name": "other_language", "confidence": 0.9}
    assert message.get(ENTITIES) is None


# --- the responses --------------------------------------------------------------------

SPANISH_EMERGENCY = (
    "Esto puede ser una emergencia. Llame al 911 ahora mismo o vaya a la sala de "
    "emergencias de un hospital. No espere una cita ni una respuesta por este medio."
)
SPANISH_CRISIS = (
    "Lamento mucho que se sienta de esta manera. Por favor, llame ahora al 988 y "
    "marque el 2 para hablar en espanol, o mande la palabra AYUDA por mensaje de "
    "texto al 988. Es gratis y atienden las 24 horas. Si corre peligro inmediato, "
    "llame al 911."
)
ENGLISH_EMERGENCY = (
    "This may be a medical emergency. Call 911 now or go to the nearest emergency "
    "room. Don't wait for an appointment or for a reply here."
)
ENGLISH_CRISIS = (
    "I'm sorry you're going through this. Please call or text 988, the Suicide & "
    "Crisis Lifeline, now. It's free and open day and night. If you're in immediate "
    "danger, call 911."
)
OTHER_LANGUAGE = (
    "Sorry, I can only answer in English for now. Lo siento, por ahora solo puedo "
    "responder en ingles. Please contact our office for help in another language."
)
CHANNELS = ["rest", "socketio", "twilio", "collector"]


def texts_for(domain: Domain, response: str, channel: str, language: Any) -> List[str]:
    """The texts Rasa may pick for the response, given the red_flag_language slot."""
    variations = ResponseVariationFilter(domain.responses).responses_for_utter_action(
        response, channel, {"red_flag_language": language}
    )
    return [variation["text"] for variation in variations]


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize(
    ("language", "emergency", "crisis"),
    [
        ("es", SPANISH_EMERGENCY, SPANISH_CRISIS),
        ("en", ENGLISH_EMERGENCY, ENGLISH_CRISIS),
        (None, ENGLISH_EMERGENCY, ENGLISH_CRISIS),
    ],
    ids=["es", "en", "unset"],
)
def test_the_guidance_follows_the_red_flag_language_on_every_channel(
    rasa_domain: Domain,
    channel: str,
    language: Optional[str],
    emergency: str,
    crisis: str,
) -> None:
    assert texts_for(rasa_domain, "utter_emergency", channel, language) == [emergency]
    assert texts_for(rasa_domain, "utter_crisis", channel, language) == [crisis]


def test_the_red_flag_language_slot_is_filled_from_its_entity_only() -> None:
    document = yaml.safe_load(DOMAIN_FILES[0].read_text(encoding="utf-8"))
    assert "red_flag_language" in document["entities"]
    assert document["slots"]["red_flag_language"] == {
        "type": "categorical",
        "values": ["en", "es"],
        "influence_conversation": False,
        "mappings": [{"type": "from_entity", "entity": "red_flag_language"}],
    }


# --- the trained model, without any action server -------------------------------------


@pytest.fixture(scope="module")
def agent() -> Agent:
    model = Path(
        os.environ.get("MODEL_PATH", PROJECT_ROOT / "models" / "clinic.tar.gz")
    )
    if not model.is_file():
        raise RuntimeError(f"No trained model at {model}: run 'make train' first.")
    # The default tracker store is in memory; no action endpoint: no action server.
    return Agent.load(str(model), action_endpoint=None)


def conversation(agent: Agent, messages: List[str]) -> List[List[str]]:
    """What a new patient reads after each message, turn by turn."""
    sender = f"test-{uuid.uuid4().hex}"

    async def talk() -> List[List[str]]:
        turns = []
        for text in messages:
            replies: List[Dict[str, Any]] = await agent.handle_text(
                text, sender_id=sender
            )
            turns.append([str(reply.get("text")) for reply in replies])
        return turns

    return asyncio.run(talk())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tengo dolor de pecho y no puedo respirar", SPANISH_EMERGENCY),
        ("no puedo respirar", SPANISH_EMERGENCY),
        ("me quiero morir", SPANISH_CRISIS),
        ("ya no quiero vivir", SPANISH_CRISIS),
        ("I have chest pain", ENGLISH_EMERGENCY),
        ("I want to kill myself", ENGLISH_CRISIS),
    ],
    ids=["es-chest", "es-breathing", "es-crisis", "es-crisis-2", "en", "en-crisis"],
)
def test_the_model_answers_a_red_flag_in_its_language(
    agent: Agent, text: str, expected: str
) -> None:
    # The first turn of a session also introduces the assistant; the red flag is
    # the second message.
    turns = conversation(agent, ["hola", text])
    assert turns[1] == [expected]


@pytest.mark.parametrize(
    "text",
    [
        "me duele la pierna cuando camino",
        "se me cansan las piernas",
        "tengo calambres en las piernas",
        "me siento muy cansado",
        "me siento muy triste por el dolor",
        "me duele la cadera",
        "tengo dolor de espalda y de cuello",
    ],
)
def test_the_model_leaves_plain_spanish_to_other_language(
    agent: Agent, text: str
) -> None:
    # The Spanish red-flag examples must not teach the classifier that Spanish
    # itself is an emergency (data/nlu/out_of_scope.yml has the contrast examples).
    assert conversation(agent, ["hola", text])[1] == [OTHER_LANGUAGE]


def test_spanish_then_english_red_flags_and_plain_spanish(agent: Agent) -> None:
    turns = conversation(
        agent,
        ["hola", "me falta el aire", "me duele la espalda", "I can't breathe"],
    )
    assert turns[1:] == [[SPANISH_EMERGENCY], [OTHER_LANGUAGE], [ENGLISH_EMERGENCY]]
