# ASGI echo app for hypercorn (upstreamtest). Records every request it is
# given as one JSON line in $UPSTREAMTEST_LOG, then answers
# "echo METHOD TARGET user=X-STEPGATE-USER".
import json
import os

LOG = os.environ["UPSTREAMTEST_LOG"]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    n = 0
    while True:
        msg = await receive()
        if msg["type"] != "http.request":
            break
        n += len(msg.get("body", b""))
        if not msg.get("more_body"):
            break
    headers = {}
    for k, v in scope["headers"]:
        k = k.decode("latin-1").lower()
        v = v.decode("latin-1")
        headers[k] = headers[k] + ", " + v if k in headers else v
    target = scope.get("raw_path") or scope["path"].encode()
    target = target.decode("latin-1")
    if scope.get("query_string"):
        target += "?" + scope["query_string"].decode("latin-1")
    rec = {"server": "hypercorn", "method": scope["method"], "target": target,
           "proto": "HTTP/" + scope["http_version"], "headers": headers, "body_len": n}
    with open(LOG, "a") as f:
        f.write(json.dumps(rec) + "\n")
    body = ("echo %s %s user=%s\n" % (scope["method"], target, headers.get("x-stepgate-user", ""))).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
