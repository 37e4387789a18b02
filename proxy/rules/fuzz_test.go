package rules

import (
	"slices"
	"strings"
	"testing"

	"github.com/stepgate/stepgate/proxy/invisible"
)

// FuzzParseRules checks that Parse never panics, that every rule's String
// re-parses to the same rule, and that Match only ever returns a parsed rule
// or the default.
func FuzzParseRules(f *testing.F) {
	f.Add(benchPolicy, false)
	f.Add(benchPolicy, true)
	f.Add("GET,HEAD /admin/ mfa max_age=15m acr=MFA-Only # c\r\n/x deny;/y allow", true)
	for _, s := range []string{"/a mfa max_age=1h1m1s", "post /a/ MFA", "/a/b/c/ deny", "/ allow", "/a mfa acr=a:b/c", "/a mfa acr=A,B", "get /a mfa"} {
		f.Add(s, false)
	}
	// Quoted option values (approve rules' title and message).
	for _, s := range []string{
		`POST /pay approve title="Send a payment" template=transaction vars=sum:form.amount,currency:form.currency message="Approve ${sum} ${currency}?"`,
		`DELETE /u/ approve title=Delete show=User:path`,
		`DELETE /u/ approve api=decoupled show=User:path`, `POST /p approve api=url`, `POST /p approve api=Decoupled`,
		`POST /p approve api="decoupled" api=url`,
		`POST /p approve title="a""b"`, `POST /p approve title="a"b`, `POST /p approve title="a`, `POST /p approve t"itle="a b"`,
		`POST /p approve title="x; /y allow`, `POST /p approve title="x # y"`, `POST /p approve template=t message="${a"`,
		"POST /p approve title=\"a\u00a0b\"", "POST /p approve title=\"\u202eb\"", `POST /p approve show=A:form."a b"`,
	} {
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, text string, fold bool) {
		d := Defaults{Action: Allow, MaxAge: DefaultMaxAge, ACR: "MFA-Only", CaseInsensitive: fold}
		s, err := Parse("fuzz", text, d)
		if err != nil {
			return
		}
		for _, r := range s.Rules() {
			line := r.String()
			again, err := Parse("fuzz", line, d)
			if err != nil {
				t.Fatalf("String() %q of a parsed rule does not parse: %v", line, err)
			}
			rs := again.Rules()
			if len(rs) != 1 {
				t.Fatalf("String() %q parsed to %d rules, want 1", line, len(rs))
			}
			got := rs[0]
			if !slices.Equal(got.Methods, r.Methods) || got.Path != r.Path || got.Action != r.Action || got.MaxAge != r.MaxAge || got.ACR != r.ACR ||
				got.Title != r.Title || got.Message != r.Message || got.API != r.API || got.String() != line {
				t.Fatalf("String() %q re-parsed to %+v, want %+v", line, got, r)
			}
			// Text shown on the page is visible and reads one way.
			for _, text := range []string{r.Title, r.Message} {
				if invisible.Has(text) || strings.ContainsAny(text, "\"\\;#") {
					t.Fatalf("rule %q kept text %q with an invisible or reserved character", line, text)
				}
			}
			if r.Message != "" {
				for _, p := range r.MessageParts() {
					if p.Text == "" && !slices.ContainsFunc(r.Vars, func(f Field) bool { return f.Label == p.Var }) {
						t.Fatalf("rule %q: message placeholder ${%s} is not one of its vars", line, p.Var)
					}
				}
			}
			// Every rule matches its own path (HEAD-less GET rules included).
			m := "GET"
			if len(r.Methods) > 0 {
				m = r.Methods[0]
			}
			if got := s.Match(m, r.Path); got.Path == "" && got.Line == 0 {
				t.Fatalf("Match(%q, %q) fell to the default though rule %q exists", m, r.Path, r)
			}
			if strings.HasSuffix(r.Path, "/") && len(r.Path) > 1 {
				if got := s.Match(m, r.Path[:len(r.Path)-1]); got.Line == 0 {
					t.Fatalf("subtree rule %q does not match its root", r)
				}
			}
		}
	})
}
