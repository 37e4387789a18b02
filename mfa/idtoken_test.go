package mfa

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/stepgate/stepgate/mfa/pingonesim"
)

func (e *simEnv) claims() map[string]any {
	now := e.clock.Now()
	return map[string]any{
		"iss": e.client.Issuer(), "aud": e.cfg.ClientID, "sub": "user-1",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "auth_time": now.Unix(),
		"nonce": "nonce-1", "acr": pingonesim.DemoPolicy, "amr": []string{"otp", "sms"},
	}
}

func idPending() *Pending {
	return &Pending{FlowID: "f1", Nonce: "nonce-1", ACR: pingonesim.DemoPolicy, Challenged: true}
}

func currentKid(t *testing.T, tok string) string {
	t.Helper()
	kid, _ := decodeSegment(t, tok, 0)["kid"].(string)
	if kid == "" {
		t.Fatal("simulator token without kid")
	}
	return kid
}

// simPublicKeyPEM is the simulator's RSA public key as the PEM an attacker
// would use as an HMAC secret.
func simPublicKeyPEM(t *testing.T, e *simEnv) []byte {
	t.Helper()
	resp, err := e.srv.Client().Get(e.client.Issuer() + "/jwks")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var set struct{ Keys []struct{ N, E string } }
	if err := json.Unmarshal(body, &set); err != nil || len(set.Keys) == 0 {
		t.Fatalf("jwks %s: %v", body, err)
	}
	n, _ := base64.RawURLEncoding.DecodeString(set.Keys[0].N)
	ex, _ := base64.RawURLEncoding.DecodeString(set.Keys[0].E)
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(ex).Int64())}
	der, _ := x509.MarshalPKIXPublicKey(pub)
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func TestIDTokenVerification(t *testing.T) {
	e := newSimEnv(t, pingonesim.DemoTenant(), nil)
	kid := currentKid(t, e.sim.SignIDToken(e.claims()))
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pemKey := simPublicKeyPEM(t, e)
	now := e.clock.Now()

	with := func(mut func(c map[string]any)) string {
		c := e.claims()
		mut(c)
		return e.sim.SignIDToken(c)
	}
	tests := []struct {
		name    string
		tok     string
		pending func(p *Pending)
		wantOK  bool
		wantMFA bool
	}{
		{"a correct token is accepted as MFA", with(func(map[string]any) {}), nil, true, true},
		{"a token expired 30s ago is accepted within the leeway", with(func(c map[string]any) { c["exp"] = now.Add(-30 * time.Second).Unix() }), nil, true, true},
		{"several audiences with azp naming us are accepted", with(func(c map[string]any) {
			c["aud"] = []string{e.cfg.ClientID, "other"}
			c["azp"] = e.cfg.ClientID
		}), nil, true, true},
		{"amr of only pwd is not MFA", with(func(c map[string]any) { c["amr"] = []string{"pwd"} }), nil, true, false},
		{"no amr is not MFA", with(func(c map[string]any) { delete(c, "amr") }), nil, true, false},
		{"a flow never challenged is not MFA whatever amr says", with(func(map[string]any) {}), func(p *Pending) { p.Challenged = false }, true, false},
		{"no acr requested accepts any acr", with(func(c map[string]any) { c["acr"] = "Single_Factor" }), func(p *Pending) { p.ACR = "" }, true, true},
		{"one of several requested acr values is accepted", with(func(c map[string]any) { c["acr"] = "B" }), func(p *Pending) { p.ACR = "A B" }, true, true},

		{"a wrong signature is refused", e.sim.SignWith(jwt.SigningMethodRS256, other, kid, e.claims()), nil, false, false},
		{"alg none is refused", e.sim.SignWith(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, kid, e.claims()), nil, false, false},
		{"HS256 keyed with the RSA public key is refused", e.sim.SignWith(jwt.SigningMethodHS256, pemKey, kid, e.claims()), nil, false, false},
		{"ES256 naming the RSA kid is refused", e.sim.SignWith(jwt.SigningMethodES256, ec, kid, e.claims()), nil, false, false},
		{"RS384 is refused though the key fits", e.sim.SignWith(jwt.SigningMethodRS384, other, kid, e.claims()), nil, false, false},
		{"a wrong issuer is refused", with(func(c map[string]any) { c["iss"] = "https://auth.pingone.com/other/as" }), nil, false, false},
		{"a wrong audience is refused", with(func(c map[string]any) { c["aud"] = "someone-else" }), nil, false, false},
		{"several audiences without azp are refused", with(func(c map[string]any) { c["aud"] = []string{e.cfg.ClientID, "other"} }), nil, false, false},
		{"a wrong nonce is refused", with(func(c map[string]any) { c["nonce"] = "nonce-2" }), nil, false, false},
		{"a missing nonce is refused", with(func(c map[string]any) { delete(c, "nonce") }), nil, false, false},
		{"an expired token is refused", with(func(c map[string]any) { c["exp"] = now.Add(-2 * time.Minute).Unix() }), nil, false, false},
		{"a token without exp is refused", with(func(c map[string]any) { delete(c, "exp") }), nil, false, false},
		{"a token issued in the future is refused", with(func(c map[string]any) { c["iat"] = now.Add(5 * time.Minute).Unix() }), nil, false, false},
		{"a token without iat is refused", with(func(c map[string]any) { delete(c, "iat") }), nil, false, false},
		{"a token not yet valid is refused", with(func(c map[string]any) { c["nbf"] = now.Add(5 * time.Minute).Unix() }), nil, false, false},
		{"a different acr is refused", with(func(c map[string]any) { c["acr"] = "Single_Factor" }), nil, false, false},
		{"a token without sub is refused", with(func(c map[string]any) { delete(c, "sub") }), nil, false, false},
		{"a token over 16 KiB is refused", with(func(c map[string]any) { c["pad"] = strings.Repeat("x", 16<<10) }), nil, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := idPending()
			if tt.pending != nil {
				tt.pending(p)
			}
			res, err := e.client.verifyIDToken(context.Background(), p, Secret(tt.tok))
			if !tt.wantOK {
				wantKind(t, err, KindTokenInvalid)
				return
			}
			if err != nil {
				t.Fatalf("got %v, want accepted", err)
			}
			if res.MFA != tt.wantMFA {
				t.Errorf("MFA = %v, want %v", res.MFA, tt.wantMFA)
			}
			if res.Subject != "user-1" || res.AuthTime.Unix() != now.Unix() || res.IDToken.Reveal() != tt.tok {
				t.Errorf("result = %+v", res)
			}
		})
	}
}

