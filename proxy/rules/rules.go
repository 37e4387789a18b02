// Package rules parses stepgate's path policy (docs/design.md §3) and decides, for a
// method and a normalised path, whether a request is allowed, denied or needs
// step-up MFA.
//
// It must never see a raw request path: callers pass reqpath.Path.Match. It
// must never guess: a rule that could be read two ways (a path that is not
// normalised, a wildcard, overlapping methods on one path, an option on the
// wrong action) is a parse error, so a typo cannot silently open a path.
//
// Choices where the spec is silent:
//   - Request methods match rule methods ignoring ASCII case (some
//     upstreams upper-case the method; folding can only make a listed rule
//     apply more often).
//   - GET implies HEAD: "GET /admin/ mfa" covers HEAD too, because most
//     frameworks answer HEAD with the GET handler (side effects included),
//     so a GET-only rule would otherwise leave the same code reachable
//     without step-up. A rule listing GET and another listing HEAD on the
//     same path therefore overlap, which is a parse error.
//   - max_age must be > 0 and at most MaxMaxAge (24h): a step-up older than a
//     day is not a step-up.
//   - "*" in a rule path is refused: it reads like a wildcard but would be
//     matched literally. A trailing "/" is the subtree form.
//   - Two rules on the same path whose method sets overlap (or that both
//     list no methods) are an error, not "last one wins".
//   - With CaseInsensitive, ASCII letters fold on both sides, and so do the
//     four non-ASCII letters whose case mappings are ASCII (İ ı ſ and the
//     Kelvin sign), which Windows would otherwise treat as I, S or K; other
//     non-ASCII bytes compare exactly. Pair it with reqpath.CheckWindows.
//   - "Longest" is the length of the rule path as written, so for the
//     request "/admin" the rule "/admin/" (7 bytes) beats "/admin" (6).
//   - acr=A,B lists several sign-on policies in order of preference; Rule.ACR
//     holds them space-separated, as acr_values wants. Defaults.ACR may be
//     space-separated.
//   - '#' starts a comment anywhere on a line (it cannot occur in a rule).
//   - prompt=login is the only prompt option (PingOne's parameter list has
//     prompt, SEED; what it does in an MFA-only flow is unverified).
package rules

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/stepgate/stepgate/proxy/reqpath"
)

// Action is what a rule does with a request.
type Action uint8

const (
	Allow   Action = iota // pass through
	Deny                  // 403
	MFA                   // step-up required
	Approve               // this one request needs its own approval (docs/design.md §14)
)

func (a Action) String() string {
	switch a {
	case Allow:
		return "allow"
	case Deny:
		return "deny"
	case MFA:
		return "mfa"
	case Approve:
		return "approve"
	}
	return fmt.Sprintf("action(%d)", uint8(a))
}

// ParseAction reads "allow", "deny", "mfa" or "approve" (ASCII
// case-insensitive).
func ParseAction(s string) (Action, error) {
	switch {
	case strings.EqualFold(s, "allow"):
		return Allow, nil
	case strings.EqualFold(s, "deny"):
		return Deny, nil
	case strings.EqualFold(s, "mfa"):
		return MFA, nil
	case strings.EqualFold(s, "approve"):
		return Approve, nil
	}
	return 0, fmt.Errorf("unknown action %q", s)
}

// MaxMaxAge caps max_age (and Defaults.MaxAge).
const MaxMaxAge = 24 * time.Hour

// DefaultMaxAge is used when Defaults.MaxAge is zero (docs/design.md §3).
const DefaultMaxAge = time.Hour

// Rule is one policy line, with MFA defaults filled in.
type Rule struct {
	Methods []string      // upper-case; empty = any; GET implies HEAD
	Path    string        // as written
	Action  Action        //
	MaxAge  time.Duration // MFA only: the freshness a step-up needs
	ACR     string        // MFA only: acr_values, space-separated sign-on policy names in order of preference; "" for none
	Prompt  string        // MFA only: "login" sends prompt=login (a fresh authentication); "" sends none
	Line    int           // 1-based source line; 0 for the default rule
	Source  string        // "STEPGATE_RULES" or the file name

	// Approve rules only (ACR applies too).
	Show     []Field       // what the challenge page shows, in order
	Template string        // PingOne notification template name; "" for none
	Variant  string        // template variant; "" for the default
	Vars     []Field       // template variables (Label is the variable name)
	TTL      time.Duration // how long the request waits for approval, and the approval for use
	// Original forwards the client's own bytes once the request passes
	// the strict grammar (forward=original), instead of stepgate's
	// canonical encoding of it: for a body the application verifies by a
	// signature.
	Original bool
	// API is what a program (not a browser) that hits the rule gets:
	// APIURL (api=url, the default) a 401 with a URL a person opens in a
	// browser; APIDecoupled (api=decoupled) a 202 while stepgate asks the
	// user's phone itself (docs/design.md §18).
	API     APIMode
	Title   string // the page's heading ("Send a payment"); "" for the catalogue's
	Message string // the sentence the notification shows, with ${VAR} of Vars; "" for none
}

