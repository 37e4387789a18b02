package mfa

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/stepgate/stepgate/mfa/jwks"
	"github.com/stepgate/stepgate/mfa/pingonesim"
)

var testRSA = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func pemOf(t *testing.T, typ string, der []byte) []byte {
	t.Helper()
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func TestParseRequestKey(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	pkcs8 := func(k any) []byte {
		b, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	sec1, _ := x509.MarshalECPrivateKey(ec)
	tests := []struct {
		name    string
		pem     []byte
		wantAlg string // "" = refused
	}{
		{"an RSA key in PKCS#8 signs RS256", pemOf(t, "PRIVATE KEY", pkcs8(testRSA())), "RS256"},
		{"an RSA key in PKCS#1 signs RS256", pemOf(t, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(testRSA())), "RS256"},
		{"a P-256 key in PKCS#8 signs ES256", pemOf(t, "PRIVATE KEY", pkcs8(ec)), "ES256"},
		{"a P-256 key in SEC 1 signs ES256", pemOf(t, "EC PRIVATE KEY", sec1), "ES256"},
		{"a 1024-bit RSA key is refused", pemOf(t, "PRIVATE KEY", pkcs8(small)), ""},
		{"a P-384 key is refused", pemOf(t, "PRIVATE KEY", pkcs8(ec384)), ""},
		{"a public key is refused", pemOf(t, "PUBLIC KEY", []byte{1, 2}), ""},
		{"two PEM blocks are refused", append(pemOf(t, "PRIVATE KEY", pkcs8(ec)), pemOf(t, "PRIVATE KEY", pkcs8(ec))...), ""},
		{"text that is not PEM is refused", []byte("not a key"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := ParseRequestKey(tt.pem)
			if tt.wantAlg == "" {
				if err == nil {
					t.Fatalf("accepted, alg %s", k.Alg())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if k.Alg() != tt.wantAlg || len(k.KeyID()) != 43 {
				t.Errorf("alg %s kid %q", k.Alg(), k.KeyID())
			}
			if strings.Contains(string(k.JWKS()), `"d"`) {
				t.Errorf("JWKS carries the private key: %s", k.JWKS())
			}
		})
	}
}

// TestRequestObjectSignedWithOwnKeyVerifiesWithItsJWKS checks that a
// request object signed with the key verifies against the published JWKS,
// read by an independent JWKS parser, for both algorithms.
func TestRequestObjectSignedWithOwnKeyVerifiesWithItsJWKS(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ec)
	for _, p := range [][]byte{pemOf(t, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(testRSA())), pemOf(t, "PRIVATE KEY", ecDER)} {
		key, err := ParseRequestKey(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(key.Alg(), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(key.JWKS()) }))
			defer srv.Close()
			cfg := testConfig("https://auth.pingone.com")
			cfg.RequestKey = key
			c, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			tok, err := c.requestObject("203.0.113.7", nil, now)
			if err != nil {
				t.Fatal(err)
			}
			h := decodeSegment(t, tok, 0)
			if h["alg"] != key.Alg() || h["kid"] != key.KeyID() || h["typ"] != "JWT" {
				t.Errorf("header = %v", h)
			}
			cache := jwks.New(jwks.Options{URL: srv.URL, Client: srv.Client(), Timeout: 5 * time.Second, Now: time.Now})
			claims := jwt.MapClaims{}
			if _, err := jwt.NewParser(jwt.WithValidMethods([]string{key.Alg()})).ParseWithClaims(tok, claims, cache.Keyfunc(context.Background())); err != nil {
				t.Fatalf("request object does not verify with the JWKS: %v", err)
			}
			if claims["pi.remoteIp"] != "203.0.113.7" || claims["iss"] != cfg.ClientID {
				t.Errorf("claims = %v", claims)
			}
		})
	}
}

func TestRequireSignedRequestObjectWithOwnRSAKey(t *testing.T) {
	key, err := ParseRequestKey(pemOf(t, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(testRSA())))
	if err != nil {
		t.Fatal(err)
	}
	tenant := customTenant()
	tenant.Apps[0].JWKS = string(key.JWKS())
	tenant.Apps[0].RequireSignedRequestObject = true
	e := newSimEnv(t, tenant, func(c *Config) { c.RequestKey = key })
	f, p := e.start("erin")
	info, _ := e.sim.Flow(p.FlowID)
	if info.RequestAlg != "RS256" || info.RemoteIP != "203.0.113.7" {
		t.Errorf("PingOne saw request alg %q, remote IP %q; want RS256 and the IP", info.RequestAlg, info.RemoteIP)
	}
	f, err = e.client.CheckOTP(context.Background(), p, e.lastOTP("erin", "erin-sms"))
	if err != nil || f.Status != StatusCompleted {
		t.Fatalf("CheckOTP = %v, %v", f, err)
	}
	e.complete(p, f)
}

func TestForeignRequestKeyIsRefusedByPingOne(t *testing.T) {
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	published, _ := ParseRequestKey(pemOf(t, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(testRSA())))
	used, _ := ParseRequestKey(pemOf(t, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(other)))
	tenant := customTenant()
	tenant.Apps[0].JWKS = string(published.JWKS())
	e := newSimEnv(t, tenant, func(c *Config) { c.RequestKey = used })
	_, _, err := e.client.Start(context.Background(), StartRequest{User: "erin", ACR: pingonesim.DemoPolicy})
	wantKind(t, err, KindInvalid)
}
