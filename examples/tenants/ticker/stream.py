#!/usr/bin/python3
"""ticker/stream: stream one line per quote of a price-alert event.

The event (Standard Webhooks shape) lists quotes under data.quotes and a
pause under data.interval_ms.  Each line is flushed as soon as it is
written, so the sender sees the first quote before the last one exists:
vmcgi passes stdout through as it comes.
"""

import json
import sys
import time


def main():
    try:
        event = json.load(sys.stdin)
        data = event["data"]
        quotes = data["quotes"]
    except (ValueError, KeyError, TypeError) as e:
        print("stream: not a price alert: %r" % e, file=sys.stderr)
        return 1

    pause = min(max(int(data.get("interval_ms", 500)), 0), 2000) / 1000.0
    total = len(quotes)
    print("alert %s: %d quotes" % (event.get("type", "?"), total), flush=True)
    for n, q in enumerate(quotes, 1):
        time.sleep(pause)
        print("%d/%d %s %s %s" % (n, total, q.get("symbol"), q.get("price"),
                                  q.get("currency", "")), flush=True)
    print("end of alert", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
