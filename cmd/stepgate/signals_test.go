package main

// Revocation from the identity provider (issue 26, docs/signals.md): a
// PingOne webhook batch ends a user's step-ups on every replica sharing a
// real redis-server; every request that cannot be believed is refused with
// a clear answer and an audit line, and changes nothing.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/stepgate/stepgate/mfa/pingonesim"
	"github.com/stepgate/stepgate/store/redistest"
)

const testWebhookSecret = "webhook-secret-0123456789abcdefghijklmnop"

// pingOneEvent is an ACTIVITY-format event as PingOne's webhooks send it
// (the fields stepgate reads, plus the usual others).
func pingOneEvent(id, action, userID string) map[string]any {
	return map[string]any{
		"id":         id,
		"recordedAt": "2026-11-21T09:00:00.000Z",
		"action":     map[string]any{"type": action, "description": action},
		"resources":  []any{map[string]any{"type": "USER", "id": userID, "name": "user " + userID[:8]}},
		"result":     map[string]any{"status": "SUCCESS"},
		"actors":     map[string]any{"client": map[string]any{"type": "CLIENT", "name": "PingOne Admin Console"}},
	}
}

// webhookFixture is a batch of n events (PingOne sends up to 500): noise
// for other users and actions stepgate ignores, with the given events at
// the end.
func webhookFixture(n int, last ...map[string]any) []map[string]any {
	var out []map[string]any
	for i := range n - len(last) {
		action := []string{"USER.ACCESS_ALLOWED", "OTP.CHECK_SUCCESS", "USER.UPDATED", "SESSION.CREATED"}[i%4]
		out = append(out, pingOneEvent(fmt.Sprintf("evt-noise-%04d", i), action, fmt.Sprintf("00000000-0000-4000-8000-%012d", i)))
	}
	return append(out, last...)
}

func postWebhook(t *testing.T, s *stack, secret string, body []byte) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.Signals+"/signals/pingone", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if secret != "" {
		req.Header.Set("X-Stepgate-Webhook-Secret", secret)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("answer is not JSON: %d %q", resp.StatusCode, b)
	}
	return resp.StatusCode, m
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func signalStacks(t *testing.T) []*stack {
	srv := redistest.Start(t)
	return redisStacks(t, srv, 2, "STEPGATE_SIGNALS_LISTEN", "127.0.0.1:0", "STEPGATE_PINGONE_WEBHOOK_SECRET", testWebhookSecret)
}

func TestPingOneWebhookOf500EventsChallengesTheUserAgainOnBothReplicas(t *testing.T) {
	stacks := signalStacks(t)
	alice := stacks[0].stepUpAlice("/admin/")
	for i, s := range stacks {
		if r := alice.on(s).get("/admin/"); r.StatusCode != http.StatusOK {
			t.Fatalf("before the webhook, replica %d: %d", i, r.StatusCode)
		}
	}
	batch := webhookFixture(500, pingOneEvent("evt-alice-device", "DEVICE.DELETED", pingonesim.DemoAliceID))
	code, ans := postWebhook(t, stacks[1], testWebhookSecret, mustJSON(t, batch))
	if code != http.StatusOK || ans["revoked"] != 1.0 || ans["ignored"] != 499.0 {
		t.Fatalf("webhook of 500 events: %d %v, want 200 with 1 revoked and 499 ignored", code, ans)
	}
	// Posted to replica 1, refused on both (replica 0 through Redis).
	took := waitRefused(t, alice, stacks, "/admin/", http.StatusFound, 10*time.Second)
	t.Logf("refused on both replicas %v after the webhook", took)
	if ev := stacks[1].Logs.Events("session.revoked"); len(ev) != 1 || ev[0]["by"] != "pingone" || ev[0]["event_id"] != "evt-alice-device" {
		t.Errorf("session.revoked audit lines: %v", ev)
	}

	// PingOne delivers at least once: the same batch again changes
	// nothing, and a step-up done since stays valid everywhere.
	stacks[0].Clock.Advance(2 * time.Second)
	again := stacks[0].stepUpAlice("/admin/")
	code, ans = postWebhook(t, stacks[1], testWebhookSecret, mustJSON(t, batch))
	if code != http.StatusOK || ans["duplicates"] != 500.0 || ans["revoked"] != 0.0 {
		t.Fatalf("the same batch again: %d %v, want 200 with 500 duplicates", code, ans)
	}
	for i, s := range stacks {
		if r := again.on(s).get("/admin/"); r.StatusCode != http.StatusOK {
			t.Errorf("a step-up after the revocation, replica %d, after a redelivery: %d", i, r.StatusCode)
		}
	}
}

