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
	Approvals   Approvals
	AllowBypass bool
	Pages       *Pages
	Logger      *slog.Logger
	Metrics     *metrics.Metrics
	Now         func() time.Time
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

// show renders the page for the current state; it never starts a flow.
func (h *Handler) show(w http.ResponseWriter, r *http.Request, c caller) {
	if ref := r.URL.Query().Get("approval"); ref != "" {
		h.adoptApproval(w, r, c, ref)
		return
	}
	f, ok := h.cfg.Store.Flow(r)
	if !ok && r.URL.Query().Get("done") == doneApproved {
		h.render(w, r, http.StatusOK, &view{State: "approved"})
		return
	}
	ret := r.URL.Query().Get("return")
	method := returnMethod(r.URL.Query().Get("method"))
	if !ok || f.User != c.user {
		f = session.Flow{User: c.user, ReturnPath: SafeReturn(ret), ReturnMethod: method, CSRF: randomBytes(32), Created: h.now()}
		if err := h.cfg.Store.SaveFlow(w, f); err != nil {
			h.internal(w, r, c, fmt.Errorf("challenge: save flow: %w", err))
			return
		}
		h.render(w, r, http.StatusOK, &view{State: "start", flow: &f})
		return
	}
	if f.FlowID == "" {
		if ret != "" && (SafeReturn(ret) != f.ReturnPath || method != f.ReturnMethod) {
			f.ReturnPath, f.ReturnMethod = SafeReturn(ret), method
			if err := h.cfg.Store.SaveFlow(w, f); err != nil {
				h.internal(w, r, c, fmt.Errorf("challenge: save flow: %w", err))
				return
			}
		}
		h.render(w, r, http.StatusOK, &view{State: "start", flow: &f})
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
		h.failed(w, r, c, &f, "flow_failed")
		return
	}
	if err := h.cfg.Store.SaveFlow(w, f); err != nil {
		h.internal(w, r, c, fmt.Errorf("challenge: save flow: %w", err))
		return
	}
	h.noteUnexpected(r, c, &f, flow)
	h.renderFlow(w, r, http.StatusOK, &f, flow, "")
}

