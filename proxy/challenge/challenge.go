// Package challenge serves stepgate's own endpoints under /.stepgate/: the
// step-up challenge page and its actions, push polling, assets and logout.
// It drives PingOne through the mfa client on the user's behalf and, on a
// verified completion, issues the step-up cookie.
//
// It must never start a PingOne flow on a GET or without a valid CSRF token
// from a same-origin POST, never count a PingOne bypass as a step-up unless
// configured to, and never redirect anywhere but a same-origin path.
package challenge

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/stepgate/stepgate/metrics"
	"github.com/stepgate/stepgate/mfa"
	"github.com/stepgate/stepgate/proxy/rules"
	"github.com/stepgate/stepgate/session"
)

// Endpoints under the reserved prefix.
const (
	PathChallenge = "/.stepgate/challenge"
	PathStatus    = "/.stepgate/challenge/status"
	PathLogout    = "/.stepgate/logout"
	PathAssets    = "/.stepgate/assets/"
)

// PingOne is what the challenge needs from the PingOne client.
type PingOne interface {
	Start(ctx context.Context, req mfa.StartRequest) (*mfa.Flow, *mfa.Pending, error)
	Read(ctx context.Context, p *mfa.Pending) (*mfa.Flow, error)
	SelectDevice(ctx context.Context, p *mfa.Pending, deviceID string) (*mfa.Flow, error)
	CheckOTP(ctx context.Context, p *mfa.Pending, otp mfa.Secret) (*mfa.Flow, error)
	CheckAssertion(ctx context.Context, p *mfa.Pending, origin, assertion string) (*mfa.Flow, error)
	Reset(ctx context.Context, p *mfa.Pending) (*mfa.Flow, error)
	Complete(ctx context.Context, p *mfa.Pending, f *mfa.Flow) (*mfa.Result, error)
}

// Store is what the challenge needs from the session store.
type Store interface {
	Flow(r *http.Request) (session.Flow, bool)
	SaveFlow(w http.ResponseWriter, f session.Flow) error
	ClearFlow(w http.ResponseWriter)
	SaveStepUp(w http.ResponseWriter, v session.StepUp) error
	ClearStepUp(w http.ResponseWriter)
	SaveApproved(w http.ResponseWriter, ref string, ttl time.Duration) error
}

// Limiter is one abuse limit.
type Limiter interface {
	Allow(key string) (ok bool, retryAfter time.Duration)
}

// Limits are the abuse limits of docs/design.md §8. A nil limiter does not limit.
type Limits struct {
	StartPerUser Limiter
	StartPerIP   Limiter
	OTPPerUser   Limiter
	PollPerFlow  Limiter
	// SendPerUser bounds device selections and resends, each of which can
	// make PingOne send an SMS, e-mail or push (SMS pumping within one flow).
	SendPerUser Limiter
	// ReadPerFlow and ReadPerUser bound the flow reads a challenge page
	// load (and a resend) costs, apart from push polling (PollPerFlow):
	// without them one user reloading the page drains the process-wide
	// PingOne cap that every user's start shares. Both are checked before
	// PingOne is called, so a refused reload costs PingOne nothing.
	ReadPerFlow Limiter
	ReadPerUser Limiter
}

// UserMapping finds the user PingOne knows for a request whose upstream
// user is established (docs/design.md §17).
type UserMapping interface {
	// PingOneUser returns the value for the login_hint_token sub.
	PingOneUser(r *http.Request, user string) (string, error)
	// Source says where the value comes from ("header X-Forwarded-Email").
	Source() string
}

// Config wires a Handler.
type Config struct {
	PingOne PingOne
	Store   Store
	// Mapping, optional, maps the upstream user to the PingOne user; nil
	// sends the upstream user as it is.
	Mapping UserMapping
	// MappingCheck names, for the log line of a refused user, the settings
	// an operator should check (for example the environment variables).
	MappingCheck string
	// RuleFor returns the rule that guards a request with this method
	// ("" means GET) to a return path (query included).
	RuleFor func(method, returnPath string) rules.Rule
	Limits  Limits
	// Approvals, optional, opens and approves requests held by approve
	// rules.
	Approvals Approvals
	// Revoke, optional, revokes the request's step-up server-side when the
	// user logs out (docs/design.md §15).
	Revoke func(r *http.Request) error
	// StoreDown, optional, reports the shared store unreachable: flows
	// then do not start (503 page), so limits cannot be escaped (§15).
	StoreDown   func() bool
	AllowBypass bool
	// Verified reports whether the request already carries a step-up that
	// is valid for this user and fresh enough for the rule of returnPath.
	// The page then sends the user on instead of offering another
	// challenge. Nil means never.
	Verified func(r *http.Request, user, method, returnPath string) bool
	// ResendCooldown is how long after a code or push was sent the page
	// waits before it sends another (default 30 s).
	ResendCooldown time.Duration
	// SignInURL, optional, is where a user without a (valid) identity
	// signs in again at the IdP's proxy, "{rd}" replaced by the
	// query-escaped path the user asked for (oauth2-proxy:
	// /oauth2/sign_in?rd={rd}).
	SignInURL string
	Pages     *Pages
	Logger    *slog.Logger
	Metrics   *metrics.Metrics
	Now       func() time.Time
}

// Handler serves the challenge endpoints.
type Handler struct {
	cfg    Config
	pages  *Pages
	log    *slog.Logger
	m      *metrics.Metrics
	now    func() time.Time
	origin *http.CrossOriginProtection
}

