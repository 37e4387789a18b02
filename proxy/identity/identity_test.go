package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/stepgate/stepgate/mfa/jwks"
)

func TestHeaderSource(t *testing.T) {
	tests := []struct {
		name        string
		header      http.Header
		peerTrusted bool
		want        string
		wantErr     error
		wantLeft    http.Header // headers left on the request
	}{
		{
			name:        "a trusted peer's header is the user",
			header:      http.Header{"X-Forwarded-User": {"alice"}},
			peerTrusted: true, want: "alice",
			wantLeft: http.Header{"X-Forwarded-User": {"alice"}},
		},
		{
			name:        "an untrusted peer's header is removed and ignored",
			header:      http.Header{"X-Forwarded-User": {"admin"}, "Accept": {"*/*"}},
			peerTrusted: false, wantErr: ErrNoIdentity,
			wantLeft: http.Header{"Accept": {"*/*"}},
		},
		{
			name:        "no header from a trusted peer is no identity",
			header:      http.Header{},
			peerTrusted: true, wantErr: ErrNoIdentity, wantLeft: http.Header{},
		},
		{
			name:        "two values are ambiguous and refused",
			header:      http.Header{"X-Forwarded-User": {"alice", "admin"}},
			peerTrusted: true, wantErr: ErrInvalidIdentity,
			wantLeft: http.Header{"X-Forwarded-User": {"alice", "admin"}},
		},
		{
			name:        "a comma-joined value is ambiguous and refused",
			header:      http.Header{"X-Forwarded-User": {"alice, admin"}},
			peerTrusted: true, wantErr: ErrInvalidIdentity,
			wantLeft: http.Header{"X-Forwarded-User": {"alice, admin"}},
		},
		{
			name:        "an underscore spelling from a client is removed behind a trusted proxy",
			header:      http.Header{"X-Forwarded-User": {"alice"}, "X_forwarded_user": {"admin"}},
			peerTrusted: true, want: "alice",
			wantLeft: http.Header{"X-Forwarded-User": {"alice"}},
		},
		{
			name:        "a dotted spelling from an untrusted peer is removed",
			header:      http.Header{"X.forwarded.user": {"admin"}},
			peerTrusted: false, wantErr: ErrNoIdentity, wantLeft: http.Header{},
		},
		{
			name:        "an underscore spelling alone is no identity",
			header:      http.Header{"X_forwarded_user": {"admin"}},
			peerTrusted: true, wantErr: ErrNoIdentity, wantLeft: http.Header{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.Header = tt.header
			got, err := NewHeader("x-forwarded-user").User(r, tt.peerTrusted)
			if got != tt.want || !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Errorf("User() = %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
			if g, w := fmt.Sprint(r.Header), fmt.Sprint(tt.wantLeft); g != w {
				t.Errorf("headers left = %s, want %s", g, w)
			}
		})
	}
}

func TestValidUser(t *testing.T) {
	tests := []struct {
		name, user string
		want       bool
	}{
		{"a plain name is accepted", "alice", true},
		{"an e-mail address is accepted", "alice@example.com", true},
		{"a PingOne user id is accepted", "6f1c2a4e-0d7b-4c1e-9a52-3b8f0e6d2c11", true},
		{"an inner space is accepted", "Alice Smith", true},
		{"non-ASCII letters are accepted", "zoë", true},
		{"256 bytes are accepted", strings.Repeat("a", 256), true},
		{"an empty value is refused", "", false},
		{"257 bytes are refused", strings.Repeat("a", 257), false},
		{"a leading space is refused", " alice", false},
		{"a trailing space is refused", "alice ", false},
		{"a comma is refused", "alice,bob", false},
		{"a control character is refused", "alice\x00", false},
		{"a newline is refused", "alice\nbob", false},
		{"DEL is refused", "alice\x7f", false},
		{"a C1 control is refused", "alice\u0085", false},
		{"a zero-width space is refused", "ali\u200bce", false},
		{"a bidi override is refused", "\u202eecila", false},
		{"invalid UTF-8 is refused", "alice\xff", false},
		{"a non-breaking space is refused", "alice\u00a0", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ValidUser(tt.user); got != tt.want {
				t.Errorf("ValidUser(%q) = %v, want %v", tt.user, got, tt.want)
			}
		})
	}
}

// keys is an in-test key set: a keyfunc over generated keys, by kid.
type keys struct {
	rsa *rsa.PrivateKey
	ec  *ecdsa.PrivateKey
	ed  ed25519.PrivateKey
}