func TestPingOneWebhookRefusesWhatItCannotBelieveAndChangesNothing(t *testing.T) {
	stacks := signalStacks(t)
	s := stacks[0]
	alice := s.stepUpAlice("/admin/")
	revokeAlice := pingOneEvent("evt-1", "USER.DELETED", pingonesim.DemoAliceID)
	tests := []struct {
		name    string
		secret  string
		body    []byte
		code    int
		errCode string
	}{
		{"no secret", "", mustJSON(t, []any{revokeAlice}), http.StatusUnauthorized, "unauthorized"},
		{"a wrong secret", testWebhookSecret + "x", mustJSON(t, []any{revokeAlice}), http.StatusUnauthorized, "unauthorized"},
		{"a batch of 501 events", testWebhookSecret, mustJSON(t, webhookFixture(501, revokeAlice)), http.StatusRequestEntityTooLarge, "too_many_events"},
		{"not JSON", testWebhookSecret, []byte(`[{"id":`), http.StatusBadRequest, "malformed"},
		{"an object, not an array", testWebhookSecret, mustJSON(t, revokeAlice), http.StatusBadRequest, "malformed"},
		{"an event without an id", testWebhookSecret, []byte(`[{"action":{"type":"USER.DELETED"}}]`), http.StatusBadRequest, "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(s.Logs.Events("signal.refused"))
			code, ans := postWebhook(t, s, tt.secret, tt.body)
			if code != tt.code || ans["error"] != tt.errCode || ans["message"] == "" {
				t.Errorf("got %d %v, want %d %q with a message", code, ans, tt.code, tt.errCode)
			}
			if n := len(s.Logs.Events("signal.refused")); n != before+1 {
				t.Errorf("signal.refused audit lines: %d new, want 1", n-before)
			}
		})
	}
	t.Run("an event for no PingOne user", func(t *testing.T) {
		bad := pingOneEvent("evt-2", "USER.DELETED", pingonesim.DemoAliceID)
		bad["resources"] = []any{map[string]any{"type": "USER", "id": "alice"}}
		code, ans := postWebhook(t, s, testWebhookSecret, mustJSON(t, []any{bad}))
		refused, _ := ans["refused"].([]any)
		if code != http.StatusOK || ans["revoked"] != 0.0 || len(refused) != 1 || !strings.Contains(fmt.Sprint(refused[0]), "unknown subject") {
			t.Errorf("got %d %v, want 200 with the event refused as an unknown subject", code, ans)
		}
		ev := s.Logs.Events("signal.refused")
		if len(ev) == 0 || ev[len(ev)-1]["reason"] != "unknown subject" {
			t.Errorf("no signal.refused line for the unknown subject: %v", ev)
		}
	})
	// Nothing above changed anything: alice is still stepped up on both.
	for i, st := range stacks {
		if r := alice.on(st).get("/admin/"); r.StatusCode != http.StatusOK {
			t.Errorf("after refused webhooks, replica %d: %d, want 200", i, r.StatusCode)
		}
	}
	if ev := s.Logs.Events("session.revoked"); len(ev) != 0 {
		t.Errorf("a refused webhook revoked: %v", ev)
	}
}

// ssfTransmitter is an OpenID Shared Signals transmitter on loopback: it
// serves its SSF configuration and JWKS, and signs SETs with an ES256 key
// and an RS256 key.
type ssfTransmitter struct {
	*httptest.Server
	ec  *ecdsa.PrivateKey
	rsa *rsa.PrivateKey
}

const ssfAudience = "https://stepgate.example.com/signals/ssf"