// String is the canonical, re-parseable one-line form, for example
// "GET,POST /admin/ mfa max_age=1h0m0s acr=MFA-Only". When the methods list
// GET but not HEAD it ends with a comment saying HEAD is covered too. The
// default rule prints as "default ACTION ..." and is not re-parseable.
func (r Rule) String() string {
	var b strings.Builder
	if r.Line == 0 && r.Path == "" {
		b.WriteString("default ")
		b.WriteString(r.Action.String())
		r.writeOptions(&b)
		return b.String()
	}
	if len(r.Methods) > 0 {
		b.WriteString(strings.Join(r.Methods, ","))
		b.WriteByte(' ')
	}
	b.WriteString(r.Path)
	b.WriteByte(' ')
	b.WriteString(r.Action.String())
	r.writeOptions(&b)
	if slices.Contains(r.Methods, "GET") && !slices.Contains(r.Methods, "HEAD") {
		b.WriteString(" # and HEAD")
	}
	return b.String()
}

func (r Rule) writeOptions(b *strings.Builder) {
	if r.Action == Approve {
		r.writeApproveOptions(b)
		return
	}
	if r.Action != MFA {
		return
	}
	b.WriteString(" max_age=")
	b.WriteString(r.MaxAge.String())
	if r.ACR != "" {
		b.WriteString(" acr=")
		b.WriteString(strings.ReplaceAll(r.ACR, " ", ","))
	}
	if r.Prompt != "" {
		b.WriteString(" prompt=")
		b.WriteString(r.Prompt)
	}
}

// Defaults fill in what rules leave out.
type Defaults struct {
	Action          Action        // where no rule matches (STEPGATE_DEFAULT_ACTION)
	MaxAge          time.Duration // mfa max_age (STEPGATE_MFA_MAX_AGE); 0 = DefaultMaxAge
	ACR             string        // mfa acr_values, space-separated (STEPGATE_PINGONE_ACR_VALUES)
	CaseInsensitive bool          // fold ASCII case of rule and request paths
}

// Set is a parsed policy. It is immutable and safe for concurrent use.
type Set struct {
	rules        []compiled // most specific first
	def          Rule
	fold         bool
	methodScoped bool // some rule names its methods
}

type compiled struct {
	rule    Rule
	path    string // what is compared: Path, ASCII-lower-cased when folding
	subtree bool   // path ends in '/': matches path, path without '/', and below
}

