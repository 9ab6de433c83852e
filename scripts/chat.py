"""A terminal chat with the running assistant over its REST channel.

Usage: make chat   (start the assistant first with make run)
Buttons are shown numbered; type the number to press one.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
import uuid
from typing import Any, Dict, List

from clinic_common import settings


def send(url: str, sender: str, message: str) -> List[Dict[str, Any]]:
    """Sends one message and returns the assistant's replies."""
    body = json.dumps({"sender": sender, "message": message}).encode("utf-8")
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        replies: List[Dict[str, Any]] = json.loads(response.read().decode("utf-8"))
    return replies


def main() -> int:
    """Reads lines from the terminal until EOF or /quit."""
    port = settings.load().rasa_port
    url = f"http://127.0.0.1:{port}/webhooks/rest/webhook"
    sender = f"terminal-{uuid.uuid4().hex[:8]}"
    buttons: List[Dict[str, Any]] = []
    print("Type a message (Ctrl-D or /quit to leave).")
    for line in (
        sys.stdin if not sys.stdin.isatty() else iter(lambda: input("you> "), None)
    ):
        text = line.strip()
        if text == "/quit":
            break
        if text.isdigit() and 0 < int(text) <= len(buttons):
            text = str(buttons[int(text) - 1]["payload"])
        try:
            replies = send(url, sender, text)
        except (urllib.error.URLError, ConnectionError) as error:
            print(f"Cannot reach the assistant at {url} ({error}). Is 'make run' on?")
            return 1
        buttons = []
        for reply in replies:
            if reply.get("text"):
                print(f"bot> {reply['text']}")
            for button in reply.get("buttons") or []:
                buttons.append(button)
                print(f"     {len(buttons)}. {button['title']}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (EOFError, KeyboardInterrupt):
        print()