func newKeys(t testing.TB) *keys {
	t.Helper()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, dk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &keys{rsa: rk, ec: ek, ed: dk}
}

func (k *keys) keyfunc(context.Context) jwt.Keyfunc {
	return func(t *jwt.Token) (any, error) {
		switch t.Header["kid"] {
		case "rsa":
			return &k.rsa.PublicKey, nil
		case "ec":
			return &k.ec.PublicKey, nil
		case "ed":
			return k.ed.Public(), nil
		}
		return nil, errors.New("unknown kid")
	}
}

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const (
	testIss = "https://idp.example.com"
	testAud = "stepgate"
)

func goodClaims() jwt.MapClaims {
	return jwt.MapClaims{
		"iss": testIss, "aud": []string{"other", testAud}, "sub": "alice",
		"iat": testNow.Add(-time.Minute).Unix(), "nbf": testNow.Add(-time.Minute).Unix(),
		"exp": testNow.Add(time.Hour).Unix(), "email": "alice@example.com",
	}
}

func sign(t testing.TB, m jwt.SigningMethod, kid string, key any, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func with(c jwt.MapClaims, k string, v any) jwt.MapClaims {
	out := jwt.MapClaims{}
	for kk, vv := range c {
		out[kk] = vv
	}
	if v == nil {
		delete(out, k)
	} else {
		out[k] = v
	}
	return out
}

func TestJWTSource(t *testing.T) {
	k := newKeys(t)
	pubDER, err := x509.MarshalPKIXPublicKey(&k.rsa.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	unsigned, err := jwt.NewWithClaims(jwt.SigningMethodNone, goodClaims()).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	rs := func(c jwt.MapClaims) string { return sign(t, jwt.SigningMethodRS256, "rsa", k.rsa, c) }

	tests := []struct {
		name    string
		opts    func(*JWTOptions)
		header  http.Header
		want    string
		wantErr error
	}{
		{name: "an RS256 token is accepted", header: bearer(rs(goodClaims())), want: "alice"},
		{name: "a PS384 token is accepted", header: bearer(sign(t, jwt.SigningMethodPS384, "rsa", k.rsa, goodClaims())), want: "alice"},
		{name: "an ES256 token is accepted", header: bearer(sign(t, jwt.SigningMethodES256, "ec", k.ec, goodClaims())), want: "alice"},
		{name: "an EdDSA token is accepted", header: bearer(sign(t, jwt.SigningMethodEdDSA, "ed", k.ed, goodClaims())), want: "alice"},
		{name: "the Bearer scheme is case-insensitive", header: http.Header{"Authorization": {"bEARER " + rs(goodClaims())}}, want: "alice"},
		{name: "a single audience string is accepted", header: bearer(rs(with(goodClaims(), "aud", testAud))), want: "alice"},
		{name: "a configured claim names the user", opts: func(o *JWTOptions) { o.Claim = "email" }, header: bearer(rs(goodClaims())), want: "alice@example.com"},
		{name: "a raw token in a custom header is accepted", opts: func(o *JWTOptions) { o.Header = "Cf-Access-Jwt-Assertion" },
			header: http.Header{"Cf-Access-Jwt-Assertion": {rs(goodClaims())}}, want: "alice"},
		{name: "a token within the 60s leeway after exp is accepted", header: bearer(rs(with(goodClaims(), "exp", testNow.Add(-59*time.Second).Unix()))), want: "alice"},

		{name: "no header is no identity", header: http.Header{}, wantErr: ErrNoIdentity},
		{name: "a Basic scheme is no identity", header: http.Header{"Authorization": {"Basic YWxpY2U6cHc="}}, wantErr: ErrNoIdentity},
		{name: "a bare token in Authorization is no identity", header: http.Header{"Authorization": {rs(goodClaims())}}, wantErr: ErrNoIdentity},
		{name: "a token in the wrong header is no identity", opts: func(o *JWTOptions) { o.Header = "X-Id-Token" }, header: bearer(rs(goodClaims())), wantErr: ErrNoIdentity},
		{name: "a Bearer prefix in a raw-token header is refused", opts: func(o *JWTOptions) { o.Header = "X-Id-Token" },
			header: http.Header{"X-Id-Token": {"Bearer " + rs(goodClaims())}}, wantErr: ErrInvalidIdentity},
		{name: "two Authorization values are refused", header: http.Header{"Authorization": {"Bearer " + rs(goodClaims()), "Bearer x"}}, wantErr: ErrInvalidIdentity},
		{name: "alg none is refused", header: bearer(unsigned), wantErr: ErrInvalidIdentity},
		{name: "HS256 signed with the RSA public key PEM is refused", header: bearer(sign(t, jwt.SigningMethodHS256, "rsa", pubPEM, goodClaims())), wantErr: ErrInvalidIdentity},
		{name: "HS256 is refused even by a keyfunc that would hand out the PEM",
			opts: func(o *JWTOptions) {
				o.Keyfunc = func(context.Context) jwt.Keyfunc { return func(*jwt.Token) (any, error) { return pubPEM, nil } }
			},
			header: bearer(sign(t, jwt.SigningMethodHS256, "rsa", pubPEM, goodClaims())), wantErr: ErrInvalidIdentity},
		{name: "an RSA signature claimed as ES256 is refused", header: bearer(swapAlg(t, rs(goodClaims()), "ES256")), wantErr: ErrInvalidIdentity},
		{name: "a token signed by another key is refused", header: bearer(sign(t, jwt.SigningMethodRS256, "rsa", newKeys(t).rsa, goodClaims())), wantErr: ErrInvalidIdentity},
		{name: "an unknown kid is refused", header: bearer(sign(t, jwt.SigningMethodRS256, "nope", k.rsa, goodClaims())), wantErr: ErrInvalidIdentity},
		{name: "a wrong issuer is refused", header: bearer(rs(with(goodClaims(), "iss", "https://evil.example.com"))), wantErr: ErrInvalidIdentity},
		{name: "a missing issuer is refused", header: bearer(rs(with(goodClaims(), "iss", nil))), wantErr: ErrInvalidIdentity},
		{name: "a wrong audience is refused", header: bearer(rs(with(goodClaims(), "aud", "other"))), wantErr: ErrInvalidIdentity},
		{name: "a missing audience is refused", header: bearer(rs(with(goodClaims(), "aud", nil))), wantErr: ErrInvalidIdentity},
		{name: "an expired token is refused", header: bearer(rs(with(goodClaims(), "exp", testNow.Add(-61*time.Second).Unix()))), wantErr: ErrInvalidIdentity},
		{name: "a token without exp is refused", header: bearer(rs(with(goodClaims(), "exp", nil))), wantErr: ErrInvalidIdentity},
		{name: "a not-yet-valid token is refused", header: bearer(rs(with(goodClaims(), "nbf", testNow.Add(2*time.Minute).Unix()))), wantErr: ErrInvalidIdentity},
		{name: "a token issued in the future is refused", header: bearer(rs(with(goodClaims(), "iat", testNow.Add(2*time.Minute).Unix()))), wantErr: ErrInvalidIdentity},
		{name: "a missing user claim is refused", header: bearer(rs(with(goodClaims(), "sub", nil))), wantErr: ErrInvalidIdentity},
		{name: "an empty user claim is refused", header: bearer(rs(with(goodClaims(), "sub", ""))), wantErr: ErrInvalidIdentity},
		{name: "a non-string user claim is refused", header: bearer(rs(with(goodClaims(), "sub", 42))), wantErr: ErrInvalidIdentity},
		{name: "an oversized user claim is refused", header: bearer(rs(with(goodClaims(), "sub", strings.Repeat("a", 257)))), wantErr: ErrInvalidIdentity},
		{name: "a user claim with a control character is refused", header: bearer(rs(with(goodClaims(), "sub", "alice\r\nX-Evil: 1"))), wantErr: ErrInvalidIdentity},
		{name: "an oversized token is refused before parsing", header: bearer(rs(with(goodClaims(), "pad", strings.Repeat("a", MaxTokenLen)))), wantErr: ErrInvalidIdentity},
		{name: "garbage is refused", header: bearer("not.a.jwt"), wantErr: ErrInvalidIdentity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := JWTOptions{Issuer: testIss, Audience: testAud, Keyfunc: k.keyfunc, Now: func() time.Time { return testNow }}
			if tt.opts != nil {
				tt.opts(&o)
			}
			src, err := NewJWT(o)
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest("GET", "/", nil)
			r.Header = tt.header
			got, err := src.User(r, true)
			if got != tt.want || !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Errorf("User() = %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// swapAlg rewrites a token's header alg without re-signing.
func swapAlg(t *testing.T, tok, alg string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	h, _ := json.Marshal(map[string]string{"alg": alg, "typ": "JWT", "kid": "rsa"})
	parts[0] = base64.RawURLEncoding.EncodeToString(h)
	return strings.Join(parts, ".")
}

func TestNewJWTRequiresOptions(t *testing.T) {
	k := newKeys(t)
	full := JWTOptions{Issuer: testIss, Audience: testAud, Keyfunc: k.keyfunc, Now: func() time.Time { return testNow }}
	tests := []struct {
		name  string
		unset func(*JWTOptions)
	}{
		{"an issuer is required", func(o *JWTOptions) { o.Issuer = "" }},
		{"an audience is required", func(o *JWTOptions) { o.Audience = "" }},
		{"a keyfunc is required", func(o *JWTOptions) { o.Keyfunc = nil }},
		{"a clock is required", func(o *JWTOptions) { o.Now = nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := full
			tt.unset(&o)
			if _, err := NewJWT(o); err == nil {
				t.Error("NewJWT = nil error, want one")
			}
		})
	}
}

// TestJWTThroughJWKSCache verifies through the real mfa/jwks cache over an
// httptest JWKS endpoint, including the HS256-with-public-key confusion.
func TestJWTThroughJWKSCache(t *testing.T) {
	k := newKeys(t)
	pub := &k.rsa.PublicKey
	set := map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "kid": "rsa", "use": "sig", "alg": "RS256",
		"n": base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
	}}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	}))
	defer srv.Close()
	now := func() time.Time { return testNow }
	cache := jwks.New(jwks.Options{URL: srv.URL, Client: srv.Client(), Timeout: 5 * time.Second, Now: now})
	src, err := NewJWT(JWTOptions{Issuer: testIss, Audience: testAud, Keyfunc: cache.Keyfunc, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(pub)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	tests := []struct {
		name    string
		tok     string
		want    string
		wantErr error
	}{
		{"an RS256 token with a published kid is accepted", sign(t, jwt.SigningMethodRS256, "rsa", k.rsa, goodClaims()), "alice", nil},
		{"HS256 with the published key's PEM is refused", sign(t, jwt.SigningMethodHS256, "rsa", pubPEM, goodClaims()), "", ErrInvalidIdentity},
		{"an unpublished kid is refused", sign(t, jwt.SigningMethodRS256, "other", k.rsa, goodClaims()), "", ErrInvalidIdentity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Set("Authorization", "Bearer "+tt.tok)
			got, err := src.User(r, true)
			if got != tt.want || !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Errorf("User() = %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestErrorsDoNotEchoTheToken(t *testing.T) {
	k := newKeys(t)
	src, err := NewJWT(JWTOptions{Issuer: testIss, Audience: testAud, Keyfunc: k.keyfunc, Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	tok := sign(t, jwt.SigningMethodRS256, "rsa", k.rsa, with(goodClaims(), "iss", "secret-issuer-value"))
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Authorization", "Bearer "+tok)
	_, err = src.User(r, true)
	if err == nil {
		t.Fatal("User() = nil error, want one")
	}
	for _, part := range append(strings.Split(tok, "."), "secret-issuer-value") {
		if strings.Contains(err.Error(), part) {
			t.Errorf("error %q contains part of the token", err)
		}
	}
}

func BenchmarkHeaderUser(b *testing.B) {
	src := NewHeader("X-Forwarded-User")
	r := httptest.NewRequest("GET", "/", nil)
	r.Header = http.Header{"X-Forwarded-User": {"alice"}, "Accept": {"*/*"}, "User-Agent": {"bench"}, "Cookie": {"a=b"}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := src.User(r, true); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkJWTUser(b *testing.B) {
	k := newKeys(b)
	src, err := NewJWT(JWTOptions{Issuer: testIss, Audience: testAud, Keyfunc: k.keyfunc, Now: func() time.Time { return testNow }})
	if err != nil {
		b.Fatal(err)
	}
	for _, bb := range []struct {
		name string
		m    jwt.SigningMethod
		kid  string
		key  crypto.Signer
	}{{"RS256", jwt.SigningMethodRS256, "rsa", k.rsa}, {"ES256", jwt.SigningMethodES256, "ec", k.ec}, {"EdDSA", jwt.SigningMethodEdDSA, "ed", k.ed}} {
		r := httptest.NewRequest("GET", "/", nil)
		r.Header.Set("Authorization", "Bearer "+sign(b, bb.m, bb.kid, bb.key, goodClaims()))
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := src.User(r, true); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
