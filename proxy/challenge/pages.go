package challenge

import (
	"bytes"
	"embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/stepgate/stepgate/mfa"
	"github.com/stepgate/stepgate/proxy/invisible"
	"github.com/stepgate/stepgate/session"
)

//go:embed templates/*.html assets/* messages/*.json
var builtin embed.FS

// Pages renders stepgate's HTML (challenge and error pages) and serves its
// embedded assets. Operators brand it with STEPGATE_TEMPLATES_DIR: a
// page.html there replaces the built-in one, and messages/<lang>.json files
// add or override message catalogues.
type Pages struct {
	// AppName names the protected application on every page
	// (STEPGATE_APP_NAME); set it before serving. Empty: not shown.
	AppName string

	tmpl     *template.Template
	catalogs map[string]map[string]string // language -> key -> text
	langs    []string                     // sorted, for matching
	assets   fs.FS
}

// NewPages loads the built-in templates and catalogues, then the operator's
// from dir (optional).
func NewPages(dir string) (*Pages, error) {
	p := &Pages{catalogs: map[string]map[string]string{}}
	assets, err := fs.Sub(builtin, "assets")
	if err != nil {
		return nil, fmt.Errorf("pages: assets: %w", err)
	}
	p.assets = assets
	if err := p.loadCatalogs(builtin, "messages"); err != nil {
		return nil, err
	}
	src, err := builtin.ReadFile("templates/page.html")
	if err != nil {
		return nil, fmt.Errorf("pages: %w", err)
	}
	if dir != "" {
		if custom, err := os.ReadFile(filepath.Join(dir, "page.html")); err == nil {
			src = custom
		} else if !os.IsNotExist(err) {
			return nil, fmt.Errorf("pages: templates dir: %w", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "messages")); err == nil {
			if err := p.loadCatalogs(os.DirFS(dir), "messages"); err != nil {
				return nil, err
			}
		}
	}
	p.tmpl, err = template.New("page").Parse(string(src))
	if err != nil {
		return nil, fmt.Errorf("pages: parse template: %w", err)
	}
	for l := range p.catalogs {
		p.langs = append(p.langs, l)
	}
	sort.Strings(p.langs)
	return p, nil
}

func (p *Pages) loadCatalogs(fsys fs.FS, dir string) error {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return fmt.Errorf("pages: messages: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || path.Ext(name) != ".json" {
			continue
		}
		b, err := fs.ReadFile(fsys, path.Join(dir, name))
		if err != nil {
			return fmt.Errorf("pages: messages %s: %w", name, err)
		}
		var m map[string]string
		dec := json.NewDecoder(bytes.NewReader(b))
		if err := dec.Decode(&m); err != nil {
			return fmt.Errorf("pages: messages %s: %w", name, err)
		}
		lang := strings.ToLower(strings.TrimSuffix(name, ".json"))
		if p.catalogs[lang] == nil {
			p.catalogs[lang] = map[string]string{}
		}
		for k, v := range m {
			p.catalogs[lang][k] = v
		}
	}
	return nil
}

// language picks the best catalogue for an Accept-Language header; English
// is the fallback and fills any key a catalogue lacks.
func (p *Pages) language(header string) string {
	best, bestQ := "en", -1.0
	for _, part := range strings.Split(header, ",") {
		tag, q := strings.TrimSpace(part), 1.0
		if i := strings.IndexByte(tag, ';'); i >= 0 {
			if v, ok := strings.CutPrefix(strings.TrimSpace(tag[i+1:]), "q="); ok {
				if f, err := strconv.ParseFloat(v, 64); err == nil {
					q = f
				}
			}
			tag = tag[:i]
		}
		tag = strings.ToLower(tag)
		for _, cand := range []string{tag, strings.SplitN(tag, "-", 2)[0]} {
			if _, ok := p.catalogs[cand]; ok && q > bestQ {
				best, bestQ = cand, q
				break
			}
		}
	}
	return best
}

// view is what the page template sees.
type view struct {
	State        string // start, devices, otp, push, push_timeout, assertion, error
	Message      string // message key for an error or notice
	AttemptsLeft int
	Devices      []deviceView
	Selected     deviceView
	Options      string        // WebAuthn request options, JSON
	PushNumber   string        // push number matching: the number to pick on the phone
	Restart      bool          // offer a fresh start
	Back         bool          // offer a way back to the challenge
	RetryAfter   time.Duration // after a 429: how long until a new try is let in
	Status       int
	CSRF         string
	Nonce        string
	Lang         string
	Approval     *approvalView // what is being approved, on an approval's pages
	Notice       bool          // Message is good news or a hint, not an error
	ResendIn     int           // seconds until "Send a new code" works again; 0 now
	User         string        // the signed-in user
	App          string        // the application's name
	Opening      string        // what is being opened (the return path)
	Home         string        // the way out: where the user came from, or "/"
	OtherMethods bool          // after a denied push: the user has another method
	SignIn       string        // where to sign in again at the IdP (no identity)

	flow    *session.Flow
	catalog map[string]string
	english map[string]string
}