func TestKeyRotationIsPickedUpAfterRefetch(t *testing.T) {
	e := newSimEnv(t, pingonesim.DemoTenant(), nil)
	ctx := context.Background()
	if err := e.client.LoadKeys(ctx); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(2 * time.Minute)
	e.sim.RotateKey()
	e.sim.RetireOldKeys()
	tok := e.sim.SignIDToken(e.claims())
	if _, err := e.client.verifyIDToken(ctx, idPending(), Secret(tok)); err != nil {
		t.Fatalf("token under the rotated key: %v", err)
	}
}

func TestUnknownKidRefetchIsRateLimited(t *testing.T) {
	e := newSimEnv(t, pingonesim.DemoTenant(), nil)
	ctx := context.Background()
	if err := e.client.LoadKeys(ctx); err != nil {
		t.Fatal(err)
	}
	e.sim.RotateKey()
	e.clock.Advance(20 * time.Second)
	tok := e.sim.SignIDToken(e.claims())
	before := e.sim.Requests()
	_, err := e.client.verifyIDToken(ctx, idPending(), Secret(tok))
	wantKind(t, err, KindTokenInvalid)
	if n := e.sim.Requests() - before; n != 0 {
		t.Errorf("%d JWKS fetches within a minute of the last", n)
	}
	e.clock.Advance(41 * time.Second)
	if _, err := e.client.verifyIDToken(ctx, idPending(), Secret(tok)); err != nil {
		t.Fatalf("after the interval: %v", err)
	}
	if n := e.sim.Requests() - before; n != 1 {
		t.Errorf("JWKS fetches = %d, want 1", n)
	}
}

func TestCompleteChecksState(t *testing.T) {
	e := newSimEnv(t, pingonesim.DemoTenant(), nil)
	f, p := e.start("dave")
	p.State = "not-the-state-we-sent"
	_, err := e.client.Complete(context.Background(), p, f)
	wantKind(t, err, KindTokenInvalid)
}

func TestCompleteRefusesUnfinishedOrForeignFlows(t *testing.T) {
	e := newSimEnv(t, pingonesim.DemoTenant(), nil)
	f, p := e.start("alice")
	if _, err := e.client.Complete(context.Background(), p, f); err == nil {
		t.Error("Complete accepted a DEVICE_SELECTION_REQUIRED flow")
	}
	f2, _ := e.start("dave")
	if _, err := e.client.Complete(context.Background(), p, f2); err == nil {
		t.Error("Complete accepted another flow's completion")
	}
}

func TestCompleteFallsBackToResume(t *testing.T) {
	for _, rt := range []string{ResponseTypeTokenIDToken, ResponseTypeCode} {
		t.Run("response type "+rt, func(t *testing.T) {
			e := newSimEnv(t, pingonesim.DemoTenant(), func(c *Config) { c.ResponseType = rt })
			f, p := e.start("dave")
			f.AuthorizeResponse = nil // as if PingOne left it to /as/resume
			res, err := e.client.Complete(context.Background(), p, f)
			if err != nil {
				t.Fatal(err)
			}
			if res.Subject != pingonesim.DemoDaveID {
				t.Errorf("subject = %q", res.Subject)
			}
			ops := e.obs.list()
			if !contains(ops, "resume") {
				t.Errorf("ops %v lack resume", ops)
			}
		})
	}
}
