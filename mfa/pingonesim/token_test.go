package pingonesim

import (
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk" // RFC 7636 Appendix B

func s256(v string) string {
	h := sha256.Sum256([]byte(v))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// codeFlow completes bob's push flow with response_type=code and PKCE S256.
func codeFlow(t *testing.T, h *harness, extra url.Values) string {
	t.Helper()
	over := url.Values{"response_type": {"code"}, "code_challenge": {s256(verifier)}, "code_challenge_method": {"S256"}}
	for k, v := range extra {
		over[k] = v
	}
	r, st := h.start("bob", over)
	id := str(r.body, "id")
	mustPush(h, id, PushApprove)
	r = h.getFlow(id, st)
	ar, _ := r.body["authorizeResponse"].(map[string]any)
	if len(ar) != 2 || str(ar, "code") == "" || str(ar, "state") != "st-123" {
		t.Fatalf("authorizeResponse for code = %v, want only code and state", ar)
	}
	return str(ar, "code")
}

func (h *harness) tokenReq(form url.Values, basic bool) resp {
	h.t.Helper()
	if !basic {
		form.Set("client_id", DemoClientID)
		form.Set("client_secret", DemoClientSecret)
	}
	req, _ := http.NewRequest(http.MethodPost, h.env()+"/as/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basic {
		req.SetBasicAuth(url.QueryEscape(DemoClientID), url.QueryEscape(DemoClientSecret))
	}
	return h.do(req)
}

func TestTokenExchange(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)

	t.Run("a code with the right verifier yields tokens once (basic auth)", func(t *testing.T) {
		code := codeFlow(t, h, nil)
		form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier}}
		r := h.tokenReq(form, true)
		if r.status != 200 {
			t.Fatalf("token = %d %s", r.status, r.raw)
		}
		c := h.parseIDToken(str(r.body, "id_token"))
		if c["sub"] != DemoBobID || c["nonce"] != "n-0S6_WzA2Mj" || c["aud"] != DemoClientID {
			t.Errorf("claims = %v", c)
		}
		if str(r.body, "access_token") == "" || str(r.body, "token_type") != "Bearer" || str(r.body, "expires_in") != "3600" {
			t.Errorf("token response = %s", r.raw)
		}
		r = h.tokenReq(form, true)
		if r.status != 400 || str(r.body, "error") != "invalid_grant" {
			t.Errorf("reused code = %d %s, want 400 invalid_grant", r.status, r.raw)
		}
	})

	t.Run("client_secret_post is accepted", func(t *testing.T) {
		code := codeFlow(t, h, nil)
		r := h.tokenReq(url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier}}, false)
		if r.status != 200 {
			t.Fatalf("token = %d %s", r.status, r.raw)
		}
	})

	tests := []struct {
		name       string
		form       func(code string) url.Values
		extraAuth  url.Values
		wantStatus int
		wantErr    string
	}{
		{"a wrong verifier fails", func(c string) url.Values {
			return url.Values{"grant_type": {"authorization_code"}, "code": {c}, "code_verifier": {strings.Repeat("x", 43)}}
		}, nil, 400, "invalid_grant"},
		{"a missing verifier fails", func(c string) url.Values {
			return url.Values{"grant_type": {"authorization_code"}, "code": {c}}
		}, nil, 400, "invalid_grant"},
		{"an unknown code fails", func(string) url.Values {
			return url.Values{"grant_type": {"authorization_code"}, "code": {"nope"}, "code_verifier": {verifier}}
		}, nil, 400, "invalid_grant"},
		{"a redirect_uri not sent on authorize fails", func(c string) url.Values {
			return url.Values{"grant_type": {"authorization_code"}, "code": {c}, "code_verifier": {verifier}, "redirect_uri": {"https://x/cb"}}
		}, nil, 400, "invalid_grant"},
		{"another grant type is unsupported", func(c string) url.Values {
			return url.Values{"grant_type": {"client_credentials"}}
		}, nil, 400, "unsupported_grant_type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code := codeFlow(t, h, nil)
			r := h.tokenReq(tt.form(code), true)
			if r.status != tt.wantStatus || str(r.body, "error") != tt.wantErr {
				t.Errorf("= %d %s, want %d %s", r.status, r.raw, tt.wantStatus, tt.wantErr)
			}
		})
	}

	t.Run("a wrong client secret is invalid_client", func(t *testing.T) {
		code := codeFlow(t, h, nil)
		req, _ := http.NewRequest(http.MethodPost, h.env()+"/as/token",
			strings.NewReader(url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(DemoClientID, "wrong")
		r := h.do(req)
		if r.status != 401 || str(r.body, "error") != "invalid_client" {
			t.Errorf("= %d %s, want 401 invalid_client", r.status, r.raw)
		}
	})

	t.Run("a code expires after 60 seconds", func(t *testing.T) {
		h := newHarness(t, nil)
		code := codeFlow(t, h, nil)
		h.clock.Advance(DefaultCodeTTL + time.Second)
		r := h.tokenReq(url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier}}, true)
		if r.status != 400 || str(r.body, "error") != "invalid_grant" {
			t.Errorf("= %d %s, want 400 invalid_grant", r.status, r.raw)
		}
	})
}

