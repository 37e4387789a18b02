package challenge

import (
	"bytes"
	"context"
	"html"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stepgate/stepgate/metrics"
	"github.com/stepgate/stepgate/proxy/approve"
	"github.com/stepgate/stepgate/proxy/rules"
	"github.com/stepgate/stepgate/session"
)

// heldApprovals holds one request under the reference "ref".
type heldApprovals struct{ held approve.Held }

func (a *heldApprovals) Open(_ context.Context, ref string) (*approve.Held, error) {
	if ref != "ref" {
		return nil, approve.ErrBadRef
	}
	h := a.held
	return &h, nil
}
func (*heldApprovals) ApproveAs(context.Context, string, *approve.Held, string) error { return nil }
func (*heldApprovals) Forget(context.Context, string)                                 {}

var heldAt = time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC)

// payment is a held payment as the approve gate keeps it for the rule
// payRules names.
func payment() approve.Held {
	return approve.Held{
		Request: approve.Request{User: "alice", Method: "POST", Path: "/payments/transfer", Match: "/payments/transfer"},
		Show:    []approve.Shown{{Label: "Amount", Value: "500", Found: true}, {Label: "Payee", Value: "ACME GmbH", Found: true}},
		Vars:    map[string]string{"sum": "500", "currency": "EUR", "recipient": "ACME GmbH"},
		Tmpl:    "transaction", TTL: 5 * time.Minute, Created: heldAt,
	}
}

const payRules = `POST /payments/transfer approve title="Send a payment" show=Amount:form.amount,Payee:form.payee ` +
	`template=transaction vars=sum:form.amount,currency:form.currency,recipient:form.payee ` +
	`message="Approve ${sum} ${currency} to ${recipient}?" ttl=5m; ` +
	`POST /files/ approve show=Name:form.name; ` +
	`POST /plain approve template=transaction vars=sum:form.amount`

