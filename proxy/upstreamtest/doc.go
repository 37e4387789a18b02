// Package upstreamtest is for tests only: it starts real, non-Go HTTP
// servers from Debian's packages (hypercorn, Python's http.server, Apache
// httpd, nginx, PHP's built-in server, Node's http) on loopback, each
// running a tiny echo app that records every request it receives, so a test
// can assert exactly which requests reached the upstream behind stepgate.
//
// Go's own HTTP server parses strictly; the legacy apps stepgate protects
// mostly do not, and framing, upgrade and smuggling flaws only show against
// the lenient ones (issue 18). Each server gets its own temporary directory
// (config, app, logs) and a free loopback port, and is stopped when the test
// ends. A missing program fails the test when CI=true and skips it loudly
// otherwise.
//
// It must never be imported by production code, listen anywhere but
// 127.0.0.1, or leave a process behind: each server runs in its own process
// group, which is ended (SIGTERM, then SIGKILL) by t.Cleanup.
package upstreamtest
