package jwks

import (
	"context"
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
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// clock is an injected, manually advanced clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// jwksServer serves whatever JSON body is set, counting fetches.
type jwksServer struct {
	*httptest.Server
	mu     sync.Mutex
	body   []byte
	status int
	hits   atomic.Int64
}

func newJWKSServer(t *testing.T) *jwksServer {
	t.Helper()
	s := &jwksServer{status: http.StatusOK}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		body, status := s.body, s.status
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(status int, body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status, s.body = status, body
}

func (s *jwksServer) setKeys(t *testing.T, keys ...map[string]any) {
	t.Helper()
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	s.set(http.StatusOK, b)
}

func enc(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func rsaJWK(kid string, k *rsa.PublicKey) map[string]any {
	m := map[string]any{"kty": "RSA", "use": "sig", "n": enc(k.N.Bytes()),
		"e": enc(big.NewInt(int64(k.E)).Bytes())}
	if kid != "" {
		m["kid"] = kid
	}
	return m
}

func ecJWK(kid string, k *ecdsa.PublicKey) map[string]any {
	size := (k.Curve.Params().BitSize + 7) / 8
	return map[string]any{"kty": "EC", "kid": kid, "crv": k.Curve.Params().Name,
		"x": enc(k.X.FillBytes(make([]byte, size))), "y": enc(k.Y.FillBytes(make([]byte, size)))}
}

func edJWK(kid string, k ed25519.PublicKey) map[string]any {
	return map[string]any{"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": enc(k)}
}

var (
	keyOnce sync.Once
	rsaA    *rsa.PrivateKey
	rsaB    *rsa.PrivateKey
)

func rsaKeys(t *testing.T) (*rsa.PrivateKey, *rsa.PrivateKey) {
	t.Helper()
	keyOnce.Do(func() {
		var err error
		if rsaA, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if rsaB, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
	return rsaA, rsaB
}

func sign(t *testing.T, m jwt.SigningMethod, key any, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, jwt.MapClaims{"sub": "alice"})
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type fixture struct {
	srv   *jwksServer
	clk   *clock
	cache *Cache
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{srv: newJWKSServer(t), clk: &clock{t: time.Unix(1_750_000_000, 0)}}
	f.cache = New(Options{URL: f.srv.URL, Client: f.srv.Client(), Now: f.clk.Now, Timeout: 5 * time.Second})
	return f
}

// parse uses no WithValidMethods on purpose: the keyfunc alone must refuse
// algorithm confusion.
func (f *fixture) parse(tok string) error {
	_, err := jwt.Parse(tok, f.cache.Keyfunc(context.Background()))
	return err
}

func TestKeyfuncAcceptsMatchingKeys(t *testing.T) {
	a, _ := rsaKeys(t)
	ec256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	ec521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	f := newFixture(t)
	f.srv.setKeys(t, rsaJWK("r", &a.PublicKey), ecJWK("e256", &ec256.PublicKey),
		ecJWK("e384", &ec384.PublicKey), ecJWK("e521", &ec521.PublicKey), edJWK("ed", edPub))
	if err := f.cache.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		tok  string
	}{
		{"an RS256 token verifies with its RSA key", sign(t, jwt.SigningMethodRS256, a, "r")},
		{"a PS384 token verifies with the RSA key", sign(t, jwt.SigningMethodPS384, a, "r")},
		{"an ES256 token verifies with the P-256 key", sign(t, jwt.SigningMethodES256, ec256, "e256")},
		{"an ES384 token verifies with the P-384 key", sign(t, jwt.SigningMethodES384, ec384, "e384")},
		{"an ES512 token verifies with the P-521 key", sign(t, jwt.SigningMethodES512, ec521, "e521")},
		{"an EdDSA token verifies with the Ed25519 key", sign(t, jwt.SigningMethodEdDSA, edPriv, "ed")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := f.parse(tt.tok); err != nil {
				t.Errorf("got %v, want nil", err)
			}
		})
	}
	if got := f.srv.hits.Load(); got != 1 {
		t.Errorf("fetches = %d, want 1 (known kids never refetch)", got)
	}
}

func TestKeyfuncRefusesAlgorithmConfusion(t *testing.T) {
	a, _ := rsaKeys(t)
	ec256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	f := newFixture(t)
	f.srv.setKeys(t, rsaJWK("r", &a.PublicKey), ecJWK("e384", &ec384.PublicKey),
		map[string]any{"kty": "RSA", "kid": "rs512only", "alg": "RS512", "n": enc(a.N.Bytes()), "e": "AQAB"})
	if err := f.cache.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&a.PublicKey)
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	tests := []struct {
		name string
		tok  string
	}{
		{"an HS256 token signed with the RSA public key PEM is refused", sign(t, jwt.SigningMethodHS256, pemBytes, "r")},
		{"an HS256 token signed with the RSA modulus is refused", sign(t, jwt.SigningMethodHS256, a.N.Bytes(), "r")},
		{"an unsigned alg none token is refused", sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "r")},
		{"an ES256 token naming the RSA key is refused", sign(t, jwt.SigningMethodES256, ec256, "r")},
		{"an ES256 token naming a P-384 key is refused", sign(t, jwt.SigningMethodES256, ec256, "e384")},
		{"an RS256 token naming a key whose JWK alg is RS512 is refused", sign(t, jwt.SigningMethodRS256, a, "rs512only")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := f.parse(tt.tok); err == nil {
				t.Error("got nil error, want refusal")
			}
		})
	}
}

