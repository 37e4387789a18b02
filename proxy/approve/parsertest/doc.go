// Package parsertest is for tests only: it runs the request parsers real
// applications use (PHP's $_POST, Flask/Werkzeug, Django, Express with qs
// and multer, Ruby Rack, Go's net/http) as loopback echo servers, and asks
// each what its framework would act on for one exact request: the method
// after the framework's method override, the value each accessor returns
// for a field, or the framework's refusal.
//
// stepgate's approve rules show a held request as "amount=5, payee=ACME"
// and must forward only a request every application reads that way; the
// strict parser and canonical encoder are tested against this matrix.
// testdata/quirks.golden records what the parsers answered to requests on
// which they disagree.
//
// # Accessors
//
// Report.Values has a key for every accessor a parser has, for every field
// asked for (Parser.Keys lists them), Present false when it found nothing:
//
//	parser   Form NAME                                  Query NAME             JSON PTR
//	php      post. $_POST  request. $_REQUEST (GP)      get. $_GET             json. json_decode($body, true)
//	flask    post. form.get  request. values.get        get. args.get          json. get_json()
//	django   post. POST.get (the last value)            get. GET.get           json. json.loads(body)
//	express  post. req.body[N]  request. req.param(N)   get. req.query[N]      json. req.body, when express.json() parsed it
//	rack     post. req.POST  request. req.params        get. req.GET           json. JSON.parse(body)
//	go       post. PostFormValue  request. FormValue    get. URL.Query()[N][0] json. Decode into a struct, jsonmap. into an any
//
// JSON pointers are walked as each language indexes the decoded document
// (PHP's "0" and 0 are one key; an array takes only a canonical index).
// Go's json. decodes into a struct with one `json:"TOKEN"` field per token,
// which encoding/json matches case-insensitively and with Unicode folding
// ({"AMOUNT":9} fills amount, {"\u212a":2}, a Kelvin sign, fills k); its
// jsonmap. walks a map. Report.Method is Symfony 6.4's getMethod (with
// the _method parameter enabled, as Laravel does: for a POST, the
// X-HTTP-Method-Override header, else _method from the body, else from the
// query) for php, the method after method-override's header and body
// getters for express, after Rack::MethodOverride for rack, and the
// request's own for flask, django and go, which report the header as
// override.header instead.
//
// Report.Error is set when a framework refused the request (Django's
// TooManyFieldsSent, Rack's InvalidParameterError, a body-parser 400 or
// 413, a server's 400 or hang-up), when Go's ParseForm returned an error an
// app that checks it would answer 400 to, and when a JSON body asked for
// did not decode (json_decode's null and get_json(silent=True)'s None
// included): the json. keys are then absent. Report.Warning is PHP's
// startup warning when it dropped input (max_input_vars and the like).
//
// # Transport
//
// Requests are written byte for byte over a raw connection (duplicate
// Content-Type lines, any query, any body), one connection per request,
// with Connection: close; the fields to report travel in the
// X-Matrix-Fields header (base64 of JSON) and values come back as base64,
// so every byte survives (a Python string holding a lone surrogate, which
// json.loads allows, comes back as its three CESU-8 bytes). A Parser is
// safe for concurrent use. Each app is a small file in apps/, run from the
// package's source directory with Debian's packages: php -S, Werkzeug's and
// Django's threaded development servers, WEBrick through Rack's handler,
// and Node for Express, whose pinned packages (apps/express/
// package-lock.json) npm ci installs into apps/express/node_modules on
// first use.
//
// It must never be imported by production code, listen anywhere but
// 127.0.0.1, or leave a process behind: every server runs in its own
// process group, ended by t.Cleanup (upstreamtest.Launch). A missing
// program fails the test when CI=true and skips it loudly otherwise.
package parsertest
