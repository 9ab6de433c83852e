"""Booking, rescheduling, cancelling and call-backs in conversation.

``form.py``: the booking form and booking; ``lookup.py``: finding a booking to
check, reschedule or cancel; ``callback.py``: call-back requests; ``offers.py``: the
open times to offer; ``slots.py``: the booking slots in groups cleared together;
``refused.py``: the intents a form never takes as an answer; ``common.py``: what
they share; ``parsing.py``: reading names, phone numbers, visit types and picks.
"""
