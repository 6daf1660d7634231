#!/usr/bin/env python3
"""Recompute the signature headers of the example events.

Each NAME.headers beside this script describes how NAME.json is sent.  The
signatures in them are real HMACs over the exact bytes of NAME.json, made
with the demo secrets below (made up; they protect nothing).  After editing
an event, run `sign.py` to rewrite the signatures; `sign.py --check` only
reports the ones that no longer match and exits 1 if any.
"""

import base64
import hashlib
import hmac
import os
import re
import sys

SECRETS = {
    "stripe": b"whsec_acme_demo_secret_not_real",
    "github": b"octo-demo-secret-not-real",
    "standard": "whsec_" +
    base64.b64encode(b"ticker-demo-key-not-real").decode(),
}


def hexmac(key, msg):
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def sign_lines(lines, body):
    """Return LINES with every known signature header recomputed."""
    fields = {}
    for line in lines:
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            fields[k.strip().lower()] = v.strip()
    out = []
    for line in lines:
        name = line.split(":", 1)[0].strip().lower()
        if name == "stripe-signature":
            t = re.search(r"t=(\d+)", line).group(1)
            mac = hexmac(SECRETS["stripe"], t.encode() + b"." + body)
            line = "Stripe-Signature: t=%s,v1=%s" % (t, mac)
        elif name == "x-hub-signature-256":
            line = "X-Hub-Signature-256: sha256=" + \
                hexmac(SECRETS["github"], body)
        elif name == "webhook-signature":
            key = base64.b64decode(SECRETS["standard"][len("whsec_"):])
            msg = ("%s.%s." % (fields["webhook-id"],
                               fields["webhook-timestamp"])).encode() + body
            mac = hmac.new(key, msg, hashlib.sha256).digest()
            line = "webhook-signature: v1," + base64.b64encode(mac).decode()
        out.append(line)
    return out


def main():
    check = "--check" in sys.argv[1:]
    here = os.path.dirname(os.path.abspath(__file__))
    stale = 0
    for name in sorted(os.listdir(here)):
        if not name.endswith(".headers"):
            continue
        hpath = os.path.join(here, name)
        with open(hpath[:-len(".headers")] + ".json", "rb") as f:
            body = f.read()
        with open(hpath) as f:
            lines = f.read().splitlines()
        signed = sign_lines(lines, body)
        if signed == lines:
            continue
        stale += 1
        if check:
            print("%s: signature does not match the body" % name)
        else:
            with open(hpath, "w") as f:
                f.write("\n".join(signed) + "\n")
            print("%s: signed" % name)
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