// act performs one form action (docs/design.md §7 form contract).
func (h *Handler) act(w http.ResponseWriter, r *http.Request, c caller) {
	if err := h.origin.Check(r); err != nil {
		h.audit(r, "request.rejected", c, "", slog.String("reason", "cross-origin challenge post"))
		h.Error(w, r, http.StatusForbidden, "csrf")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		h.Error(w, r, http.StatusBadRequest, "bad_request")
		return
	}
	f, ok := h.cfg.Store.Flow(r)
	if !ok || f.User != c.user {
		// No pending state for this user: nothing to act on. The page offers
		// a fresh start.
		h.render(w, r, http.StatusForbidden, &view{State: "error", Message: "session_expired", Restart: true})
		return
	}
	token, err := base64.RawURLEncoding.DecodeString(r.PostForm.Get("csrf"))
	if err != nil || len(f.CSRF) == 0 || subtle.ConstantTimeCompare(token, f.CSRF) != 1 {
		h.audit(r, "request.rejected", c, f.FlowID, slog.String("reason", "bad csrf token"))
		h.Error(w, r, http.StatusForbidden, "csrf")
		return
	}
	action := r.PostForm.Get("action")
	if action != "start" && action != "cancel" && f.FlowID == "" {
		h.render(w, r, http.StatusBadRequest, &view{State: "start", flow: &f, Message: "start_first"})
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

func (h *Handler) start(w http.ResponseWriter, r *http.Request, c caller, f *session.Flow) {
	if f.FlowID != "" { // a double submit or a reload: resume, never restart
		h.continueTo(w, r)
		return
	}
	if !h.allow(w, r, c, h.cfg.Limits.StartPerUser, "start_user", "u:"+c.user) ||
		!h.allow(w, r, c, h.cfg.Limits.StartPerIP, "start_ip", ipKey(c.client)) {
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
			h.notSetUp(w, r, c, source, "", err.Error())
			return
		}
	}
	flow, pending, err := h.cfg.PingOne.Start(r.Context(), req)
	if pe := (*mfa.Error)(nil); errors.As(err, &pe) && pe.UserRefused() {
		h.notSetUp(w, r, c, source, req.User, pe.Error())
		return
	}
	if err != nil {
		h.pingOneError(w, r, c, f, err)
		return
	}
	f.Pending = *pending
	f.Status = ""
	h.m.Challenges.WithLabelValues("started").Inc()
	h.audit(r, "mfa.started", c, f.FlowID, slog.String("rule", what), slog.String("status", string(flow.Status)))
	h.afterAction(w, r, c, f, flow)
}

func (h *Handler) selectDevice(w http.ResponseWriter, r *http.Request, c caller, f *session.Flow, id string) {
	if !validID(id) {
		h.render(w, r, http.StatusBadRequest, &view{State: "error", Message: "bad_device", Restart: false, Back: true})
		return
	}
	if !h.allow(w, r, c, h.cfg.Limits.SendPerUser, "send_user", "u:"+c.user) {
		return
	}
	flow, err := h.cfg.PingOne.SelectDevice(r.Context(), &f.Pending, id)
	if err != nil {
		h.pingOneError(w, r, c, f, err)
		return
	}
	f.Status = ""
	h.audit(r, "mfa.device_selected", c, f.FlowID, slog.String("device_type", deviceType(flow, id)))
	h.afterAction(w, r, c, f, flow)
}

func (h *Handler) resend(w http.ResponseWriter, r *http.Request, c caller, f *session.Flow) {
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
	h.selectDevice(w, r, c, f, flow.SelectedDeviceID)
}

func (h *Handler) checkOTP(w http.ResponseWriter, r *http.Request, c caller, f *session.Flow) {
	code := strings.TrimSpace(r.PostForm.Get("otp"))
	if !validOTP(code) {
		h.rerenderOTP(w, r, c, f, "otp_format", -1)
		return
	}
	if !h.allow(w, r, c, h.cfg.Limits.OTPPerUser, "otp_user", "u:"+c.user) {
		return
	}
	flow, err := h.cfg.PingOne.CheckOTP(r.Context(), &f.Pending, mfa.Secret(code))
	var pe *mfa.Error
	if errors.As(err, &pe) && pe.Kind == mfa.KindWrongOTP {
		h.m.OTPChecks.WithLabelValues("wrong").Inc()
		h.audit(r, "mfa.otp_failed", c, f.FlowID, slog.Int("attempts_remaining", pe.AttemptsRemaining))
		if pe.AttemptsRemaining == 0 {
			h.failed(w, r, c, f, "otp_limit")
			return
		}
		h.rerenderOTP(w, r, c, f, "otp_wrong", pe.AttemptsRemaining)
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

// rerenderOTP shows the code page again with an error, keeping the flow.
func (h *Handler) rerenderOTP(w http.ResponseWriter, r *http.Request, c caller, f *session.Flow, msg string, attempts int) {
	flow, err := h.cfg.PingOne.Read(r.Context(), &f.Pending)
	if err != nil {
		h.pingOneError(w, r, c, f, err)
		return
	}
	if flow.Status == mfa.StatusFailed {
		h.failed(w, r, c, f, "otp_limit")
		return
	}
	if err := h.cfg.Store.SaveFlow(w, *f); err != nil {
		h.internal(w, r, c, fmt.Errorf("challenge: save flow: %w", err))
		return
	}
	v := h.flowView(f, flow)
	v.Message, v.AttemptsLeft = msg, attempts
	status := http.StatusBadRequest
	if msg == "otp_wrong" {
		status = http.StatusUnauthorized
	}
	h.render(w, r, status, v)
}

func (h *Handler) checkAssertion(w http.ResponseWriter, r *http.Request, c caller, f *session.Flow) {
	origin, assertion := r.PostForm.Get("origin"), r.PostForm.Get("assertion")
	if origin != requestOrigin(r) || assertion == "" || len(assertion) > 32<<10 || !json.Valid([]byte(assertion)) {
		h.audit(r, "mfa.failed", c, f.FlowID, slog.String("reason", "malformed assertion or foreign origin"))
		h.render(w, r, http.StatusBadRequest, &view{State: "error", Message: "assertion_bad", Back: true})
		return
	}
	flow, err := h.cfg.PingOne.CheckAssertion(r.Context(), &f.Pending, origin, assertion)
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
	f.Pending, f.Status = mfa.Pending{}, ""
	h.saveAndContinue(w, r, c, f)
}

// afterAction moves on from a flow PingOne just returned.
func (h *Handler) afterAction(w http.ResponseWriter, r *http.Request, c caller, f *session.Flow, flow *mfa.Flow) {
	switch flow.Status {
	case mfa.StatusCompleted:
		h.complete(w, r, c, f, flow)
	case mfa.StatusFailed:
		h.failed(w, r, c, f, "flow_failed")
	default:
		h.saveAndContinue(w, r, c, f)
	}
}

func (h *Handler) saveAndContinue(w http.ResponseWriter, r *http.Request, c caller, f *session.Flow) {
	if err := h.cfg.Store.SaveFlow(w, *f); err != nil {
		h.internal(w, r, c, fmt.Errorf("challenge: save flow: %w", err))
		return
	}
	h.continueTo(w, r)
}

func (h *Handler) continueTo(w http.ResponseWriter, r *http.Request) {
	setNoStore(w.Header())
	http.Redirect(w, r, PathChallenge, http.StatusSeeOther)
}

// finish verifies a completed flow and issues the step-up cookie. It returns
// the path to go back to, or renders an error page and returns "".
func (h *Handler) finish(w http.ResponseWriter, r *http.Request, c caller, f *session.Flow, flow *mfa.Flow) string {
	res, err := h.cfg.PingOne.Complete(r.Context(), &f.Pending, flow)
	if err != nil {
		h.pingOneError(w, r, c, f, err)
		return ""
	}
	// A completed flow keeps answering with the same tokens until PingOne
	// forgets it, so a replayed flow cookie could mint a new step-up with a
	// new AuthTime. The ID token says when the user really authenticated.
	if res.AuthTime.IsZero() || h.now().Sub(res.AuthTime) > maxCompletionAge {
		h.m.Challenges.WithLabelValues("failed").Inc()
		h.audit(r, "mfa.failed", c, f.FlowID, slog.String("reason", "id token auth_time missing or too old (replayed completion?)"))
		h.cfg.Store.ClearFlow(w)
		h.render(w, r, http.StatusForbidden, &view{State: "error", Message: "verification_failed"})
		return ""
	}
	if !res.MFA && !h.cfg.AllowBypass {
		h.m.Challenges.WithLabelValues("failed").Inc()
		h.audit(r, "mfa.failed", c, f.FlowID, slog.String("reason", "pingone completed without an mfa step (bypass)"))
		h.cfg.Store.ClearFlow(w)
		h.render(w, r, http.StatusForbidden, &view{State: "error", Message: "no_mfa_method"})
		return ""
	}
	if f.Approval != "" {
		// An approval is for one request: it never becomes a step-up.
		return h.finishApproval(w, r, c, f)
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

func (h *Handler) complete(w http.ResponseWriter, r *http.Request, c caller, f *session.Flow, flow *mfa.Flow) {
	if next := h.finish(w, r, c, f, flow); next != "" {
		setNoStore(w.Header())
		http.Redirect(w, r, SafeReturn(next), http.StatusSeeOther)
	}
}

func (h *Handler) failed(w http.ResponseWriter, r *http.Request, c caller, f *session.Flow, reason string) {
	h.m.Challenges.WithLabelValues("failed").Inc()
	h.audit(r, "mfa.failed", c, f.FlowID, slog.String("reason", reason))
	f.Pending, f.Status = mfa.Pending{}, ""
	_ = h.cfg.Store.SaveFlow(w, *f)
	h.render(w, r, http.StatusForbidden, &view{State: "error", Message: reason, Restart: true, flow: f})
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
	h.cfg.Store.ClearStepUp(w)
	h.cfg.Store.ClearFlow(w)
	setNoStore(w.Header())
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
		f.Pending, f.Status = mfa.Pending{}, ""
		_ = h.cfg.Store.SaveFlow(w, *f)
		h.render(w, r, http.StatusGone, &view{State: "error", Message: "expired", Restart: true, flow: f})
	case mfa.KindRateLimited:
		h.m.RateLimited.WithLabelValues("pingone").Inc()
		h.audit(r, "mfa.rate_limited", c, f.FlowID, slog.String("limit", "pingone"))
		w.Header().Set("Retry-After", retryAfter(pe.RetryAfter))
		h.render(w, r, http.StatusTooManyRequests, &view{State: "error", Message: "rate_limited", Back: true, RetryAfter: pe.RetryAfter})
	case mfa.KindUnavailable:
		w.Header().Set("Retry-After", "30")
		h.render(w, r, http.StatusServiceUnavailable, &view{State: "error", Message: "unavailable", Back: true})
	case mfa.KindFlowFailed:
		h.failed(w, r, c, f, "flow_failed")
	case mfa.KindTokenInvalid:
		h.m.Challenges.WithLabelValues("failed").Inc()
		h.audit(r, "mfa.failed", c, f.FlowID, slog.String("reason", "id token rejected"))
		f.Pending, f.Status = mfa.Pending{}, ""
		_ = h.cfg.Store.SaveFlow(w, *f)
		h.render(w, r, http.StatusForbidden, &view{State: "error", Message: "verification_failed", Restart: true, flow: f})
	default: // KindInvalid, KindWrongOTP outside an OTP check
		h.render(w, r, http.StatusBadRequest, &view{State: "error", Message: "rejected", Back: true})
	}
}

// notSetUp answers a user PingOne does not know, or whose PingOne user the
// request does not carry: the page says so, and the log names where the
// value came from and what to check, because the usual cause is a chain that
// sends PingOne the IdP's own user id (docs/design.md §17).
func (h *Handler) notSetUp(w http.ResponseWriter, r *http.Request, c caller, source, pingOneUser, reason string) {
	h.audit(r, "identity.rejected", c, "",
		slog.String("reason", "pingone user not set up: "+reason),
		slog.String("pingone_user", pingOneUser),
		slog.String("pingone_user_source", source),
		slog.String("check", h.cfg.MappingCheck))
	h.render(w, r, http.StatusForbidden, &view{State: "error", Message: "not_set_up"})
}

func (h *Handler) internal(w http.ResponseWriter, r *http.Request, c caller, err error) {
	h.log.LogAttrs(r.Context(), slog.LevelError, "challenge error", slog.String("user", c.user), slog.String("error", err.Error()))
	h.Error(w, r, http.StatusInternalServerError, "internal")
}

// allow applies one limit; on refusal it answers 429 and returns false.
func (h *Handler) allow(w http.ResponseWriter, r *http.Request, c caller, l Limiter, name, key string) bool {
	if l == nil {
		return true
	}
	ok, wait := l.Allow(key)
	if ok {
		return true
	}
	h.m.RateLimited.WithLabelValues(name).Inc()
	h.audit(r, "mfa.rate_limited", c, "", slog.String("limit", name))
	w.Header().Set("Retry-After", retryAfter(wait))
	h.render(w, r, http.StatusTooManyRequests, &view{State: "error", Message: "rate_limited", Back: true, RetryAfter: wait})
	return false
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

func validOTP(s string) bool {
	if len(s) < 4 || len(s) > 12 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
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
	s := int64((d + time.Second - 1) / time.Second)
	if s < 1 {
		s = 1
	}
	return strconv.FormatInt(s, 10)
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
