package proxy

import (
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"github.com/stepgate/stepgate/proxy/approve"
	"github.com/stepgate/stepgate/proxy/decoupled"
	"github.com/stepgate/stepgate/proxy/rules"
)

// HeaderApproval tells the upstream that this request was approved on its
// own (docs/design.md §14): its value is the approval's digest. Like every
// X-Stepgate-* header it is removed from what clients send.
const HeaderApproval = "X-Stepgate-Approval"

// decision labels of approve rules.
const (
	decisionApprovalRequired = "approval_required"
	decisionApproved         = "approved"
)

// approve answers a request that an approve rule matched: forwarded when
// an approval of exactly this request is unused, else held while the user
// approves it.
func (g *Gateway) approve(w http.ResponseWriter, r *http.Request, rule rules.Rule, fw *forward) (decision, user string) {
	user, err := g.cfg.Identity.User(r, fw.trusted)
	if err != nil || user == "" {
		g.audit(r, "identity.rejected", "", fw.client, slog.String("reason", errString(err)))
		g.cfg.Challenge.Error(w, r, http.StatusUnauthorized, "no_identity")
		return decisionNoIdent, ""
	}
	// A cross-site page must not be able to make anyone's phone ring: the
	// refusal comes before anything is held or sent to PingOne.
	if err := g.origin.Check(r); err != nil {
		g.approvalEvent(r, "refused", user, fw, "", "", slog.String("reason", "cross-site request"))
		g.cfg.Challenge.Error(w, r, http.StatusForbidden, "approve_cross_site")
		return decisionRejected, user
	}
	if r.Body != nil && r.Body != http.NoBody {
		// The same idle limit as a forwarded body: a held body that
		// trickles must not hold the connection either.
		r.Body = newClientBody(r.Body, w, g.cfg.BodyIdleTimeout)
	}
	q, err := g.cfg.Approvals.Read(r, user, fw.path)
	var be *clientBodyError
	switch {
	case errors.As(err, &be) && be.timedOut():
		g.audit(r, "request.rejected", user, fw.client, slog.String("reason", "request body stalled"))
		w.Header().Set("Connection", "close") // the rest of the body is unreadable
		g.cfg.Challenge.Error(w, r, http.StatusRequestTimeout, "request_timeout")
		return decisionRejected, user
	case errors.Is(err, approve.ErrTooLarge):
		g.approvalEvent(r, "refused", user, fw, "", "", slog.String("reason", "body over STEPGATE_APPROVE_MAX_BODY"))
		g.cfg.Challenge.Error(w, r, http.StatusRequestEntityTooLarge, "approve_too_large")
		return decisionRejected, user
	case err != nil:
		g.audit(r, "request.rejected", user, fw.client, slog.String("reason", "unreadable request body"))
		w.Header().Set("Connection", "close")
		g.cfg.Challenge.Error(w, r, http.StatusBadRequest, "bad_request")
		return decisionRejected, user
	}
	// What the page shows must be what the application acts on: the
	// request is read under one strict grammar, refused where it leaves
	// it or could be read two ways, and forwarded as stepgate re-encodes
	// it (docs/design.md §14.2). A front door's check cannot change the
	// body its proxy forwards: there the strict grammar alone stands.
	if fw.method != "" && fw.method != r.Method {
		q.Override = fw.method // the honoured override: shown, and bound by the digest
	}
	original := rule.Original || fw.check != nil
	if err := q.Canonicalize(r.Header, append(slices.Clip(rule.Show), rule.Vars...), original); err != nil {
		g.approvalEvent(r, "refused", user, fw, "", "", slog.String("reason", approve.Reason(err)))
		g.cfg.Challenge.Error(w, r, http.StatusBadRequest, "approve_ambiguous")
		return decisionRejected, user
	}
	if !original {
		q.Apply(r)
		fw.path.Query = q.RawQuery
	}
	used, digest, id, err := g.cfg.Approvals.Consume(r.Context(), q)
	if err != nil {
		g.storeDown(w, r, err)
		return decisionApprovalRequired, user
	}
	if used {
		// An API client's retry of the request the user approved.
		g.approvalEvent(r, "forwarded", user, fw, digest, id)
		fw.approval = digest
		g.forward(w, r, fw)
		return decisionApproved, user
	}
	// Holding costs the store memory and may lead to an SMS: one user
	// cannot hold without bound (and so evict everyone else's).
	if lim := g.cfg.ApproveHoldLimit; lim != nil {
		if ok, wait := lim.Allow("u:" + user); !ok {
			g.cfg.Metrics.RateLimited.WithLabelValues("hold_user").Inc()
			g.approvalEvent(r, "refused", user, fw, "", "", slog.String("reason", "too many held requests"))
			w.Header().Set("Retry-After", strconv.Itoa(int(max(wait, time.Second)/time.Second)))
			g.cfg.Challenge.Error(w, r, http.StatusTooManyRequests, "rate_limited")
			return decisionRejected, user
		}
	}
	// Through a front door's check the held request cannot be swapped in
	// for the browser's return: every holder retries like a program.
	api := fw.check != nil || g.cfg.Challenge.IsAPI(r)
	ref, h, err := g.cfg.Approvals.Hold(r.Context(), q, r, rule, api)
	if errors.Is(err, approve.ErrTooLarge) {
		g.approvalEvent(r, "refused", user, fw, "", "", slog.String("reason", "held request over its size bound"))
		g.cfg.Challenge.Error(w, r, http.StatusRequestEntityTooLarge, "approve_too_large")
		return decisionRejected, user
	}
	if err != nil {
		g.storeDown(w, r, err)
		return decisionApprovalRequired, user
	}
	g.approvalEvent(r, "required", user, fw, h.Digest, approve.ID(ref))
	if rule.API == rules.APIDecoupled && g.cfg.Decoupled != nil && fw.check == nil && api {
		// A program on an api=decoupled rule: stepgate asks the phone
		// itself and answers 202 with a poll URL (docs/design.md §18).
		// Through a front door stepgate cannot forward, so it answers as
		// api=url there.
		return g.cfg.Decoupled.Begin(w, r, ref, h, fw.client, g.forwardHeld(fw.client, fw.trusted)), user
	}
	g.cfg.Challenge.RequireApproval(w, r, rule, ref, user)
	return decisionApprovalRequired, user
}

