"""Custom actions of the clinic assistant, served by the Rasa SDK action server."""
