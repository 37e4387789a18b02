#!/usr/bin/python3 -S
# CGI echo for Apache httpd (upstreamtest): every URL is mapped here.
# Records every request as one JSON line in $UPSTREAMTEST_LOG (SetEnv).
import json
import os
import sys

env = os.environ
body = sys.stdin.buffer.read()
headers = {k[5:].lower().replace("_", "-"): v for k, v in env.items() if k.startswith("HTTP_")}
for k in ("CONTENT_TYPE", "CONTENT_LENGTH"):
    if k in env:
        headers[k.lower().replace("_", "-")] = env[k]
target = env.get("REQUEST_URI", "")
rec = {"server": "apache2", "method": env.get("REQUEST_METHOD", ""), "target": target,
       "proto": env.get("SERVER_PROTOCOL", ""), "headers": headers, "body_len": len(body)}
with open(env["UPSTREAMTEST_LOG"], "a") as f:
    f.write(json.dumps(rec) + "\n")
out = "echo %s %s user=%s\n" % (rec["method"], target, headers.get("x-stepgate-user", ""))
sys.stdout.write("Content-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(out), out))
