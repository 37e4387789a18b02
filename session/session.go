// Package session seals stepgate's two browser cookies (docs/design.md §5): the
// step-up cookie, proof that the user passed MFA, read on every request
// through an mfa rule; and the pending-flow cookie (<name>-flow), which
// carries a challenge in progress so that any replica can continue it.
//
// Both are AES-256-GCM sealed with the cookie name as additional data,
// encoded in a compact, strictly decoded binary format, and carry their own
// expiry, which is enforced on open rather than trusted to the browser. The
// Store also satisfies gorilla's sessions.Store for callers that want that
// API, with our cookie attributes (HttpOnly, SameSite=Lax, Path=/, no
// Domain) that the gorilla API cannot weaken.
//
// This package must never trust a cookie it cannot open: a value that is
// missing, duplicated, oversized, truncated, tampered with, sealed for the
// other cookie, malformed or expired is absent, never an error a caller
// could mistake for valid. It never logs cookie values or the ID token, and
// it does not judge freshness against a rule (user, max_age, acr): that is
// the caller's decision.
package session
