"""Server-side extensions of Rasa Core for the clinic assistant (the tracker store)."""