func TestKeyfuncNeverReturnsBytes(t *testing.T) {
	a, _ := rsaKeys(t)
	f := newFixture(t)
	f.srv.setKeys(t, rsaJWK("r", &a.PublicKey))
	for _, m := range []jwt.SigningMethod{jwt.SigningMethodHS256, jwt.SigningMethodHS384, jwt.SigningMethodHS512, jwt.SigningMethodNone} {
		tok := &jwt.Token{Method: m, Header: map[string]any{"kid": "r", "alg": m.Alg()}}
		got, err := f.cache.Keyfunc(context.Background())(tok)
		if err == nil || got != nil {
			t.Errorf("%s: got (%T, %v), want (nil, error)", m.Alg(), got, err)
		}
	}
}

func TestRotationFetchesTheNewKid(t *testing.T) {
	a, b := rsaKeys(t)
	f := newFixture(t)
	f.srv.setKeys(t, rsaJWK("old", &a.PublicKey))
	if err := f.cache.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	f.srv.setKeys(t, rsaJWK("old", &a.PublicKey), rsaJWK("new", &b.PublicKey))
	f.clk.Advance(2 * time.Minute)
	if err := f.parse(sign(t, jwt.SigningMethodRS256, b, "new")); err != nil {
		t.Fatalf("token with the rotated kid: got %v, want nil", err)
	}
	if err := f.parse(sign(t, jwt.SigningMethodRS256, a, "old")); err != nil {
		t.Fatalf("token with the old kid: got %v, want nil", err)
	}
	if got := f.srv.hits.Load(); got != 2 {
		t.Errorf("fetches = %d, want 2", got)
	}
}

func TestUnknownKidRefetchIsRateLimited(t *testing.T) {
	a, b := rsaKeys(t)
	f := newFixture(t)
	f.srv.setKeys(t, rsaJWK("old", &a.PublicKey))
	if err := f.cache.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	bogus := sign(t, jwt.SigningMethodRS256, b, "made-up")

	// Within a minute of the last fetch, unknown kids cause no request.
	f.clk.Advance(30 * time.Second)
	for range 5 {
		if err := f.parse(bogus); err == nil {
			t.Fatal("made-up kid accepted")
		}
	}
	if got := f.srv.hits.Load(); got != 1 {
		t.Fatalf("fetches after misses within the interval = %d, want 1", got)
	}

	// After the interval, one miss causes exactly one fetch, and the next
	// miss is limited again.
	f.clk.Advance(31 * time.Second)
	f.parse(bogus)
	f.parse(bogus)
	if got := f.srv.hits.Load(); got != 2 {
		t.Fatalf("fetches after the interval = %d, want 2", got)
	}

	// A key published meanwhile is found once the interval has passed again.
	f.srv.setKeys(t, rsaJWK("old", &a.PublicKey), rsaJWK("made-up", &b.PublicKey))
	if err := f.parse(bogus); err == nil {
		t.Fatal("kid found before the interval passed; the rate limit is not applied")
	}
	f.clk.Advance(time.Minute)
	if err := f.parse(bogus); err != nil {
		t.Fatalf("after the interval: got %v, want nil", err)
	}
}

