package proxy

import (
	"net/http"
	"slices"
)

// The forwarded header contract (docs/design.md §6).
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
// A spelling variant of an identity header (X_Forwarded_User for
// X-Forwarded-User; likewise the PingOne-user header) is removed even from
// trusted peers: the IdP sets the canonical name, and a variant can only
// come from the client.
func stripSpoofable(h http.Header, tokenHeader string, identityHeaders []string) {
	stripSpoofableNames(h, tokenHeader, identityHeaders, nil)
}

// stripSpoofableNames is stripSpoofable that also appends the names it
// removed to removed (allocating only when there is one), for the front
// doors that must pass the removal on to, or refuse it at, a front proxy.
func stripSpoofableNames(h http.Header, tokenHeader string, identityHeaders []string, removed []string) []string {
	for name := range h {
		if isSpoofable(name, tokenHeader, identityHeaders) {
			delete(h, name)
			removed = append(removed, name)
		}
	}
	return removed
}

func isSpoofable(name, tokenHeader string, identityHeaders []string) bool {
	return hasFoldedPrefix(name, "x-stepgate-") || foldedEqual(name, tokenHeader) ||
		foldedEqual(name, "x-original-url") || foldedEqual(name, "x-rewrite-url") ||
		foldedEqual(name, "x-http-method-override") || foldedEqual(name, "x-http-method") ||
		foldedEqual(name, "x-method-override") || isVariant(name, identityHeaders)
}

// isVariant reports whether name is another spelling of one of the
// (canonical) identity headers.
func isVariant(name string, identityHeaders []string) bool {
	for _, f := range identityHeaders {
		if name != f && foldedEqual(name, f) {
			return true
		}
	}
	return false
}

// forwardedHeaders are honoured only from trusted proxies: forwarding
// headers (and every identity family below). An upstream that reads any of
// them must never see a client's copy.
var forwardedHeaders = []string{
	"forwarded", "x-real-ip", "x-client-ip", "true-client-ip", "cf-connecting-ip",
}

// forwardedPrefixes are whole families removed from untrusted peers, in
// folded form.
var forwardedPrefixes = []string{"x-forwarded-"}

// identityNames and identityPrefixes (folded) are the headers that auth
// proxies set to say who is signed in: oauth2-proxy's X-Forwarded-User,
// -Email, -Preferred-Username, -Groups and X-Auth-Request-*, Authelia's
// Remote-*, Apache's and many SSO agents' X-Remote-*, Grafana's
// X-Webauth-*, Authentik's X-Authentik-*. A hop that does not set one
// passes a client's copy on as it came, even a trusted one, so every one
// but the configured identity header (and STEPGATE_PASS_IDENTITY_HEADERS)
// is removed from every peer: an app that reads one as "who is signed in"
// sees only what stepgate believed.
var identityNames = []string{
	"remote-user", "remote-email", "remote-groups", "remote-name",
	"x-remote-user", "x-remote-email", "x-remote-groups", "x-remote-group", "x-remote-name",
	"x-forwarded-user", "x-forwarded-email", "x-forwarded-preferred-username", "x-forwarded-groups",
}

var identityPrefixes = []string{"x-auth-request-", "x-webauth-", "x-authentik-"}

// identityPrefixedNames are the names under identityPrefixes that
// oauth2-proxy, Grafana and Authentik set (folded). nginx can clear a
// header only by its name, so the shipped nginx.conf clears these and
// identityNames, and a forward-auth check from nginx that carries another
// identity-family name is refused (it would reach the app).
var identityPrefixedNames = []string{
	"x-auth-request-user", "x-auth-request-email", "x-auth-request-preferred-username",
	"x-auth-request-groups", "x-auth-request-access-token", "x-auth-request-redirect",
	"x-webauth-user", "x-webauth-email", "x-webauth-name", "x-webauth-login", "x-webauth-role",
	"x-authentik-username", "x-authentik-groups", "x-authentik-email", "x-authentik-name",
	"x-authentik-uid", "x-authentik-jwt", "x-authentik-entitlements",
}