// approvalPage renders the challenge page of a browser whose flow waits
// for the approval of held, with the rules of text and the clock at now.
func approvalPage(t *testing.T, text string, held approve.Held, now time.Time) string {
	t.Helper()
	set, err := rules.Parse("test", text, rules.Defaults{Action: rules.Allow})
	if err != nil {
		t.Fatal(err)
	}
	clock := func() time.Time { return now }
	store, err := session.NewStore(session.Options{Keys: [][]byte{bytes.Repeat([]byte{7}, 32)}, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	pages, err := NewPages("")
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(Config{
		PingOne:   startOnlyPingOne{},
		Store:     store,
		Approvals: &heldApprovals{held: held},
		RuleFor: func(method, ret string) rules.Rule {
			return set.Match(method, strings.SplitN(ret, "?", 2)[0])
		},
		Pages:   pages,
		Logger:  slog.New(slog.DiscardHandler),
		Metrics: metrics.New(prometheus.NewRegistry(), "test"),
		Now:     clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	f := session.Flow{User: "alice", CSRF: bytes.Repeat([]byte{9}, 32), ReturnPath: held.Path, Created: now, Approval: "ref"}
	if err := store.SaveFlow(rec, f); err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodGet, "http://gw.example"+PathChallenge, nil)
	r.Header.Set("Accept", "text/html")
	r.AddCookie(rec.Result().Cookies()[0])
	w := httptest.NewRecorder()
	h.Serve(w, r, "alice", netip.MustParseAddr("192.0.2.1"))
	if w.Code != http.StatusOK {
		t.Fatalf("page answered %d:\n%s", w.Code, w.Body)
	}
	return w.Body.String()
}

func TestApprovalPageSaysWhatIsApproved(t *testing.T) {
	tests := []struct {
		name       string
		held       func() approve.Held
		want, lack []string
	}{
		{"a rule's title heads the page and its message is the sentence, with the held values", payment,
			[]string{
				"<title>Send a payment · stepgate</title>", "<h1>Send a payment</h1>",
				`<p class="approval-message" id="approval-message">Approve <strong>500</strong> <strong>EUR</strong> to <strong>ACME GmbH</strong>?</p>`,
				"<dt>Amount</dt><dd>500</dd><dt>Payee</dt><dd>ACME GmbH</dd>",
				`<p class="approval-detail" id="approval-detail">Request: <span class="approval-method">POST</span> <span class="approval-path">/payments/transfer</span></p>`,
				`<p class="approval-valid" id="approval-valid">You have 5 minutes to approve this.</p>`,
			},
			[]string{"You are about to send", "Approve this action"}},
		{"a value the request did not give reads as not given in the sentence",
			func() approve.Held { h := payment(); h.Vars["recipient"] = ""; return h },
			[]string{`to <span class="missing">(not given)</span>?</p>`}, nil},
		{"a rule without title or message leads with the catalogue's heading and the request's details",
			func() approve.Held {
				h := payment()
				h.Path, h.Match, h.Show, h.Vars, h.Tmpl = "/files/a", "/files/a", []approve.Shown{{Label: "Name", Value: "a", Found: true}}, nil, ""
				return h
			},
			[]string{"<h1>Approve this action</h1>", `Request: <span class="approval-method">POST</span> <span class="approval-path">/files/a</span>`, "You have 5 minutes"},
			[]string{"approval-message"}},
		{"a rule that no longer names the held template gives no title or sentence",
			func() approve.Held { h := payment(); h.Tmpl = "other"; return h },
			[]string{"<h1>Approve this action</h1>", `<span class="approval-path">/payments/transfer</span>`},
			[]string{"Send a payment", "approval-message"}},
		{"a rule with a template and no message shows no sentence",
			func() approve.Held { h := payment(); h.Path, h.Match = "/plain", "/plain"; return h },
			[]string{"<h1>Approve this action</h1>"}, []string{"approval-message"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := approvalPage(t, payRules, tt.held(), heldAt)
			for _, want := range tt.want {
				if !strings.Contains(body, want) {
					t.Errorf("page lacks %q:\n%s", want, body)
				}
			}
			for _, lack := range tt.lack {
				if strings.Contains(body, lack) {
					t.Errorf("page has %q", lack)
				}
			}
		})
	}
}

func TestApprovalPageSaysHowLongIsLeft(t *testing.T) {
	tests := []struct {
		name  string
		after time.Duration
		want  string
	}{
		{"at once it is the rule's ttl", 0, "You have 5 minutes to approve this."},
		{"a moment later it is still the ttl", 3 * time.Second, "You have 5 minutes to approve this."},
		{"later it is the whole minutes left", 90 * time.Second, "You have 3 minutes to approve this."},
		{"under two minutes it counts seconds", 3*time.Minute + 10*time.Second, "You have 110 seconds to approve this."},
		{"a part of a second is one second", 5*time.Minute - 500*time.Millisecond, "You have 1 second to approve this."},
		{"after the ttl the time is up", 5*time.Minute + time.Second, "The time to approve this has run out."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := approvalPage(t, payRules, payment(), heldAt.Add(tt.after))
			if want := `<p class="approval-valid" id="approval-valid">` + tt.want + "</p>"; !strings.Contains(body, want) {
				t.Errorf("page lacks %q:\n%s", want, body)
			}
		})
	}
}

func TestApprovalPageNamesInvisibleCharacters(t *testing.T) {
	// POST /files/%E2%80%AEexe.txt decodes to a path with a RIGHT-TO-LEFT
	// OVERRIDE, which a browser would render as "/files/txt.exe".
	h := payment()
	h.Path, h.Match = "/files/%E2%80%AEexe.txt", "/files/\u202eexe.txt"
	h.Show = []approve.Shown{{Label: "Name", Value: "a\u200bb\u2066c\U000e0041", Found: true}}
	h.Vars, h.Tmpl = nil, ""
	// Read as the browser reads it: html/template writes '+' as "&#43;",
	// and a character reference must not smuggle the raw character in.
	page := func(h approve.Held) string { return html.UnescapeString(approvalPage(t, payRules, h, heldAt)) }
	body := page(h)
	for _, c := range []string{"\u202e", "\u200b", "\u2066", "\U000e0041"} {
		if strings.Contains(body, c) {
			t.Errorf("the page holds the raw invisible character %q", c)
		}
	}
	for _, want := range []string{
		`<span class="approval-path">/files/⟨U+202E⟩exe.txt</span>`,
		"<dd>a⟨U+200B⟩b⟨U+2066⟩c⟨U+E0041⟩</dd>",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q:\n%s", want, body)
		}
	}

	// The sentence's values too.
	h = payment()
	h.Vars["recipient"] = "ACME\u202eHbmG"
	body = page(h)
	if strings.Contains(body, "\u202e") || !strings.Contains(body, "<strong>ACME⟨U+202E⟩HbmG</strong>") {
		t.Errorf("the sentence does not name the override in a value:\n%s", body)
	}

	// And the path being opened, should a raw one ever reach the flow.
	h = payment()
	h.Path = "/payments/transfer?x=\u202e"
	body = page(h)
	if strings.Contains(body, "\u202e") || !strings.Contains(body, `<dd id="opening">/payments/transfer?x=⟨U+202E⟩</dd>`) {
		t.Errorf("the opening line does not name the override:\n%s", body)
	}
}
