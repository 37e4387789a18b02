package challenge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/stepgate/stepgate/mfa"
	"github.com/stepgate/stepgate/proxy/approve"
	"github.com/stepgate/stepgate/proxy/invisible"
	"github.com/stepgate/stepgate/proxy/rules"
	"github.com/stepgate/stepgate/session"
)

// Approvals is what the challenge needs from the approve gate.
type Approvals interface {
	Open(ctx context.Context, ref string) (*approve.Held, error)
	// ApproveAs approves h for the PingOne subject who passed the MFA.
	ApproveAs(ctx context.Context, ref string, h *approve.Held, subject string) error
	Forget(ctx context.Context, ref string)
}

// doneApproved marks the page an API client's user lands on after
// approving: the program retries the request itself.
const doneApproved = "approved"

// IsAPI reports whether answers to r go to a program rather than a person.
func (h *Handler) IsAPI(r *http.Request) bool { return clientKind(r) == kindAPI }

// RequireApproval answers a request that waits, held under ref, for its
// user to approve it (docs/design.md §14). Browsers go to the challenge page, which
// shows what is being approved; programs get 401 JSON with the page's URL
// to hand to their user.
func (h *Handler) RequireApproval(w http.ResponseWriter, r *http.Request, rule rules.Rule, ref, user string) {
	setNoStore(w.Header())
	if clientKind(r) != kindAPI {
		// The browser's approval starts here: the reference, which holds
		// the held request's key, goes into the sealed flow cookie and
		// never into a URL (no access log or history keeps it).
		if f, ok := h.cfg.Store.Flow(r); ok && f.FlowID != "" && f.User == user {
			_, _ = h.cfg.PingOne.Reset(r.Context(), &f.Pending) // best effort: given up for this one
		}
		f := session.Flow{User: user, ReturnPath: SafeReturn(r.RequestURI), CSRF: randomBytes(32), Created: h.now(),
			Approval: ref, From: referrerPath(r)}
		if err := h.cfg.Store.SaveFlow(w, f); err != nil {
			h.internal(w, r, caller{user: user}, fmt.Errorf("challenge: save flow: %w", err))
			return
		}
		h.continueTo(w, r, nil)
		return
	}
	// A program's user opens the page from the URL it was given.
	target := PathChallenge + "?approval=" + url.QueryEscape(ref)
	chal := `Bearer error="insufficient_user_authentication", error_description="This request needs its own approval"`
	if rule.ACR != "" {
		chal += `, acr_values="` + rule.ACR + `"`
	}
	chal += ", max_age=0"
	w.Header().Set("WWW-Authenticate", chal)
	writeJSON(w, http.StatusUnauthorized, map[string]any{
		"error":        "approval_required",
		"message":      "This request needs its own approval. Open approval_url in a browser, approve, then send the same request again.",
		"approval_url": target,
		"expires_in":   int64(rule.TTL / time.Second),
	})
}

// adoptApproval starts a pending flow for the approval the page was opened
// with, and sends the browser on to the page without the reference in its
// URL. The held request must belong to the signed-in user.
func (h *Handler) adoptApproval(w http.ResponseWriter, r *http.Request, c caller, ref string) {
	if h.cfg.Approvals == nil {
		h.Error(w, r, http.StatusNotFound, "not_found")
		return
	}
	// A GET: whatever the reference, the flow in progress is left alone
	// unless this is the user's own held request (a link from elsewhere
	// must not end a challenge).
	held, err := h.cfg.Approvals.Open(r.Context(), ref)
	switch {
	case errors.Is(err, approve.ErrExpired), errors.Is(err, approve.ErrBadRef):
		h.m.Approvals.WithLabelValues("expired").Inc()
		h.audit(r, "approval.expired", c, "", heldAttrs(ref, held)...)
		h.showDone(w, r, doneExpired)
		return
	case err != nil:
		h.log.LogAttrs(r.Context(), slog.LevelError, "approval store", slog.String("error", err.Error()))
		w.Header().Set("Retry-After", "5")
		h.render(w, r, http.StatusServiceUnavailable, &view{State: "error", Message: "store_unavailable", Back: true})
		return
	case held.User != c.user:
		h.m.Approvals.WithLabelValues("refused").Inc()
		h.audit(r, "approval.refused", c, "", append(heldAttrs(ref, nil), slog.String("reason", "held request of another user"))...)
		h.showDone(w, r, doneRefused)
		return
	}
	if f, ok := h.cfg.Store.Flow(r); ok && f.FlowID != "" && f.User == c.user && f.Approval != ref {
		// Best effort: a flow given up for another one.
		_, _ = h.cfg.PingOne.Reset(r.Context(), &f.Pending)
	}
	f := session.Flow{User: c.user, ReturnPath: SafeReturn(held.Target()), CSRF: randomBytes(32), Created: h.now(),
		Approval: ref, From: safeFrom(r.URL.Query().Get("from"))}
	if err := h.cfg.Store.SaveFlow(w, f); err != nil {
		h.internal(w, r, c, fmt.Errorf("challenge: save flow: %w", err))
		return
	}
	h.continueTo(w, r, nil) // the flow cookie has the return path
}

