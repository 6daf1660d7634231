#!/usr/bin/python3
"""acme/checkout: turn a Stripe-style checkout.session.completed event into
a small order record.

Input: the event JSON on stdin, the Stripe-Signature header in
HTTP_STRIPE_SIGNATURE.  Output: one JSON object on stdout.  Events of other
types are acknowledged with {"ignored": TYPE} so the sender stops retrying.
A body that is not a JSON event exits 1 (vmcgi answers 502).
"""

import datetime
import hashlib
import hmac
import json
import os
import sys

# Demo only: a real tenant keeps its endpoint secret out of its script.
SIGNING_SECRET = b"whsec_acme_demo_secret_not_real"

# Currencies whose amounts Stripe sends without minor units.
ZERO_DECIMAL = {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga",
                "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}


def signature_ok(header, body):
    """True if one v1 HMAC in HEADER matches "t.body" under our secret."""
    fields = [f.split("=", 1) for f in header.split(",") if "=" in f]
    stamps = [v for k, v in fields if k == "t"]
    if not stamps:
        return False
    signed = stamps[0].encode() + b"." + body
    want = hmac.new(SIGNING_SECRET, signed, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(v, want) for k, v in fields if k == "v1")


def money(minor, currency):
    """Minor units to a decimal string: 4999 eur -> "49.99"."""
    if currency in ZERO_DECIMAL:
        return str(minor)
    sign = "-" if minor < 0 else ""
    return "%s%d.%02d" % (sign, abs(minor) // 100, abs(minor) % 100)


def iso(ts):
    when = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def record(event):
    session = event["data"]["object"]
    details = session.get("customer_details") or {}
    currency = (session.get("currency") or "").lower()
    return {
        "id": session["id"],
        "email": details.get("email") or session.get("customer_email"),
        "amount": money(session.get("amount_total") or 0, currency),
        "currency": currency.upper(),
        "created": iso(session.get("created", event["created"])),
    }


def main():
    body = sys.stdin.buffer.read()
    try:
        event = json.loads(body)
        kind = event["type"]
    except (ValueError, KeyError, TypeError) as e:
        print("checkout: not a Stripe event: %s" % e, file=sys.stderr)
        return 1

    if kind != "checkout.session.completed":
        json.dump({"ignored": kind}, sys.stdout)
        print()
        return 0

    try:
        out = record(event)
    except (KeyError, TypeError, ValueError) as e:
        print("checkout: malformed session: %r" % e, file=sys.stderr)
        return 1

    sig = os.environ.get("HTTP_STRIPE_SIGNATURE", "")
    out["signature_ok"] = signature_ok(sig, body)
    json.dump(out, sys.stdout, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
