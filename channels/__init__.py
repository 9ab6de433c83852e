"""Rasa input channels of the clinic assistant: REST, the website widget, SMS.

Every channel reads patient text through ``channels.guard``, so typed text is never
taken for a Rasa command, and remembers the buttons it offered in
``channels.store.ChannelStore``. SMS replies go through a durable outbox
(``channels.sms_outbox``), so a Twilio outage or a restart loses none.
"""

# What a patient reads when the assistant could not answer a message at all: the
# turn failed, or it waited too long behind the conversation's earlier messages.
FAILURE_NOTE = "Sorry, something went wrong on our side. Please try again in a moment."