type deviceView struct {
	ID, Type, Target, Nickname string
	Selected                   bool
	// Nth and Of tell apart devices that would read the same (same type,
	// nickname and target): "1 of 2". Of is 0 when the label is unique.
	Nth, Of int
}

// Title is the page's heading and <title> for its state (and, on an error
// page, its message). An operator's catalogue that translates only the
// generic "title" keeps its translation rather than mixing in English.
func (v *view) Title() string {
	keys := []string{"title_" + v.State, "title"}
	if v.Approval != nil && v.State != "error" {
		if v.Approval.Title != "" {
			return v.Approval.Title
		}
		keys = []string{"approve_title"}
	}
	if v.State == "error" {
		keys = []string{"title_" + v.Message, "title_error", "error_title"}
	}
	for _, cat := range []map[string]string{v.catalog, v.english} {
		for _, k := range keys {
			if s, ok := cat[k]; ok {
				return s
			}
		}
	}
	return v.T("title")
}

// HasAlternative reports whether there is another method to switch to.
func (v *view) HasAlternative() bool { return len(v.Devices) > 1 }

// Icon is the inline SVG name for a device type.
func (d deviceView) Icon() string {
	switch d.Type {
	case "SMS", "VOICE", "MOBILE":
		return "phone"
	case "EMAIL":
		return "mail"
	case "TOTP":
		return "clock"
	case "FIDO2", "PLATFORM", "SECURITY_KEY":
		return "key"
	}
	return "shield"
}

// Action is what the button that picks this device says it does.
func (d deviceView) Action() string {
	switch d.Type {
	case "SMS", "EMAIL", "VOICE":
		return "action_send_code"
	case "MOBILE":
		return "action_send_push"
	case "TOTP":
		return "action_enter_code"
	case "FIDO2", "PLATFORM", "SECURITY_KEY":
		return "action_use_key"
	}
	return "action_use"
}

// T returns the message for key in the page's language, formatted with args.
func (v *view) T(key string, args ...any) string {
	s, ok := v.catalog[key]
	if !ok {
		s, ok = v.english[key]
	}
	if !ok {
		return key
	}
	if len(args) > 0 {
		return fmt.Sprintf(s, args...)
	}
	return s
}

// ValidText says how long the approval can still be given: whole minutes
// from two minutes up (a render a few seconds after the hold still says
// the rule's ttl), seconds below.
func (a *approvalView) ValidText(v *view) string {
	switch left := a.Left; {
	case left <= 0:
		return v.T("approve_time_up")
	case left >= 2*time.Minute:
		return v.T("approve_valid_minutes", int64((left+5*time.Second)/time.Minute))
	case left <= time.Second:
		return v.T("approve_valid_second")
	default:
		return v.T("approve_valid_seconds", int64((left+time.Second-1)/time.Second))
	}
}

// RetryText says how long to wait after a 429, in whole seconds under a
// minute and whole minutes (rounded up) beyond; "" when unknown.
func (v *view) RetryText() string {
	if v.RetryAfter <= 0 {
		return ""
	}
	secs := int64((v.RetryAfter + time.Second - 1) / time.Second)
	if secs < 60 {
		return v.T("retry_in_seconds", secs)
	}
	return v.T("retry_in_minutes", (secs+59)/60)
}

// flowView builds the view for a flow status.
func (h *Handler) flowView(f *session.Flow, flow *mfa.Flow) *view {
	v := &view{flow: f, AttemptsLeft: -1}
	same := map[[3]string]int{}
	for _, d := range flow.Devices {
		same[[3]string{d.Type, d.Nickname, d.Target}]++
	}
	seen := map[[3]string]int{}
	for _, d := range flow.Devices {
		dv := deviceView{ID: d.ID, Type: displayType(d.Type), Target: d.Target, Nickname: d.Nickname, Selected: d.ID == flow.SelectedDeviceID}
		if k := [3]string{d.Type, d.Nickname, d.Target}; same[k] > 1 {
			seen[k]++
			dv.Nth, dv.Of = seen[k], same[k]
		}
		v.Devices = append(v.Devices, dv)
		if dv.Selected {
			v.Selected = dv
		}
	}
	switch {
	case f.Status == statusPick && len(flow.Devices) > 0:
		v.State = "devices"
	case flow.Status == mfa.StatusDeviceSelectionRequired:
		v.State = "devices"
	case flow.Status == mfa.StatusOTPRequired:
		v.State = "otp"
	case flow.Status == mfa.StatusPushConfirmationRequired:
		v.State, v.PushNumber = "push", flow.PushNumber
	case flow.Status == mfa.StatusPushConfirmationTimedOut:
		v.State = "push_timeout"
	case flow.Status == mfa.StatusAssertionRequired:
		v.State = "assertion"
		v.Options = string(flow.AssertionOptions)
	case flow.Status == mfa.StatusFailed:
		v.State, v.Message, v.Restart = "error", "flow_failed", true
	default:
		v.State, v.Message, v.Restart = "error", "unknown_status", true
	}
	return v
}