func TestConcurrentMissesShareOneFetch(t *testing.T) {
	a, _ := rsaKeys(t)
	f := newFixture(t)
	f.srv.setKeys(t, rsaJWK("k", &a.PublicKey))
	tok := sign(t, jwt.SigningMethodRS256, a, "k")
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() { errs <- f.parse(tok) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("got %v, want nil", err)
		}
	}
	if got := f.srv.hits.Load(); got != 1 {
		t.Errorf("fetches = %d, want 1", got)
	}
}

func TestTokenWithoutKid(t *testing.T) {
	a, b := rsaKeys(t)
	tests := []struct {
		name   string
		keys   []map[string]any
		wantOK bool
	}{
		{"a token without kid uses the only key when it has no kid", []map[string]any{rsaJWK("", &a.PublicKey)}, true},
		{"a token without kid is refused when the only key has a kid", []map[string]any{rsaJWK("k", &a.PublicKey)}, false},
		{"a token without kid is refused when there are several keys", []map[string]any{rsaJWK("", &a.PublicKey), rsaJWK("", &b.PublicKey)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.srv.setKeys(t, tt.keys...)
			if err := f.cache.Refresh(context.Background()); err != nil {
				t.Fatal(err)
			}
			err := f.parse(sign(t, jwt.SigningMethodRS256, a, ""))
			if got := err == nil; got != tt.wantOK {
				t.Errorf("accepted = %v, want %v (err %v)", got, tt.wantOK, err)
			}
		})
	}
}

func TestMalformedSetsAreRejected(t *testing.T) {
	a, _ := rsaKeys(t)
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	offCurve := ecJWK("e", &ec.PublicKey)
	y := new(big.Int).Add(ec.Y, big.NewInt(1))
	offCurve["y"] = enc(y.FillBytes(make([]byte, 32)))
	encKey := rsaJWK("r", &a.PublicKey)
	encKey["use"] = "enc"
	private := rsaJWK("r", &a.PublicKey)
	private["d"] = enc(a.D.Bytes())
	shortX := ecJWK("e", &ec.PublicKey)
	shortX["x"] = enc([]byte{1, 2, 3})
	js := func(v any) []byte { b, _ := json.Marshal(v); return b }
	tests := []struct {
		name string
		body []byte
	}{
		{"a body that is not JSON", []byte("<html>oops</html>")},
		{"an empty key list", js(map[string]any{"keys": []any{}})},
		{"a symmetric oct key", js(map[string]any{"keys": []any{map[string]any{"kty": "oct", "kid": "h", "k": enc([]byte("secret"))}}})},
		{"an RSA key under 2048 bits", js(map[string]any{"keys": []any{rsaJWK("s", &small.PublicKey)}})},
		{"an EC point off the curve", js(map[string]any{"keys": []any{offCurve}})},
		{"an EC coordinate of the wrong length", js(map[string]any{"keys": []any{shortX}})},
		{"a key for encryption only", js(map[string]any{"keys": []any{encKey}})},
		{"a key with private material", js(map[string]any{"keys": []any{private}})},
		{"an unknown OKP curve", js(map[string]any{"keys": []any{map[string]any{"kty": "OKP", "crv": "X25519", "x": enc(make([]byte, 32))}}})},
		{"a body over 1 MiB", append(js(map[string]any{"keys": []any{rsaJWK("r", &a.PublicKey)}}), []byte(strings.Repeat(" ", MaxBodyBytes))...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.srv.set(http.StatusOK, tt.body)
			if err := f.cache.Refresh(context.Background()); err == nil {
				t.Error("Refresh: got nil, want error")
			}
			if f.cache.Ready() {
				t.Error("Ready() = true after a failed first fetch")
			}
		})
	}
}

