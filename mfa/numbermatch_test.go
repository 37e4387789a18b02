package mfa

import (
	"context"
	"testing"

	"github.com/stepgate/stepgate/mfa/pingonesim"
)

func TestDecodePushNumber(t *testing.T) {
	tests := []struct{ name, body, want string }{
		{"a string number is kept", `{"id":"f","status":"PUSH_CONFIRMATION_REQUIRED","numberMatching":{"type":"SELECT_NUMBER","number":"47"}}`, "47"},
		{"an integer number is kept", `{"id":"f","status":"PUSH_CONFIRMATION_REQUIRED","numberMatching":{"number":7}}`, "7"},
		{"no numberMatching means no number", `{"id":"f","status":"PUSH_CONFIRMATION_REQUIRED"}`, ""},
		{"a number with letters is dropped", `{"id":"f","status":"PUSH_CONFIRMATION_REQUIRED","numberMatching":{"number":"4<b>7"}}`, ""},
		{"a negative number is dropped", `{"id":"f","status":"PUSH_CONFIRMATION_REQUIRED","numberMatching":{"number":-4}}`, ""},
		{"a number longer than 8 digits is dropped", `{"id":"f","status":"PUSH_CONFIRMATION_REQUIRED","numberMatching":{"number":"123456789"}}`, ""},
		{"a numberMatching of the wrong type is ignored", `{"id":"f","status":"PUSH_CONFIRMATION_REQUIRED","numberMatching":"47"}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := decodeFlow([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if f.PushNumber != tt.want {
				t.Errorf("PushNumber = %q, want %q", f.PushNumber, tt.want)
			}
		})
	}
}

func TestPushNumberMatchingAgainstTheSimulator(t *testing.T) {
	tenant := customTenant()
	tenant.Policies[0].NumberMatching = pingonesim.NumberMatchingSelect
	e := newSimEnv(t, tenant, nil)
	f, p := e.start("bob")
	if f.Status != StatusPushConfirmationRequired || len(f.PushNumber) != 2 {
		t.Fatalf("flow = %+v, want a push with a two-digit number", f)
	}
	if f, _ = e.client.Read(context.Background(), p); f.PushNumber == "" {
		t.Error("a re-read lost the number")
	}
	if err := e.sim.PushNumber(p.FlowID, f.PushNumber); err != nil {
		t.Fatal(err)
	}
	f, err := e.client.Read(context.Background(), p)
	if err != nil || f.Status != StatusCompleted || f.PushNumber != "" {
		t.Fatalf("after the match: %+v, %v", f, err)
	}
	if res := e.complete(p, f); !res.MFA {
		t.Error("a number-matched push is not MFA")
	}
}
