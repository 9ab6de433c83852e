"""Server-side extensions of Rasa Core for the clinic assistant.

Loaded by the Rasa server through config.yml (``clinic_core.policy.SafetyPolicy``)
and endpoints.yml (the tracker store). Importing the package installs, in every
process that serves or tests the model:

- ``action_replies``: the faster check of action-server replies;
- ``session``: the session start with the clinic's facts and the introduction,
  in the Rasa server;
- ``action_guard``: a time limit and a safe answer when a custom action fails.

Each has a test that fails when the Rasa internal it relies on changes
(tests/test_clinic_core.py, tests/test_action_replies.py).
"""

from clinic_core import action_guard, action_replies, session

action_replies.install()
session.install()
action_guard.install()
