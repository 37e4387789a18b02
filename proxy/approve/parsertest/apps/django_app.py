"""parsertest echo app on Django (Debian's python3-django), configured in
this file (DEBUG off, no middleware at all, so no CSRF check) and served by
Django's own threaded development server (what runserver runs): reports
request.POST.get, request.GET.get and json.loads(request.body) for the
fields named in X-Matrix-Fields. Usage: python3 django_app.py PORT"""

import json
import sys

import django
from django.conf import settings
from django.http import JsonResponse
from django.urls import re_path

import matrixecho


def echo(request):
    form, query, ptrs = matrixecho.fields(request.META)
    out = {"method": request.method, "values": {}}
    values = out["values"]
    errors = []
    try:
        # Read first: once request.POST has read a multipart body,
        # request.body raises RawPostDataException.
        body = request.body if ptrs else b""
    except Exception as e:
        errors.append(f"body: {type(e).__name__}: {e}")
        body = None
    try:
        for n in form:
            if n in request.POST:
                values["post." + n] = matrixecho.report(request.POST.get(n))
        for n in query:
            if n in request.GET:
                values["get." + n] = matrixecho.report(request.GET.get(n))
    except Exception as e:  # MultiPartParserError, TooManyFieldsSent, ...: Django's 400
        errors.append(f"POST: {type(e).__name__}: {e}")
    if ptrs and body is not None:
        try:
            doc = json.loads(body)
        except Exception as e:
            errors.append(f"json.loads: {type(e).__name__}: {e}")
        else:
            matrixecho.json_values(values, doc, ptrs)
    if "HTTP_X_HTTP_METHOD_OVERRIDE" in request.META:
        values["override.header"] = matrixecho.report(request.META["HTTP_X_HTTP_METHOD_OVERRIDE"])
    if errors:
        out["error"] = "; ".join(errors)
    return JsonResponse(out)


urlpatterns = [re_path(r"", echo)]

if __name__ == "__main__":
    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["*"],
        SECRET_KEY="parsertest-not-a-secret",
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
        USE_TZ=True,
        # Quiet: the development server logs every request otherwise.
        LOGGING={"version": 1, "disable_existing_loggers": False,
                 "loggers": {"django.server": {"level": "ERROR"}}},
    )
    django.setup()
    from django.core.servers.basehttp import run
    from django.core.wsgi import get_wsgi_application

    run("127.0.0.1", int(sys.argv[1]), get_wsgi_application(), threading=True)