func newSSFTransmitter(t *testing.T) *ssfTransmitter {
	t.Helper()
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tr := &ssfTransmitter{ec: ec, rsa: rk}
	b64 := base64.RawURLEncoding.EncodeToString
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/ssf-configuration", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"spec_version": "1_0", "issuer": tr.URL, "jwks_uri": tr.URL + "/jwks",
			"delivery_methods_supported": []string{"urn:ietf:rfc:8935"},
		})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"keys": []any{
			map[string]any{"kty": "EC", "kid": "es", "use": "sig", "alg": "ES256", "crv": "P-256",
				"x": b64(ec.X.FillBytes(make([]byte, 32))), "y": b64(ec.Y.FillBytes(make([]byte, 32)))},
			map[string]any{"kty": "RSA", "kid": "rs", "use": "sig", "alg": "RS256",
				"n": b64(rk.N.Bytes()), "e": b64(big.NewInt(int64(rk.E)).Bytes())},
		}})
	})
	tr.Server = httptest.NewServer(mux)
	t.Cleanup(tr.Close)
	return tr
}

// set returns a session-revoked SET for alice by e-mail, issued now by
// the transmitter for stepgate, to be changed by the caller.
func (tr *ssfTransmitter) set(now time.Time, jti string) jwt.MapClaims {
	return jwt.MapClaims{
		"iss": tr.URL, "aud": []string{ssfAudience}, "iat": now.Unix(), "jti": jti,
		"sub_id": map[string]any{"format": "email", "email": "Alice@Example.com"},
		"events": map[string]any{"https://schemas.openid.net/secevent/caep/event-type/session-revoked": map[string]any{
			"event_timestamp": now.Unix(), "initiating_entity": "admin"}},
	}
}

// sign signs claims with the ES256 key ("ES256"), the RS256 key ("RS256")
// or a key the transmitter does not publish ("ES256-other").
func (tr *ssfTransmitter) sign(t *testing.T, alg, kid string, claims jwt.MapClaims) string {
	t.Helper()
	var tok *jwt.Token
	var key any
	switch alg {
	case "ES256":
		tok, key = jwt.NewWithClaims(jwt.SigningMethodES256, claims), tr.ec
	case "ES256-other":
		other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tok, key = jwt.NewWithClaims(jwt.SigningMethodES256, claims), other
	case "RS256":
		tok, key = jwt.NewWithClaims(jwt.SigningMethodRS256, claims), tr.rsa
	case "none":
		tok, key = jwt.NewWithClaims(jwt.SigningMethodNone, claims), jwt.UnsafeAllowNoneSignatureType
	}
	tok.Header["kid"] = kid
	tok.Header["typ"] = "secevent+jwt"
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const testSSFBearer = "ssf-bearer-0123456789abcdefghijklmnopqrstuv"

func postSET(t *testing.T, s *stack, contentType, bearer, set string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.Signals+"/signals/ssf", strings.NewReader(set))
	req.Header.Set("Content-Type", contentType)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if resp.StatusCode != http.StatusAccepted {
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("answer is not JSON: %d %q", resp.StatusCode, b)
		}
	}
	return resp.StatusCode, m
}

func ssfStacks(t *testing.T) ([]*stack, *ssfTransmitter) {
	tr := newSSFTransmitter(t)
	srv := redistest.Start(t)
	return redisStacks(t, srv, 2, "STEPGATE_SIGNALS_LISTEN", "127.0.0.1:0",
		"STEPGATE_SSF_ISSUER", tr.URL, "STEPGATE_SSF_AUDIENCE", ssfAudience,
		"STEPGATE_SSF_BEARER_TOKEN", testSSFBearer, "STEPGATE_SSF_USER_TRANSFORM", "lower,strip-domain"), tr
}