func (h *Handler) renderFlow(w http.ResponseWriter, r *http.Request, status int, f *session.Flow, flow *mfa.Flow, msg string, n int) {
	v := h.flowView(f, flow)
	if msg != "" && v.State != "error" {
		v.Message = msg
		if msg == "otp_wrong" {
			v.AttemptsLeft = n
		}
	}
	if v.State == "error" && v.Message == "unknown_status" {
		h.log.Warn("unknown pingone flow status", "status", string(flow.Status), "flow_id", f.FlowID)
		status = http.StatusBadGateway
	}
	if v.State == "otp" && v.Selected.Type != "TOTP" {
		v.ResendIn = int((h.cooldownLeft(f) + time.Second - 1) / time.Second)
	}
	if msg == "resend_wait" && v.ResendIn == 0 {
		v.ResendIn = n // the push page: the wait the refusal computed
	}
	h.render(w, r, status, v)
}

// Where a message appears.
const (
	onPage    = iota // on the page of the flow's state (or the start page)
	notice           // likewise, as good news or a hint rather than an error
	errorPage        // an error page with a way back into the flow
	terminal         // an error page: the flow is over, start afresh
)

// messageKinds says, for each message a POST can leave for the next page,
// where it appears and the status that page is served with: the status the
// POST's outcome had when it was answered directly (docs/design.md §7), so scripts
// that follow the 303 still see it.
var messageKinds = map[string]struct{ status, place int }{
	"otp_wrong":             {http.StatusUnauthorized, onPage},
	"otp_format":            {http.StatusBadRequest, onPage},
	"start_first":           {http.StatusBadRequest, onPage},
	"session_expired":       {http.StatusForbidden, onPage},
	"csrf":                  {http.StatusForbidden, onPage},
	"bad_device":            {http.StatusBadRequest, onPage},
	"assertion_bad":         {http.StatusBadRequest, onPage},
	"assertion_unknown_key": {http.StatusBadRequest, onPage},
	"code_sent":             {http.StatusOK, notice},
	"push_sent":             {http.StatusOK, notice},
	"resend_wait":           {http.StatusOK, notice},
	"rate_limited":          {http.StatusTooManyRequests, errorPage},
	"unavailable":           {http.StatusServiceUnavailable, errorPage},
	"rejected":              {http.StatusBadRequest, errorPage},
	"method_locked":         {http.StatusBadRequest, errorPage},
	"store_unavailable":     {http.StatusServiceUnavailable, errorPage},
	"stepup_unavailable":    {http.StatusServiceUnavailable, errorPage},
	"otp_limit":             {http.StatusForbidden, terminal},
	"flow_failed":           {http.StatusForbidden, terminal},
	"push_denied":           {http.StatusForbidden, terminal},
	"expired":               {http.StatusGone, terminal},
	"verification_failed":   {http.StatusForbidden, terminal},
	"no_mfa_method":         {http.StatusForbidden, terminal},
	"not_set_up":            {http.StatusForbidden, terminal},
}

// renderMessage renders the page for a flow (nil: not started, or over)
// with msg ("" for none) and its number n.
func (h *Handler) renderMessage(w http.ResponseWriter, r *http.Request, f *session.Flow, flow *mfa.Flow, msg string, n int) {
	k, known := messageKinds[msg]
	if !known {
		k.status, k.place = http.StatusBadRequest, errorPage
	}
	status := k.status
	if msg == "" {
		status, k.place = http.StatusOK, onPage
	}
	switch k.place {
	case errorPage, terminal:
		// A bypass or an account PingOne does not know ends the flow too, but
		// starting again cannot help.
		v := &view{State: "error", Message: msg, flow: f, Restart: k.place == terminal && msg != "no_mfa_method" && msg != "not_set_up", Back: k.place == errorPage}
		switch msg {
		case "rate_limited":
			v.RetryAfter = time.Duration(max(n, 1)) * time.Second
			w.Header().Set("Retry-After", strconv.Itoa(max(n, 1)))
		case "unavailable":
			w.Header().Set("Retry-After", "30")
		case "store_unavailable", "stepup_unavailable":
			w.Header().Set("Retry-After", "5")
		case "push_denied":
			v.OtherMethods = n > 0
		}
		h.render(w, r, status, v)
	default:
		if flow != nil {
			h.renderFlow(w, r, status, f, flow, msg, n)
			return
		}
		h.render(w, r, status, &view{State: "start", Message: msg, flow: f})
	}
}

