"""Staff tools: edit the FAQ, review missed messages, retrain and publish the model.

Run them with ``scripts/clinicbot`` (``python -m staff``). Every command refuses a
mistake in plain language and writes nothing when it does; see ``staff/cli.py`` for
the commands and ``staff/retrain.py`` for what a retrain checks.
"""
