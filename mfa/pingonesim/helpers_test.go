package pingonesim

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// testKey is one RSA key shared by every test server: key generation under
// -race dominates the suite's run time otherwise.
var testKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

var t0 = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)

// harness is a simulator on a loopback httptest server with an injected clock.
type harness struct {
	t     *testing.T
	sim   *Server
	srv   *httptest.Server
	clock *Clock
}

func newHarness(t *testing.T, mutate func(*Tenant)) *harness {
	t.Helper()
	ten := DemoTenant()
	if mutate != nil {
		mutate(&ten)
	}
	c := NewClock(t0)
	sim := New(Options{Tenant: ten, Clock: c, SigningKey: testKey()})
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	return &harness{t: t, sim: sim, srv: srv, clock: c}
}

func (h *harness) issuer() string { return h.sim.Issuer(h.srv.URL) }
func (h *harness) env() string    { return h.srv.URL + "/" + DemoEnvID }

// token signs claims with HS256 and the demo client secret, over sensible
// defaults; a nil value in claims deletes that default.
func (h *harness) token(claims map[string]any) string {
	c := jwt.MapClaims{
		"iss": DemoClientID, "sub": "alice", "aud": h.issuer(),
		"iat": h.clock.Now().Unix(), "exp": h.clock.Now().Add(5 * time.Minute).Unix(), "jti": newUUID(),
	}
	for k, v := range claims {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(DemoClientSecret))
	if err != nil {
		h.t.Fatal(err)
	}
	return s
}

// authorizeParams are valid pi.flow parameters for user, with overrides.
func (h *harness) authorizeParams(user string, over url.Values) url.Values {
	v := url.Values{
		"client_id":        {DemoClientID},
		"response_type":    {"token id_token"},
		"response_mode":    {"pi.flow"},
		"scope":            {"openid profile email"},
		"nonce":            {"n-0S6_WzA2Mj"},
		"state":            {"st-123"},
		"acr_values":       {DemoPolicy},
		"login_hint_token": {h.token(map[string]any{"sub": user})},
	}
	for k, vs := range over {
		if vs == nil {
			v.Del(k)
		} else {
			v[k] = vs
		}
	}
	return v
}

type resp struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (h *harness) do(req *http.Request) resp {
	h.t.Helper()
	res, err := h.srv.Client().Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	r := resp{status: res.StatusCode, header: res.Header, raw: string(b)}
	_ = json.Unmarshal(b, &r.body)
	return r
}

func (h *harness) authorize(params url.Values) resp {
	h.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, h.env()+"/as/authorize", strings.NewReader(params.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return h.do(req)
}

// start authorizes user and returns the flow JSON and its ST cookie.
func (h *harness) start(user string, over url.Values) (resp, string) {
	h.t.Helper()
	r := h.authorize(h.authorizeParams(user, over))
	if r.status != http.StatusOK {
		h.t.Fatalf("authorize %s: status %d, body %s", user, r.status, r.raw)
	}
	st := ""
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		if c.Name == "ST" {
			st = c.Value
		}
	}
	if st == "" {
		h.t.Fatalf("authorize %s: no ST cookie", user)
	}
	return r, st
}

func (h *harness) getFlow(id, st string) resp {
	h.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, h.env()+"/flows/"+id, nil)
	if st != "" {
		req.AddCookie(&http.Cookie{Name: "ST", Value: st})
	}
	return h.do(req)
}

func (h *harness) post(id, st, action string, body any) resp {
	h.t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, h.env()+"/flows/"+id, strings.NewReader(string(b)))
	req.Header.Set("Content-Type", "application/vnd.pingidentity."+action+"+json")
	req.AddCookie(&http.Cookie{Name: "ST", Value: st})
	return h.do(req)
}

func str(m map[string]any, path ...string) string {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return ""
		}
		cur = mm[p]
	}
	switch v := cur.(type) {
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return ""
}

func detail(r resp) map[string]any {
	ds, _ := r.body["details"].([]any)
	if len(ds) == 0 {
		return nil
	}
	d, _ := ds[0].(map[string]any)
	return d
}

// parseIDToken verifies an ID token against the simulator's current key.
func (h *harness) parseIDToken(raw string) jwt.MapClaims {
	h.t.Helper()
	h.sim.mu.Lock()
	pub := &h.sim.keys[len(h.sim.keys)-1].key.PublicKey
	h.sim.mu.Unlock()
	c := jwt.MapClaims{}
	_, err := jwt.NewParser(jwt.WithValidMethods([]string{"RS256"}), jwt.WithTimeFunc(h.clock.Now)).
		ParseWithClaims(raw, c, func(*jwt.Token) (any, error) { return pub, nil })
	if err != nil {
		h.t.Fatalf("id token: %v", err)
	}
	return c
}

func httptestServer(t *testing.T, h http.Handler) string {
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}