// New builds a Handler.
func New(cfg Config) (*Handler, error) {
	if cfg.PingOne == nil || cfg.Store == nil || cfg.RuleFor == nil || cfg.Pages == nil ||
		cfg.Logger == nil || cfg.Metrics == nil {
		return nil, errors.New("challenge: incomplete configuration")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ResendCooldown == 0 {
		cfg.ResendCooldown = 30 * time.Second
	}
	return &Handler{
		cfg: cfg, pages: cfg.Pages, log: cfg.Logger, m: cfg.Metrics, now: cfg.Now,
		origin: http.NewCrossOriginProtection(),
	}, nil
}

// caller is who is asking, as the gateway established it.
type caller struct {
	user   string
	client netip.Addr
}

// Serve answers a request under /.stepgate/.
func (h *Handler) Serve(w http.ResponseWriter, r *http.Request, user string, client netip.Addr) {
	c := caller{user: user, client: client}
	switch p := r.URL.Path; {
	case strings.HasPrefix(p, PathAssets):
		h.pages.serveAsset(w, r, strings.TrimPrefix(p, PathAssets))
	case p == PathLogout:
		h.logout(w, r)
	case p == PathChallenge || p == PathStatus:
		if user == "" {
			h.audit(r, "identity.rejected", c, "", slog.String("reason", "no identity on challenge"))
			h.Error(w, r, http.StatusUnauthorized, "no_identity")
			return
		}
		switch {
		case p == PathStatus && r.Method == http.MethodGet:
			h.status(w, r, c)
		case p == PathChallenge && (r.Method == http.MethodGet || r.Method == http.MethodHead):
			h.show(w, r, c)
		case p == PathChallenge && r.Method == http.MethodPost:
			h.act(w, r, c)
		default:
			w.Header().Set("Allow", "GET, POST")
			h.Error(w, r, http.StatusMethodNotAllowed, "method_not_allowed")
		}
	default:
		h.Error(w, r, http.StatusNotFound, "not_found")
	}
}

// Require answers a request to an mfa path without a valid step-up (docs/design.md §7).
// Request bodies are never kept or replayed.
func (h *Handler) Require(w http.ResponseWriter, r *http.Request, rule rules.Rule) {
	target := PathChallenge + "?return=" + url.QueryEscape(SafeReturn(r.RequestURI))
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		// The flow must ask for the policy of the rule this method
		// matched, not of the rule a GET to the same path would match.
		target += "&method=" + url.QueryEscape(r.Method)
	}
	if from := referrerPath(r); from != "" {
		target += "&from=" + url.QueryEscape(from)
	}
	setNoStore(w.Header())
	switch clientKind(r) {
	case kindNavigation:
		http.Redirect(w, r, target, http.StatusFound)
	case kindFormPost:
		http.Redirect(w, r, target, http.StatusSeeOther)
	default:
		chal := `Bearer error="insufficient_user_authentication", error_description="A step-up authentication is required"`
		if rule.ACR != "" {
			chal += `, acr_values="` + rule.ACR + `"`
		}
		if rule.MaxAge > 0 {
			chal += ", max_age=" + strconv.FormatInt(int64(rule.MaxAge/time.Second), 10)
		}
		w.Header().Set("WWW-Authenticate", chal)
		writeJSON(w, http.StatusUnauthorized, map[string]string{
			"error":         "step_up_required",
			"message":       "This resource requires a recent multi-factor authentication.",
			"challenge_url": target,
		})
	}
}

type kind int

const (
	kindAPI kind = iota
	kindNavigation
	kindFormPost
)

// clientKind tells a browser navigation from a form post from an API or XHR
// call, from the request alone.
func clientKind(r *http.Request) kind {
	if r.Header.Get("X-Requested-With") != "" {
		return kindAPI
	}
	mode := r.Header.Get("Sec-Fetch-Mode")
	if mode != "" && mode != "navigate" {
		return kindAPI
	}
	if !acceptsHTML(r) {
		return kindAPI
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		return kindNavigation
	case http.MethodPost:
		if mode == "navigate" || isFormContent(r.Header.Get("Content-Type")) {
			return kindFormPost
		}
	}
	return kindAPI
}

func acceptsHTML(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		if strings.Contains(v, "text/html") {
			return true
		}
	}
	return false
}

func isFormContent(ct string) bool {
	ct = strings.ToLower(ct)
	return strings.HasPrefix(ct, "application/x-www-form-urlencoded") || strings.HasPrefix(ct, "multipart/form-data")
}

// show renders the page for the current state; it never starts a flow. A
// message a POST left in the flow cookie (the flash) is shown once, with the
// status the POST's outcome had, so scripts that follow the 303 still see it.
func (h *Handler) show(w http.ResponseWriter, r *http.Request, c caller) {
	if ref := r.URL.Query().Get("approval"); ref != "" {
		h.adoptApproval(w, r, c, ref)
		return
	}
	f, ok := h.cfg.Store.Flow(r)
	q := r.URL.Query()
	if !ok && h.showDone(w, r, q.Get("done")) {
		return
	}
	ret := q.Get("return")
	method := returnMethod(q.Get("method"))
	if ok && f.User == c.user && f.Approval != "" && ret != "" && SafeReturn(ret) != f.ReturnPath {
		// A step-up for another page is asked for while an approval was
		// pending: the approval is given up (its held request dropped)
		// rather than carried into a flow the user takes for a step-up.
		if f.FlowID != "" {
			_, _ = h.cfg.PingOne.Reset(r.Context(), &f.Pending)
		}
		if h.cfg.Approvals != nil {
			h.cfg.Approvals.Forget(r.Context(), f.Approval)
		}
		h.audit(r, "approval.cancelled", c, f.FlowID, append(heldAttrs(f.Approval, nil), slog.String("reason", "a step-up was asked for"))...)
		ok = false
	}
	if !ok || f.User != c.user {
		f = session.Flow{User: c.user, ReturnPath: SafeReturn(ret), ReturnMethod: method, CSRF: randomBytes(32), Created: h.now(), From: safeFrom(q.Get("from"))}
	} else if f.FlowID == "" && ret != "" {
		f.ReturnPath, f.ReturnMethod = SafeReturn(ret), method
		if from := safeFrom(q.Get("from")); from != "" {
			f.From = from
		}
	}
	if len(f.ReturnPath)+len(f.From) > MaxReturnPath {
		f.From = "" // the flow cookie keeps room for PingOne's cookies
	}
	msg, n := f.Flash, f.FlashN
	f.Flash, f.FlashN = "", 0
	if msg == "" && q.Get("error") == "csrf" {
		// A cross-origin POST is not trusted to write the flow cookie, so
		// its refusal travels in the URL.
		msg = "csrf"
	}
	// Someone already stepped up (another tab, Back after success) goes on
	// instead of being offered a challenge that would send another code. A
	// step-up never stands in for an approval.
	if msg == "" && f.Approval == "" && h.cfg.Verified != nil && h.cfg.Verified(r, c.user, f.ReturnMethod, f.ReturnPath) {
		h.cfg.Store.ClearFlow(w)
		setNoStore(w.Header())
		http.Redirect(w, r, SafeReturn(f.ReturnPath), http.StatusSeeOther)
		return
	}
	if f.FlowID == "" {
		if err := h.cfg.Store.SaveFlow(w, f); err != nil {
			h.internal(w, r, c, fmt.Errorf("challenge: save flow: %w", err))
			return
		}
		h.renderMessage(w, r, &f, nil, msg, n)
		return
	}
	if !h.allowRead(w, r, c, &f) {
		return
	}
	flow, err := h.cfg.PingOne.Read(r.Context(), &f.Pending)
	if err != nil {
		h.pingOneError(w, r, c, &f, err)
		return
	}
	switch flow.Status {
	case mfa.StatusCompleted:
		h.complete(w, r, c, &f, flow)
		return
	case mfa.StatusFailed:
		if f.Status == statusPush || f.Status == statusPushMany { // PingOne fails a push flow when the phone denies it
			h.pushDenied(w, r, c, &f)
			return
		}
		h.failed(w, r, c, &f, FailFlowFailed)
		return
	case mfa.StatusPushConfirmationRequired:
		if f.Status != statusPick {
			f.Status = statusPush
			if len(flow.Devices) > 1 {
				f.Status = statusPushMany
			}
		}
	case mfa.StatusPushConfirmationTimedOut:
		h.pushTimedOut(r, c, &f)
	}
	if err := h.cfg.Store.SaveFlow(w, f); err != nil {
		h.internal(w, r, c, fmt.Errorf("challenge: save flow: %w", err))
		return
	}
	h.noteUnexpected(r, c, &f, flow)
	h.renderMessage(w, r, &f, flow, msg, n)
}

