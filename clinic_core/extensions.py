"""The switch for the clinic's changes to Rasa's own behaviour: config.yml.

Three extensions replace a piece of Rasa inside the Rasa server process:

- ``session_start`` (:mod:`clinic_core.session`): the session start with the
  clinic's facts and the introduction;
- ``action_guard`` (:mod:`clinic_core.action_guard`): a time limit and a safe answer
  when a custom action fails (``SafetyPolicy`` relies on it);
- ``action_replies`` (:mod:`clinic_core.action_replies`): the faster check of the
  action server's replies.

Importing a module changes nothing. They are switched on by the ``RasaExtensions``
entry of config.yml's policies::

    - name: clinic_core.extensions.RasaExtensions
      switch_on: [session_start, action_guard, action_replies]

Rasa builds every policy of a model when it loads the model (eagerly, before the first
message) and when it trains it, so the extensions are on in every process that
serves, tests or trains this model: ``rasa run`` (scripts/rasa_server.py,
supervisord, the integration tests, scripts/faults.py, the benchmarks), ``rasa
test``, ``rasa train``, and ``Agent.load`` in scripts and tests. A name this module
does not know, or an entry without ``switch_on``, stops training and loading with
an error that lists the known names.

``RasaExtensions`` is a policy only because that is how config.yml names code to
run: it never predicts anything (all zeros, at the lowest priority), so the other
policies decide as before. The tracker store needs no switch: endpoints.yml names
its class (``clinic_core.tracker_store.CachedSQLTrackerStore``).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

from rasa.core.policies.policy import Policy, PolicyPrediction
from rasa.engine.graph import ExecutionContext
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.shared.core.domain import Domain
from rasa.shared.core.generator import TrackerWithCachedStates
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.exceptions import InvalidConfigException

from clinic_core import action_guard, action_replies, session

SWITCH_KEY = "switch_on"


class Extension:
    """One change to Rasa: how to switch it on and off, and whether it is on."""

    def __init__(
        self,
        install: Callable[[], None],
        uninstall: Callable[[], None],
        is_on: Callable[[], bool],
    ) -> None:
        """Wraps a module's ``install``/``uninstall`` and its state."""
        self.install = install
        self.uninstall = uninstall
        self.is_on = is_on


EXTENSIONS: Dict[str, Extension] = {
    "session_start": Extension(
        session.install, session.uninstall, lambda: session._RASAS_DEFAULTS is not None
    ),
    "action_guard": Extension(
        action_guard.install,
        action_guard.uninstall,
        lambda: action_guard._RASAS_RUN is not None,
    ),
    "action_replies": Extension(
        action_replies.install,
        action_replies.uninstall,
        lambda: action_replies._RASAS_METHOD is not None,
    ),
}


def checked_names(names: Any) -> Tuple[str, ...]:
    """The extensions named in config.yml; a clear error for anything else."""
    known = ", ".join(EXTENSIONS)
    if not isinstance(names, (list, tuple)) or not names:
        raise InvalidConfigException(
            f"config.yml: clinic_core.extensions.RasaExtensions needs '{SWITCH_KEY}', "
            f"a list of the extensions to switch on (known: {known}); got {names!r}."
        )
    unknown = [name for name in names if name not in EXTENSIONS]
    if unknown:
        raise InvalidConfigException(
            f"config.yml: RasaExtensions cannot switch on {unknown!r}: no such "
            f"extension (known: {known})."
        )
    return tuple(str(name) for name in names)


def switch_on(names: Any) -> None:
    """Switches on the named extensions (idempotent); raises for an unknown name."""
    for name in checked_names(names):
        EXTENSIONS[name].install()


def switch_off(names: Any) -> None:
    """Puts Rasa's own behaviour back for the named extensions (for tests)."""
    for name in checked_names(names):
        EXTENSIONS[name].uninstall()


def switched_on() -> List[str]:
    """The extensions that are on in this process."""
    return [name for name, extension in EXTENSIONS.items() if extension.is_on()]


@DefaultV1Recipe.register(
    DefaultV1Recipe.ComponentType.POLICY_WITHOUT_END_TO_END_SUPPORT,
    is_trainable=False,
)
class RasaExtensions(Policy):
    """Switches on the extensions config.yml names; predicts nothing."""

    @staticmethod
    def get_default_config() -> Dict[str, Any]:
        """The lowest priority, and no extension unless config.yml names them."""
        return {"priority": 0, SWITCH_KEY: None}

    def __init__(
        self,
        config: Dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
        featurizer: Optional[Any] = None,
    ) -> None:
        """Switches the named extensions on as Rasa builds the policy."""
        super().__init__(config, model_storage, resource, execution_context, None)
        switch_on(config.get(SWITCH_KEY))

    def train(
        self,
        training_trackers: List[TrackerWithCachedStates],
        domain: Domain,
        **kwargs: Any,
    ) -> Resource:
        """Nothing to learn."""
        return self._resource

    def predict_action_probabilities(
        self,
        tracker: DialogueStateTracker,
        domain: Domain,
        rule_only_data: Optional[Dict[str, Any]] = None,
        **kwargs: Any,
    ) -> PolicyPrediction:
        """All zeros: the other policies decide."""
        return self._prediction(self._default_predictions(domain))
