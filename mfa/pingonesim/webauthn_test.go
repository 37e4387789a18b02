package pingonesim

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"testing"
)

// assertionParts is what a browser's authenticator would produce; tests
// tamper with one field at a time.
type assertionParts struct {
	credID    []byte
	typ       string
	cdType    string
	challenge string
	origin    string
	rpID      string
	flags     byte
	counter   uint32
	key       *ecdsa.PrivateKey
	corrupt   bool // flip a byte of the signature
}

func (p assertionParts) build(t *testing.T) string {
	t.Helper()
	b64 := base64.RawURLEncoding.EncodeToString
	cdj, _ := json.Marshal(map[string]any{"type": p.cdType, "challenge": p.challenge, "origin": p.origin, "crossOrigin": false})
	rp := sha256.Sum256([]byte(p.rpID))
	ad := append(rp[:], p.flags, 0, 0, 0, 0)
	binary.BigEndian.PutUint32(ad[33:], p.counter)
	cdHash := sha256.Sum256(cdj)
	digest := sha256.Sum256(append(append([]byte(nil), ad...), cdHash[:]...))
	sig, err := ecdsa.SignASN1(rand.Reader, p.key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	if p.corrupt {
		sig[len(sig)-1] ^= 0xff
	}
	out, _ := json.Marshal(map[string]any{
		"id": b64(p.credID), "rawId": b64(p.credID), "type": p.typ,
		"response": map[string]string{
			"clientDataJSON": b64(cdj), "authenticatorData": b64(ad), "signature": b64(sig), "userHandle": "",
		},
	})
	return string(out)
}

// carolFIDO2 starts carol's flow and selects her security key; it returns
// the challenge from publicKeyCredentialRequestOptions.
func carolFIDO2(t *testing.T, h *harness) (id, st, challenge string) {
	t.Helper()
	r, st := h.start("carol", nil)
	id = str(r.body, "id")
	r = h.post(id, st, "device.select", selectDevice(DemoCarolFIDO2ID))
	if str(r.body, "status") != "ASSERTION_REQUIRED" || str(r.body, "_links", "assertion.check", "href") == "" {
		t.Fatalf("select FIDO2: %s", r.raw)
	}
	var opts struct {
		Challenge        json.RawMessage `json:"challenge"`
		Timeout          int             `json:"timeout"`
		RPID             string          `json:"rpId"`
		UserVerification string          `json:"userVerification"`
		AllowCredentials []struct {
			Type string
			ID   json.RawMessage
		}
	}
	if err := json.Unmarshal([]byte(str(r.body, "publicKeyCredentialRequestOptions")), &opts); err != nil {
		t.Fatalf("publicKeyCredentialRequestOptions is not a JSON string: %v; %s", err, r.raw)
	}
	// PingOne's encoding by default: arrays of signed bytes.
	if opts.Challenge[0] != '[' || len(opts.AllowCredentials) != 1 || opts.AllowCredentials[0].ID[0] != '[' {
		t.Fatalf("challenge and credential id are not byte arrays: %s", r.raw)
	}
	challengeBytes, err := DecodeWebAuthnBytes(opts.Challenge)
	if err != nil || len(challengeBytes) != 32 {
		t.Fatalf("challenge %s: %v", opts.Challenge, err)
	}
	credID, err := DecodeWebAuthnBytes(opts.AllowCredentials[0].ID)
	if err != nil || !bytes.Equal(credID, DemoFIDO2CredentialID) || opts.RPID != "localhost" || opts.Timeout != 120000 {
		t.Fatalf("options = %+v (credential id %x, %v)", opts, credID, err)
	}
	return id, st, base64.RawURLEncoding.EncodeToString(challengeBytes)
}

func TestWebAuthnBytesEncodings(t *testing.T) {
	b := []byte{0, 1, 127, 128, 200, 255}
	arr := (&Server{}).webAuthnBytes(b)
	raw, _ := json.Marshal(arr)
	if string(raw) != "[0,1,127,-128,-56,-1]" {
		t.Errorf("signed byte array = %s", raw)
	}
	str := (&Server{tenant: Tenant{WebAuthnBase64URL: true}}).webAuthnBytes(b)
	rawStr, _ := json.Marshal(str)
	for _, enc := range []string{string(raw), string(rawStr), "[0,1,127,128,200,255]"} {
		got, err := DecodeWebAuthnBytes(json.RawMessage(enc))
		if err != nil || !bytes.Equal(got, b) {
			t.Errorf("DecodeWebAuthnBytes(%s) = %v, %v; want %v", enc, got, err, b)
		}
	}
	for _, bad := range []string{"[256]", "[-129]", "{}", `"!!"`, "[1.5]"} {
		if _, err := DecodeWebAuthnBytes(json.RawMessage(bad)); err == nil {
			t.Errorf("DecodeWebAuthnBytes(%s) accepted", bad)
		}
	}
}

func TestAssertionCheck(t *testing.T) {
	t.Parallel()
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	const origin = "http://localhost:8083"
	valid := func(challenge string) assertionParts {
		return assertionParts{credID: DemoFIDO2CredentialID, typ: "public-key", cdType: "webauthn.get",
			challenge: challenge, origin: origin, rpID: "localhost", flags: 0x01, counter: 1, key: DemoFIDO2PrivateKey()}
	}
	tests := []struct {
		name   string
		tamper func(*assertionParts)
		posted string // origin posted next to the assertion
		wantOK bool
	}{
		{"a genuine assertion completes", func(*assertionParts) {}, origin, true},
		{"https on the RP ID completes", func(p *assertionParts) { p.origin = "https://localhost" }, "https://localhost", true},
		{"a signature by another key is refused", func(p *assertionParts) { p.key = other }, origin, false},
		{"a corrupted signature is refused", func(p *assertionParts) { p.corrupt = true }, origin, false},
		{"another credential id is refused", func(p *assertionParts) { p.credID = []byte("other") }, origin, false},
		{"a different challenge is refused", func(p *assertionParts) { p.challenge = base64.RawURLEncoding.EncodeToString([]byte("stale")) }, origin, false},
		{"a webauthn.create clientData is refused", func(p *assertionParts) { p.cdType = "webauthn.create" }, origin, false},
		{"clientData origin differing from the posted one is refused", func(p *assertionParts) { p.origin = "http://localhost:9999" }, origin, false},
		{"an origin off the RP ID is refused", func(p *assertionParts) { p.origin = "https://evil.example" }, "https://evil.example", false},
		{"plain http off localhost is refused", func(p *assertionParts) { p.origin = "http://app.localhost" }, "http://app.localhost", false},
		{"another rpIdHash is refused", func(p *assertionParts) { p.rpID = "evil.example" }, origin, false},
		{"an assertion without user presence is refused", func(p *assertionParts) { p.flags = 0x04 }, origin, false},
		{"a non public-key type is refused", func(p *assertionParts) { p.typ = "password" }, origin, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, nil)
			id, st, ch := carolFIDO2(t, h)
			p := valid(ch)
			tt.tamper(&p)
			r := h.post(id, st, "assertion.check", map[string]string{"origin": tt.posted, "assertion": p.build(t), "compatibility": "FULL"})
			if tt.wantOK {
				if r.status != 200 || str(r.body, "status") != "COMPLETED" {
					t.Fatalf("= %d %s, want COMPLETED", r.status, r.raw)
				}
				c := h.parseIDToken(str(r.body, "authorizeResponse", "id_token"))
				if amr, _ := c["amr"].([]any); len(amr) != 2 || amr[0] != "hwk" {
					t.Errorf("amr = %v, want [hwk user]", c["amr"])
				}
				return
			}
			if r.status != 400 || str(r.body, "code") != "INVALID_DATA" || str(detail(r), "code") != "INVALID_VALUE" || str(detail(r), "target") != "assertion" {
				t.Errorf("= %d %s, want 400 INVALID_DATA/INVALID_VALUE on assertion", r.status, r.raw)
			}
			if got := str(h.getFlow(id, st).body, "status"); got != "ASSERTION_REQUIRED" {
				t.Errorf("status after a refused assertion = %q, want ASSERTION_REQUIRED", got)
			}
		})
	}
}