// act performs one form action (docs/design.md §7 form contract).
func (h *Handler) act(w http.ResponseWriter, r *http.Request, c caller) {
	if err := h.origin.Check(r); err != nil {
		h.audit(r, "request.rejected", c, "", slog.String("reason", "cross-origin challenge post"))
		if clientKind(r) == kindAPI && !acceptsHTML(r) {
			h.Error(w, r, http.StatusForbidden, "csrf")
			return
		}
		setNoStore(w.Header())
		http.Redirect(w, r, PathChallenge+"?error=csrf", http.StatusSeeOther)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		h.Error(w, r, http.StatusBadRequest, "bad_request")
		return
	}
	f, ok := h.cfg.Store.Flow(r)
	if !ok || f.User != c.user {
		// No pending state for this user (the flow cookie expired): nothing
		// to act on. A fresh flow cookie carries the explanation to the
		// start page.
		h.m.Challenges.WithLabelValues("expired").Inc()
		f = session.Flow{User: c.user, ReturnPath: pageReturn(r), CSRF: randomBytes(32), Created: h.now()}
		h.tell(w, r, c, &f, "session_expired", 0)
		return
	}
	token, err := base64.RawURLEncoding.DecodeString(r.PostForm.Get("csrf"))
	if err != nil || len(f.CSRF) == 0 || subtle.ConstantTimeCompare(token, f.CSRF) != 1 {
		h.audit(r, "request.rejected", c, f.FlowID, slog.String("reason", "bad csrf token"))
		h.tell(w, r, c, &f, "csrf", 0)
		return
	}
	action := r.PostForm.Get("action")
	if action != "start" && action != "cancel" && f.FlowID == "" {
		h.tell(w, r, c, &f, "start_first", 0)
		return
	}
	switch action {
	case "start":
		h.start(w, r, c, &f)
	case "select":
		h.selectDevice(w, r, c, &f, r.PostForm.Get("device"))
	case "otp":
		h.checkOTP(w, r, c, &f)
	case "resend":
		h.resend(w, r, c, &f)
	case "switch":
		f.Status = statusPick
		h.saveAndContinue(w, r, c, &f)
	case "assertion":
		h.checkAssertion(w, r, c, &f)
	case "cancel":
		h.cancel(w, r, c, &f)
	default:
		h.Error(w, r, http.StatusBadRequest, "bad_request")
	}
}

// maxCompletionAge bounds how long after the user authenticated at PingOne
// (the ID token's auth_time) a completion may still issue a step-up.
const maxCompletionAge = 5 * time.Minute

// statusPick is the flow cookie's marker for "the user asked to switch
// device": the page lists devices whatever PingOne's status is.
const statusPick = "pick"

// statusPush is the flow cookie's marker for "the page showed a push": a
// flow that then fails was denied on the phone.
const statusPush = "push"

// statusPushMany is statusPush for a user with other methods: the page
// after a denial offers them.
const statusPushMany = "push+"

// statusPushTimedOut marks a push whose time-out was recorded.
const statusPushTimedOut = "push-"

// tell answers with a message. After a POST (or for the push poll) the
// message goes into the flow cookie and the browser gets a 303 to the page,
// which shows it once: a reload or Back never re-submits the form (issue
// 16). On a GET the page shows it at once.
func (h *Handler) tell(w http.ResponseWriter, r *http.Request, c caller, f *session.Flow, msg string, n int) {
	if r.Method == http.MethodPost || r.URL.Path == PathStatus {
		f.Flash, f.FlashN = msg, n
		if err := h.cfg.Store.SaveFlow(w, *f); err != nil {
			h.internal(w, r, c, fmt.Errorf("challenge: save flow: %w", err))
			return
		}
		if r.Method == http.MethodPost {
			if msg == "rate_limited" || msg == "resend_wait" {
				// Scripts that do not follow redirects still learn the wait.
				w.Header().Set("Retry-After", strconv.Itoa(max(n, 1)))
			}
			h.continueTo(w, r, f)
		}
		return
	}
	if err := h.cfg.Store.SaveFlow(w, *f); err != nil {
		h.internal(w, r, c, fmt.Errorf("challenge: save flow: %w", err))
		return
	}
	h.renderMessage(w, r, f, nil, msg, n)
}