// replay forwards, in place of the browser's GET of the original URL, the
// held request the user has just approved. It reports false when there is
// nothing (any more) to replay, and the GET then goes through the rules
// like any other: a reload, a second tab or Back after the approval was
// used is a plain GET.
func (g *Gateway) replay(w http.ResponseWriter, r *http.Request, ref string, fw *forward) (decision, user string, done bool) {
	user, err := g.cfg.Identity.User(r, fw.trusted)
	if err != nil || user == "" {
		return "", "", false
	}
	h, err := g.cfg.Approvals.Open(r.Context(), ref)
	switch {
	case errors.Is(err, approve.ErrExpired), errors.Is(err, approve.ErrBadRef):
		g.cfg.StepUps.ClearApproved(w)
		var attrs []slog.Attr
		digest := ""
		if h != nil { // what the audit record still says of it: the GET may be of any URL
			digest = h.Digest
			attrs = append(attrs, slog.String("method", h.Method), slog.String("path", h.Match))
		}
		g.approvalEvent(r, "expired", user, fw, digest, approve.ID(ref), attrs...)
		return "", user, false
	case err != nil:
		// The store is unreachable: keep the cookie for a retry, and do
		// not serve the GET as if nothing were waiting.
		g.storeDown(w, r, err)
		return decisionApprovalRequired, user, true
	}
	if h.Path != fw.path.Escaped || h.RawQuery != fw.path.Query || !browserReturn(r) {
		// Another URL (the browser sends the cookie everywhere), or not
		// the browser's own navigation back (a cross-site link, an image,
		// a prefetch): not the replay.
		return "", user, false
	}
	// From here the cookie is used, whatever happens next.
	g.cfg.StepUps.ClearApproved(w)
	if h.User != user || h.API {
		g.approvalEvent(r, "refused", user, fw, h.Digest, approve.ID(ref), slog.String("reason", "approved request opened by another user or at another path"))
		return "", user, false
	}
	ok, err := g.cfg.Approvals.Release(r.Context(), ref, h)
	if err != nil {
		g.storeDown(w, r, err)
		return decisionApprovalRequired, user, true
	}
	if !ok {
		return "", user, false
	}
	g.approvalEvent(r, "forwarded", user, fw, h.Digest, approve.ID(ref), slog.String("method", h.Method))
	fw.path, fw.approval = h.ReqPath(), h.Digest
	out := h.Forward(r)
	forwardedAs(w, out) // the access line names what the upstream received, not the GET
	g.forward(w, out, fw)
	return decisionApproved, user, true
}

// forwardHeld forwards, in answer to r (a poll, or the held request itself
// when its client waited), the held request a phone approval released:
// exactly as approved, with its digest.
func (g *Gateway) forwardHeld(client netip.Addr, trusted bool) decoupled.ForwardFunc {
	return func(w http.ResponseWriter, r *http.Request, h *approve.Held) {
		out := h.Forward(r)
		decoupled.DropWait(out.Header) // stepgate's to honour, not the upstream's
		forwardedAs(w, out)
		g.forward(w, out, &forward{path: h.ReqPath(), client: client, trusted: trusted, approval: h.Digest})
	}
}

// browserReturn reports whether a GET is the browser's own navigation back
// to the original URL after approval: a top-level navigation from
// stepgate's page (same-origin) or typed (none). Without Fetch Metadata
// (older browsers, scripts) it is taken as one.
func browserReturn(r *http.Request) bool {
	if r.Method != http.MethodGet {
		return false
	}
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default:
		return false
	}
	mode := r.Header.Get("Sec-Fetch-Mode")
	return mode == "" || mode == "navigate"
}

// storeDown answers when the approvals store cannot be reached: fail
// closed, and say when to try again.
func (g *Gateway) storeDown(w http.ResponseWriter, r *http.Request, err error) {
	g.log.LogAttrs(r.Context(), slog.LevelError, "approval store", slog.String("error", err.Error()))
	w.Header().Set("Retry-After", "5")
	g.cfg.Challenge.Error(w, r, http.StatusServiceUnavailable, "store_unavailable")
}

// approvalEvent is one approval.* audit line and its metric. id is the held
// request's id (approve.ID: never the reference, whose key opens it): two
// identical requests share a digest, and the id tells their approvals and
// forwards apart.
func (g *Gateway) approvalEvent(r *http.Request, event, user string, fw *forward, digest, id string, attrs ...slog.Attr) {
	g.cfg.Metrics.Approvals.WithLabelValues(event).Inc()
	if digest != "" {
		attrs = append(attrs, slog.String("digest", digest))
	}
	if id != "" {
		attrs = append(attrs, slog.String("approval_id", id))
	}
	g.audit(r, "approval."+event, user, fw.client, attrs...)
}

// forwardedAs makes the access line of w name out's method and path: a
// held request replayed in answer to a GET (or a poll) is what the upstream
// received and acted on.
func forwardedAs(w http.ResponseWriter, out *http.Request) {
	for {
		switch v := w.(type) {
		case *recorder:
			v.method, v.path = out.Method, logPath(out)
			return
		case interface{ Unwrap() http.ResponseWriter }:
			w = v.Unwrap()
		default:
			return
		}
	}
}
