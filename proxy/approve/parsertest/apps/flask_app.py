"""parsertest echo app on Flask/Werkzeug (Debian's python3-flask), served by
Werkzeug's threaded development server: reports request.form.get,
request.args.get, request.values.get and request.get_json() for the fields
named in X-Matrix-Fields. Usage: python3 flask_app.py PORT"""

import logging
import sys

from flask import Flask, jsonify, request
from werkzeug.serving import run_simple

import matrixecho

app = Flask(__name__)


# before_request answers every request, whatever its path or method, before
# Flask's routing could refuse it with a 404 or 405.
@app.before_request
def echo():
    form, query, ptrs = matrixecho.fields(request.environ)
    out = {"method": request.method, "values": {}}
    values = out["values"]
    errors = []
    try:
        for n in form:
            if n in request.form:
                values["post." + n] = matrixecho.report(request.form.get(n))
            if n in request.values:
                values["request." + n] = matrixecho.report(request.values.get(n))
        for n in query:
            if n in request.args:
                values["get." + n] = matrixecho.report(request.args.get(n))
    except Exception as e:  # werkzeug's form parsing is silent; only a limit raises
        errors.append(f"form: {type(e).__name__}: {e}")
    if ptrs:
        # get_json(silent=True) would give None for both a failure and a
        # JSON null: without silent, the failure is seen (and reported).
        try:
            doc = request.get_json()
        except Exception as e:
            errors.append(f"get_json: {type(e).__name__}: {e}")
        else:
            matrixecho.json_values(values, doc, ptrs)
    if "X-HTTP-Method-Override" in request.headers:
        values["override.header"] = matrixecho.report(request.headers["X-HTTP-Method-Override"])
    if errors:
        out["error"] = "; ".join(errors)
    return jsonify(out)


if __name__ == "__main__":
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    run_simple("127.0.0.1", int(sys.argv[1]), app, threaded=True)
