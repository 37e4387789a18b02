package main

// Upstream JWT identity attacks (docs/design.md §4) through the real gateway with
// STEPGATE_IDENTITY=jwt: the token classes that forward-auth proxies have
// shipped advisories for. Each test names the attack it guards against.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	idpIssuer   = "https://idp.example.com/"
	idpAudience = "legacy-app"
)

// idp is a stand-in upstream IdP: a JWKS on loopback and the keys to sign.
type idp struct {
	rsa  *rsa.PrivateKey
	ec   *ecdsa.PrivateKey
	down atomic.Bool
	url  string
}

func newIdP(t *testing.T) *idp {
	t.Helper()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p := &idp{rsa: rk, ec: ek}
	b64 := func(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
	ecBytes := func(n *big.Int) []byte { return n.FillBytes(make([]byte, 32)) }
	set, _ := json.Marshal(map[string]any{"keys": []map[string]string{
		{"kty": "RSA", "kid": "rsa1", "use": "sig", "alg": "RS256", "n": b64(rk.N.Bytes()), "e": b64(big.NewInt(int64(rk.E)).Bytes())},
		{"kty": "EC", "kid": "ec1", "use": "sig", "crv": "P-256", "x": b64(ecBytes(ek.X)), "y": b64(ecBytes(ek.Y))},
	}})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.down.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(set)
	}))
	t.Cleanup(srv.Close)
	p.url = srv.URL
	return p
}

// claims are valid claims for user at now.
func (p *idp) claims(user string, now time.Time) jwt.MapClaims {
	return jwt.MapClaims{"iss": idpIssuer, "aud": idpAudience, "sub": user,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(10 * time.Minute).Unix()}
}

