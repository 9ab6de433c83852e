"""Server-side extensions of Rasa Core for the clinic assistant.

Every piece of this project that touches Rasa's internals lives here, and each is
on because a configuration file names it; importing a module changes nothing:

- ``tracker_store``: the conversation store, named in endpoints.yml;
- ``shared_tracker_store``: the scaled profile's, several servers writing it,
  riding out a PostgreSQL restart, named in deploy/scaled/endpoints.yml;
- ``lock_store``: one message of a conversation at a time, in arrival order, across
  Rasa servers, named in deploy/scaled/endpoints.yml;
- ``policy``: ``SafetyPolicy``, named in config.yml's policies;
- ``session``, ``action_guard``, ``action_replies``: replacements of a piece of Rasa,
  switched on by ``extensions.RasaExtensions`` in config.yml's policies.

Each has a test that fails when the Rasa internal it relies on changes
(tests/test_clinic_core.py, tests/test_action_replies.py, tests/test_session_start.py,
tests/test_tracker_store.py, tests/scaled/test_lock_store.py,
tests/test_shared_tracker_store.py).
"""
