"""Shared by the Flask and Django echo apps of parsertest: reading the
X-Matrix-Fields header, walking a JSON pointer, and encoding one value the
way the harness reads it back (kind plus base64 of its text)."""

import base64
import json
import re

_INDEX = re.compile(r"(0|[1-9][0-9]*)\Z")
_MISSING = object()


def fields(environ):
    """The field names the harness asks for, from X-Matrix-Fields."""
    raw = environ.get("HTTP_X_MATRIX_FIELDS", "")
    spec = json.loads(base64.b64decode(raw)) if raw else None
    if not isinstance(spec, dict):
        raise ValueError("no X-Matrix-Fields header")
    return spec.get("form") or [], spec.get("query") or [], spec.get("json") or []


def pointer(doc, ptr):
    """Walks an RFC 6901 pointer as Python code indexes a decoded document
    (doc["payee"]["name"], doc["items"][0]); _MISSING when it does not
    resolve."""
    if ptr == "":
        return doc
    if not ptr.startswith("/"):
        return _MISSING
    cur = doc
    for tok in ptr[1:].split("/"):
        tok = tok.replace("~1", "/").replace("~0", "~")
        if isinstance(cur, dict):
            if tok not in cur:
                return _MISSING
            cur = cur[tok]
        elif isinstance(cur, list):
            if not _INDEX.match(tok) or int(tok) >= len(cur):
                return _MISSING
            cur = cur[int(tok)]
        else:
            return _MISSING
    return cur


def report(v):
    """One value as the harness reads it: its kind and base64 of its text
    (a string's UTF-8 bytes, a number as Python prints it, compact JSON)."""
    if isinstance(v, str):
        kind, text = "string", v
    elif isinstance(v, bool):
        kind, text = "bool", "true" if v else "false"
    elif isinstance(v, int):
        kind, text = "number", str(v)
    elif isinstance(v, float):
        kind, text = "number", repr(v)
    elif v is None:
        kind, text = "null", "null"
    elif isinstance(v, (list, tuple)):
        kind, text = "array", json.dumps(v, separators=(",", ":"), ensure_ascii=False)
    elif isinstance(v, dict):
        kind, text = "object", json.dumps(v, separators=(",", ":"), ensure_ascii=False)
    else:
        kind, text = type(v).__name__, repr(v)
    # surrogatepass: json.loads gives lone surrogates for "\ud800".
    return {"kind": kind, "b64": base64.b64encode(text.encode("utf-8", "surrogatepass")).decode()}


def json_values(values, doc, ptrs):
    """Adds json.PTR for every pointer that resolves in doc."""
    for p in ptrs:
        v = pointer(doc, p)
        if v is not _MISSING:
            values["json." + p] = report(v)