// Parse reads rules from text. Lines are split on '\n' and on ';', '#'
// starts a comment to the end of the line, blank lines are ignored. source
// names the text in errors ("STEPGATE_RULES" or a file name). When the text
// has newlines, errors count newline lines; otherwise they count the
// ';'-separated entries.
func Parse(source, text string, d Defaults) (*Set, error) {
	if d.MaxAge == 0 {
		d.MaxAge = DefaultMaxAge
	}
	if d.MaxAge < 0 || d.MaxAge > MaxMaxAge {
		return nil, fmt.Errorf("%s: default max_age %s: must be > 0 and <= %s", source, d.MaxAge, MaxMaxAge)
	}
	if d.Action > MFA {
		// approve needs methods and options of its own: never a default.
		return nil, fmt.Errorf("%s: default action %s: must be allow, deny or mfa", source, d.Action)
	}
	if d.ACR != "" {
		acr, err := acrList(strings.Fields(d.ACR))
		if err != nil {
			return nil, fmt.Errorf("%s: default acr: %w", source, err)
		}
		d.ACR = acr
	}
	s := &Set{fold: d.CaseInsensitive, def: Rule{Action: d.Action, Source: source}}
	if d.Action == MFA {
		s.def.MaxAge, s.def.ACR = d.MaxAge, d.ACR
	}

	byNewline := strings.Contains(text, "\n")
	entry := 0
	for lineNo, line := range strings.Split(text, "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		for _, part := range strings.Split(line, ";") {
			entry++
			n := entry
			if byNewline {
				n = lineNo + 1
			}
			if strings.TrimSpace(part) == "" {
				continue
			}
			r, err := parseRule(part, d)
			if err != nil {
				return nil, fmt.Errorf("%s line %d: %w", source, n, err)
			}
			r.Line, r.Source = n, source
			c := compiled{rule: r, path: r.Path, subtree: strings.HasSuffix(r.Path, "/")}
			if s.fold {
				c.path = lowerASCII(r.Path)
			}
			for _, o := range s.rules {
				if o.path == c.path && methodsOverlap(o.rule.Methods, r.Methods) {
					return nil, fmt.Errorf("%s line %d: %q overlaps line %d for the same path and methods", source, n, r.Path, o.rule.Line)
				}
			}
			s.rules = append(s.rules, c)
			s.methodScoped = s.methodScoped || len(r.Methods) > 0
		}
	}
	// Most specific first: longer paths, then rules that name methods, then
	// source order (only for rules that can never match the same request).
	slices.SortStableFunc(s.rules, func(a, b compiled) int {
		if len(a.path) != len(b.path) {
			return len(b.path) - len(a.path)
		}
		am, bm := len(a.rule.Methods) > 0, len(b.rule.Methods) > 0
		if am != bm {
			if am {
				return -1
			}
			return 1
		}
		return a.rule.Line - b.rule.Line
	})
	return s, nil
}

func parseRule(line string, d Defaults) (Rule, error) {
	f, err := words(line)
	if err != nil {
		return Rule{}, err
	}
	var r Rule
	if len(f) > 0 && !strings.HasPrefix(f[0], "/") {
		ms, err := parseMethods(f[0])
		if err != nil {
			return Rule{}, err
		}
		r.Methods = ms
		f = f[1:]
	}
	if len(f) == 0 {
		return Rule{}, errors.New("missing path")
	}
	if err := checkPath(f[0]); err != nil {
		return Rule{}, err
	}
	r.Path = f[0]
	if len(f) < 2 {
		return Rule{}, fmt.Errorf("missing action after %q", r.Path)
	}
	a, err := ParseAction(f[1])
	if err != nil {
		return Rule{}, err
	}
	r.Action = a
	opts := f[2:]
	if a == Approve {
		return parseApprove(r, opts, d)
	}
	if a != MFA {
		if len(opts) > 0 {
			return Rule{}, fmt.Errorf("option %q: options are only allowed on mfa and approve rules", opts[0])
		}
		return r, nil
	}
	r.MaxAge, r.ACR = d.MaxAge, d.ACR
	seen := map[string]bool{}
	for _, o := range opts {
		k, v, ok := strings.Cut(o, "=")
		if !ok {
			return Rule{}, fmt.Errorf("option %q: want key=value", o)
		}
		if seen[k] {
			return Rule{}, fmt.Errorf("option %q: duplicate %s", o, k)
		}
		seen[k] = true
		switch k {
		case "max_age":
			dur, err := time.ParseDuration(v)
			if err != nil {
				return Rule{}, fmt.Errorf("option %q: not a duration", o)
			}
			if dur <= 0 || dur > MaxMaxAge {
				return Rule{}, fmt.Errorf("option %q: must be > 0 and <= %s", o, MaxMaxAge)
			}
			r.MaxAge = dur
		case "acr":
			acr, err := acrList(strings.Split(v, ","))
			if err != nil {
				return Rule{}, fmt.Errorf("option %q: %w", o, err)
			}
			r.ACR = acr
		case "show", "template", "variant", "vars", "ttl", "title", "message", "api", "forward":
			return Rule{}, fmt.Errorf("option %q: %s is an approve option, not an mfa one", o, k)
		case "prompt":
			if v != "login" {
				return Rule{}, fmt.Errorf("option %q: the only prompt is login", o)
			}
			r.Prompt = v
		default:
			return Rule{}, fmt.Errorf("option %q: unknown key %q", o, k)
		}
	}
	return r, nil
}

