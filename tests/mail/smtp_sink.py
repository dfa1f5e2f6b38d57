"""A real SMTP server for the tests: aiosmtpd, storing each message it accepts as one file.

    python3 tests/mail/smtp_sink.py --port 2525 --dir /tmp/mail

Each accepted message becomes <dir>/<arrival ns>-<uuid>.json: the envelope's recipients, the
subject, and the plain and HTML bodies decoded (so the tests read links without a MIME parser),
with the raw message beside them. Written under a temporary name and renamed, so a reader never
sees half a message. Prints "ready" once it listens; stops on SIGTERM.
"""

import argparse
import email
import email.policy
import json
import os
import signal
import threading
import time
import uuid

from aiosmtpd.controller import Controller


class StoreEachMessage:
    def __init__(self, folder):
        self.folder = folder

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)

        def body(subtype):
            part = message.get_body(preferencelist=(subtype,))
            return part.get_content() if part is not None else None

        stored = {
            "mail_from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "from": str(message["From"]),
            "subject": str(message["Subject"]),
            "text": body("plain"),
            "html": body("html"),
            "raw": raw.decode("utf-8", "replace"),
        }
        name = f"{time.time_ns()}-{uuid.uuid4().hex}"
        temporary = os.path.join(self.folder, f".{name}.tmp")
        with open(temporary, "w", encoding="utf-8") as out:
            json.dump(stored, out)
        os.rename(temporary, os.path.join(self.folder, f"{name}.json"))
        return "250 Message accepted for delivery"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    controller = Controller(StoreEachMessage(args.dir), hostname=args.host, port=args.port)
    controller.start()
    print("ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
