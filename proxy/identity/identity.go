// Package identity reads who the upstream identity provider says the user is
// (docs/design.md §4): a header set by a trusted proxy, or a verified JWT.
//
// It must never believe an identity a client could have forged: the header is
// read only from a trusted TCP peer and is deleted otherwise (with every
// spelling an upstream could read as the same header), and a JWT is accepted
// only with an asymmetric signature, the configured issuer and audience, and
// an expiry, and (unless configured for any peer) only from a trusted peer.
// A Mapping (mapping.go) then names the PingOne user (docs/design.md §17). Ambiguity (two values, a comma-joined value, an odd character)
// is an error, never a guess. It never logs or returns token contents in
// errors.
//
// Choices where the spec is silent:
//   - A user value is 1..MaxUserLen bytes of valid UTF-8 made only of
//     printable characters (unicode.IsPrint: letters, marks, numbers,
//     punctuation, symbols and the ASCII space), with no ',' (a proxy may
//     have joined two values) and no leading or trailing space. This refuses
//     control, format (bidi, zero-width) and other invisible characters that
//     would make two different users look alike in logs and to PingOne.
//   - Variant spellings of the identity header ("X_Forwarded_User",
//     "x.forwarded.user") are deleted on every request, trusted or not: CGI,
//     PHP and some frameworks read them as the same header, so a client
//     could otherwise append a second identity behind a trusted proxy.
//   - A non-Bearer Authorization scheme (Basic, ...) is no identity, not an
//     error: the upstream may use it for its own purposes.
package identity

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// Source extracts the upstream user from a request.
type Source interface {
	// User returns the user, ErrNoIdentity (possibly wrapped) when the
	// request carries none, or an error matching ErrInvalidIdentity when it
	// carries one that must not be believed.
	User(r *http.Request, peerTrusted bool) (string, error)
}

var (
	// ErrNoIdentity means the request carries no identity (no header, no
	// token, or a header from an untrusted peer, which is removed).
	ErrNoIdentity = errors.New("identity: none")
	// ErrInvalidIdentity means an identity was present but refused
	// (ambiguous, malformed, or a JWT that failed verification).
	ErrInvalidIdentity = errors.New("identity: invalid")
	// ErrIdentityExpired (with ErrInvalidIdentity) is a token that was
	// valid and has expired: the user signed in, and the IdP's token in
	// the session in front (oauth2-proxy's) was not refreshed in time.
	ErrIdentityExpired = errors.New("identity: expired")
)

// MaxUserLen bounds a user value in bytes.
const MaxUserLen = 256

// MaxTokenLen bounds a JWT in bytes.
const MaxTokenLen = 8 << 10

// Leeway is the clock skew allowed on exp, nbf and iat.
const Leeway = 60 * time.Second

// invalid wraps a reason so that it matches ErrInvalidIdentity.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidIdentity}, args...)...)
}

// ValidUser reports whether s is acceptable as a user value (see the package
// comment).
func ValidUser(s string) bool {
	if len(s) == 0 || len(s) > MaxUserLen || s[0] == ' ' || s[len(s)-1] == ' ' {
		return false
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f || c == ',' {
				return false
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return false
		}
		i += n
	}
	return true
}

// header reads the identity from one request header.
type header struct {
	name     string // canonical form
	key      string // name folded for variant comparison
	spoofed  error  // returned when an untrusted peer sent the header
	multiple error
	bad      error
}

// NewHeader returns a Source that reads the user from the named header, only
// when the TCP peer is trusted (docs/design.md §4). From an untrusted peer the header
// is deleted from r.Header and ErrNoIdentity (wrapped) is returned.
func NewHeader(name string) Source {
	c := textproto.CanonicalMIMEHeaderKey(name)
	return &header{
		name:     c,
		key:      variantKey(c),
		spoofed:  fmt.Errorf("%w: %s from an untrusted peer was removed", ErrNoIdentity, c),
		multiple: fmt.Errorf("%w: %s has more than one value", ErrInvalidIdentity, c),
		bad:      fmt.Errorf("%w: %s value is not an acceptable user", ErrInvalidIdentity, c),
	}
}

func (h *header) User(r *http.Request, peerTrusted bool) (string, error) {
	h.deleteVariants(r.Header)
	vs := r.Header[h.name]
	if !peerTrusted {
		if len(vs) == 0 {
			return "", ErrNoIdentity
		}
		delete(r.Header, h.name)
		return "", h.spoofed
	}
	switch {
	case len(vs) == 0:
		return "", ErrNoIdentity
	case len(vs) > 1:
		return "", h.multiple
	case !ValidUser(vs[0]):
		return "", h.bad
	}
	return vs[0], nil
}

// deleteVariants removes headers that are not spelled as h.name but that an
// upstream could read as it ('_' and '.' for '-', any case).
func (h *header) deleteVariants(hd http.Header) {
	for k := range hd {
		if len(k) == len(h.key) && k != h.name && variantKey(k) == h.key {
			delete(hd, k)
		}
	}
}

