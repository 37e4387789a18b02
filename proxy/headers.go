package proxy

import "net/http"

// The forwarded header contract (SPEC §6).
const (
	HeaderIDToken  = "X-Stepgate-Id-Token"
	HeaderSubject  = "X-Stepgate-Subject"
	HeaderUser     = "X-Stepgate-User"
	HeaderAuthTime = "X-Stepgate-Auth-Time"
	HeaderACR      = "X-Stepgate-Acr"
	HeaderAMR      = "X-Stepgate-Amr"
)

// stripSpoofable deletes every inbound header that could pass for one that
// stepgate sets: any name that, compared case-insensitively with '_' and '.'
// read as '-', starts with "x-stepgate-" or equals the configured ID-token
// header. Upstream frameworks (CGI, PHP, Rails, nginx with
// underscores_in_headers) fold those spellings together, so they must all go.
//
// X-Original-URL and X-Rewrite-URL are removed too, from every peer: IIS and
// some frameworks route by them, which would let the upstream act on a path
// other than the one stepgate decided on.
//
// Method-override headers go as well: rules may name methods, and frameworks
// that honour X-HTTP-Method-Override would run a GET that stepgate allowed
// as the POST a rule guards.
//
// A spelling variant of the identity header (X_Forwarded_User for
// X-Forwarded-User) is removed even from trusted peers: the IdP sets the
// canonical name, and a variant can only come from the client.
func stripSpoofable(h http.Header, tokenHeader, identityHeader string) {
	for name := range h {
		if hasFoldedPrefix(name, "x-stepgate-") || foldedEqual(name, tokenHeader) ||
			foldedEqual(name, "x-original-url") || foldedEqual(name, "x-rewrite-url") ||
			foldedEqual(name, "x-http-method-override") || foldedEqual(name, "x-http-method") ||
			foldedEqual(name, "x-method-override") ||
			(identityHeader != "" && name != identityHeader && foldedEqual(name, identityHeader)) {
			delete(h, name)
		}
	}
}

// forwardedHeaders are honoured only from trusted proxies.
var forwardedHeaders = []string{
	"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto",
	"X-Forwarded-Prefix", "X-Forwarded-Uri", "X-Forwarded-Port", "X-Forwarded-Server",
	"X-Real-Ip", "X-Client-Ip", "True-Client-Ip", "Cf-Connecting-Ip",
}

// stripForwarded removes forwarding headers sent by an untrusted peer, and
// the identity header if one is configured, in every spelling, so they
// cannot change what the upstream believes.
func stripForwarded(h http.Header, identityHeader string) {
	for name := range h {
		if identityHeader != "" && foldedEqual(name, identityHeader) {
			delete(h, name)
			continue
		}
		for _, f := range forwardedHeaders {
			if foldedEqual(name, f) {
				delete(h, name)
				break
			}
		}
	}
}

// fold maps a header-name byte to its comparison form: ASCII lower case,
// with '_' and '.' read as '-'.
func fold(c byte) byte {
	switch {
	case c >= 'A' && c <= 'Z':
		return c + 'a' - 'A'
	case c == '_' || c == '.':
		return '-'
	}
	return c
}

func foldedEqual(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if fold(a[i]) != fold(b[i]) {
			return false
		}
	}
	return true
}

// hasFoldedPrefix reports whether name starts with prefix (given in folded
// form) under fold.
func hasFoldedPrefix(name, prefix string) bool {
	if len(name) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		if fold(name[i]) != prefix[i] {
			return false
		}
	}
	return true
}