// openApproval opens the held request, or answers why it cannot be. After
// a POST the answer is a 303, like every POST outcome, so a reload never
// re-submits: a gone or foreign approval ends the flow and the page says
// so (done=expired, done=refused); a store outage keeps the flow to retry.
func (h *Handler) openApproval(w http.ResponseWriter, r *http.Request, c caller, f *session.Flow, ref string) (*approve.Held, bool) {
	if h.cfg.Approvals == nil {
		h.Error(w, r, http.StatusNotFound, "not_found")
		return nil, false
	}
	held, err := h.cfg.Approvals.Open(r.Context(), ref)
	switch {
	case errors.Is(err, approve.ErrExpired), errors.Is(err, approve.ErrBadRef):
		h.m.Approvals.WithLabelValues("expired").Inc()
		flowID := ""
		if f != nil {
			flowID = f.FlowID
		}
		h.audit(r, "approval.expired", c, flowID, heldAttrs(ref, held)...)
		h.endApproval(w, r, doneExpired)
		return nil, false
	case err != nil:
		h.log.LogAttrs(r.Context(), slog.LevelError, "approval store", slog.String("error", err.Error()))
		w.Header().Set("Retry-After", "5")
		if f != nil && r.Method == http.MethodPost {
			h.tell(w, r, c, f, "store_unavailable", 0)
			return nil, false
		}
		h.render(w, r, http.StatusServiceUnavailable, &view{State: "error", Message: "store_unavailable", Back: true})
		return nil, false
	case held.User != c.user:
		h.m.Approvals.WithLabelValues("refused").Inc()
		h.audit(r, "approval.refused", c, "", append(heldAttrs(ref, nil), slog.String("reason", "held request of another user"))...)
		h.endApproval(w, r, doneRefused)
		return nil, false
	}
	return held, true
}

// Outcomes of an approval that ended without a flow to carry a message.
const (
	doneExpired = "expired"
	doneRefused = "refused"
)

// endApproval drops the flow and shows why: at once for a GET, through a
// 303 for a POST.
func (h *Handler) endApproval(w http.ResponseWriter, r *http.Request, done string) {
	h.cfg.Store.ClearFlow(w)
	if r.Method == http.MethodPost {
		setNoStore(w.Header())
		http.Redirect(w, r, PathChallenge+"?done="+done, http.StatusSeeOther)
		return
	}
	h.showDone(w, r, done)
}

// showDone renders the page an approval ends on.
func (h *Handler) showDone(w http.ResponseWriter, r *http.Request, done string) bool {
	switch done {
	case doneApproved:
		h.render(w, r, http.StatusOK, &view{State: "approved"})
	case doneExpired:
		h.render(w, r, http.StatusGone, &view{State: "error", Message: "approval_expired"})
	case doneRefused:
		h.render(w, r, http.StatusForbidden, &view{State: "error", Message: "approval_other_user"})
	default:
		return false
	}
	return true
}

// approvalView is what the page says is being approved: the rule's title
// and the notification's sentence with the held values, then the values
// the rule shows, the request's method and path as a detail line, and how
// long the approval can still be given. Everything taken from the request
// has its invisible characters named (⟨U+202E⟩), so it reads on the page
// as it is, not as a browser would render it.
type approvalView struct {
	Title   string        // the rule's title; "" for the catalogue's heading
	Message []messagePart // the notification's sentence; nil without one
	Method  string
	Path    string
	Fields  []approve.Shown
	Left    time.Duration // until the held request expires
}

// messagePart is a piece of the sentence: the rule's text, or a value from
// the request (Value), or a value the request did not give (Missing).
type messagePart struct {
	Text           string
	Value, Missing bool
}

func (h *Handler) newApprovalView(held *approve.Held) *approvalView {
	v := &approvalView{
		Method: invisible.Escape(held.Method), Path: invisible.Escape(held.Match),
		Fields: make([]approve.Shown, len(held.Show)),
		Left:   held.Created.Add(held.TTL).Sub(h.now()),
	}
	for i, f := range held.Show {
		f.Value = invisible.Escape(f.Value)
		v.Fields[i] = f
	}
	// The title and the sentence are the rule's; the values are the ones
	// held, which are the ones sent to PingOne. A rule that no longer
	// matches the held request as it did (another replica's rules during
	// a rollout) gives neither: the page then falls back to its own words.
	rule := h.cfg.RuleFor(held.Method, held.Path)
	if rule.Action != rules.Approve || rule.Template != held.Tmpl || rule.Variant != held.Variant {
		return v
	}
	v.Title = rule.Title
	for _, p := range rule.MessageParts() {
		if p.Var == "" {
			v.Message = append(v.Message, messagePart{Text: p.Text})
			continue
		}
		val, ok := held.Vars[p.Var]
		if !ok || val == "" {
			v.Message = append(v.Message, messagePart{Missing: true})
			continue
		}
		v.Message = append(v.Message, messagePart{Text: invisible.Escape(val), Value: true})
	}
	return v
}