func (h *Handler) start(w http.ResponseWriter, r *http.Request, c caller, f *session.Flow) {
	if f.FlowID != "" { // a double submit or a reload: resume, never restart
		h.continueTo(w, r, f)
		return
	}
	if !h.allow(w, r, c, f, h.cfg.Limits.StartPerUser, "start_user", "u:"+c.user) ||
		!h.allow(w, r, c, f, h.cfg.Limits.StartPerIP, "start_ip", ipKey(c.client)) {
		return
	}
	// Asked after the limits, so a limit call that just failed counts.
	if h.cfg.StoreDown != nil && h.cfg.StoreDown() {
		h.audit(r, "mfa.refused", c, "", slog.String("reason", "store unreachable"))
		w.Header().Set("Retry-After", "5")
		h.tell(w, r, c, f, "stepup_unavailable", 0)
		return
	}
	req, what, ok := h.startRequest(w, r, c, f)
	if !ok {
		return
	}
	source := "the upstream user"
	if m := h.cfg.Mapping; m != nil {
		source = m.Source()
		var err error
		if req.User, err = m.PingOneUser(r, c.user); err != nil {
			h.notSetUp(w, r, c, f, source, "", err.Error())
			return
		}
	}
	flow, pending, err := h.cfg.PingOne.Start(r.Context(), req)
	if pe := (*mfa.Error)(nil); errors.As(err, &pe) && pe.UserRefused() {
		h.notSetUp(w, r, c, f, source, req.User, pe.Error())
		return
	}
	if err != nil {
		h.pingOneError(w, r, c, f, err)
		return
	}
	f.Pending = *pending
	f.Status = ""
	if r.PostForm.Get("pick") == "1" && len(flow.Devices) > 1 {
		// "Use another method" after a denied push: list the methods
		// whatever PingOne picked by default.
		f.Status = statusPick
	}
	if isSent(flow.Status) {
		f.SentAt = h.now()
	}
	h.m.Challenges.WithLabelValues("started").Inc()
	h.audit(r, "mfa.started", c, f.FlowID, slog.String("rule", what), slog.String("status", string(flow.Status)))
	h.afterAction(w, r, c, f, flow)
}

func (h *Handler) selectDevice(w http.ResponseWriter, r *http.Request, c caller, f *session.Flow, id string) {
	h.send(w, r, c, f, id, "")
}

// send selects a device, which makes PingOne send a code or a push to it;
// notice is the message the next page shows once ("" for none).
func (h *Handler) send(w http.ResponseWriter, r *http.Request, c caller, f *session.Flow, id, notice string) {
	if !validID(id) {
		h.tell(w, r, c, f, "bad_device", 0)
		return
	}
	if !h.allow(w, r, c, f, h.cfg.Limits.SendPerUser, "send_user", "u:"+c.user) {
		return
	}
	flow, err := h.cfg.PingOne.SelectDevice(r.Context(), &f.Pending, id)
	if err != nil {
		h.pingOneError(w, r, c, f, err)
		return
	}
	f.Status = ""
	if isSent(flow.Status) {
		f.SentAt = h.now()
		f.Flash = notice
	}
	h.audit(r, "mfa.device_selected", c, f.FlowID, slog.String("device_type", deviceType(flow, id)))
	h.afterAction(w, r, c, f, flow)
}

// isSent reports whether PingOne has just sent something the user waits
// for: a code (TOTP codes are not sent, but a cool-down does no harm) or a
// push.
func isSent(s mfa.Status) bool {
	return s == mfa.StatusOTPRequired || s == mfa.StatusPushConfirmationRequired
}

// cooldownLeft is how long until another code may be sent.
func (h *Handler) cooldownLeft(f *session.Flow) time.Duration {
	if f.SentAt.IsZero() {
		return 0
	}
	left := f.SentAt.Add(h.cfg.ResendCooldown).Sub(h.now())
	if left < 0 || left > h.cfg.ResendCooldown {
		return 0
	}
	return left
}

func (h *Handler) resend(w http.ResponseWriter, r *http.Request, c caller, f *session.Flow) {
	if !h.allowRead(w, r, c, f) {
		return
	}
	flow, err := h.cfg.PingOne.Read(r.Context(), &f.Pending)
	if err != nil {
		h.pingOneError(w, r, c, f, err)
		return
	}
	if flow.SelectedDeviceID == "" {
		f.Status = statusPick
		h.saveAndContinue(w, r, c, f)
		return
	}
	if left := h.cooldownLeft(f); left > 0 && flow.Status != mfa.StatusPushConfirmationTimedOut {
		h.tell(w, r, c, f, "resend_wait", int(retrySeconds(left)))
		return
	}
	notice := "code_sent"
	if deviceType(flow, flow.SelectedDeviceID) == "MOBILE" {
		notice = "push_sent"
	}
	h.send(w, r, c, f, flow.SelectedDeviceID, notice)
}

func (h *Handler) checkOTP(w http.ResponseWriter, r *http.Request, c caller, f *session.Flow) {
	code, ok := normaliseOTP(r.PostForm.Get("otp"))
	if !ok {
		h.tell(w, r, c, f, "otp_format", 0)
		return
	}
	if !h.allow(w, r, c, f, h.cfg.Limits.OTPPerUser, "otp_user", "u:"+c.user) {
		return
	}
	flow, err := h.cfg.PingOne.CheckOTP(r.Context(), &f.Pending, mfa.Secret(code))
	var pe *mfa.Error
	if errors.As(err, &pe) && pe.Kind == mfa.KindWrongOTP {
		h.m.OTPChecks.WithLabelValues("wrong").Inc()
		h.audit(r, "mfa.otp_failed", c, f.FlowID, slog.Int("attempts_remaining", pe.AttemptsRemaining))
		if pe.AttemptsRemaining == 0 {
			h.failed(w, r, c, f, FailOTPLimit)
			return
		}
		h.tell(w, r, c, f, "otp_wrong", max(pe.AttemptsRemaining, 0))
		return
	}
	if err != nil {
		h.m.OTPChecks.WithLabelValues("error").Inc()
		h.pingOneError(w, r, c, f, err)
		return
	}
	h.m.OTPChecks.WithLabelValues("ok").Inc()
	h.afterAction(w, r, c, f, flow)
}