// variantKey folds case and reads '_' and '.' as '-'. Only called with a
// name whose length equals the identity header's, so it is rare.
func variantKey(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case 'A' <= c && c <= 'Z':
			b[i] = c + ('a' - 'A')
		case c == '_' || c == '.':
			b[i] = '-'
		}
	}
	return string(b)
}

// JWTOptions configures a JWT Source.
type JWTOptions struct {
	// Header holds the token; default "Authorization" (Bearer scheme, case
	// insensitive). Any other header holds the raw token.
	Header string
	// Issuer must equal the iss claim; required.
	Issuer string
	// Audience must be one of the aud values; required.
	Audience string
	// Claim names the string claim holding the user; default "sub".
	Claim string
	// Keyfunc returns the key lookup for a request (for example
	// jwks.Cache.Keyfunc); ctx is the request's context. Required.
	Keyfunc func(ctx context.Context) jwt.Keyfunc
	// Now is the clock for exp, nbf and iat; required.
	Now func() time.Time
	// AnyPeer believes a verified token from any TCP peer. By default a
	// token is read only from a trusted peer, like the identity header:
	// the JWT proves who signed in, not that the request came through the
	// edge that checked it. Edges whose address is not known in advance
	// (Google IAP, Cloudflare Access) need AnyPeer.
	AnyPeer bool
}

// asymmetric is the only algorithm list ever accepted (docs/design.md §4): no "none",
// no HMAC, so a public key can never be used as a shared secret.
var asymmetric = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"}

type jwtSource struct {
	o         JWTOptions
	bearer    bool
	parser    *jwt.Parser
	untrusted error
}

// NewJWT returns a Source that verifies a JWT from o.Header.
func NewJWT(o JWTOptions) (Source, error) {
	if o.Header == "" {
		o.Header = "Authorization"
	}
	if o.Claim == "" {
		o.Claim = "sub"
	}
	switch {
	case o.Issuer == "":
		return nil, errors.New("identity: jwt: issuer is required")
	case o.Audience == "":
		return nil, errors.New("identity: jwt: audience is required")
	case o.Keyfunc == nil:
		return nil, errors.New("identity: jwt: keyfunc is required")
	case o.Now == nil:
		return nil, errors.New("identity: jwt: clock (Now) is required")
	}
	o.Header = textproto.CanonicalMIMEHeaderKey(o.Header)
	return &jwtSource{
		o:         o,
		untrusted: fmt.Errorf("%w: a token in %s from an untrusted peer was ignored", ErrNoIdentity, o.Header),
		bearer:    o.Header == "Authorization",
		parser: jwt.NewParser(
			jwt.WithValidMethods(append([]string(nil), asymmetric...)),
			jwt.WithIssuer(o.Issuer),
			jwt.WithAudience(o.Audience),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithLeeway(Leeway),
			jwt.WithTimeFunc(o.Now),
		),
	}, nil
}

func (s *jwtSource) User(r *http.Request, peerTrusted bool) (string, error) {
	if !peerTrusted && !s.o.AnyPeer {
		if len(r.Header[s.o.Header]) == 0 {
			return "", ErrNoIdentity
		}
		return "", s.untrusted
	}
	claims, err := s.claims(r)
	if err != nil {
		return "", err
	}
	v, ok := claims[s.o.Claim].(string)
	if !ok {
		return "", invalid("jwt: claim %q missing or not a string", s.o.Claim)
	}
	if !ValidUser(v) {
		return "", invalid("jwt: claim %q is not an acceptable user", s.o.Claim)
	}
	return v, nil
}

// claims verifies the request's token and returns its claims.
func (s *jwtSource) claims(r *http.Request) (jwt.MapClaims, error) {
	vs := r.Header[s.o.Header]
	switch {
	case len(vs) == 0:
		return nil, ErrNoIdentity
	case len(vs) > 1:
		return nil, invalid("%s has more than one value", s.o.Header)
	}
	raw := vs[0]
	if s.bearer {
		scheme, tok, ok := strings.Cut(raw, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return nil, ErrNoIdentity
		}
		raw = strings.TrimLeft(tok, " ")
	}
	if raw == "" {
		return nil, ErrNoIdentity
	}
	if len(raw) > MaxTokenLen {
		return nil, invalid("token longer than %d bytes", MaxTokenLen)
	}
	claims := jwt.MapClaims{}
	if _, err := s.parser.ParseWithClaims(raw, claims, s.o.Keyfunc(r.Context())); err != nil {
		// jwt's errors name the failed check (expired, issuer, signature)
		// and never include the token.
		if errors.Is(err, jwt.ErrTokenExpired) {
			return nil, fmt.Errorf("%w: %w", ErrIdentityExpired, invalid("jwt: %w", err))
		}
		return nil, invalid("jwt: %w", err)
	}
	return claims, nil
}
