"""A real SMTP server for the tests: aiosmtpd, storing each message it accepts as one file.

    python3 tests/mail/smtp_sink.py --port 2525 --dir /tmp/mail
    python3 tests/mail/smtp_sink.py --port 2525 --dir /tmp/mail --tls starttls --cert c.pem --key k.pem
    python3 tests/mail/smtp_sink.py --port 2465 --dir /tmp/mail --tls implicit --cert c.pem --key k.pem

With --tls starttls the server offers STARTTLS and refuses mail without it; with --tls implicit
it speaks TLS from the first byte (smtps). Each stored message says whether it came over TLS.

Each accepted message becomes <dir>/<arrival ns>-<uuid>.json: the envelope's recipients, the
subject, and the plain and HTML bodies decoded (so the tests read links without a MIME parser),
with the raw message beside them. Written under a temporary name and renamed, so a reader never
sees half a message. Prints "ready" once it listens; stops on SIGTERM.
"""

import argparse
import email
import ssl
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
            # After STARTTLS the transport is the TLS one; with implicit TLS it always was.
            "tls": server.transport.get_extra_info("ssl_object") is not None,
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
    parser.add_argument("--tls", choices=["none", "starttls", "implicit"], default="none")
    parser.add_argument("--cert", help="PEM certificate chain for --tls")
    parser.add_argument("--key", help="PEM private key for --tls")
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    handler = StoreEachMessage(args.dir)
    if args.tls == "none":
        controller = Controller(handler, hostname=args.host, port=args.port)
    else:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
        if args.tls == "starttls":
            controller = Controller(
                handler,
                hostname=args.host,
                port=args.port,
                tls_context=context,
                require_starttls=True,
            )
        else:
            controller = Controller(handler, hostname=args.host, port=args.port, ssl_context=context)
    controller.start()
    print("ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()


if __name__ == "__main__":
    main()