// words splits a rule into its words as strings.Fields does, except that
// a word of the form key="…" runs to the closing quote, spaces included
// (title="Send a payment"). The quotes stay in the word; only the options
// that take text (title, message) accept them, and every other option's
// check refuses a '"'. A quote anywhere else, a quoted value that does not
// end within the rule, and a closing quote followed by anything but white
// space are errors: a rule reads one way only. There are no escapes, so a
// quoted value cannot hold '"'; nor can it hold ';' or '#', which end the
// rule before it is split into words.
func words(line string) ([]string, error) {
	var out []string
	i := 0
	for {
		for i < len(line) {
			c, n := utf8.DecodeRuneInString(line[i:])
			if !unicode.IsSpace(c) {
				break
			}
			i += n
		}
		if i == len(line) {
			return out, nil
		}
		start := i
		for i < len(line) {
			c, n := utf8.DecodeRuneInString(line[i:])
			if unicode.IsSpace(c) {
				break
			}
			if c != '"' {
				i += n
				continue
			}
			word := line[start:i]
			if eq := strings.IndexByte(word, '='); eq <= 0 || eq != len(word)-1 {
				return nil, fmt.Errorf("%q: a '\"' may only open an option's value, as in title=\"Send a payment\"", firstWord(line[start:]))
			}
			end := strings.IndexByte(line[i+1:], '"')
			if end < 0 {
				return nil, fmt.Errorf("%q: the quoted value does not end (a quoted value cannot hold ';' or '#': they end the rule)", line[start:])
			}
			i += 1 + end + 1
			if i < len(line) {
				if c, _ := utf8.DecodeRuneInString(line[i:]); !unicode.IsSpace(c) {
					return nil, fmt.Errorf("%q: white space must follow the closing '\"'", firstWord(line[start:]))
				}
			}
			break
		}
		out = append(out, line[start:i])
	}
}

// firstWord is s up to its first white space, for errors.
func firstWord(s string) string {
	if i := strings.IndexFunc(s, unicode.IsSpace); i >= 0 {
		return s[:i]
	}
	return s
}

// parseMethods reads "GET,POST": RFC 9110 tokens, upper-cased, no empties
// and no duplicates.
func parseMethods(s string) ([]string, error) {
	parts := strings.Split(s, ",")
	ms := make([]string, 0, len(parts))
	for _, p := range parts {
		if p == "" {
			return nil, fmt.Errorf("method list %q: empty method", s)
		}
		for i := 0; i < len(p); i++ {
			if !tchar(p[i]) {
				return nil, fmt.Errorf("method %q: not a method token", p)
			}
		}
		m := strings.ToUpper(p)
		if slices.Contains(ms, m) {
			return nil, fmt.Errorf("method %q: listed twice", p)
		}
		ms = append(ms, m)
	}
	return ms, nil
}

// checkPath accepts only a path that reqpath would pass through unchanged:
// no escapes, no query, no dot or empty segments, no wildcard.
func checkPath(p string) error {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("path %q: must start with /", p)
	}
	if strings.ContainsAny(p, "%?") {
		return fmt.Errorf("path %q: percent-escapes and '?' are not allowed in rules", p)
	}
	if strings.Contains(p, "*") {
		return fmt.Errorf("path %q: wildcards are not supported; end the path with / for a subtree", p)
	}
	got, err := reqpath.Parse("GET", p)
	if err != nil {
		var e *reqpath.Error
		if errors.As(err, &e) {
			return fmt.Errorf("path %q: %s", p, e.Reason)
		}
		return fmt.Errorf("path %q: %w", p, err)
	}
	if got.Match != p {
		return fmt.Errorf("path %q: not normalised", p)
	}
	return nil
}

// acrList validates sign-on policy names and joins them with spaces, the
// form acr_values takes (PingOne: space-separated, in order of preference).
// In a rule they are written acr=A,B.
func acrList(names []string) (string, error) {
	if len(names) == 0 {
		return "", errors.New("acr: no policy name")
	}
	for i, v := range names {
		if slices.Contains(names[:i], v) {
			return "", fmt.Errorf("acr %q: listed twice", v)
		}
		if v == "" || len(v) > 128 {
			return "", fmt.Errorf("acr %q: a policy name must be 1 to 128 characters", v)
		}
		for i := 0; i < len(v); i++ {
			if c := v[i]; c <= ' ' || c >= 0x7f || c == ';' || c == '#' || c == '"' || c == '\\' || c == ',' {
				return "", fmt.Errorf("acr %q: only visible ASCII without ; # \" \\ ,", v)
			}
		}
	}
	return strings.Join(names, " "), nil
}

func tchar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func methodsOverlap(a, b []string) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	for _, m := range a {
		if hasMethod(b, m) {
			return true
		}
	}
	for _, m := range b {
		if hasMethod(a, m) { // GET in a covers HEAD in b
			return true
		}
	}
	return false
}

