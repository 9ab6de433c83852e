"""Server-side extensions of Rasa Core for the clinic assistant.

Loaded by the Rasa server through endpoints.yml (the tracker store), which also
installs the faster check of action-server replies (``action_replies``).
"""

from clinic_core import action_replies

action_replies.install()