// frontProxyClears reports whether the shipped configuration of a front
// proxy answering in style clears the identity-family header name on the
// way to the app: Caddy and Traefik delete whole families by prefix, nginx
// the names it lists; none can clear a spelling with '_' or '.' by name
// (nginx drops those itself, Caddy and Traefik forward them).
func frontProxyClears(name string, style Style) bool {
	for i := 0; i < len(name); i++ {
		if name[i] == '_' || name[i] == '.' {
			return false
		}
	}
	if style != StyleNginx {
		return true
	}
	for _, f := range identityNames {
		if foldedEqual(name, f) {
			return true
		}
	}
	for _, f := range identityPrefixedNames {
		if foldedEqual(name, f) {
			return true
		}
	}
	return false
}

// isIdentityFamily reports whether name is, in any spelling, one of the
// identity families.
func isIdentityFamily(name string) bool {
	for _, p := range identityPrefixes {
		if hasFoldedPrefix(name, p) {
			return true
		}
	}
	for _, f := range identityNames {
		if foldedEqual(name, f) {
			return true
		}
	}
	return false
}

// stripIdentityFamilies removes, from a trusted peer's request, every
// identity-family header except the ones named in keep (canonical names:
// the configured identity and PingOne-user headers and the names passed on
// purpose), and appends the names it removed to removed.
func stripIdentityFamilies(h http.Header, keep []string, removed []string) []string {
	for name := range h {
		if isIdentityFamily(name) && !slices.Contains(keep, name) {
			delete(h, name)
			removed = append(removed, name)
		}
	}
	return removed
}

// stripForwarded removes, from a request whose peer is not a trusted proxy,
// every forwarding and identity header (forwardedHeaders, forwardedPrefixes,
// the identity families) and each of identityHeaders (the configured
// identity and PingOne-user headers), in every spelling ('_' and '.' read
// as '-', any case), so none can change what stepgate or the upstream
// believes (docs/design.md §17). It reports whether one of identityHeaders
// was among them, for the log that says why a request has no identity.
func stripForwarded(h http.Header, identityHeaders []string) (droppedIdentity string) {
	for name := range h {
		if isForwarded(name, identityHeaders) {
			delete(h, name)
			for _, f := range identityHeaders {
				if foldedEqual(name, f) {
					droppedIdentity = name
				}
			}
		}
	}
	return droppedIdentity
}

func isForwarded(name string, identityHeaders []string) bool {
	if isIdentityFamily(name) || isForwarding(name) {
		return true
	}
	for _, f := range identityHeaders {
		if foldedEqual(name, f) {
			return true
		}
	}
	return false
}