func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
	}
	return string(b)
}

// Match returns the rule for a request: path is reqpath.Path.Match, method
// as sent. The longest matching rule path wins; for equal paths a rule that
// lists methods wins over one that does not. With no match it returns the
// default rule (Line 0). It does not allocate; the returned Methods slice
// is shared and must not be modified.
func (s *Set) Match(method, path string) Rule {
	if i := s.match(method, path); i >= 0 {
		return s.rules[i].rule
	}
	return s.def
}

// match is Match as an index into s.rules, -1 for the default.
func (s *Set) match(method, path string) int {
	for i := range s.rules {
		c := &s.rules[i]
		if len(c.rule.Methods) > 0 && !hasMethod(c.rule.Methods, method) {
			continue
		}
		if s.pathMatches(c, path) {
			return i
		}
	}
	return -1
}

// overridable are the methods a framework's method override can turn a
// POST into (Rails, Laravel, Symfony and Express's method-override take any).
var overridable = []string{"GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"}

// MethodMatters reports whether a POST to path could meet another rule if
// the application read it as another method: only then must a method
// override in its body be looked for (docs/design.md §14.3).
func (s *Set) MethodMatters(path string) bool {
	if !s.methodScoped {
		return false
	}
	post := s.match("POST", path)
	for _, m := range overridable {
		if s.match(m, path) != post {
			return true
		}
	}
	return false
}

// hasMethod compares methods ignoring ASCII case. HTTP methods are
// case-sensitive, but some upstreams upper-case them; "get /admin" must not
// slip past a "GET /admin/ mfa" rule to reach one of those as a GET.
//
// A GET in the list also matches HEAD (see the package comment).
func hasMethod(ms []string, method string) bool {
	head := strings.EqualFold(method, "HEAD")
	for _, m := range ms {
		if m == method || strings.EqualFold(m, method) || (head && m == "GET") {
			return true
		}
	}
	return false
}

func (s *Set) pathMatches(c *compiled, path string) bool {
	if !s.fold {
		if !c.subtree {
			return path == c.path
		}
		// "/admin/" matches "/admin", "/admin/" and "/admin/...", not
		// "/administrator".
		return strings.HasPrefix(path, c.path) || path == c.path[:len(c.path)-1]
	}
	if n, ok := foldPrefix(path, c.path); ok && (c.subtree || n == len(path)) {
		return true
	}
	if c.subtree {
		n, ok := foldPrefix(path, c.path[:len(c.path)-1])
		return ok && n == len(path)
	}
	return false
}

// foldPrefix reports whether a prefix of the request path equals the rule
// path (already ASCII lower case) under case folding, and how many request
// bytes that prefix has.
//
// Besides ASCII letters it folds the four non-ASCII characters whose
// Unicode case mappings land on an ASCII letter: U+0130 İ (lower: i),
// U+0131 ı (upper: I), U+017F ſ (upper: S) and U+212A Kelvin sign (lower: k).
// A case-insensitive upstream (NTFS's upcase table, .NET's ToUpperInvariant)
// may treat "/admın" as "/ADMIN"; so must we, or that spelling would skip
// the /admin/ rule.
func foldPrefix(req, rule string) (int, bool) {
	i := 0
	for j := 0; j < len(rule); j++ {
		if i >= len(req) {
			return 0, false
		}
		c := req[i]
		switch {
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
			i++
		case c < 0x80:
			i++
		case strings.HasPrefix(req[i:], "\u0130"), strings.HasPrefix(req[i:], "\u0131"):
			c = 'i'
			i += 2
		case strings.HasPrefix(req[i:], "\u017f"):
			c = 's'
			i += 2
		case strings.HasPrefix(req[i:], "\u212a"):
			c = 'k'
			i += 3
		default:
			i++
		}
		if c != rule[j] {
			return 0, false
		}
	}
	return i, true
}

// Rules returns the rules in the order Match tries them (most specific
// first), for -check-config. The default rule is not included; see Default.
func (s *Set) Rules() []Rule {
	out := make([]Rule, len(s.rules))
	for i, c := range s.rules {
		out[i] = c.rule
		out[i].Methods = slices.Clone(c.rule.Methods)
	}
	return out
}

// Default returns the rule used when nothing matches (Line 0, empty Path).
func (s *Set) Default() Rule { return s.def }