func TestSSFSessionRevokedChallengesTheUserAgainOnBothReplicas(t *testing.T) {
	stacks, tr := ssfStacks(t)
	pingOneIssuer := stacks[0].SimURL + "/" + stacks[0].Env["STEPGATE_PINGONE_ENV_ID"] + "/as"
	complexPingOne := map[string]any{"format": "complex",
		"user":    map[string]any{"format": "iss_sub", "iss": pingOneIssuer, "sub": pingonesim.DemoAliceID},
		"session": map[string]any{"format": "opaque", "id": "sess-1"}}
	tests := []struct {
		name   string
		alg    string
		kid    string
		event  string
		sub    any
		audit  string // the audit line's user or subject
		reason string
	}{
		{"session-revoked by e-mail, ES256", "ES256", "es", "session-revoked",
			map[string]any{"format": "email", "email": "Alice@Example.com"}, "alice", ""},
		{"credential-change by opaque id, RS256", "RS256", "rs", "credential-change",
			map[string]any{"format": "opaque", "id": "alice"}, "alice", ""},
		{"session-revoked for a PingOne iss_sub in a complex subject", "ES256", "es", "session-revoked",
			complexPingOne, pingonesim.DemoAliceID, ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stacks[0].Clock.Advance(2 * time.Second) // a step-up after the last revocation
			alice := stacks[0].stepUpAlice("/admin/")
			for i, s := range stacks {
				if r := alice.on(s).get("/admin/"); r.StatusCode != http.StatusOK {
					t.Fatalf("before the SET, replica %d: %d", i, r.StatusCode)
				}
			}
			claims := tr.set(stacks[0].Clock.Now(), fmt.Sprintf("jti-%d", i))
			claims["sub_id"] = tt.sub
			claims["events"] = map[string]any{"https://schemas.openid.net/secevent/caep/event-type/" + tt.event: map[string]any{}}
			code, ans := postSET(t, stacks[1], "application/secevent+jwt", testSSFBearer, tr.sign(t, tt.alg, tt.kid, claims))
			if code != http.StatusAccepted {
				t.Fatalf("SET: %d %v, want 202", code, ans)
			}
			took := waitRefused(t, alice, stacks, "/admin/", http.StatusFound, 10*time.Second)
			t.Logf("refused on both replicas %v after the SET", took)
			ev := stacks[1].Logs.Events("session.revoked")
			if len(ev) != i+1 || ev[i]["by"] != "ssf" || ev[i]["event_id"] != claims["jti"] ||
				(ev[i]["user"] != tt.audit && ev[i]["subject"] != tt.audit) {
				t.Errorf("session.revoked audit lines: %v", ev)
			}
		})
	}

	t.Run("an event type stepgate does not act on is accepted and ignored", func(t *testing.T) {
		stacks[0].Clock.Advance(2 * time.Second)
		alice := stacks[0].stepUpAlice("/admin/")
		claims := tr.set(stacks[0].Clock.Now(), "jti-ignored")
		claims["events"] = map[string]any{"https://schemas.openid.net/secevent/caep/event-type/assurance-level-change": map[string]any{}}
		if code, ans := postSET(t, stacks[0], "application/secevent+jwt", testSSFBearer, tr.sign(t, "ES256", "es", claims)); code != http.StatusAccepted {
			t.Fatalf("SET: %d %v, want 202", code, ans)
		}
		if ev := stacks[0].Logs.Events("signal.ignored"); len(ev) != 1 || ev[0]["receiver"] != "ssf" {
			t.Errorf("signal.ignored audit lines: %v", ev)
		}
		for i, s := range stacks {
			if r := alice.on(s).get("/admin/"); r.StatusCode != http.StatusOK {
				t.Errorf("after an ignored SET, replica %d: %d, want 200", i, r.StatusCode)
			}
		}
	})
}

