package rules

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

var defaults = Defaults{Action: Allow, MaxAge: time.Hour, ACR: "MFA-Only"}

func mustParse(t testing.TB, text string, d Defaults) *Set {
	t.Helper()
	s, err := Parse("STEPGATE_RULES", text, d)
	if err != nil {
		t.Fatalf("Parse(%q): %v", text, err)
	}
	return s
}

// decision is the comparable part of a matched rule.
type decision struct {
	Action Action
	Path   string
	Line   int
}

func TestMatch(t *testing.T) {
	const policy = `
# the admin area needs a fresh step-up
/admin/ mfa max_age=15m
/admin/public allow
POST /admin/public mfa acr=Strong
GET,HEAD /reports/ mfa
/reports/ deny
/exact allow
/ deny
`
	s := mustParse(t, policy, defaults)
	tests := []struct {
		name, method, path string
		want               decision
	}{
		{"a subtree rule matches its root without the slash", "GET", "/admin", decision{MFA, "/admin/", 3}},
		{"a subtree rule matches its root with the slash", "GET", "/admin/", decision{MFA, "/admin/", 3}},
		{"a subtree rule matches below its root", "GET", "/admin/users/42", decision{MFA, "/admin/", 3}},
		{"a subtree rule does not match a longer sibling name", "GET", "/administrator", decision{Deny, "/", 9}},
		{"a longer exact rule wins over the subtree", "GET", "/admin/public", decision{Allow, "/admin/public", 4}},
		{"an exact rule does not match below itself", "GET", "/admin/public/x", decision{MFA, "/admin/", 3}},
		{"a rule with methods wins over the same path without", "POST", "/admin/public", decision{MFA, "/admin/public", 5}},
		{"a method rule applies to its listed methods", "HEAD", "/reports/q1", decision{MFA, "/reports/", 6}},
		{"other methods fall to the methodless rule", "DELETE", "/reports/q1", decision{Deny, "/reports/", 7}},
		{"a lower-case method cannot skip a method rule", "post", "/admin/public", decision{MFA, "/admin/public", 5}},
		{"an exact rule matches exactly", "GET", "/exact", decision{Allow, "/exact", 8}},
		{"an exact rule does not match with a trailing slash", "GET", "/exact/", decision{Deny, "/", 9}},
		{"the root subtree catches the rest", "GET", "/anything", decision{Deny, "/", 9}},
		{"paths are case-sensitive by default", "GET", "/ADMIN/x", decision{Deny, "/", 9}},
		{"OPTIONS * matches no rule path and gets the default", "OPTIONS", "*", decision{Allow, "", 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := s.Match(tt.method, tt.path)
			got := decision{r.Action, r.Path, r.Line}
			if got != tt.want {
				t.Errorf("Match(%q, %q) = %+v, want %+v", tt.method, tt.path, got, tt.want)
			}
		})
	}
}

func TestMatchFillsMFAOptions(t *testing.T) {
	s := mustParse(t, "/admin/ mfa max_age=15m; /pay/ mfa acr=Strong", defaults)
	tests := []struct {
		name, path string
		wantMaxAge time.Duration
		wantACR    string
	}{
		{"max_age overrides the default and acr is defaulted", "/admin/x", 15 * time.Minute, "MFA-Only"},
		{"acr overrides the default and max_age is defaulted", "/pay/x", time.Hour, "Strong"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := s.Match("GET", tt.path)
			if r.MaxAge != tt.wantMaxAge || r.ACR != tt.wantACR {
				t.Errorf("Match(%q) max_age=%s acr=%q, want %s %q", tt.path, r.MaxAge, r.ACR, tt.wantMaxAge, tt.wantACR)
			}
		})
	}
}

func TestACRLists(t *testing.T) {
	d := defaults
	d.ACR = "Multi_Factor  MFA-Only"
	s := mustParse(t, "/a/ mfa acr=Strong,Multi_Factor\n/b/ mfa", d)
	tests := []struct{ name, path, wantACR, wantString string }{
		{"a rule's comma list becomes acr_values", "/a/x", "Strong Multi_Factor", "/a/ mfa max_age=1h0m0s acr=Strong,Multi_Factor"},
		{"a space-separated default list is normalised", "/b/x", "Multi_Factor MFA-Only", "/b/ mfa max_age=1h0m0s acr=Multi_Factor,MFA-Only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := s.Match("GET", tt.path)
			if r.ACR != tt.wantACR || r.String() != tt.wantString {
				t.Errorf("Match(%q) acr=%q String()=%q, want %q %q", tt.path, r.ACR, r.String(), tt.wantACR, tt.wantString)
			}
		})
	}
}

