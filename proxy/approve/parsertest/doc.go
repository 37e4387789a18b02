// Package parsertest is for tests only: it runs the request parsers real
// applications use (PHP's $_POST, Flask/Werkzeug, Django, Express with qs
// and multer, Ruby Rack, Go's net/http) as loopback echo servers, and asks
// each what its framework would act on for one exact request: the method
// after the framework's method override, the value each accessor returns
// for a field (post., get., request., json.), or the framework's refusal.
//
// stepgate's approve rules show a held request as "amount=5, payee=ACME"
// and must forward only a request every application reads that way; the
// strict parser and canonical encoder are tested against this matrix.
//
// Requests are written byte for byte over a raw connection (duplicate
// Content-Type lines, any query, any body), one connection per request.
// Which fields to report travels in the X-Matrix-Fields header; values come
// back as base64, so every byte survives. Each app is a small file in apps/,
// started from Debian's packages (Express from its pinned package-lock.json,
// installed by npm ci on first use) through upstreamtest.Launch.
//
// It must never be imported by production code, listen anywhere but
// 127.0.0.1, or leave a process behind: every server runs in its own
// process group, ended by t.Cleanup. A missing program fails the test when
// CI=true and skips it loudly otherwise.
package parsertest
