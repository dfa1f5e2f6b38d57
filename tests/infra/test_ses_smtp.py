"""infra/host/ses_smtp.py: the SES SMTP password derived from an IAM secret access key (AWS's
documented algorithm), and the SMTP_URL the back-end hosts get from it."""

import base64
import hashlib
import hmac
import json
import shutil
import subprocess
import sys
from urllib.parse import unquote, urlsplit

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "infra" / "host"))
import ses_smtp  # noqa: E402

# AWS's example secret key (the IAM and SES guides use it in their examples).
EXAMPLE_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def test_the_signing_key_chain_matches_aws_s_published_sigv4_example():
    # "Examples of how to derive a signing key for Signature Version 4" (AWS General Reference):
    # this secret, 20120215, us-east-1, iam give kSigning f4780e2d...404d.
    key = ses_smtp.signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam")
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


def test_the_smtp_password_is_version_4_then_hmac_of_sendrawemail_in_base64():
    password = ses_smtp.smtp_password(EXAMPLE_SECRET, "us-east-1")
    raw = base64.b64decode(password)
    assert raw[0] == 4 and len(raw) == 33
    key = ses_smtp.signing_key(EXAMPLE_SECRET, "11111111", "us-east-1", "ses")
    assert raw[1:] == hmac.new(key, b"SendRawEmail", hashlib.sha256).digest()
    # Recorded once from openssl's HMAC (the test below), so a change of the code shows at once.
    assert password == "BLBM/9hSUELfq8Gw+rU1YcBjkOxGbhT2XG763xVLGWL9"
    # Region-bound: another region, another password.
    assert ses_smtp.smtp_password(EXAMPLE_SECRET, "eu-west-1") != password


@pytest.mark.skipif(not shutil.which("openssl"), reason="no openssl")
def test_openssl_derives_the_same_password():
    """The same chain computed by another implementation (openssl dgst -mac HMAC)."""
    key = ("AWS4" + EXAMPLE_SECRET).encode()
    for message in ("11111111", "eu-central-1", "ses", "aws4_request", "SendRawEmail"):
        key = subprocess.run(
            ["openssl", "dgst", "-sha256", "-mac", "HMAC", "-macopt", f"hexkey:{key.hex()}", "-binary"],
            input=message.encode(), capture_output=True, check=True,
        ).stdout
    assert ses_smtp.smtp_password(EXAMPLE_SECRET, "eu-central-1") == base64.b64encode(b"\x04" + key).decode()


def test_the_url_is_smtps_to_the_secret_s_endpoint_with_user_and_password_escaped():
    secret = {"access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": EXAMPLE_SECRET,
              "smtp_host": "email-smtp.eu-west-1.amazonaws.com", "mail_domain": "example.com"}
    url = urlsplit(ses_smtp.smtp_url(secret, "us-east-1"))
    assert (url.scheme, url.hostname, url.port) == ("smtps", "email-smtp.eu-west-1.amazonaws.com", 465)
    assert unquote(url.username) == "AKIAIOSFODNN7EXAMPLE"
    # Derived for the endpoint's region, not the host's.
    assert unquote(url.password) == ses_smtp.smtp_password(EXAMPLE_SECRET, "eu-west-1")
    assert "/" not in url.netloc.split("@")[0] and "+" not in url.netloc.split("@")[0]


def test_a_host_that_is_not_ses_s_is_refused():
    secret = {"access_key_id": "A", "secret_access_key": "S", "smtp_host": "smtp.evil.example"}
    with pytest.raises(ValueError):
        ses_smtp.smtp_url(secret, "us-east-1")


def test_the_command_prints_one_smtp_url_line():
    secret = {"access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": EXAMPLE_SECRET,
              "smtp_host": "email-smtp.us-east-1.amazonaws.com"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "infra" / "host" / "ses_smtp.py"), "us-east-1"],
        input=json.dumps(secret), capture_output=True, text=True, check=True,
    )
    assert done.stdout == f"SMTP_URL={ses_smtp.smtp_url(secret, 'us-east-1')}\n"