func TestPromptLogin(t *testing.T) {
	s := mustParse(t, "/pay/ mfa prompt=login max_age=5m\n/a/ mfa", defaults)
	r := s.Match("POST", "/pay/x")
	if r.Prompt != "login" || r.String() != "/pay/ mfa max_age=5m0s acr=MFA-Only prompt=login" {
		t.Errorf("prompt=%q String()=%q", r.Prompt, r.String())
	}
	if again := mustParse(t, r.String(), defaults).Match("POST", "/pay/x"); again.Prompt != "login" {
		t.Errorf("String() does not re-parse to prompt=login: %+v", again)
	}
	if r := s.Match("GET", "/a/x"); r.Prompt != "" {
		t.Errorf("a rule without prompt has prompt %q", r.Prompt)
	}
}

func TestDefaultRule(t *testing.T) {
	s := mustParse(t, "", Defaults{Action: MFA, ACR: "X"})
	got := s.Match("GET", "/x")
	want := Rule{Action: MFA, MaxAge: DefaultMaxAge, ACR: "X", Source: "STEPGATE_RULES"}
	if got.Action != want.Action || got.MaxAge != want.MaxAge || got.ACR != want.ACR || got.Line != 0 || got.Source != want.Source {
		t.Errorf("default rule = %+v, want %+v", got, want)
	}
	if got, want := got.String(), "default mfa max_age=1h0m0s acr=X"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestCaseInsensitiveFolding(t *testing.T) {
	d := defaults
	d.CaseInsensitive = true
	s := mustParse(t, "/Admin/ mfa\n/admin/Public allow\n/Secret.ASPX deny", d)
	tests := []struct {
		name, path string
		want       Action
	}{
		{"an upper-case spelling reaches the mfa rule", "/ADMIN/x", MFA},
		{"a mixed-case root reaches the mfa rule", "/aDmIn", MFA},
		{"the rule spelling itself matches", "/Admin/", MFA},
		{"an exact rule folds too", "/secret.aspx", Deny},
		{"a longer allow rule still wins in any case", "/ADMIN/PUBLIC", Allow},
		{"a dotless i (upper-cases to I) cannot skip the rule", "/adm\u0131n/x", MFA},
		{"a dotted capital I (lower-cases to i) cannot skip the rule", "/ADM\u0130N", MFA},
		{"a long s (upper-cases to S) cannot skip the rule", "/\u017fecret.aspx", Deny},
		{"an unrelated non-ASCII letter does not match", "/adm\u00edn/x", Allow},
		{"a longer sibling name does not match", "/ADMINISTRATOR", Allow},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := s.Match("GET", tt.path).Action; got != tt.want {
				t.Errorf("Match(%q) = %s, want %s", tt.path, got, tt.want)
			}
		})
	}
	k := mustParse(t, "/kiosk/ deny", d)
	if got := k.Match("GET", "/\u212aiosk/x").Action; got != Deny {
		t.Errorf("Kelvin sign spelling of /kiosk/ = %s, want deny", got)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, text string
		want       string // substring of the error
	}{
		{"an unknown action names line and token", "/a allow;/b deny;/c mfaa", `STEPGATE_RULES line 3: unknown action "mfaa"`},
		{"file lines are counted by newline", "/a allow\n\n# c\n/b nope", `STEPGATE_RULES line 4: unknown action "nope"`},
		{"a missing action is an error", "/a", `line 1: missing action`},
		{"a missing path is an error", "GET", `line 1: missing path`},
		{"a path must start with a slash", "GET admin mfa", `line 1: path "admin": must start with /`},
		{"a dot-dot segment in a rule is refused", "/a/../b mfa", `"/a/../b": dot segment`},
		{"a dot segment in a rule is refused", "/./admin/ mfa", `dot segment`},
		{"an empty segment in a rule is refused", "/admin//x mfa", `empty path segment`},
		{"a percent-escape in a rule is refused", "/admin%2f mfa", `percent-escapes`},
		{"a query in a rule is refused", "/admin?x mfa", `percent-escapes and '?'`},
		{"a wildcard is refused rather than matched literally", "/admin/* mfa", `wildcards are not supported`},
		{"a backslash in a rule is refused", `/admin\x mfa`, `raw backslash`},
		{"a semicolon splits the rule and leaves half a rule", "/a;b mfa", `line 1: missing action`},
		{"options on allow are refused", "/a allow max_age=1m", `options are only allowed on mfa and approve rules`},
		{"options on deny are refused", "/a deny acr=x", `options are only allowed on mfa and approve rules`},
		{"an unknown option key is refused", "/a mfa maxage=1m", `unknown key "maxage"`},
		{"a duplicated option is refused", "/a mfa max_age=1m max_age=2m", `duplicate max_age`},
		{"an option without = is refused", "/a mfa strict", `want key=value`},
		{"a bad duration is refused", "/a mfa max_age=1d", `not a duration`},
		{"a zero max_age is refused", "/a mfa max_age=0s", `must be > 0`},
		{"a negative max_age is refused", "/a mfa max_age=-1m", `must be > 0`},
		{"a max_age over a day is refused", "/a mfa max_age=25h", `<= 24h0m0s`},
		{"an empty acr is refused", "/a mfa acr=", `must be 1 to 128`},
		{"a prompt other than login is refused", "/a mfa prompt=none", `the only prompt is login`},
		{"prompt on allow is refused", "/a allow prompt=login", `options are only allowed on mfa and approve rules`},
		{"an acr with a quote is refused", `/a mfa acr=a"b`, `may only open an option's value`},
		{"a quoted acr is refused", `/a mfa acr="a"`, `only visible ASCII`},
		{"an empty name in an acr list is refused", "/a mfa acr=A,,B", `must be 1 to 128`},
		{"a repeated name in an acr list is refused", "/a mfa acr=A,A", `listed twice`},
		{"an invalid method token is refused", "GE(T /a mfa", `method "GE(T": not a method token`},
		{"an empty method is refused", "GET,,POST /a mfa", `empty method`},
		{"a duplicated method is refused", "GET,get /a mfa", `listed twice`},
		{"the same path twice without methods is refused", "/a allow\n/a mfa", `line 2: "/a" overlaps line 1`},
		{"overlapping methods on one path are refused", "GET,POST /a allow\nPOST /a mfa", `line 2: "/a" overlaps line 1`},
		{"paths equal after folding collide when folding", "/Admin/ allow\n/admin/ mfa", `overlaps line 1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := defaults
			d.CaseInsensitive = strings.Contains(tt.name, "folding")
			_, err := Parse("STEPGATE_RULES", tt.text, d)
			if err == nil {
				t.Fatalf("Parse(%q) = nil error, want one containing %q", tt.text, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse(%q) error = %q, want it to contain %q", tt.text, err, tt.want)
			}
		})
	}
}

func TestParseAccepts(t *testing.T) {
	tests := []struct{ name, text string }{
		{"different methods on one path are fine", "GET /a allow\nPOST /a mfa\n/a deny"},
		{"a subtree and its root exact are different paths", "/a/ mfa\n/a allow"},
		{"an upper-case action is accepted", "/a MFA"},
		{"lower-case methods are upper-cased", "get /a allow"},
		{"CRLF line ends are accepted", "/a allow\r\n/b deny\r\n"},
		{"a trailing comment is ignored", "/a allow # /b deny"},
		{"tabs separate fields", "GET\t/a\tmfa\tmax_age=5m"},
		{"the case differs so no collision when not folding", "/Admin/ allow\n/admin/ mfa"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse("rules.txt", tt.text, defaults); err != nil {
				t.Errorf("Parse(%q): %v", tt.text, err)
			}
		})
	}
}

func TestRulesOrderAndString(t *testing.T) {
	s := mustParse(t, "/ deny; GET /admin/ mfa acr=Strong; /admin/ mfa; /admin/x allow; post,HEAD /api allow", defaults)
	var got []string
	for _, r := range s.Rules() {
		got = append(got, fmt.Sprintf("%d %s", r.Line, r))
	}
	want := []string{
		"4 /admin/x allow",
		"2 GET /admin/ mfa max_age=1h0m0s acr=Strong # and HEAD",
		"3 /admin/ mfa max_age=1h0m0s acr=MFA-Only",
		"5 POST,HEAD /api allow",
		"1 / deny",
	}
	if !slices.Equal(got, want) {
		t.Errorf("Rules() =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	s.Rules()[0].Methods = append(s.Rules()[0].Methods, "X")
	if m := s.Match("POST", "/api").Methods; !slices.Equal(m, []string{"POST", "HEAD"}) {
		t.Errorf("modifying Rules() changed the set: methods = %v", m)
	}
}

func TestGetImpliesHead(t *testing.T) {
	s := mustParse(t, "GET /admin/ mfa", defaults)
	for _, m := range []string{"HEAD", "head", "GET"} {
		if got := s.Match(m, "/admin/x").Action; got != MFA {
			t.Errorf("%s on a GET rule = %s, want mfa (frameworks serve HEAD with the GET handler)", m, got)
		}
	}
	if got := s.Match("POST", "/admin/x").Action; got != Allow {
		t.Errorf("POST on a GET rule = %s, want the default (allow)", got)
	}
	if _, err := Parse("STEPGATE_RULES", "GET /x mfa; HEAD /x allow", defaults); err == nil {
		t.Error("a GET rule and a HEAD rule on one path were accepted; they overlap")
	}
}

func TestParseAction(t *testing.T) {
	for _, a := range []Action{Allow, Deny, MFA} {
		got, err := ParseAction(a.String())
		if err != nil || got != a {
			t.Errorf("ParseAction(%q) = %v, %v; want %v", a.String(), got, err, a)
		}
	}
	if _, err := ParseAction("permit"); err == nil {
		t.Error(`ParseAction("permit") = nil error, want one`)
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	for _, fold := range []bool{false, true} {
		d := defaults
		d.CaseInsensitive = fold
		s := mustParse(t, benchPolicy, d)
		got := testing.AllocsPerRun(100, func() { s.Match("GET", "/admin/users/42") })
		if got != 0 {
			t.Errorf("fold=%v: Match allocations = %v, want 0", fold, got)
		}
	}
}

const benchPolicy = `/ allow
/admin/ mfa max_age=15m
/admin/public allow
POST /api/ mfa
/api/health allow
/static/ allow
/reports/ mfa
/billing/ mfa acr=Strong
/internal/ deny
GET,HEAD /downloads/ mfa
`

func BenchmarkMatch(b *testing.B) {
	for _, fold := range []bool{false, true} {
		d := defaults
		d.CaseInsensitive = fold
		s := mustParse(b, benchPolicy, d)
		b.Run(fmt.Sprintf("fold=%v", fold), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s.Match("GET", "/admin/users/42/settings")
			}
		})
	}
}

func TestSubtreeRuleIsLongerThanItsRootExactRule(t *testing.T) {
	s := mustParse(t, "/admin allow\n/admin/ mfa", defaults)
	if got := s.Match("GET", "/admin").Action; got != MFA {
		t.Errorf(`Match("/admin") = %s, want mfa: "/admin/" is the longer rule path`, got)
	}
}

func TestMethodMattersOnlyWhereAnotherMethodMeetsAnotherRule(t *testing.T) {
	s, err := Parse("test", "DELETE /users/ mfa\n/admin/ mfa\nPOST /pay approve show=a:form.a", Defaults{Action: Allow})
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{
		"/users/42": true,  // POST is allowed, DELETE needs a step-up
		"/admin/x":  false, // every method meets the same rule
		"/pay":      true,  // POST is held, GET is allowed
		"/public":   false,
	} {
		if got := s.MethodMatters(path); got != want {
			t.Errorf("MethodMatters(%q) = %v, want %v", path, got, want)
		}
	}
	plain, _ := Parse("test", "/admin/ mfa", Defaults{Action: Allow})
	if plain.MethodMatters("/admin/x") || plain.MethodMatters("/x") {
		t.Error("rules that name no method: the method never matters")
	}
}
