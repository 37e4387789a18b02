package proxy

import (
	"context"
	"log/slog"
	"testing"
)

func TestDecideOverADescriptionOfTheRequest(t *testing.T) {
	e := newBenchEnv(t, slog.LevelWarn)
	for _, tt := range []struct {
		name           string
		method, target string
		user           string // X-Forwarded-User
		peer           string
		stepUp         bool
		extra          []string
		want           Verdict
		label          string
		withHeaders    bool
		removed        int
	}{
		{"a stepped-up user on an mfa path is forwarded with the step-up", "GET", "/admin/x", "alice", "127.0.0.1:1", true, nil, Forward, decisionStepUp, true, 0},
		{"an mfa path without a step-up needs one", "GET", "/admin/x", "alice", "127.0.0.1:1", false, nil, StepUpRequired, decisionRequired, false, 0},
		{"another user's step-up is none", "GET", "/admin/x", "bob", "127.0.0.1:1", true, nil, StepUpRequired, decisionRequired, false, 0},
		{"an mfa path without identity is not a prompt", "GET", "/admin/x", "", "127.0.0.1:1", true, nil, NoIdentity, decisionNoIdent, false, 0},
		{"the identity from an untrusted peer is not believed", "GET", "/admin/x", "alice", "192.0.2.9:1", true, nil, NoIdentity, decisionNoIdent, false, 0},
		{"an allow path is forwarded, with the step-up when there is one", "GET", "/public", "alice", "127.0.0.1:1", true, nil, Forward, decisionAllow, true, 0},
		{"an allow path without a step-up has no step-up headers", "GET", "/public", "alice", "127.0.0.1:1", false, nil, Forward, decisionAllow, false, 0},
		{"deny", "GET", "/blocked", "alice", "127.0.0.1:1", true, nil, Deny, decisionDeny, false, 0},
		{"a dot segment is rejected", "GET", "/public/../admin/x", "alice", "127.0.0.1:1", true, nil, Reject, decisionRejected, false, 0},
		{"an encoded slash is rejected", "GET", "/admin%2fx", "alice", "127.0.0.1:1", true, nil, Reject, decisionRejected, false, 0},
		{"OPTIONS * is about the server", "OPTIONS", "*", "", "127.0.0.1:1", false, nil, Asterisk, decisionInternal, false, 0},
		{"stepgate's own path in any case is internal", "GET", "/.STEPGATE/challenge", "alice", "127.0.0.1:1", false, nil, Internal, decisionInternal, false, 0},
		{"spoofed spellings are removed and named", "GET", "/public", "alice", "127.0.0.1:1", false,
			[]string{"X-Stepgate-User", "admin", "X_Stepgate_User", "admin", "X_Forwarded_User", "root"}, Forward, decisionAllow, false, 3},
		{"look-alike framing headers are removed and named (a front door must drop them too)", "GET", "/public", "alice", "127.0.0.1:1", false,
			[]string{"Transfer_Encoding", "chunked", "Content.Length", "5"}, Forward, decisionAllow, false, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := e.request("/", tt.stepUp).Header
			h.Del("X-Forwarded-User")
			if tt.user != "" {
				h.Set("X-Forwarded-User", tt.user)
			}
			for i := 0; i+1 < len(tt.extra); i += 2 {
				h[tt.extra[i]] = []string{tt.extra[i+1]}
			}
			d := e.gw.Decide(context.Background(), Request{Method: tt.method, Target: tt.target, Host: "app", Header: h, Peer: tt.peer})
			if d.Verdict != tt.want || d.Label != tt.label {
				t.Fatalf("verdict %d %q, want %d %q", d.Verdict, d.Label, tt.want, tt.label)
			}
			if (d.StepUp != nil) != tt.withHeaders {
				t.Errorf("step-up %v, want %v", d.StepUp != nil, tt.withHeaders)
			}
			if len(d.Removed) != tt.removed {
				t.Errorf("removed %v, want %d names", d.Removed, tt.removed)
			}
			for name := range h {
				if foldedEqual(name, HeaderUser) {
					t.Errorf("%s left in the headers", name)
				}
			}
		})
	}
}

func TestACRSatisfies(t *testing.T) {
	for _, tt := range []struct {
		got, want string
		ok        bool
	}{
		{"MFA-Only", "", true},
		{"MFA-Only", "MFA-Only", true},
		{"MFA-Only", "Single_Factor MFA-Only", true},
		{"MFA-Only", "MFA-Only Single_Factor", true},
		{"MFA-Only", "MFA", false},
		{"MFA", "MFA-Only", false},
		{"", "MFA-Only", false},
		// acr_values is a space-separated list: a policy name with a
		// space in it is two names, and neither is the step-up's.
		{"MFA Only", "MFA Only", false},
		{"MFA\tOnly", "MFA\tOnly", false},
	} {
		if got := acrSatisfies(tt.got, tt.want); got != tt.ok {
			t.Errorf("acrSatisfies(%q, %q) = %v, want %v", tt.got, tt.want, got, tt.ok)
		}
	}
}
