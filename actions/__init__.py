"""Custom actions of the clinic assistant, served by the Rasa SDK action server.

Importing the package (the action server does it first) makes a failing action
log one line without patient data (``actions/failures.py``).
"""

from actions import failures

failures.install()