func (h *Handler) render(w http.ResponseWriter, r *http.Request, status int, v *view) {
	if v.flow != nil {
		v.CSRF = base64.RawURLEncoding.EncodeToString(v.flow.CSRF)
		// Error pages (a 429 for reloads among them) show no summary, so
		// they do not open the held request either.
		if v.flow.Approval != "" && v.Approval == nil && h.cfg.Approvals != nil && v.State != "error" {
			if held, err := h.cfg.Approvals.Open(r.Context(), v.flow.Approval); err == nil && held.User == v.flow.User {
				v.Approval = h.newApprovalView(held)
			}
		}
		v.User, v.Opening, v.Home = v.flow.User, invisible.Escape(v.flow.ReturnPath), homeFor(v.flow)
	}
	if k, ok := messageKinds[v.Message]; ok && k.place == notice {
		v.Notice = true
		if v.Message == "resend_wait" {
			v.ResendIn = max(v.ResendIn, 1)
		}
	}
	if v.AttemptsLeft == 0 && v.Message == "" {
		v.AttemptsLeft = -1
	}
	h.pages.write(w, r, status, v)
}

// Error renders an error page, or JSON for API clients.
func (h *Handler) Error(w http.ResponseWriter, r *http.Request, status int, key string) {
	if clientKind(r) == kindAPI && !acceptsHTML(r) {
		setNoStore(w.Header())
		code := key
		if key == "stepup_unavailable" {
			// One code for programs, whatever is paused; the message says what.
			code = "store_unavailable"
		}
		j := map[string]string{"error": code, "message": h.pages.english(key)}
		if signIn := h.signIn(r, key); signIn != "" {
			j["signin_url"] = signIn
		}
		writeJSON(w, status, j)
		return
	}
	h.pages.write(w, r, status, &view{State: "error", Message: key, AttemptsLeft: -1, Home: "/", SignIn: h.signIn(r, key)})
}

// signIn is the way to sign in again at the IdP for a refusal without a
// (valid) identity, back to the page asked for; "" when not configured.
func (h *Handler) signIn(r *http.Request, key string) string {
	if h.cfg.SignInURL == "" || key != "no_identity" && key != "identity_expired" {
		return ""
	}
	return strings.ReplaceAll(h.cfg.SignInURL, "{rd}", url.QueryEscape(SafeReturn(r.URL.RequestURI())))
}

func (p *Pages) english(key string) string {
	if s, ok := p.catalogs["en"][key]; ok {
		return s
	}
	return key
}

// write sets the hardening headers and executes the template.
func (p *Pages) write(w http.ResponseWriter, r *http.Request, status int, v *view) {
	v.Status = status
	v.App = p.AppName
	if v.Home == "" {
		v.Home = "/"
	}
	v.Lang = p.language(r.Header.Get("Accept-Language"))
	v.catalog, v.english = p.catalogs[v.Lang], p.catalogs["en"]
	// URL-safe base64 (CSP 3 allows - and _): html/template would write a
	// standard '+' as &#43; in the nonce attribute; browsers decode that,
	// but the page should say exactly what the header says.
	v.Nonce = base64.RawURLEncoding.EncodeToString(randomBytes(16))
	var buf bytes.Buffer
	if err := p.tmpl.Execute(&buf, v); err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'nonce-"+v.Nonce+"'; style-src 'self'; "+
		"img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	// same-origin, not no-referrer: under no-referrer browsers send
	// "Origin: null" on form posts, and the WebAuthn check compares the
	// posted origin with the Origin header. Other sites still get nothing.
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(buf.Bytes())
	}
}

func (p *Pages) serveAsset(w http.ResponseWriter, r *http.Request, name string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	b, err := fs.ReadFile(p.assets, name)
	if err != nil || strings.Contains(name, "/") {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", mime.TypeByExtension(path.Ext(name)))
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "public, max-age=3600")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	if r.Method == http.MethodGet {
		_, _ = w.Write(b)
	}
}
