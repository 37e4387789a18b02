package rules

import (
	"strings"
	"testing"
	"time"
)

func TestApproveRuleParsesEveryOption(t *testing.T) {
	s, err := Parse("STEPGATE_RULES",
		"POST /payments/transfer approve show=Amount:form.amount,Payee:json./payee/name,Ref:query.ref,Where:path,How:method "+
			"template=transaction variant=eur vars=sum:form.amount,recipient:json./payee/name ttl=2m acr=Txn-Policy", defaults)
	if err != nil {
		t.Fatal(err)
	}
	r := s.Match("POST", "/payments/transfer")
	if r.Action != Approve {
		t.Fatalf("action = %s, want approve", r.Action)
	}
	wantShow := []Field{
		{"Amount", Source{FromForm, "amount"}}, {"Payee", Source{FromJSON, "/payee/name"}},
		{"Ref", Source{FromQuery, "ref"}}, {"Where", Source{Kind: FromPath}}, {"How", Source{Kind: FromMethod}},
	}
	if len(r.Show) != len(wantShow) {
		t.Fatalf("show = %v, want %v", r.Show, wantShow)
	}
	for i := range wantShow {
		if r.Show[i] != wantShow[i] {
			t.Errorf("show[%d] = %v, want %v", i, r.Show[i], wantShow[i])
		}
	}
	if r.Template != "transaction" || r.Variant != "eur" || r.TTL != 2*time.Minute || r.ACR != "Txn-Policy" {
		t.Errorf("rule = %+v", r)
	}
	if len(r.Vars) != 2 || r.Vars[0].Label != "sum" || r.Vars[1].From != (Source{FromJSON, "/payee/name"}) {
		t.Errorf("vars = %v", r.Vars)
	}
	// The canonical form parses back to the same rule.
	again, err := Parse("x", r.String(), defaults)
	if err != nil {
		t.Fatalf("re-parse %q: %v", r.String(), err)
	}
	if got := again.Match("POST", "/payments/transfer").String(); got != r.String() {
		t.Errorf("round trip = %q, want %q", got, r.String())
	}
}

func TestApproveRuleAPIMode(t *testing.T) {
	tests := []struct {
		name, text string
		want       APIMode
	}{
		{"an approve rule answers programs with a URL by default", "POST /pay approve", APIURL},
		{"api=url is the default spelled out", "POST /pay approve api=url", APIURL},
		{"api=decoupled asks the phone", `POST /pay approve api=decoupled title="Pay"`, APIDecoupled},
		{"a quoted mode reads the same", `POST /pay approve api="decoupled"`, APIDecoupled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Parse("x", tt.text, defaults)
			if err != nil {
				t.Fatal(err)
			}
			r := s.Match("POST", "/pay")
			if r.API != tt.want {
				t.Fatalf("api = %v, want %v", r.API, tt.want)
			}
			again, err := Parse("x", r.String(), defaults)
			if err != nil || again.Match("POST", "/pay").String() != r.String() || again.Match("POST", "/pay").API != tt.want {
				t.Fatalf("round trip of %q: %v", r.String(), err)
			}
		})
	}
}

func TestApproveRuleDefaults(t *testing.T) {
	d := defaults
	d.ACR = "Default-Policy"
	s, err := Parse("x", "DELETE /users/ approve", d)
	if err != nil {
		t.Fatal(err)
	}
	r := s.Match("DELETE", "/users/42")
	if r.Action != Approve || r.TTL != DefaultApproveTTL || r.ACR != "Default-Policy" || r.MaxAge != 0 {
		t.Fatalf("rule = %+v", r)
	}
	if got := s.Match("GET", "/users/42"); got.Action == Approve {
		t.Fatal("a DELETE approve rule matched GET")
	}
}

func TestApproveRuleErrorsNameTheToken(t *testing.T) {
	tests := []struct{ name, text, want string }{
		{"an approve rule without methods is refused", "/pay approve", "must list their methods"},
		{"an approve rule on GET only is refused", "GET /pay approve", "GET is not an action"},
		{"an approve rule on GET and HEAD is refused", "GET,HEAD /pay approve", "GET is not an action"},
		{"an approve rule mixing GET with POST is refused", "GET,POST /pay approve", "GET is not an action"},
		{"an approve rule on OPTIONS is refused", "POST,OPTIONS /pay approve", "OPTIONS is not an action"},
		{"an unknown source is refused", "POST /pay approve show=Amount:header.x", `source "header.x": unknown`},
		{"a json source without a pointer is refused", "POST /pay approve show=A:json.amount", "starts with /"},
		{"a bad pointer escape is refused", "POST /pay approve show=A:json./a~2b", "RFC 6901"},
		{"vars without template are refused", "POST /pay approve vars=sum:form.amount", "need template=NAME"},
		{"a variant without template is refused", "POST /pay approve variant=x", "need template=NAME"},
		{"a label with a space-like char is refused", "POST /pay approve show=A+B:form.a", `label "A+B"`},
		{"a variable with a dash is refused", "POST /pay approve template=t vars=a-b:form.a", `variable "a-b"`},
		{"a field without a source is refused", "POST /pay approve show=Amount", "want LABEL:SOURCE"},
		{"a repeated label is refused", "POST /pay approve show=A:form.a,A:form.b", "listed twice"},
		{"an empty form name is refused", "POST /pay approve show=A:form.", "1 to 256"},
		{"max_age on approve is refused", "POST /pay approve max_age=5m", "ttl, not max_age"},
		{"a ttl under 10s is refused", "POST /pay approve ttl=1s", "between 10s"},
		{"a ttl over 30m is refused", "POST /pay approve ttl=1h", "between 10s"},
		{"show on an mfa rule is refused", "/pay mfa show=A:form.a", "approve option"},
		{"ttl on an allow rule is refused", "/pay allow ttl=1m", "only allowed on mfa and approve"},
		{"an unknown approve option is refused", "POST /pay approve shwo=A:form.a", `unknown key "shwo"`},
		{"a template name with a space-like char is refused", "POST /pay approve template=a/b", "only letters"},
		{"an unknown api mode is refused", "POST /pay approve api=ciba", "url (the default"},
		{"api in capitals is refused", "POST /pay approve api=Decoupled", "url (the default"},
		{"api twice is refused", "POST /pay approve api=url api=decoupled", "duplicate api"},
		{"api on an mfa rule is refused", "/pay mfa api=decoupled", "approve option"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("STEPGATE_RULES", tt.text, defaults)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "line 1") {
				t.Fatalf("Parse(%q) error = %v, want one naming line 1 and containing %q", tt.text, err, tt.want)
			}
		})
	}
}
