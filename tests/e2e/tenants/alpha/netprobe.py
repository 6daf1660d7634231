#!/usr/bin/python3
# What network does the guest have?  Interfaces, a connect to a private
# address (10.255.255.1:9, fails with ENETUNREACH when there is no route, so
# no packet is ever made) and a DNS lookup.
import json
import os
import socket
import time

out = {"ifaces": sorted(os.listdir("/sys/class/net"))}
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(5)
t = time.monotonic()
try:
    s.connect(("10.255.255.1", 9))
    out["connect"] = "connected"
    out["errno"] = 0
except OSError as e:
    out["connect"] = e.strerror or str(e)
    out["errno"] = e.errno or 0
out["connect_ms"] = int((time.monotonic() - t) * 1000)
s.close()
t = time.monotonic()
try:
    out["dns"] = str(socket.getaddrinfo("example.com", 80)[0][4])
    out["dns_failed"] = False
except OSError as e:
    out["dns"] = str(e)
    out["dns_failed"] = True
out["dns_ms"] = int((time.monotonic() - t) * 1000)
print(json.dumps(out))