func (h *Handler) checkAssertion(w http.ResponseWriter, r *http.Request, c caller, f *session.Flow) {
	origin, assertion := r.PostForm.Get("origin"), r.PostForm.Get("assertion")
	if origin != requestOrigin(r) || assertion == "" || len(assertion) > 32<<10 || !json.Valid([]byte(assertion)) {
		h.audit(r, "mfa.failed", c, f.FlowID, slog.String("reason", FailAssertionMalformed),
			slog.String("detail", "malformed assertion or foreign origin"))
		h.tell(w, r, c, f, "assertion_bad", 0)
		return
	}
	flow, err := h.cfg.PingOne.CheckAssertion(r.Context(), &f.Pending, origin, assertion)
	var pe *mfa.Error
	if errors.As(err, &pe) && pe.Kind == mfa.KindInvalid {
		// PingOne refuses an assertion from a key it does not know for
		// this user; the flow stays open for another key or method.
		h.audit(r, "mfa.failed", c, f.FlowID, slog.String("reason", FailAssertionRefused),
			slog.String("detail", "pingone refused the assertion"), slog.String("code", pe.DetailCode))
		h.tell(w, r, c, f, "assertion_unknown_key", 0)
		return
	}
	if err != nil {
		h.pingOneError(w, r, c, f, err)
		return
	}
	h.afterAction(w, r, c, f, flow)
}

func (h *Handler) cancel(w http.ResponseWriter, r *http.Request, c caller, f *session.Flow) {
	if f.FlowID != "" {
		// Best effort: PingOne forgets idle flows after 15 minutes anyway.
		_, _ = h.cfg.PingOne.Reset(r.Context(), &f.Pending)
		h.audit(r, "mfa.cancelled", c, f.FlowID)
	}
	f.Pending, f.Status, f.SentAt = mfa.Pending{}, "", time.Time{}
	if f.Approval != "" {
		// A cancelled approval is over: the held request is dropped, so
		// no later flow can approve (and so send) it.
		if h.cfg.Approvals != nil {
			h.cfg.Approvals.Forget(r.Context(), f.Approval)
		}
		h.audit(r, "approval.cancelled", c, f.FlowID, heldAttrs(f.Approval, nil)...)
		h.cfg.Store.ClearFlow(w)
		setNoStore(w.Header())
		http.Redirect(w, r, homeFor(f), http.StatusSeeOther)
		return
	}
	if err := h.cfg.Store.SaveFlow(w, *f); err != nil {
		h.internal(w, r, c, fmt.Errorf("challenge: save flow: %w", err))
		return
	}
	// Back to where the user came from (the page before the protected
	// one), else the application's home.
	setNoStore(w.Header())
	http.Redirect(w, r, homeFor(f), http.StatusSeeOther)
}

// homeFor is the way out of the challenge: where the user came from, else
// the application's home.
func homeFor(f *session.Flow) string {
	if f != nil && f.From != "" {
		return SafeReturn(f.From)
	}
	return "/"
}

// afterAction moves on from a flow PingOne just returned.
func (h *Handler) afterAction(w http.ResponseWriter, r *http.Request, c caller, f *session.Flow, flow *mfa.Flow) {
	switch flow.Status {
	case mfa.StatusCompleted:
		h.complete(w, r, c, f, flow)
	case mfa.StatusFailed:
		h.failed(w, r, c, f, FailFlowFailed)
	default:
		h.saveAndContinue(w, r, c, f)
	}
}

func (h *Handler) saveAndContinue(w http.ResponseWriter, r *http.Request, c caller, f *session.Flow) {
	if err := h.cfg.Store.SaveFlow(w, *f); err != nil {
		h.internal(w, r, c, fmt.Errorf("challenge: save flow: %w", err))
		return
	}
	h.continueTo(w, r, f)
}

