"""Small helpers shared by the Rasa server, the action server and the channels.

Nothing here imports Rasa or the Rasa SDK, so any process may import it cheaply.
"""