func (p *idp) sign(t *testing.T, m jwt.SigningMethod, kid string, key any, c jwt.MapClaims) string {
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

func (p *idp) rs256(t *testing.T, c jwt.MapClaims) string {
	return p.sign(t, jwt.SigningMethodRS256, "rsa1", p.rsa, c)
}

func newJWTStack(t *testing.T) (*stack, *idp) {
	t.Helper()
	p := newIdP(t)
	s := newStack(t, withEnv(
		"STEPGATE_IDENTITY", "jwt",
		"STEPGATE_IDENTITY_JWKS_URL", p.url,
		"STEPGATE_IDENTITY_ISSUER", idpIssuer,
		"STEPGATE_IDENTITY_AUDIENCE", idpAudience,
	))
	return s, p
}

// getWith sends GET path with one header; it returns the status.
func getWith(t *testing.T, s *stack, path, header, value string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", s.Proxy+path, nil)
	req.Header.Set("Accept", "text/html")
	if header != "" {
		req.Header.Set(header, value)
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// mustRefuseToken asserts that a token is no identity on an mfa path (401,
// never the challenge and never the upstream) and logs identity.rejected.
func mustRefuseToken(t *testing.T, s *stack, header, value string) {
	t.Helper()
	before := len(s.Requests())
	if got := getWith(t, s, "/admin/", header, value); got != http.StatusUnauthorized {
		t.Errorf("mfa path: got %d, want 401", got)
	}
	if len(s.Requests()) != before {
		t.Error("the upstream received the request")
	}
	if len(s.Logs.Events("identity.rejected")) == 0 {
		t.Error("no identity.rejected audit event")
	}
}

func TestUpstreamJWT_ValidTokenIsTheIdentity(t *testing.T) {
	s, p := newJWTStack(t)
	// The control case: a good token reaches the challenge (302), so the
	// refusals below are about the token and nothing else.
	if got := getWith(t, s, "/admin/", "Authorization", "Bearer "+p.rs256(t, p.claims("alice", s.Clock.Now()))); got != http.StatusFound {
		t.Fatalf("valid RS256 token: got %d, want 302", got)
	}
	if got := getWith(t, s, "/admin/", "Authorization", "Bearer "+p.sign(t, jwt.SigningMethodES256, "ec1", p.ec, p.claims("alice", s.Clock.Now()))); got != http.StatusFound {
		t.Fatalf("valid ES256 token: got %d, want 302", got)
	}
}

func TestUpstreamJWT_AlgNone(t *testing.T) {
	s, p := newJWTStack(t)
	for _, alg := range []string{"none", "None", "NONE"} {
		hdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"` + alg + `","typ":"JWT","kid":"rsa1"}`))
		body, _ := json.Marshal(p.claims("alice", s.Clock.Now()))
		tok := hdr + "." + base64.RawURLEncoding.EncodeToString(body) + "."
		mustRefuseToken(t, s, "Authorization", "Bearer "+tok)
	}
}

func TestUpstreamJWT_HS256SignedWithThePublicKey(t *testing.T) {
	s, p := newJWTStack(t)
	der, _ := x509.MarshalPKIXPublicKey(&p.rsa.PublicKey)
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	for _, secret := range [][]byte{pemKey, der, p.rsa.N.Bytes()} {
		mustRefuseToken(t, s, "Authorization", "Bearer "+p.sign(t, jwt.SigningMethodHS256, "rsa1", secret, p.claims("alice", s.Clock.Now())))
	}
}

func TestUpstreamJWT_WrongIssuerOrAudience(t *testing.T) {
	s, p := newJWTStack(t)
	for _, kv := range [][2]any{{"iss", "https://evil.example/"}, {"iss", "https://idp.example.com"}, {"aud", "other-app"}, {"aud", []string{"other-app"}}} {
		c := p.claims("alice", s.Clock.Now())
		c[kv[0].(string)] = kv[1]
		mustRefuseToken(t, s, "Authorization", "Bearer "+p.rs256(t, c))
	}
}

func TestUpstreamJWT_ExpiredOrNotYetValid(t *testing.T) {
	s, p := newJWTStack(t)
	now := s.Clock.Now()
	expired := p.claims("alice", now.Add(-time.Hour))
	notYet := p.claims("alice", now)
	notYet["nbf"] = now.Add(5 * time.Minute).Unix()
	noExp := p.claims("alice", now)
	delete(noExp, "exp")
	for _, c := range []jwt.MapClaims{expired, notYet, noExp} {
		mustRefuseToken(t, s, "Authorization", "Bearer "+p.rs256(t, c))
	}
}

func TestUpstreamJWT_UnknownKidOrForeignKey(t *testing.T) {
	s, p := newJWTStack(t)
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	c := p.claims("alice", s.Clock.Now())
	mustRefuseToken(t, s, "Authorization", "Bearer "+p.sign(t, jwt.SigningMethodRS256, "nope", p.rsa, c))
	mustRefuseToken(t, s, "Authorization", "Bearer "+p.sign(t, jwt.SigningMethodRS256, "rsa1", other, c))
	// An RSA key's kid with an EC algorithm: the key type must fit.
	mustRefuseToken(t, s, "Authorization", "Bearer "+p.sign(t, jwt.SigningMethodES256, "rsa1", p.ec, c))
}

func TestUpstreamJWT_OversizedToken(t *testing.T) {
	s, p := newJWTStack(t)
	c := p.claims("alice", s.Clock.Now())
	c["pad"] = strings.Repeat("x", 9000)
	mustRefuseToken(t, s, "Authorization", "Bearer "+p.rs256(t, c))
}

func TestUpstreamJWT_TokenInTheWrongHeader(t *testing.T) {
	s, p := newJWTStack(t)
	tok := p.rs256(t, p.claims("alice", s.Clock.Now()))
	for _, h := range []string{"X-Forwarded-Access-Token", "X-Id-Token", "Cf-Access-Jwt-Assertion", "X-Forwarded-User"} {
		mustRefuseToken(t, s, h, tok)
	}
	mustRefuseToken(t, s, "Authorization", tok) // no Bearer scheme
}

func TestFailClosed_UpstreamIdPJWKSDown(t *testing.T) {
	s, p := newJWTStack(t)
	p.down.Store(true)
	// A kid the cache has never seen forces a refetch, which fails.
	mustRefuseToken(t, s, "Authorization", "Bearer "+p.sign(t, jwt.SigningMethodRS256, "rsa2", p.rsa, p.claims("alice", s.Clock.Now())))
	if got := getWith(t, s, "/public", "", ""); got != 200 {
		t.Errorf("allow path with the IdP's JWKS down: %d", got)
	}
}

// bearerTransport adds the IdP's token to every request, as an identity-
// aware proxy in front of stepgate would.
type bearerTransport struct{ token *string }

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+*b.token)
	return http.DefaultTransport.RoundTrip(r)
}

func TestUpstreamJWT_StepUpIsBoundToTheTokenUser(t *testing.T) {
	s, p := newJWTStack(t)
	token := p.rs256(t, p.claims("alice", s.Clock.Now()))
	b := s.browser("")
	b.Client.Transport = bearerTransport{&token}
	r := b.follow(b.get("/admin/"))
	r = b.follow(b.post("action", "start"))
	ids := deviceIDs(r.Body)
	if len(ids) == 0 {
		t.Fatalf("no devices for the token's user: %s", r.Body)
	}
	b.follow(b.post("action", "select", "device", ids[0]))
	if r := b.post("action", "otp", "otp", s.latestOTP("alice")); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("OTP: %d", r.StatusCode)
	}
	if r := b.get("/admin/"); r.StatusCode != 200 || s.LastRequest().Header.Get("X-Stepgate-User") != "alice" {
		t.Fatalf("stepped-up alice: %d, upstream user %q", r.StatusCode, s.LastRequest().Header.Get("X-Stepgate-User"))
	}
	// Same browser cookies, a token for another user: the step-up is not theirs.
	token = p.rs256(t, p.claims("bob", s.Clock.Now()))
	mustBeChallenged(t, s, b, "/admin/")
	// And a token that no longer verifies is no identity at all, cookie or not.
	token = p.rs256(t, p.claims("alice", s.Clock.Now().Add(-time.Hour)))
	if r := b.get("/admin/"); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("expired IdP token with a valid step-up cookie: %d, want 401", r.StatusCode)
	}
}

// A signed-in user whose IdP token inside oauth2-proxy's session expired
// (issue 22, 5) is told so, with a way to sign in again
// (STEPGATE_IDP_SIGNIN_URL, {rd} the page asked for), and is told apart
// from a request with no identity at all; programs get a code for each.
func TestUpstreamJWT_ExpiredTokenSaysSignInAgain(t *testing.T) {
	p := newIdP(t)
	s := newStack(t, withEnv(
		"STEPGATE_IDENTITY", "jwt",
		"STEPGATE_IDENTITY_JWKS_URL", p.url,
		"STEPGATE_IDENTITY_ISSUER", idpIssuer,
		"STEPGATE_IDENTITY_AUDIENCE", idpAudience,
		"STEPGATE_IDP_SIGNIN_URL", "/oauth2/sign_in?rd={rd}",
	))
	expired := "Bearer " + p.rs256(t, p.claims("alice", s.Clock.Now().Add(-time.Hour)))
	const link = `href="/oauth2/sign_in?rd=%2Fadmin%2Freport%3Fid%3D7"`
	get := func(auth, accept string) response {
		req, _ := http.NewRequest(http.MethodGet, s.Proxy+"/admin/report?id=7", nil)
		req.Header.Set("Accept", accept)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		return s.browser("").do(req)
	}
	for _, tc := range []struct {
		name, auth, want, not string
	}{
		{"an expired token", expired, "Your sign-in with the identity provider has expired", "You are not signed in"},
		{"no token", "", "You are not signed in through the identity provider", "has expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := get(tc.auth, "text/html")
			if r.StatusCode != http.StatusUnauthorized || !strings.Contains(r.Body, tc.want) || strings.Contains(r.Body, tc.not) {
				t.Errorf("page: %d, want 401 saying %q: %.800s", r.StatusCode, tc.want, r.Body)
			}
			if !strings.Contains(r.Body, link) {
				t.Errorf("page has no sign-in link %s: %.800s", link, r.Body)
			}
		})
	}
	r := get(expired, "application/json")
	var j map[string]string
	_ = json.Unmarshal([]byte(r.Body), &j)
	if r.StatusCode != http.StatusUnauthorized || j["error"] != "identity_expired" || j["signin_url"] != "/oauth2/sign_in?rd=%2Fadmin%2Freport%3Fid%3D7" {
		t.Errorf("JSON, expired token: %d %s, want 401 identity_expired with signin_url", r.StatusCode, r.Body)
	}
	r = get("", "application/json")
	if err := json.Unmarshal([]byte(r.Body), &j); err != nil || r.StatusCode != http.StatusUnauthorized || j["error"] != "no_identity" {
		t.Errorf("JSON, no token: %d %s, want 401 no_identity", r.StatusCode, r.Body)
	}
}
