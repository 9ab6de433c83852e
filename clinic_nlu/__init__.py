"""Custom Rasa NLU components of the clinic assistant (loaded by the Rasa server)."""