// continueTo answers a POST with a 303 to the page. The URL names the
// return path, so that the history entry it creates still knows where the
// user was going: Back to it after success sends the user on (show).
func (h *Handler) continueTo(w http.ResponseWriter, r *http.Request, f *session.Flow) {
	setNoStore(w.Header())
	target := PathChallenge
	if f != nil && f.ReturnPath != "" && f.ReturnPath != "/" {
		target += "?return=" + url.QueryEscape(f.ReturnPath)
	}
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// finish verifies a completed flow and issues the step-up cookie. It returns
// the path to go back to, or renders an error page and returns "".
func (h *Handler) finish(w http.ResponseWriter, r *http.Request, c caller, f *session.Flow, flow *mfa.Flow) string {
	res, err := h.cfg.PingOne.Complete(r.Context(), &f.Pending, flow)
	if err != nil {
		h.pingOneError(w, r, c, f, err)
		return ""
	}
	if msg, reason, detail := CheckCompletion(res, h.now(), h.cfg.AllowBypass); msg != "" {
		h.m.Challenges.WithLabelValues("failed").Inc()
		h.audit(r, "mfa.failed", c, f.FlowID, slog.String("reason", reason), slog.String("detail", detail))
		f.Pending, f.Status, f.SentAt = mfa.Pending{}, "", time.Time{}
		h.tell(w, r, c, f, msg, 0)
		return ""
	}
	if f.Approval != "" {
		// An approval is for one request: it never becomes a step-up.
		return h.finishApproval(w, r, c, f, res.Subject)
	}
	// Freshness counts from the MFA itself. A completed flow can be read
	// again with a kept copy of its flow cookie (for the cookie's 15
	// minutes), and PingOne answers with the same ID token; taking the
	// token's auth_time when it is earlier than our clock stops such a
	// replay from renewing max_age.
	authTime := h.now()
	if !res.AuthTime.IsZero() && res.AuthTime.Before(authTime) {
		authTime = res.AuthTime
	}
	su := session.StepUp{
		ID:          base64.RawURLEncoding.EncodeToString(randomBytes(16)),
		User:        f.User,
		Subject:     res.Subject,
		AuthTime:    authTime,
		ACR:         res.ACR,
		AMR:         res.AMR,
		IDToken:     res.IDToken.Reveal(),
		TokenExpiry: res.Expiry,
	}
	if err := h.cfg.Store.SaveStepUp(w, su); err != nil {
		h.internal(w, r, c, fmt.Errorf("challenge: save step-up: %w", err))
		return ""
	}
	h.cfg.Store.ClearFlow(w)
	h.m.Challenges.WithLabelValues("completed").Inc()
	h.audit(r, "mfa.completed", c, f.FlowID, slog.String("acr", res.ACR), slog.String("amr", strings.Join(res.AMR, ",")),
		slog.String("session_id", su.ID))
	return f.ReturnPath
}

// CheckCompletion says whether a verified completion may count: "" when it
// may, else the page's message, the audit reason (a Fail* code) and a
// sentence for people. The challenge page and the phone-only approval
// (proxy/decoupled) both ask it.
func CheckCompletion(res *mfa.Result, now time.Time, allowBypass bool) (msg, reason, detail string) {
	// A completed flow keeps answering with the same tokens until PingOne
	// forgets it, so a replayed flow cookie could mint a new step-up with a
	// new AuthTime. The ID token says when the user really authenticated.
	if res.AuthTime.IsZero() || now.Sub(res.AuthTime) > maxCompletionAge {
		return "verification_failed", FailAuthTimeStale, "id token auth_time missing or too old (replayed completion?)"
	}
	if !res.MFA && !allowBypass {
		return "no_mfa_method", FailNoMFAStep, "pingone completed without an mfa step (bypass)"
	}
	return "", "", ""
}

// The reasons of an mfa.failed audit line: a fixed set of codes
// (docs/audit.md lists them; a new one is a minor schema change). A
// sentence for people goes in "detail".
const (
	FailFlowFailed         = "flow_failed"         // PingOne failed the flow
	FailOTPLimit           = "otp_limit"           // the last wrong code
	FailPushDenied         = "push_denied"         // the push was denied on the phone
	FailPushTimedOut       = "push_timed_out"      // nobody answered the push in time
	FailAssertionMalformed = "assertion_malformed" // a passkey answer stepgate could not read, or from another origin
	FailAssertionRefused   = "assertion_refused"   // PingOne refused the passkey's assertion
	FailAuthTimeStale      = "auth_time_stale"     // the ID token's auth_time missing or too old (a replayed completion)
	FailNoMFAStep          = "no_mfa_step"         // PingOne completed without an MFA step (a bypass policy)
	FailIDTokenRejected    = "id_token_rejected"   // the ID token did not verify
)

// FailReasons is every reason an mfa.failed line can give.
var FailReasons = []string{FailFlowFailed, FailOTPLimit, FailPushDenied, FailPushTimedOut,
	FailAssertionMalformed, FailAssertionRefused, FailAuthTimeStale, FailNoMFAStep, FailIDTokenRejected}

func (h *Handler) complete(w http.ResponseWriter, r *http.Request, c caller, f *session.Flow, flow *mfa.Flow) {
	if next := h.finish(w, r, c, f, flow); next != "" {
		setNoStore(w.Header())
		http.Redirect(w, r, SafeReturn(next), http.StatusSeeOther)
	}
}

func (h *Handler) failed(w http.ResponseWriter, r *http.Request, c caller, f *session.Flow, reason string) {
	h.m.Challenges.WithLabelValues("failed").Inc()
	h.audit(r, "mfa.failed", c, f.FlowID, slog.String("reason", reason))
	f.Pending, f.Status, f.SentAt = mfa.Pending{}, "", time.Time{}
	h.tell(w, r, c, f, reason, 0)
}

// pushDenied ends a flow whose push was denied on the phone. The page says
// so and offers a retry, and another method when the user has one (the
// message's number is 1 then).
func (h *Handler) pushDenied(w http.ResponseWriter, r *http.Request, c caller, f *session.Flow) {
	others := 0
	if f.Status == statusPushMany {
		others = 1
	}
	h.m.Challenges.WithLabelValues("failed").Inc()
	h.audit(r, "mfa.failed", c, f.FlowID, slog.String("reason", FailPushDenied))
	f.Pending, f.Status, f.SentAt = mfa.Pending{}, "", time.Time{}
	h.tell(w, r, c, f, "push_denied", others)
}

// pushTimedOut records, once per push, that nobody answered it in time:
// the poll and the page both see the time-out, and a reload sees it again.
// The flow stays open (the page offers to push again), like after a denial.
func (h *Handler) pushTimedOut(r *http.Request, c caller, f *session.Flow) {
	if f.Status == statusPushTimedOut || f.Status == statusPick {
		return // recorded already, or the user is choosing another method
	}
	h.m.Challenges.WithLabelValues("failed").Inc()
	h.audit(r, "mfa.failed", c, f.FlowID, slog.String("reason", FailPushTimedOut))
	f.Status = statusPushTimedOut
}

// status is the JSON endpoint the push page polls.
func (h *Handler) status(w http.ResponseWriter, r *http.Request, c caller) {
	setNoStore(w.Header())
	f, ok := h.cfg.Store.Flow(r)
	if !ok || f.User != c.user || f.FlowID == "" {
		writeJSON(w, http.StatusOK, map[string]string{"status": "NONE", "next": PathChallenge})
		return
	}
	if lim := h.cfg.Limits.PollPerFlow; lim != nil {
		if ok, wait := lim.Allow("f:" + f.FlowID); !ok {
			h.m.RateLimited.WithLabelValues("poll_flow").Inc()
			w.Header().Set("Retry-After", retryAfter(wait))
			writeJSON(w, http.StatusTooManyRequests, map[string]string{"status": "WAIT", "error": "rate_limited"})
			return
		}
	}
	flow, err := h.cfg.PingOne.Read(r.Context(), &f.Pending)
	if err != nil {
		var pe *mfa.Error
		if errors.As(err, &pe) && pe.Kind == mfa.KindUnavailable {
			// A passing fault: the page keeps polling with back-off.
			w.Header().Set("Retry-After", "5")
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "WAIT", "error": "unavailable"})
			return
		}
		// Anything else is best explained by the full page.
		writeJSON(w, http.StatusOK, map[string]string{"status": "ERROR", "next": PathChallenge})
		return
	}
	switch flow.Status {
	case mfa.StatusCompleted:
		rec := &capture{header: w.Header()}
		next := h.finish(rec, r, c, &f, flow)
		if next == "" {
			writeJSON(w, http.StatusOK, map[string]string{"status": "ERROR", "next": PathChallenge})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": string(flow.Status), "next": SafeReturn(next)})
	case mfa.StatusPushConfirmationRequired:
		_ = h.cfg.Store.SaveFlow(w, f)
		writeJSON(w, http.StatusOK, map[string]string{"status": string(flow.Status)})
	case mfa.StatusPushConfirmationTimedOut:
		h.pushTimedOut(r, c, &f)
		_ = h.cfg.Store.SaveFlow(w, f)
		writeJSON(w, http.StatusOK, map[string]string{"status": string(flow.Status), "next": PathChallenge})
	default:
		_ = h.cfg.Store.SaveFlow(w, f)
		writeJSON(w, http.StatusOK, map[string]string{"status": string(flow.Status), "next": PathChallenge})
	}
}

