"""The SMTP server of the e2e suite: tests/mail/smtp_sink.py (aiosmtpd, from requirements.txt) on
a free loopback port, storing each message as a JSON file the tests read."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness import REPO, free_port


@dataclass
class Mail:
    to: str
    subject: str
    text: str

    def link(self, page: str) -> str | None:
        match = re.search(rf"\S+/{page}/#token=[A-Za-z0-9_-]+", self.text)
        return match[0] if match else None


class Mailbox:
    def __init__(self) -> None:
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="latchkey-e2e-mail-"))
        self.process = subprocess.Popen(
            [sys.executable, str(REPO / "tests/mail/smtp_sink.py"), "--port", str(self.port), "--dir", str(self.folder)],
            stdout=subprocess.PIPE,
            text=True,
        )
        ready = self.process.stdout.readline().strip()
        if ready != "ready":
            self.stop()
            raise RuntimeError(f"the SMTP server did not start (said {ready!r})")

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def mails(self, to: str) -> list[Mail]:
        found = []
        for path in sorted(self.folder.glob("*.json")):
            stored = json.loads(path.read_text())
            if to in stored["to"]:
                found.append(Mail(to=to, subject=stored["subject"], text=stored["text"] or ""))
        return found

    def wait_for(self, to: str, count: int = 1, timeout: float = 20.0) -> list[Mail]:
        deadline = time.monotonic() + timeout
        while True:
            mails = self.mails(to)
            if len(mails) >= count:
                return mails
            if time.monotonic() > deadline:
                raise AssertionError(f"{count} mail(s) to {to} within {timeout:.0f} s; got {mails}")
            time.sleep(0.1)

    def link(self, to: str, page: str, count: int = 1, timeout: float = 20.0) -> str:
        """The link to /page/ in the `count`th mail to `to` that has one (waiting for it)."""
        deadline = time.monotonic() + timeout
        while True:
            links = [link for mail in self.mails(to) if (link := mail.link(page))]
            if len(links) >= count:
                return links[count - 1]
            if time.monotonic() > deadline:
                raise AssertionError(f"no /{page}/ link number {count} in the mails to {to}: {self.mails(to)}")
            time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.folder, ignore_errors=True)