func TestAssertionCounterMustGrow(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	const origin = "http://localhost"
	for i, want := range []int{200, 400} {
		id, st, ch := carolFIDO2(t, h)
		p := assertionParts{credID: DemoFIDO2CredentialID, typ: "public-key", cdType: "webauthn.get",
			challenge: ch, origin: origin, rpID: "localhost", flags: 0x01, counter: 5, key: DemoFIDO2PrivateKey()}
		r := h.post(id, st, "assertion.check", map[string]string{"origin": origin, "assertion": p.build(t)})
		if r.status != want {
			t.Errorf("assertion %d with counter 5: status %d, want %d (%s)", i, r.status, want, r.raw)
		}
	}
}

func TestAssertionOriginsList(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(ten *Tenant) { ten.Origins = []string{"https://app.localhost:8443"} })
	id, st, ch := carolFIDO2(t, h)
	p := assertionParts{credID: DemoFIDO2CredentialID, typ: "public-key", cdType: "webauthn.get",
		challenge: ch, origin: "http://localhost", rpID: "localhost", flags: 0x01, key: DemoFIDO2PrivateKey()}
	if r := h.post(id, st, "assertion.check", map[string]string{"origin": p.origin, "assertion": p.build(t)}); r.status != 400 {
		t.Errorf("origin outside the list = %d, want 400", r.status)
	}
	p.origin = "https://app.localhost:8443"
	if r := h.post(id, st, "assertion.check", map[string]string{"origin": p.origin, "assertion": p.build(t)}); r.status != 200 {
		t.Errorf("listed origin = %d %s, want 200", r.status, r.raw)
	}
}
