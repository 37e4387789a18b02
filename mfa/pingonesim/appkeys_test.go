package pingonesim

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// appRSAKey is the RSA key of the "gateway" application in these tests.
var appRSAKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func jwksOf(kid string, pub *rsa.PublicKey) string {
	b, _ := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
		"n": base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
	}}})
	return string(b)
}

func TestRequestObjectsAndHintsByKeyAndApplication(t *testing.T) {
	t.Parallel()
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	var fetches sync.Map
	jwksURL := httptestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Store(r.URL.Path, true)
		_, _ = w.Write([]byte(jwksOf("k-url", &appRSAKey().PublicKey)))
	}))
	type appOpts struct {
		jwks, jwksURL           string
		unsigned, requireSigned bool
	}
	sign := func(h *harness, method jwt.SigningMethod, key any, kid string, claims map[string]any) string {
		c := jwt.MapClaims{"iss": DemoClientID, "aud": h.issuer(), "exp": h.clock.Now().Add(time.Minute).Unix()}
		for k, v := range claims {
			c[k] = v
		}
		tok := jwt.NewWithClaims(method, c)
		if kid != "" {
			tok.Header["kid"] = kid
		}
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	tests := []struct {
		name   string
		app    appOpts
		over   func(h *harness) url.Values
		wantOK bool
		target string
	}{
		{"a login_hint_token signed by another application of the environment is accepted", appOpts{},
			func(h *harness) url.Values {
				return url.Values{"login_hint_token": {sign(h, jwt.SigningMethodHS256, []byte("other-secret"), "",
					map[string]any{"iss": "other-app", "sub": "alice"})}}
			}, true, ""},
		{"a request object issued by another application is refused", appOpts{},
			func(h *harness) url.Values {
				return url.Values{"request": {sign(h, jwt.SigningMethodHS256, []byte("other-secret"), "", map[string]any{"iss": "other-app"})}}
			}, false, "request"},
		{"an RS256 request object is verified with the app's inline JWKS", appOpts{jwks: jwksOf("k1", &appRSAKey().PublicKey)},
			func(h *harness) url.Values {
				return url.Values{"request": {sign(h, jwt.SigningMethodRS256, appRSAKey(), "k1", map[string]any{"pi.remoteIp": "198.51.100.4"})}}
			}, true, ""},
		{"an RS256 request object is verified with the app's jwksUrl", appOpts{jwksURL: jwksURL + "/jwks.json"},
			func(h *harness) url.Values {
				return url.Values{"request": {sign(h, jwt.SigningMethodRS256, appRSAKey(), "k-url", nil)}}
			}, true, ""},
		{"an RS256 request object signed with a key not in the JWKS is refused", appOpts{jwks: jwksOf("k1", &appRSAKey().PublicKey)},
			func(h *harness) url.Values {
				return url.Values{"request": {sign(h, jwt.SigningMethodRS256, other, "k1", nil)}}
			}, false, "request"},
		{"an RS256 request object with an unknown kid is refused", appOpts{jwks: jwksOf("k1", &appRSAKey().PublicKey)},
			func(h *harness) url.Values {
				return url.Values{"request": {sign(h, jwt.SigningMethodRS256, appRSAKey(), "k2", nil)}}
			}, false, "request"},
		{"an ES256 request object is refused (PingOne lists only HS* and RS*)", appOpts{jwks: jwksOf("k1", &appRSAKey().PublicKey)},
			func(h *harness) url.Values {
				return url.Values{"request": {sign(h, jwt.SigningMethodES256, ecKey, "k1", nil)}}
			}, false, "request"},
		{"an unsigned request object is refused by default", appOpts{},
			func(h *harness) url.Values {
				return url.Values{"request": {sign(h, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "", nil)}}
			}, false, "request"},
		{"an unsigned request object is accepted when the app supports them", appOpts{unsigned: true},
			func(h *harness) url.Values {
				return url.Values{"request": {sign(h, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "", map[string]any{"pi.remoteIp": "198.51.100.4"})}}
			}, true, ""},
		{"an unsigned login_hint_token is refused even when the app supports unsigned request objects", appOpts{unsigned: true},
			func(h *harness) url.Values {
				return url.Values{"login_hint_token": {sign(h, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "", map[string]any{"sub": "alice"})}}
			}, false, "login_hint_token"},
		{"an authorize without a request object is refused when the app requires a signed one", appOpts{requireSigned: true},
			func(h *harness) url.Values { return nil }, false, "request"},
		{"a signed request object satisfies requireSignedRequestObject", appOpts{requireSigned: true},
			func(h *harness) url.Values {
				return url.Values{"request": {sign(h, jwt.SigningMethodHS256, []byte(DemoClientSecret), "", nil)}}
			}, true, ""},
		{"unknown request object claims are ignored", appOpts{},
			func(h *harness) url.Values {
				return url.Values{"request": {sign(h, jwt.SigningMethodHS256, []byte(DemoClientSecret), "", map[string]any{
					"pi.clientContext": map[string]any{"alert.color": "red"}, "pi.webAuthn.challenge": "abc",
					"x-vendor": []any{1, 2, 3}, "scope": "openid admin", "pi.remoteIp": "198.51.100.4"})}}
			}, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, func(ten *Tenant) {
				a := &ten.Apps[0]
				a.JWKS, a.JWKSURL = tt.app.jwks, tt.app.jwksURL
				a.SupportUnsignedRequestObject, a.RequireSignedRequestObject = tt.app.unsigned, tt.app.requireSigned
				ten.Apps = append(ten.Apps, App{ClientID: "other-app", Secret: "other-secret", Policies: []string{DemoPolicy}})
			})
			r := h.authorize(h.authorizeParams("alice", tt.over(h)))
			if tt.wantOK {
				if r.status != http.StatusOK {
					t.Fatalf("status %d, body %s", r.status, r.raw)
				}
				info, _ := h.sim.Flow(str(r.body, "id"))
				if info.ClientID != DemoClientID {
					t.Errorf("flow client = %q", info.ClientID)
				}
				if _, ok := fetches.Load("/jwks.json"); tt.app.jwksURL != "" && !ok {
					t.Error("the jwksUrl was never fetched")
				}
				return
			}
			if r.status != http.StatusBadRequest || str(detail(r), "target") != tt.target {
				t.Errorf("status %d, body %s; want 400 at %s", r.status, r.raw, tt.target)
			}
		})
	}
}

func TestUnknownClaimsLeaveTheRequestAsSent(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	// A request object that claims another scope and a remote IP: the IP
	// is used, the scope is not merged into the authorize parameters.
	req := h.token(map[string]any{"sub": nil, "scope": "openid admin", "pi.remoteIp": "198.51.100.4", "acr_values": "Other"})
	r, _ := h.start("alice", url.Values{"request": {req}})
	info, _ := h.sim.Flow(str(r.body, "id"))
	if info.RemoteIP != "198.51.100.4" || info.ACR != DemoPolicy {
		t.Errorf("FlowInfo = %+v", info)
	}
}
