package signals

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stepgate/stepgate/proxy/identity"
	"github.com/stepgate/stepgate/store"
)

func TestWellKnownGoesBetweenTheHostAndTheIssuersPath(t *testing.T) {
	tests := []struct{ issuer, want string }{
		{"https://tr.example.com", "https://tr.example.com/.well-known/ssf-configuration"},
		{"https://tr.example.com/", "https://tr.example.com/.well-known/ssf-configuration"},
		{"https://idp.example.com/realms/acme", "https://idp.example.com/.well-known/ssf-configuration/realms/acme"},
	}
	for _, tt := range tests {
		if got, err := WellKnown(tt.issuer); err != nil || got != tt.want {
			t.Errorf("WellKnown(%q) = %q, %v; want %q", tt.issuer, got, err, tt.want)
		}
	}
	if _, err := WellKnown("not a url"); err == nil {
		t.Error("WellKnown accepted an issuer that is not a URL")
	}
}

type nopRevoker struct{}

func (nopRevoker) Revoke(_ context.Context, r store.Revocation) error { return nil }

func TestSubjectsMapToTheUpstreamUserOrThePingOneUser(t *testing.T) {
	const p1 = "https://auth.pingone.eu/env/as"
	s, err := NewSSF(SSFOptions{Issuer: "https://tr.example.com", Audience: "stepgate", PingOneIssuer: p1,
		UserIssuer: "https://idp.example.com", Transforms: []identity.Transform{identity.Lower, identity.StripDomain},
		Revoker: nopRevoker{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		sub  string
		want store.Revocation
		ok   bool
	}{
		{"an e-mail address is the upstream user after the transforms", `{"format":"email","email":"Alice@Example.com"}`, store.Revocation{User: "alice"}, true},
		{"an opaque id is the upstream user", `{"format":"opaque","id":"bob"}`, store.Revocation{User: "bob"}, true},
		{"a PingOne iss_sub is the step-up's subject", `{"format":"iss_sub","iss":"` + p1 + `","sub":"3B9E2C1A-4D5F-4A6B-8C7D-A11CE0000001"}`,
			store.Revocation{Subject: "3b9e2c1a-4d5f-4a6b-8c7d-a11ce0000001"}, true},
		{"an iss_sub of the identity issuer is the upstream user", `{"format":"iss_sub","iss":"https://idp.example.com","sub":"carol"}`, store.Revocation{User: "carol"}, true},
		{"a complex subject's user counts", `{"format":"complex","user":{"format":"opaque","id":"dave"}}`, store.Revocation{User: "dave"}, true},
		{"a PingOne iss_sub that is no user id is refused", `{"format":"iss_sub","iss":"` + p1 + `","sub":"alice"}`, store.Revocation{}, false},
		{"an iss_sub of another issuer is refused", `{"format":"iss_sub","iss":"https://x.example","sub":"alice"}`, store.Revocation{}, false},
		{"a complex subject without a user is refused", `{"format":"complex","session":{"format":"opaque","id":"s"}}`, store.Revocation{}, false},
		{"a nested complex subject is refused", `{"format":"complex","user":{"format":"complex","user":{"format":"opaque","id":"x"}}}`, store.Revocation{}, false},
		{"a phone number is refused", `{"format":"phone_number","phone_number":"+12065550100"}`, store.Revocation{}, false},
		{"an empty e-mail is refused", `{"format":"email","email":""}`, store.Revocation{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, e := s.subject(securityEvent{SubID: json.RawMessage(tt.sub)}, CAEPSessionRevoked)
			if (e == nil) != tt.ok || got != tt.want {
				t.Errorf("got %+v, %v; want %+v, ok %v", got, e, tt.want, tt.ok)
			}
			if e != nil && (e.err != "invalid_request" || e.reason != "unknown_subject") {
				t.Errorf("refusal %+v, want invalid_request unknown_subject", e)
			}
		})
	}
}

func TestSeenIDsAddIfAbsentTakesAnIDOnce(t *testing.T) {
	s := newSeenIDs(10, time.Hour, time.Now)
	if !s.addIfAbsent("a") || s.addIfAbsent("a") {
		t.Fatal("addIfAbsent took an id twice, or not at all")
	}
	s.remove("a")
	if !s.addIfAbsent("a") {
		t.Fatal("a removed id cannot be taken again")
	}
}