// isForwarding reports whether name is, in any spelling, one of
// forwardedHeaders or starts with one of forwardedPrefixes.
func isForwarding(name string) bool {
	for _, p := range forwardedPrefixes {
		if hasFoldedPrefix(name, p) {
			return true
		}
	}
	for _, f := range forwardedHeaders {
		if foldedEqual(name, f) {
			return true
		}
	}
	return false
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

// stripRequest is the one walk over a request's headers that does what
// stripSpoofableNames, stripFraming and then stripForwarded (untrusted
// peer) or stripIdentityFamilies (trusted peer) do one after the other,
// with each name classified once (classify) instead of tried against every
// rule by each walk: the three walks were a tenth of the stepped-up path's
// added instructions. TestStripRequestIsTheFourWalks and FuzzStripRequest
// hold it to those functions.
func (g *Gateway) stripRequest(h http.Header, trusted bool, d *Decision) {
	for name := range h {
		c := g.classify(name)
		switch {
		case c == 0:
		case c&(hcSpoofable|hcFraming) != 0:
			delete(h, name)
			// A front door cannot drop these from the request it forwards
			// itself: it is told to (ext_authz) or refuses.
			d.Removed = append(d.Removed, name)
		case !trusted:
			delete(h, name)
			if c&hcIdentityHeader != 0 {
				d.droppedIdentity = name
			}
		case c&hcFamily != 0 && !slices.Contains(g.keepIdentity, name):
			delete(h, name)
			d.Dropped = append(d.Dropped, name)
		}
	}
}

// headerClass says which of stripRequest's rules a header name falls under.
type headerClass uint8

const (
	hcSpoofable      headerClass = 1 << iota // isSpoofable: from every peer
	hcFraming                                // isFramingVariant: from every peer
	hcForwarded                              // forwardedHeaders, forwardedPrefixes: from untrusted peers
	hcFamily                                 // isIdentityFamily: from untrusted peers, and from trusted ones unless passed
	hcIdentityHeader                         // a configured identity header as configured: from untrusted peers
)

// maxFolded is the longest header name classify folds on its stack; a
// longer one is classified by the rules themselves.
const maxFolded = 64

// classify returns the classes of a header name, 0 for a name no rule
// removes. It folds the name once and looks it up; g.foldedNames are the
// configured ID-token and identity headers, folded.
func (g *Gateway) classify(name string) headerClass {
	if !g.plainOff && plainName(name) {
		return 0
	}
	if len(name) > maxFolded {
		return g.classifySlow(name)
	}
	var buf [maxFolded]byte
	f := buf[:len(name)]
	for i := range len(name) {
		f[i] = fold(name[i])
	}
	var c headerClass
	if len(f) > 2 && f[0] == 'x' && f[1] == '-' {
		switch {
		case hasPrefix(f, "x-stepgate-"):
			return hcSpoofable
		case hasPrefix(f, "x-forwarded-"):
			c = hcForwarded
		case hasPrefix(f, "x-auth-request-"), hasPrefix(f, "x-webauth-"), hasPrefix(f, "x-authentik-"):
			c = hcFamily
		}
	}
	switch string(f) {
	case "x-original-url", "x-rewrite-url", "x-http-method-override", "x-http-method", "x-method-override":
		return hcSpoofable
	case "forwarded", "x-real-ip", "x-client-ip", "true-client-ip", "cf-connecting-ip":
		c |= hcForwarded
	case "remote-user", "remote-email", "remote-groups", "remote-name",
		"x-remote-user", "x-remote-email", "x-remote-groups", "x-remote-group", "x-remote-name",
		"x-forwarded-user", "x-forwarded-email", "x-forwarded-preferred-username", "x-forwarded-groups":
		c |= hcFamily
	case "content-length", "transfer-encoding", "keep-alive", "proxy-connection",
		"proxy-authenticate", "proxy-authorization", "connection", "upgrade", "te", "trailer":
		if !slices.Contains(framingHeaders, name) { // not as net/http spells it
			c |= hcFraming
		}
	case "http2-settings":
		c |= hcFraming
	}
	if string(f) == g.foldedNames[0] {
		return hcSpoofable
	}
	for i, id := range g.foldedNames[1:] {
		if string(f) == id {
			if name != g.identityHeaders[i] {
				return hcSpoofable // a spelling variant
			}
			c |= hcIdentityHeader
		}
	}
	return c
}

// plainName reports the headers browsers send on most requests, as
// net/http spells them, that no rule removes: classify answers them without
// folding (most of a request's headers are these), unless a configured
// header folds to one of them (g.plainOff).
func plainName(name string) bool {
	switch name {
	case "Accept", "Accept-Encoding", "Accept-Language", "Cache-Control", "Cookie",
		"Dnt", "If-Modified-Since", "If-None-Match", "Origin", "Pragma", "Priority", "Referer",
		"Sec-Ch-Ua", "Sec-Ch-Ua-Mobile", "Sec-Ch-Ua-Platform", "Sec-Fetch-Dest", "Sec-Fetch-Mode",
		"Sec-Fetch-Site", "Sec-Fetch-User", "Upgrade-Insecure-Requests", "User-Agent":
		return true
	}
	return false
}

// notePlainCollisions turns classify's shortcut off when a configured
// header (the ID-token or an identity header, g.foldedNames) folds to one
// of plainName's: those must be classified by the rules. A plain name is
// canonical and spelled with '-' only, so a folded name that is one folds
// back to it by canonicalising.
func (g *Gateway) notePlainCollisions() {
	g.plainOff = slices.ContainsFunc(g.foldedNames, func(f string) bool {
		return plainName(http.CanonicalHeaderKey(f))
	})
}

// classifySlow is classify by the rules themselves.
func (g *Gateway) classifySlow(name string) headerClass {
	var c headerClass
	if isSpoofable(name, g.tokenHeader, g.identityHeaders) {
		c |= hcSpoofable
	}
	if isFramingVariant(name) {
		c |= hcFraming
	}
	if isForwarding(name) {
		c |= hcForwarded
	}
	if isIdentityFamily(name) {
		c |= hcFamily
	}
	if slices.Contains(g.identityHeaders, name) {
		c |= hcIdentityHeader
	}
	return c
}

func hasPrefix(f []byte, p string) bool {
	return len(f) >= len(p) && string(f[:len(p)]) == p
}

// foldName is name under fold.
func foldName(name string) string {
	b := []byte(name)
	for i, c := range b {
		b[i] = fold(c)
	}
	return string(b)
}