// startRequest is what PingOne is asked for: a step-up for the rule of the
// return path, or the approval of one held request, with the transaction
// template that names what is approved in the user's SMS, e-mail or push.
// It renders a page and reports false when the held request is gone.
func (h *Handler) startRequest(w http.ResponseWriter, r *http.Request, c caller, f *session.Flow) (mfa.StartRequest, string, bool) {
	req := mfa.StartRequest{User: c.user, RemoteIP: c.client.String()}
	if f.Approval == "" {
		rule := h.cfg.RuleFor(f.ReturnMethod, f.ReturnPath)
		req.ACR, req.MaxAge, req.Prompt = rule.ACR, rule.MaxAge, rule.Prompt
		return req, rule.Path, true
	}
	held, ok := h.openApproval(w, r, c, f, f.Approval)
	if !ok {
		return req, "", false
	}
	a := ApprovalStart(held, c.user, c.client.String())
	a.User = req.User
	return a, held.Method + " " + held.Match, true
}

// ApprovalStart is what PingOne is asked for to approve one held request,
// from the challenge page or from the phone alone (proxy/decoupled): a fresh
// authentication under the rule's policy, with the transaction template
// that names what is approved in the user's SMS, e-mail or push.
func ApprovalStart(held *approve.Held, user, remoteIP string) mfa.StartRequest {
	// Every approval is a fresh authentication, whatever PingOne session
	// might exist.
	req := mfa.StartRequest{User: user, RemoteIP: remoteIP, ACR: held.ACR, Prompt: mfa.PromptLogin}
	if held.Tmpl != "" {
		req.Template = &mfa.Template{Name: held.Tmpl, Variant: held.Variant, Variables: held.Vars}
	}
	return req
}

// finishApproval records a verified approval. A browser's held request is
// forwarded when the browser, sent back to the original URL, fetches it;
// a program retries the request itself. It returns where to go next, or
// renders a page and returns "".
func (h *Handler) finishApproval(w http.ResponseWriter, r *http.Request, c caller, f *session.Flow, subject string) string {
	held, ok := h.openApproval(w, r, c, f, f.Approval)
	if !ok {
		return ""
	}
	switch err := h.cfg.Approvals.ApproveAs(r.Context(), f.Approval, held, subject); {
	case errors.Is(err, approve.ErrExpired), errors.Is(err, approve.ErrBadRef):
		// Approved once already (a kept flow cookie, a reload racing the
		// push poll): a completion never approves twice.
		h.m.Approvals.WithLabelValues("refused").Inc()
		h.audit(r, "approval.refused", c, f.FlowID, append(heldAttrs(f.Approval, held), slog.String("reason", "held request already approved, expired or its user revoked"))...)
		h.endApproval(w, r, doneExpired)
		return ""
	case err != nil:
		h.log.LogAttrs(r.Context(), slog.LevelError, "approval store", slog.String("error", err.Error()))
		w.Header().Set("Retry-After", "5")
		h.tell(w, r, c, f, "store_unavailable", 0)
		return ""
	}
	h.cfg.Store.ClearFlow(w)
	h.m.Challenges.WithLabelValues("completed").Inc()
	h.m.Approvals.WithLabelValues("approved").Inc()
	h.audit(r, "approval.approved", c, f.FlowID, heldAttrs(f.Approval, held)...)
	if held.API {
		return PathChallenge + "?done=" + doneApproved
	}
	if err := h.cfg.Store.SaveApproved(w, f.Approval, held.TTL); err != nil {
		h.internal(w, r, c, fmt.Errorf("challenge: save approved: %w", err))
		return ""
	}
	return held.Target()
}

// heldAttrs are what an approval.* line says of the request held under ref:
// its id (never the reference, whose key opens it) and, when known, its
// digest, method and path.
func heldAttrs(ref string, held *approve.Held) []slog.Attr {
	var attrs []slog.Attr
	if id := approve.ID(ref); id != "" {
		attrs = append(attrs, slog.String("approval_id", id))
	}
	if held != nil {
		attrs = append(attrs, slog.String("digest", held.Digest), slog.String("method", held.Method), slog.String("path", held.Match))
	}
	return attrs
}

// ttlText is a ttl in whole minutes or seconds, for the page.
func ttlText(d time.Duration) string {
	if d >= time.Minute && d%time.Minute == 0 {
		return strconv.Itoa(int(d/time.Minute)) + " min"
	}
	return strconv.Itoa(int(d/time.Second)) + " s"
}