func TestPKCEAndRedirectURIOnAuthorize(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(ten *Tenant) {
		ten.Apps[0].PKCERequired = true
		ten.Apps[0].RedirectURIs = []string{"https://app.example/cb"}
	})
	tests := []struct {
		name       string
		over       url.Values
		wantStatus int
	}{
		{"PKCE required: no challenge is refused", url.Values{"response_type": {"code"}}, 400},
		{"PKCE required: plain is refused", url.Values{"response_type": {"code"}, "code_challenge": {verifier}, "code_challenge_method": {"plain"}}, 400},
		{"PKCE required: S256 is accepted", url.Values{"response_type": {"code"}, "code_challenge": {s256(verifier)}, "code_challenge_method": {"S256"}}, 200},
		{"a registered redirect_uri is accepted", url.Values{"response_type": {"code"}, "code_challenge": {s256(verifier)}, "code_challenge_method": {"S256"}, "redirect_uri": {"https://app.example/cb"}}, 200},
		{"an unregistered redirect_uri is refused", url.Values{"response_type": {"code"}, "code_challenge": {s256(verifier)}, "code_challenge_method": {"S256"}, "redirect_uri": {"https://evil.example/cb"}}, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if r := h.authorize(h.authorizeParams("bob", tt.over)); r.status != tt.wantStatus {
				t.Errorf("status = %d, want %d; %s", r.status, tt.wantStatus, r.raw)
			}
		})
	}
	t.Run("the redirect_uri sent on authorize must be sent again", func(t *testing.T) {
		code := codeFlow(t, h, url.Values{"redirect_uri": {"https://app.example/cb"}})
		r := h.tokenReq(url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier}}, true)
		if r.status != 400 {
			t.Errorf("without redirect_uri = %d, want 400", r.status)
		}
		code = codeFlow(t, h, url.Values{"redirect_uri": {"https://app.example/cb"}})
		r = h.tokenReq(url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier}, "redirect_uri": {"https://app.example/cb"}}, true)
		if r.status != 200 {
			t.Errorf("with redirect_uri = %d %s, want 200", r.status, r.raw)
		}
	})
}

func TestJWKSAndDiscovery(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	get := func(p string) resp {
		req, _ := http.NewRequest(http.MethodGet, h.env()+p, nil)
		return h.do(req)
	}
	d := get("/as/.well-known/openid-configuration")
	if d.status != 200 || str(d.body, "issuer") != h.issuer() || str(d.body, "jwks_uri") != h.issuer()+"/jwks" ||
		str(d.body, "token_endpoint") != h.issuer()+"/token" || str(d.body, "authorization_endpoint") != h.issuer()+"/authorize" {
		t.Errorf("discovery = %s", d.raw)
	}
	if !strings.Contains(d.raw, `"pi.flow"`) || !strings.Contains(d.raw, `"request_parameter_supported":true`) {
		t.Errorf("discovery lacks pi.flow / request support: %s", d.raw)
	}

	kids := func() []string {
		r := get("/as/jwks")
		var out []string
		for _, k := range r.body["keys"].([]any) {
			km := k.(map[string]any)
			if km["kty"] != "RSA" || km["use"] != "sig" || km["alg"] != "RS256" || str(km, "n") == "" || str(km, "e") != "AQAB" {
				t.Errorf("jwk = %v", km)
			}
			out = append(out, str(km, "kid"))
		}
		return out
	}
	first := kids()
	if len(first) != 1 {
		t.Fatalf("kids = %v, want one", first)
	}
	tok := h.sim.SignIDToken(map[string]any{"sub": "x"})
	parsed, _, _ := jwt.NewParser().ParseUnverified(tok, jwt.MapClaims{})
	if parsed.Header["kid"] != first[0] {
		t.Errorf("SignIDToken kid = %v, want %s", parsed.Header["kid"], first[0])
	}
	newKid := h.sim.RotateKey()
	if got := kids(); len(got) != 2 || got[1] != newKid {
		t.Errorf("after rotate: kids = %v, want [%s %s]", got, first[0], newKid)
	}
	tok = h.sim.SignIDToken(map[string]any{"sub": "x"})
	parsed, _, _ = jwt.NewParser().ParseUnverified(tok, jwt.MapClaims{})
	if parsed.Header["kid"] != newKid {
		t.Errorf("after rotate: SignIDToken kid = %v, want %s", parsed.Header["kid"], newKid)
	}
	h.sim.RetireOldKeys()
	if got := kids(); len(got) != 1 || got[0] != newKid {
		t.Errorf("after retire: kids = %v, want [%s]", got, newKid)
	}
	// A flow completed after rotation is signed with the new key and verifies.
	r, _ := h.start("dave", nil)
	h.parseIDToken(str(r.body, "authorizeResponse", "id_token"))
}

func TestSignWithUsesTheGivenMethodAndKid(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	tok := h.sim.SignWith(jwt.SigningMethodHS256, []byte("k"), "kid-1", map[string]any{"sub": "x"})
	parsed, err := jwt.Parse(tok, func(*jwt.Token) (any, error) { return []byte("k"), nil })
	if err != nil || parsed.Header["kid"] != "kid-1" || parsed.Method.Alg() != "HS256" {
		t.Errorf("SignWith: err %v, header %v", err, parsed.Header)
	}
}

func TestNewGeneratesAKeyWhenNoneIsGiven(t *testing.T) {
	t.Parallel()
	sim := New(Options{Tenant: DemoTenant()})
	tok := sim.SignIDToken(map[string]any{"sub": "x"})
	sim.mu.Lock()
	pub := &sim.keys[0].key.PublicKey
	sim.mu.Unlock()
	if _, err := jwt.Parse(tok, func(*jwt.Token) (any, error) { return pub, nil }); err != nil {
		t.Errorf("token from a generated key does not verify: %v", err)
	}
	if pub.N.BitLen() != 2048 {
		t.Errorf("key size = %d, want 2048", pub.N.BitLen())
	}
}