func TestUsableKeysSurviveBadNeighbours(t *testing.T) {
	a, _ := rsaKeys(t)
	f := newFixture(t)
	f.srv.setKeys(t, map[string]any{"kty": "oct", "kid": "h", "k": "c2VjcmV0"},
		map[string]any{"kty": "RSA", "kid": "bad", "n": "!!", "e": "AQAB"}, rsaJWK("r", &a.PublicKey))
	if err := f.cache.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := f.parse(sign(t, jwt.SigningMethodRS256, a, "r")); err != nil {
		t.Errorf("got %v, want nil", err)
	}
}

func TestFailedRefreshKeepsOldKeys(t *testing.T) {
	a, _ := rsaKeys(t)
	tests := []struct {
		name   string
		break_ func(f *fixture)
	}{
		{"a 500 response", func(f *fixture) { f.srv.set(http.StatusInternalServerError, []byte(`{}`)) }},
		{"a malformed body", func(f *fixture) { f.srv.set(http.StatusOK, []byte(`{"keys":`)) }},
		{"the server being down", func(f *fixture) { f.srv.Close() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			var codes []int
			f.cache.o.Observe = func(code int, _ time.Duration) { codes = append(codes, code) }
			f.srv.setKeys(t, rsaJWK("r", &a.PublicKey))
			if err := f.cache.Refresh(context.Background()); err != nil {
				t.Fatal(err)
			}
			tt.break_(f)
			if err := f.cache.Refresh(context.Background()); err == nil {
				t.Fatal("Refresh: got nil, want error")
			}
			if !f.cache.Ready() {
				t.Error("Ready() = false after a later failure; want true")
			}
			if err := f.parse(sign(t, jwt.SigningMethodRS256, a, "r")); err != nil {
				t.Errorf("old key: got %v, want nil", err)
			}
			if len(codes) != 2 || codes[0] != 200 {
				t.Errorf("observed codes = %v, want [200 <failure>]", codes)
			}
		})
	}
}

func TestFetchHonoursTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	c := New(Options{URL: srv.URL, Client: srv.Client(), Timeout: 50 * time.Millisecond})
	done := make(chan error, 1)
	go func() { done <- c.Refresh(context.Background()) }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("got nil, want timeout error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Refresh did not return within 5s; Timeout not applied")
	}
}

func TestUnavailableKeySetIsToldApartFromAnUnknownKey(t *testing.T) {
	a, b := rsaKeys(t)
	f := newFixture(t)
	f.srv.setKeys(t, rsaJWK("r", &a.PublicKey))
	if err := f.cache.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	unknown := sign(t, jwt.SigningMethodRS256, b, "rotated")

	// The set is reachable but lacks the kid: a bad token, not an outage.
	f.clk.Advance(time.Minute)
	if err := f.parse(unknown); err == nil || errors.Is(err, ErrUnavailable) {
		t.Fatalf("unknown kid with a healthy set: got %v, want a non-ErrUnavailable error", err)
	}

	// The set cannot be fetched: the refetch and the rate-limited misses
	// that follow it are all ErrUnavailable.
	f.srv.set(http.StatusServiceUnavailable, []byte(`{}`))
	f.clk.Advance(time.Minute)
	for i := range 2 {
		if err := f.parse(unknown); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("miss %d with the set down: got %v, want ErrUnavailable", i, err)
		}
	}
	// Known keys keep verifying during the outage.
	if err := f.parse(sign(t, jwt.SigningMethodRS256, a, "r")); err != nil {
		t.Fatalf("known key during the outage: %v", err)
	}
}

// A caller that goes away mid-fetch (a client hanging up on a receiver
// that verifies on its request's context) says nothing about the key set:
// the next miss fetches at once instead of waiting out the refetch limit.
func TestACancelledFetchDoesNotHoldOffTheNext(t *testing.T) {
	a, _ := rsaKeys(t)
	f := newFixture(t)
	f.srv.setKeys(t, rsaJWK("k", &a.PublicKey))
	tok := sign(t, jwt.SigningMethodRS256, a, "k")
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := jwt.Parse(tok, f.cache.Keyfunc(gone)); err == nil {
		t.Fatal("a token verified on a cancelled fetch")
	}
	if err := f.parse(tok); err != nil {
		t.Fatalf("the next caller, at once: %v; want the key fetched", err)
	}
}
