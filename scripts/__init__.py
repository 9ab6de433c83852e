"""Project scripts (set-up, evaluation, tuning); importable for reuse in tests."""