func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		h.Error(w, r, http.StatusMethodNotAllowed, "method_not_allowed")
		return
	}
	if err := h.origin.Check(r); err != nil {
		h.Error(w, r, http.StatusForbidden, "csrf")
		return
	}
	var revokeErr error
	if h.cfg.Revoke != nil {
		revokeErr = h.cfg.Revoke(r)
	}
	h.cfg.Store.ClearStepUp(w)
	h.cfg.Store.ClearFlow(w)
	setNoStore(w.Header())
	if revokeErr != nil {
		// The browser forgets the cookie; a copy of it may still open on
		// other replicas until the store is back, so say it did not work.
		h.log.LogAttrs(r.Context(), slog.LevelError, "logout: revocation not stored", slog.String("error", revokeErr.Error()))
		w.Header().Set("Retry-After", "5")
		h.Error(w, r, http.StatusServiceUnavailable, "store_unavailable")
		return
	}
	if clientKind(r) == kindAPI {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// pingOneError turns a PingOne client error into the page the user sees.
func (h *Handler) pingOneError(w http.ResponseWriter, r *http.Request, c caller, f *session.Flow, err error) {
	var pe *mfa.Error
	if !errors.As(err, &pe) {
		h.internal(w, r, c, err)
		return
	}
	h.log.LogAttrs(r.Context(), slog.LevelWarn, "pingone error",
		slog.String("user", c.user), slog.String("flow_id", f.FlowID), slog.String("kind", pe.Kind.String()),
		slog.String("correlation_id", pe.CorrelationID), slog.String("error", pe.Error()))
	switch pe.Kind {
	case mfa.KindFlowExpired:
		h.m.Challenges.WithLabelValues("expired").Inc()
		f.Pending, f.Status, f.SentAt = mfa.Pending{}, "", time.Time{}
		h.tell(w, r, c, f, "expired", 0)
	case mfa.KindRateLimited:
		h.m.RateLimited.WithLabelValues("pingone").Inc()
		h.audit(r, "mfa.rate_limited", c, f.FlowID, slog.String("limit", "pingone"))
		h.tell(w, r, c, f, "rate_limited", int(retrySeconds(pe.RetryAfter)))
	case mfa.KindUnavailable:
		h.tell(w, r, c, f, "unavailable", 0)
	case mfa.KindFlowFailed:
		h.failed(w, r, c, f, FailFlowFailed)
	case mfa.KindTokenInvalid:
		h.m.Challenges.WithLabelValues("failed").Inc()
		h.audit(r, "mfa.failed", c, f.FlowID, slog.String("reason", FailIDTokenRejected))
		f.Pending, f.Status, f.SentAt = mfa.Pending{}, "", time.Time{}
		h.tell(w, r, c, f, "verification_failed", 0)
	default: // KindInvalid, KindWrongOTP outside an OTP check
		msg := "rejected"
		if pe.DetailCode == "LIMIT_EXCEEDED" { // PingOne's per-user OTP cool-down or push limit (docs/pingone.md)
			msg = "method_locked"
		}
		h.tell(w, r, c, f, msg, 0)
	}
}

// notSetUp answers a user PingOne does not know, or whose PingOne user the
// request does not carry: the page says so, and the log names where the
// value came from and what to check, because the usual cause is a chain that
// sends PingOne the IdP's own user id (docs/design.md §17).
func (h *Handler) notSetUp(w http.ResponseWriter, r *http.Request, c caller, f *session.Flow, source, pingOneUser, reason string) {
	h.audit(r, "identity.rejected", c, "",
		slog.String("reason", "pingone user not set up: "+reason),
		slog.String("pingone_user", pingOneUser),
		slog.String("pingone_user_source", source),
		slog.String("check", h.cfg.MappingCheck))
	h.tell(w, r, c, f, "not_set_up", 0) // a POST outcome: 303 to the page that says so
}

func (h *Handler) internal(w http.ResponseWriter, r *http.Request, c caller, err error) {
	h.log.LogAttrs(r.Context(), slog.LevelError, "challenge error", slog.String("user", c.user), slog.String("error", err.Error()))
	h.Error(w, r, http.StatusInternalServerError, "internal")
}

// allow applies one limit; on refusal it answers 429 (after a POST: a 303
// to the 429 page) and returns false.
func (h *Handler) allow(w http.ResponseWriter, r *http.Request, c caller, f *session.Flow, l Limiter, name, key string) bool {
	if l == nil {
		return true
	}
	ok, wait := l.Allow(key)
	if ok {
		return true
	}
	h.m.RateLimited.WithLabelValues(name).Inc()
	h.audit(r, "mfa.rate_limited", c, "", slog.String("limit", name))
	h.tell(w, r, c, f, "rate_limited", int(retrySeconds(wait)))
	return false
}

// allowRead applies the page-load read limits, per flow then per user. Over
// either, the page answers 429 with Retry-After and a way back, from the
// flow cookie alone: no PingOne call.
func (h *Handler) allowRead(w http.ResponseWriter, r *http.Request, c caller, f *session.Flow) bool {
	for _, l := range []struct {
		lim       Limiter
		name, key string
	}{
		{h.cfg.Limits.ReadPerFlow, "read_flow", "f:" + f.FlowID},
		{h.cfg.Limits.ReadPerUser, "read_user", "u:" + c.user},
	} {
		if l.lim == nil {
			continue
		}
		if ok, wait := l.lim.Allow(l.key); !ok {
			h.m.RateLimited.WithLabelValues(l.name).Inc()
			h.audit(r, "mfa.rate_limited", c, f.FlowID, slog.String("limit", l.name))
			setNoStore(w.Header())
			w.Header().Set("Retry-After", retryAfter(wait))
			h.render(w, r, http.StatusTooManyRequests, &view{State: "error", Message: "rate_limited", Back: true, RetryAfter: wait, flow: f})
			return false
		}
	}
	return true
}

func (h *Handler) audit(r *http.Request, event string, c caller, flowID string, attrs ...slog.Attr) {
	attrs = append(attrs,
		slog.String("event", event),
		slog.String("user", c.user),
		slog.String("client_ip", addrString(c.client)),
		slog.String("flow_id", flowID))
	h.log.LogAttrs(r.Context(), slog.LevelInfo, "audit", attrs...)
}

func deviceType(flow *mfa.Flow, id string) string {
	for _, d := range flow.Devices {
		if d.ID == id {
			return d.Type
		}
	}
	return ""
}

// returnMethod is the method query parameter of the challenge page as the
// flow records it: an upper-case method token of at most 16 letters, or ""
// (GET) for anything else. It only chooses which rule's policy the flow asks
// for; the step-up is checked against the real rule when it is used.
func returnMethod(m string) string {
	if m == "" || len(m) > 16 || m == http.MethodGet || m == http.MethodHead {
		return ""
	}
	for i := 0; i < len(m); i++ {
		if m[i] < 'A' || m[i] > 'Z' {
			return ""
		}
	}
	return m
}

// validID accepts PingOne-style ids only, so nothing odd reaches a URL or a log.
func validID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// NormaliseOTP is normaliseOTP, for the phone-only approval's code.
func NormaliseOTP(s string) (string, bool) { return normaliseOTP(s) }

// normaliseOTP accepts a code as people type or paste it: digits, with
// spaces or dashes between groups ("123 456", "123-456"). It returns the
// digits alone, 4 to 12 of them.
func normaliseOTP(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if len(s) > 32 {
		return "", false
	}
	b := make([]byte, 0, 12)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			b = append(b, c)
		case c == ' ' || c == '-':
		default:
			return "", false
		}
	}
	if len(b) < 4 || len(b) > 12 {
		return "", false
	}
	return string(b), true
}