func TestSSFRefusesWhatItCannotBelieveAndChangesNothing(t *testing.T) {
	stacks, tr := ssfStacks(t)
	s := stacks[0]
	alice := s.stepUpAlice("/admin/")
	now := s.Clock.Now()
	// A SET stepgate accepts and ignores, so that its jti is known.
	seen := tr.set(now, "jti-seen")
	seen["events"] = map[string]any{"https://schemas.openid.net/secevent/ssf/event-type/verification": map[string]any{"state": "x"}}
	if code, ans := postSET(t, s, "application/secevent+jwt", testSSFBearer, tr.sign(t, "ES256", "es", seen)); code != http.StatusAccepted {
		t.Fatalf("a verification SET: %d %v, want 202", code, ans)
	}
	with := func(jti string, change func(jwt.MapClaims)) jwt.MapClaims {
		c := tr.set(now, jti)
		change(c)
		return c
	}
	good := func(jti string) jwt.MapClaims { return tr.set(now, jti) }
	tests := []struct {
		name        string
		contentType string
		bearer      string
		set         string
		err         string
		reason      string
	}{
		{"a bad signature", "", "", tr.sign(t, "ES256-other", "es", good("j1")), "invalid_key", "bad_signature"},
		{"an unknown kid", "", "", tr.sign(t, "ES256", "nobody", good("j2")), "invalid_key", "unknown_key"},
		{"alg none", "", "", tr.sign(t, "none", "es", good("j3")), "invalid_request", "alg"},
		{"a wrong iss", "", "", tr.sign(t, "ES256", "es", with("j4", func(c jwt.MapClaims) { c["iss"] = "https://evil.example" })), "invalid_issuer", "issuer"},
		{"a wrong aud", "", "", tr.sign(t, "RS256", "rs", with("j5", func(c jwt.MapClaims) { c["aud"] = "https://other.example" })), "invalid_audience", "audience"},
		{"an iat two hours old", "", "", tr.sign(t, "ES256", "es", with("j6", func(c jwt.MapClaims) { c["iat"] = now.Add(-2 * time.Hour).Unix() })), "invalid_request", "iat_old"},
		{"an iat ten minutes ahead", "", "", tr.sign(t, "ES256", "es", with("j7", func(c jwt.MapClaims) { c["iat"] = now.Add(10 * time.Minute).Unix() })), "invalid_request", "iat_future"},
		{"a replayed jti", "", "", tr.sign(t, "ES256", "es", good("jti-seen")), "invalid_request", "jti_replayed"},
		{"the same SET again", "", "", tr.sign(t, "ES256", "es", seen), "invalid_request", "jti_replayed"},
		{"no jti", "", "", tr.sign(t, "ES256", "es", with("", func(c jwt.MapClaims) { delete(c, "jti") })), "invalid_request", "jti_missing"},
		{"a wrong content type", "application/json", "", tr.sign(t, "ES256", "es", good("j8")), "invalid_request", "content_type"},
		{"no bearer token", "", "-", tr.sign(t, "ES256", "es", good("j9")), "authentication_failed", "bearer"},
		{"a wrong bearer token", "", testSSFBearer + "x", tr.sign(t, "ES256", "es", good("j10")), "authentication_failed", "bearer"},
		{"a phone number subject", "", "", tr.sign(t, "ES256", "es", with("j11", func(c jwt.MapClaims) {
			c["sub_id"] = map[string]any{"format": "phone_number", "phone_number": "+12065550100"}
		})), "invalid_request", "unknown_subject"},
		{"an iss_sub of an unknown issuer", "", "", tr.sign(t, "ES256", "es", with("j12", func(c jwt.MapClaims) {
			c["sub_id"] = map[string]any{"format": "iss_sub", "iss": "https://elsewhere.example", "sub": "alice"}
		})), "invalid_request", "unknown_subject"},
		{"a wrong typ", "", "", func() string {
			tok := jwt.NewWithClaims(jwt.SigningMethodES256, good("j13"))
			tok.Header["kid"], tok.Header["typ"] = "es", "JWT"
			v, _ := tok.SignedString(tr.ec)
			return v
		}(), "invalid_request", "typ"},
		{"not a JWT", "", "", "hello", "invalid_request", "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ct, bearer := tt.contentType, tt.bearer
			if ct == "" {
				ct = "application/secevent+jwt"
			}
			switch bearer {
			case "":
				bearer = testSSFBearer
			case "-":
				bearer = ""
			}
			before := len(s.Logs.Events("signal.refused"))
			code, ans := postSET(t, s, ct, bearer, tt.set)
			if code != http.StatusBadRequest || ans["err"] != tt.err || ans["description"] == "" {
				t.Errorf("got %d %v, want 400 %q with a description", code, ans, tt.err)
			}
			ev := s.Logs.Events("signal.refused")
			if len(ev) != before+1 || ev[len(ev)-1]["receiver"] != "ssf" || ev[len(ev)-1]["reason"] != tt.reason {
				t.Errorf("signal.refused audit lines: %v, want one new with reason %q", ev[before:], tt.reason)
			}
		})
	}
	// Nothing above changed anything: alice is still stepped up on both.
	for i, st := range stacks {
		if r := alice.on(st).get("/admin/"); r.StatusCode != http.StatusOK {
			t.Errorf("after refused SETs, replica %d: %d, want 200", i, r.StatusCode)
		}
	}
	if ev := s.Logs.Events("session.revoked"); len(ev) != 0 {
		t.Errorf("a refused SET revoked: %v", ev)
	}
}
