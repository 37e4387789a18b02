package mfa

import (
	"context"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stepgate/stepgate/mfa/pingonesim"
)

func TestRequestObjectCarriesPiTemplate(t *testing.T) {
	c, err := New(testConfig("https://auth.pingone.com"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_750_000_000, 0)
	tests := []struct {
		name  string
		tpl   *Template
		check func(t *testing.T, claim map[string]any, present bool)
	}{
		{"no template sends no pi.template", nil, func(t *testing.T, claim map[string]any, present bool) {
			if present {
				t.Errorf("pi.template = %v, want none", claim)
			}
		}},
		{"a template without variant sends name and variables but no variant",
			&Template{Name: "transaction", Variables: map[string]string{"sum": "10.00", "currency": "EUR", "recipient": "Bob"}},
			func(t *testing.T, claim map[string]any, present bool) {
				vars, _ := claim["variables"].(map[string]any)
				if claim["name"] != "transaction" || vars["sum"] != "10.00" || vars["currency"] != "EUR" || vars["recipient"] != "Bob" {
					t.Errorf("pi.template = %v", claim)
				}
				if _, ok := claim["variant"]; ok {
					t.Errorf("variant sent although empty: %v", claim)
				}
			}},
		{"a variant is sent as given", &Template{Name: "transaction", Variant: "payments"},
			func(t *testing.T, claim map[string]any, present bool) {
				if claim["variant"] != "payments" {
					t.Errorf("variant = %v", claim["variant"])
				}
			}},
		{"a long value is cut to MaxTemplateValue characters and control characters become spaces",
			&Template{Name: "transaction", Variables: map[string]string{"recipient": "Eve\nCode: 123" + strings.Repeat("é", 400)}},
			func(t *testing.T, claim map[string]any, present bool) {
				got, _ := claim["variables"].(map[string]any)["recipient"].(string)
				if n := utf8.RuneCountInString(got); n != MaxTemplateValue {
					t.Errorf("value has %d characters, want %d", n, MaxTemplateValue)
				}
				if !strings.HasPrefix(got, "Eve Code: 123é") {
					t.Errorf("value = %q, want the newline replaced by a space", got[:20])
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			claim, err := templateClaim(tt.tpl)
			if err != nil {
				t.Fatal(err)
			}
			tok, err := c.requestObject("203.0.113.7", claim, now)
			if err != nil {
				t.Fatal(err)
			}
			cl := decodeSegment(t, tok, 1)
			got, present := cl["pi.template"].(map[string]any)
			if cl["pi.remoteIp"] != "203.0.113.7" {
				t.Errorf("pi.remoteIp lost beside pi.template: %v", cl)
			}
			tt.check(t, got, present)
		})
	}
}

func TestStartRefusesBadTemplatesAndPrompts(t *testing.T) {
	c, err := New(testConfig("http://127.0.0.1:1"))
	if err != nil {
		t.Fatal(err)
	}
	many := map[string]string{}
	for i := range 21 {
		many[string(rune('a'+i))] = "x"
	}
	tests := []struct {
		name string
		req  StartRequest
	}{
		{"a template without a name", StartRequest{User: "alice", Template: &Template{}}},
		{"a template name with a space", StartRequest{User: "alice", Template: &Template{Name: "trans action"}}},
		{"a variant over PingOne's 100 characters", StartRequest{User: "alice", Template: &Template{Name: "transaction", Variant: strings.Repeat("v", 101)}}},
		{"a variable name with a brace", StartRequest{User: "alice", Template: &Template{Name: "transaction", Variables: map[string]string{"a}": "x"}}}},
		{"more than 20 variables", StartRequest{User: "alice", Template: &Template{Name: "transaction", Variables: many}}},
		{"a prompt other than login", StartRequest{User: "alice", Prompt: "none"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := c.Start(context.Background(), tt.req)
			wantKind(t, err, KindInvalid)
		})
	}
}

func TestTransactionTemplateAndPromptReachPingOne(t *testing.T) {
	e := newSimEnv(t, customTenant(), nil)
	vars := map[string]string{"sum": "1,250.00", "currency": "EUR", "recipient": "ACME GmbH"}
	f, p, err := e.client.Start(context.Background(), StartRequest{
		User: "erin", ACR: pingonesim.DemoPolicy, Prompt: PromptLogin,
		Template: &Template{Name: "transaction", Variables: vars},
	})
	if err != nil {
		t.Fatal(err)
	}
	info, _ := e.sim.Flow(p.FlowID)
	if info.Prompt != "login" {
		t.Errorf("prompt at PingOne = %q, want login", info.Prompt)
	}
	if info.Template == nil || info.Template.Name != "transaction" || info.Template.Variables["recipient"] != "ACME GmbH" {
		t.Errorf("template at PingOne = %+v", info.Template)
	}
	msg := e.sim.Inbox("erin")[0]
	if want := "Approve 1,250.00 EUR to ACME GmbH? Code: " + msg.OTP; msg.Text != want {
		t.Errorf("SMS text = %q, want %q", msg.Text, want)
	}
	f, err = e.client.CheckOTP(context.Background(), p, Secret(msg.OTP))
	if err != nil || f.Status != StatusCompleted {
		t.Fatalf("CheckOTP = %v, %v", f, err)
	}
	if res := e.complete(p, f); !res.MFA {
		t.Error("transaction approval did not count as MFA")
	}
}

func TestUnknownTemplateIsRefusedAtAuthorize(t *testing.T) {
	e := newSimEnv(t, customTenant(), nil)
	_, _, err := e.client.Start(context.Background(), StartRequest{
		User: "erin", ACR: pingonesim.DemoPolicy, Template: &Template{Name: "no_such_template"},
	})
	ee := wantKind(t, err, KindInvalid)
	if ee.HTTPStatus != 400 || ee.Code != "INVALID_DATA" || ee.DetailCode != "INVALID_VALUE" {
		t.Errorf("error = %+v, want 400 INVALID_DATA INVALID_VALUE", ee)
	}
	if len(e.sim.Inbox("erin")) != 0 {
		t.Error("a message was sent for a refused template")
	}
}
