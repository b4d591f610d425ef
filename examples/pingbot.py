#!/usr/bin/env python3
"""pingbot: answers every "ping" with "pong", in any conversation of a running
p2pchat client, through its local API (docs/api.md). Only Python's standard
library.

    client --api --server chat.example.org      # the client, with its API socket
    python3 examples/pingbot.py [SOCKET]

SOCKET defaults to api.sock in $P2PCHAT_PROFILE, else in ~/.local/share/p2pchat.
"""

import json
import os
import socket
import sys


def default_socket():
    profile = os.environ.get("P2PCHAT_PROFILE") or os.path.join(
        os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "p2pchat"
    )
    return os.path.join(profile, "api.sock")


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else default_socket()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    events = sock.makefile("r", encoding="utf-8", newline="\n")
    hello = json.loads(events.readline() or "{}")
    if hello.get("event") != "hello" or hello.get("api") != 1:
        sys.exit(f"pingbot: {path} does not speak API version 1: {hello}")
    print("pingbot: ready", flush=True)
    for line in events:
        event = json.loads(line)
        kind = event.get("event")
        if kind == "bye":
            sys.exit(f"pingbot: the client closed the API: {event.get('reason')}")
        # A peer's message in a two-party conversation, or anyone else's in a group.
        heard = kind == "message" or (kind == "group_message" and not event.get("own"))
        if heard and event.get("text", "").strip().lower() == "ping":
            number = event["conversation"]["number"]
            command = {"api": 1, "cmd": "send", "conversation": number, "text": "pong"}
            sock.sendall((json.dumps(command) + "\n").encode())


if __name__ == "__main__":
    main()
