#!/usr/bin/env python3
"""The SES SMTP settings from the stack's mail secret (infra/environment.yaml's MailSmtpSecret:
access_key_id, secret_access_key, smtp_host, mail_domain).

SES's SMTP interface signs in with the IAM user's access key id and a password derived from its
secret access key (AWS's documented "SMTP password from secret access key" algorithm, in the SES
developer guide, "Obtaining Amazon SES SMTP credentials"): the SigV4 signing key chain, HMAC-
SHA256 from "AWS4" + secret over the date "11111111", the region, "ses" and "aws4_request", then
over "SendRawEmail", prefixed with the version byte 0x04, base64. tests/infra/test_ses_smtp.py
checks the chain against AWS's published SigV4 example and the whole against openssl.

    ses_smtp.py REGION <secret.json     prints SMTP_URL=smtps://KEY:PASSWORD@email-smtp.REGION.amazonaws.com:465

Used by infra/host/bootstrap.sh (the back-end's api.env) and scripts/deploy-aws.sh (the secret's
smtp_url, for template.yaml's auth Lambda). Port 465 is TLS from the first byte (smtps); SES
also takes STARTTLS on 587 (smtp://...:587), which the service supports as well.
"""

import base64
import hashlib
import hmac
import json
import re
import sys
from urllib.parse import quote

DATE = "11111111"
SERVICE = "ses"
TERMINAL = "aws4_request"
MESSAGE = "SendRawEmail"
VERSION = b"\x04"


def _sign(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret_access_key: str, date: str, region: str, service: str) -> bytes:
    """SigV4's signing key (kSigning)."""
    key = ("AWS4" + secret_access_key).encode("utf-8")
    for part in (date, region, service, TERMINAL):
        key = _sign(key, part)
    return key


def smtp_password(secret_access_key: str, region: str) -> str:
    key = _sign(signing_key(secret_access_key, DATE, region, SERVICE), MESSAGE)
    return base64.b64encode(VERSION + key).decode("ascii")


def smtp_url(secret: dict, region: str) -> str:
    host = secret.get("smtp_host") or f"email-smtp.{region}.amazonaws.com"
    if not re.fullmatch(r"email-smtp(-fips)?\.[a-z0-9-]+\.amazonaws\.com", host):
        raise ValueError(f"smtp_host {host!r} is not an SES SMTP endpoint")
    # SES's SMTP credentials only work in the region of the endpoint they were derived for.
    endpoint_region = host.split(".")[1]
    user = quote(secret["access_key_id"], safe="")
    password = quote(smtp_password(secret["secret_access_key"], endpoint_region), safe="")
    return f"smtps://{user}:{password}@{host}:465"


def main() -> int:
    if len(sys.argv) != 2 or not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", sys.argv[1]):
        print("usage: ses_smtp.py REGION <secret.json", file=sys.stderr)
        return 2
    print(f"SMTP_URL={smtp_url(json.load(sys.stdin), sys.argv[1])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