// referrerPath is the same-origin page the browser came from, as a return
// path, or "" (another site, no Referer, stepgate's own pages).
func referrerPath(r *http.Request) string {
	ref := r.Header.Get("Referer")
	if ref == "" || len(ref) > MaxReturnPath {
		return ""
	}
	u, err := url.Parse(ref)
	if err != nil || u.Host != r.Host || (u.Scheme != "http" && u.Scheme != "https") {
		return ""
	}
	return safeFrom(u.RequestURI())
}

// pageReturn is the return path named by the challenge page the form was
// posted from (its Referer, same origin only), or "/": after the flow cookie
// expired, a fresh start still knows where the user was going.
func pageReturn(r *http.Request) string {
	u, err := url.Parse(r.Header.Get("Referer"))
	if err != nil || u.Host != r.Host || u.Path != PathChallenge {
		return "/"
	}
	return SafeReturn(u.Query().Get("return"))
}

// maxFrom bounds "where the user came from" in the flow cookie, which also
// holds a return path of up to MaxReturnPath and must stay under 4 KB.
const maxFrom = 512

// safeFrom is a return path for "where the user came from", or "" when it
// is not a safe same-origin path or is one of stepgate's own.
func safeFrom(p string) string {
	if p == "" || len(p) > maxFrom || SafeReturn(p) != p || strings.HasPrefix(p, "/.stepgate/") {
		return ""
	}
	return p
}

// requestOrigin is the origin the browser used to reach us.
func requestOrigin(r *http.Request) string {
	if o := r.Header.Get("Origin"); o != "" {
		return o
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// ipKey is the per-IP limit's key: an IPv4 address, or an IPv6 address's
// /64. One IPv6 host usually holds a whole /64 and can rotate through it, so
// keying by full address would give it 2^64 fresh buckets.
func ipKey(a netip.Addr) string {
	a = a.Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

func retryAfter(d time.Duration) string {
	return strconv.FormatInt(retrySeconds(d), 10)
}

// retrySeconds is d in whole seconds, rounded up, at least 1.
func retrySeconds(d time.Duration) int64 {
	s := int64((d + time.Second - 1) / time.Second)
	if s < 1 {
		s = 1
	}
	return s
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("challenge: crypto/rand: %v", err)) // never returns an error on supported platforms
	}
	return b
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func setNoStore(h http.Header) {
	h.Set("Cache-Control", "no-store")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// capture lets finish set cookies on the real response while its redirect
// is replaced by a JSON answer.
type capture struct {
	header http.Header
	status int
}

func (c *capture) Header() http.Header         { return c.header }
func (c *capture) Write(b []byte) (int, error) { return len(b), nil }
func (c *capture) WriteHeader(s int)           { c.status = s }
