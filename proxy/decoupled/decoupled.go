// Package decoupled approves a held request from the user's phone, with no
// browser (docs/design.md §18, issue 24): for an API client on an approve
// rule with api=decoupled it starts the PingOne flow itself, picks the
// user's push device (else a code method), answers 202 with a poll URL, and
// on each poll — or for a client that asked to wait — reads the flow until
// the user decides. An approved request is handed back to the gateway to
// forward, once.
//
// It must never forward a request itself or one that was not approved (the
// gateway forwards what the approve gate releases, and Release is atomic in
// the store), never let one user read or act on another's approval (a poll
// of another user's id is a 404, like an unknown one), never keep the flow's
// state in clear (it is sealed with the held request's key, which only the
// poll URL carries), never log a code, a token or a value of the request,
// and never hold more waiting clients than its bound.
package decoupled

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/stepgate/stepgate/metrics"
	"github.com/stepgate/stepgate/mfa"
	"github.com/stepgate/stepgate/proxy/approve"
	"github.com/stepgate/stepgate/proxy/challenge"
	"github.com/stepgate/stepgate/proxy/invisible"
	"github.com/stepgate/stepgate/proxy/rules"
)

// PathPrefix is where approvals are polled: PathPrefix + reference.
const PathPrefix = "/.stepgate/approvals/"

// HeaderStatus tells a client that the answer to a poll is the upstream's
// own (value "forwarded"), so an upstream 404 is not read as stepgate's.
const HeaderStatus = "Stepgate-Approval-Status"

// Defaults of Config's zero values.
const (
	DefaultMaxWait    = 60 * time.Second
	DefaultMaxWaiters = 10_000
	DefaultCheckEvery = 2 * time.Second
	// Retention is how long an approval's outcome stays readable after
	// its ttl: a poll then still learns what happened, later it is a 404.
	Retention = 10 * time.Minute
)

// PingOne is what a phone approval needs from the PingOne client.
type PingOne interface {
	Start(ctx context.Context, req mfa.StartRequest) (*mfa.Flow, *mfa.Pending, error)
	Read(ctx context.Context, p *mfa.Pending) (*mfa.Flow, error)
	SelectDevice(ctx context.Context, p *mfa.Pending, deviceID string) (*mfa.Flow, error)
	CheckOTP(ctx context.Context, p *mfa.Pending, otp mfa.Secret) (*mfa.Flow, error)
	Reset(ctx context.Context, p *mfa.Pending) (*mfa.Flow, error)
	Complete(ctx context.Context, p *mfa.Pending, f *mfa.Flow) (*mfa.Result, error)
}

// Gate is what a phone approval needs from the approve gate.
type Gate interface {
	Open(ctx context.Context, ref string) (*approve.Held, error)
	// ApproveAs approves h for the PingOne subject who passed the MFA.
	ApproveAs(ctx context.Context, ref string, h *approve.Held, subject string) error
	Release(ctx context.Context, ref string, h *approve.Held) (bool, error)
	Withdraw(ctx context.Context, ref string) (bool, error)
	Keep(ctx context.Context, ref, name string, v []byte, ttl time.Duration) error
	Kept(ctx context.Context, ref, name string) ([]byte, error)
	Mark(ctx context.Context, ref, name string, ttl time.Duration) error
	TakeMark(ctx context.Context, ref, name string) (bool, error)
}

// Limiter is one abuse limit.
type Limiter = challenge.Limiter

// Limits bound what one user or one approval can cost. Nil does not limit.
type Limits struct {
	StartPerUser Limiter // flows started (each can ring the phone), shared with the page
	SendPerUser  Limiter // device selections
	OTPPerUser   Limiter // codes checked, shared with the page
	// PollPerApproval bounds polls of one approval (GET, POST, DELETE),
	// every one of which may read the flow at PingOne.
	PollPerApproval Limiter
}

// ForwardFunc forwards the released held request upstream and writes the
// upstream's answer to w (the gateway's forward). r is the poll.
type ForwardFunc func(w http.ResponseWriter, r *http.Request, h *approve.Held)

// Config wires a Service. PingOne, Gate, Logger and Metrics are required.
type Config struct {
	PingOne PingOne
	Gate    Gate
	// Mapping, optional, maps the upstream user to the PingOne user.
	Mapping challenge.UserMapping
	Limits  Limits
	// StoreDown, optional, reports the shared store unreachable.
	StoreDown   func() bool
	AllowBypass bool
	// RuleFor, optional, returns the rule a held request matches now: its
	// title and message describe the approval in the 202.
	RuleFor func(method, path string) rules.Rule
	// MaxWait bounds Prefer: wait (default DefaultMaxWait); MaxWaiters
	// bounds the clients waiting at once on this replica (default
	// DefaultMaxWaiters): one over it is answered at once, as if it had
	// not asked to wait. CheckEvery is how often a waited-on flow is read
	// at PingOne (default 2 s).
	MaxWait    time.Duration
	MaxWaiters int
	CheckEvery time.Duration
	Logger     *slog.Logger
	Metrics    *metrics.Metrics
	// Now is the clock of expiries; waits run on real time.
	Now func() time.Time
}

// Service answers phone approvals.
type Service struct {
	cfg Config
	log *slog.Logger
	m   *metrics.Metrics
	now func() time.Time
	w   *watcher
}

// New builds a Service and starts its watcher; Close stops it.
func New(cfg Config) (*Service, error) {
	if cfg.PingOne == nil || cfg.Gate == nil || cfg.Logger == nil || cfg.Metrics == nil {
		return nil, errors.New("decoupled: incomplete configuration")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = DefaultMaxWait
	}
	if cfg.MaxWaiters <= 0 {
		cfg.MaxWaiters = DefaultMaxWaiters
	}
	if cfg.CheckEvery <= 0 {
		cfg.CheckEvery = DefaultCheckEvery
	}
	s := &Service{cfg: cfg, log: cfg.Logger, m: cfg.Metrics, now: cfg.Now}
	s.w = newWatcher(s.check, cfg.CheckEvery, cfg.MaxWaiters)
	return s, nil
}

// Close answers every waiting client at once (with the approval's state,
// usually a 202) and stops the watcher: a Prefer: wait connection never
// holds up a shutdown. The approvals live on in the store.
func (s *Service) Close() { s.w.stop() }

// Waiting is the number of clients waiting on this replica.
func (s *Service) Waiting() int { return s.w.count() }

// Names of the records kept beside a held request.
const (
	keptState   = "phone"
	markExpired = "expired"
)

// Outcomes of a phone approval.
const (
	outcomeForwarded = "forwarded"
	outcomeDenied    = "denied"
	outcomeTimedOut  = "timed_out"
	outcomeFailed    = "failed" // too many wrong codes, or PingOne failed the flow
	outcomeCancelled = "cancelled"
	outcomeExpired   = "expired"
)

// state is an approval's record, sealed beside its held request: the
// PingOne flow, what was sent, and once decided, the outcome.
type state struct {
	User     string      `json:"user"`
	Flow     mfa.Pending `json:"flow"`
	Method   string      `json:"method"` // push, sms, email, voice, totp, whatsapp
	Device   string      `json:"device,omitempty"`
	Number   string      `json:"number,omitempty"`
	Created  time.Time   `json:"created"`
	Expires  time.Time   `json:"expires"`
	Outcome  string      `json:"outcome,omitempty"`
	Decided  time.Time   `json:"decided,omitzero"`
	Digest   string      `json:"digest"`
	ClientIP string      `json:"client_ip,omitempty"`
}

func (st *state) pending() bool { return st.Outcome == "" }

// methodName is how the 202 names a device type.
func methodName(deviceType string) string {
	switch deviceType {
	case "MOBILE":
		return "push"
	case "SMS", "VOICE", "EMAIL", "TOTP", "WHATSAPP":
		return strings.ToLower(deviceType)
	}
	return ""
}

// codeMethod reports whether a device type answers with a code the client
// can send by POST.
func codeMethod(deviceType string) bool {
	switch deviceType {
	case "SMS", "VOICE", "EMAIL", "TOTP", "WHATSAPP":
		return true
	}
	return false
}

// Begin starts the phone approval of the request just held under ref and
// answers the API client: 202 with the poll URL, or, when it asked to wait
// and the user decides in time, the final answer. It reports the access
// log's decision label.
func (s *Service) Begin(w http.ResponseWriter, r *http.Request, ref string, h *approve.Held, client netip.Addr, forward ForwardFunc) string {
	user := h.User
	if lim := s.cfg.Limits.StartPerUser; lim != nil {
		if ok, wait := lim.Allow("u:" + user); !ok {
			s.m.RateLimited.WithLabelValues("start_user").Inc()
			s.event(r, ref, "refused", user, client, h.Digest, "", slog.String("reason", "too many approvals started"))
			_, _ = s.cfg.Gate.Withdraw(r.Context(), ref)
			writeError(w, http.StatusTooManyRequests, "rate_limited", "Too many approvals were started; try again later.", wait)
			return "rejected"
		}
	}
	if s.cfg.StoreDown != nil && s.cfg.StoreDown() {
		_, _ = s.cfg.Gate.Withdraw(r.Context(), ref)
		writeError(w, http.StatusServiceUnavailable, "store_unavailable", "Approvals are not available right now.", 5*time.Second)
		return "approval_required"
	}
	req := challenge.ApprovalStart(h, user, client.String())
	if m := s.cfg.Mapping; m != nil {
		var err error
		if req.User, err = m.PingOneUser(r, user); err != nil {
			_, _ = s.cfg.Gate.Withdraw(r.Context(), ref)
			s.event(r, ref, "refused", user, client, h.Digest, "", slog.String("reason", "pingone user not set up: "+err.Error()),
				slog.String("pingone_user_source", m.Source()))
			writeError(w, http.StatusForbidden, "not_set_up", "Your account is not set up for approvals.", 0)
			return "rejected"
		}
	}
	flow, pending, err := s.cfg.PingOne.Start(r.Context(), req)
	if err != nil {
		_, _ = s.cfg.Gate.Withdraw(r.Context(), ref)
		s.pingOneError(w, r, ref, user, client, h.Digest, "", err)
		return "approval_required"
	}
	flow, dev, err := s.pickDevice(r, user, pending, flow)
	if err != nil {
		_, _ = s.cfg.Gate.Withdraw(r.Context(), ref)
		s.pingOneError(w, r, ref, user, client, h.Digest, pending.FlowID, err)
		return "approval_required"
	}
	st := &state{
		User: user, Flow: *pending, Created: h.Created, Expires: h.Created.Add(h.TTL), Digest: h.Digest,
		ClientIP: addrString(client),
	}
	if dev != nil {
		st.Method, st.Device = methodName(dev.Type), dev.Target
	}
	switch {
	case flow.Status == mfa.StatusPushConfirmationRequired:
		st.Method, st.Number = "push", flow.PushNumber
	case flow.Status == mfa.StatusOTPRequired && (dev == nil || codeMethod(dev.Type)):
		if st.Method == "" {
			st.Method = "code"
		}
	case flow.Status == mfa.StatusCompleted:
		// A bypass, or a PingOne session: the poll below decides.
	default:
		// Nothing a phone alone can answer (a FIDO2 key, no device):
		// the person approves in a browser, as with api=url.
		_, _ = s.cfg.PingOne.Reset(r.Context(), pending)
		s.event(r, ref, "refused", user, client, h.Digest, pending.FlowID, slog.String("reason", "no device usable without a browser"),
			slog.String("status", string(flow.Status)))
		writeJSONStatus(w, http.StatusUnauthorized, map[string]any{
			"error":        "approval_required",
			"reason":       "browser_required",
			"message":      "This request needs its own approval, and no method of yours works without a browser. Open approval_url in a browser, approve, then send the same request again.",
			"approval_url": challenge.PathChallenge + "?approval=" + ref,
			"expires_in":   int64(h.TTL / time.Second),
		})
		return "approval_required"
	}
	ttl := h.TTL + Retention
	if err := s.save(r.Context(), ref, st, ttl); err != nil {
		_, _ = s.cfg.Gate.Withdraw(r.Context(), ref)
		s.storeDown(w, r, err)
		return "approval_required"
	}
	_ = s.cfg.Gate.Mark(r.Context(), ref, markExpired, ttl)
	s.event(r, ref, "requested", user, client, h.Digest, pending.FlowID, slog.String("method", st.Method))
	if st.Method == "push" {
		s.event(r, ref, "pushed", user, client, h.Digest, pending.FlowID, slog.Bool("number_matching", st.Number != ""))
	} else if st.Method != "" {
		s.event(r, ref, "code_sent", user, client, h.Digest, pending.FlowID, slog.String("method", st.Method))
	}
	// A number to match and a code to type must reach the person before
	// any wait: the first answer is then the 202, at once.
	wait := preferWait(r, s.cfg.MaxWait)
	if st.Number != "" || st.Method != "push" {
		wait = 0
	}
	if flow.Status == mfa.StatusCompleted {
		return s.poll(w, r, ref, user, client, forward, flow, wait)
	}
	if wait > 0 {
		return s.poll(w, r, ref, user, client, forward, nil, wait)
	}
	s.pending(w, ref, h, st)
	return "approval_required"
}

// pickDevice moves a flow that asks for a device to the one a phone can
// answer: the first push device, else the first code method. It returns
// the flow and the device it is now waiting on (nil when PingOne chose).
func (s *Service) pickDevice(r *http.Request, user string, p *mfa.Pending, flow *mfa.Flow) (*mfa.Flow, *mfa.Device, error) {
	usable := func(d mfa.Device) bool { return d.Type == "MOBILE" || codeMethod(d.Type) }
	current := func(f *mfa.Flow) *mfa.Device {
		for i := range f.Devices {
			if f.Devices[i].ID == f.SelectedDeviceID {
				return &f.Devices[i]
			}
		}
		return nil
	}
	switch flow.Status {
	case mfa.StatusPushConfirmationRequired, mfa.StatusOTPRequired:
		if d := current(flow); d == nil || usable(*d) {
			return flow, d, nil
		}
	case mfa.StatusDeviceSelectionRequired, mfa.StatusAssertionRequired:
	default:
		return flow, current(flow), nil
	}
	var pick *mfa.Device
	for _, d := range flow.Devices {
		if d.Type == "MOBILE" {
			pick = &d
			break
		}
	}
	if pick == nil {
		for _, d := range flow.Devices {
			if codeMethod(d.Type) {
				pick = &d
				break
			}
		}
	}
	if pick == nil {
		return flow, nil, nil // the caller sends the person to a browser
	}
	if lim := s.cfg.Limits.SendPerUser; lim != nil {
		if ok, wait := lim.Allow("u:" + user); !ok {
			s.m.RateLimited.WithLabelValues("send_user").Inc()
			return nil, nil, &mfa.Error{Kind: mfa.KindRateLimited, RetryAfter: wait}
		}
	}
	next, err := s.cfg.PingOne.SelectDevice(r.Context(), p, pick.ID)
	if err != nil {
		return nil, nil, err
	}
	return next, pick, nil
}

// Serve answers GET (poll), POST (a code) and DELETE (cancel) of
// PathPrefix + ref for an identified user.
func (s *Service) Serve(w http.ResponseWriter, r *http.Request, user string, client netip.Addr, forward ForwardFunc) string {
	ref := strings.TrimPrefix(r.URL.Path, PathPrefix)
	setNoStore(w.Header())
	if user == "" {
		writeError(w, http.StatusUnauthorized, "no_identity", "No signed-in user.", 0)
		return "no_identity"
	}
	if !approve.ValidRef(ref) {
		writeError(w, http.StatusNotFound, "not_found", "No such approval.", 0)
		return "stepgate"
	}
	switch r.Method {
	case http.MethodGet, http.MethodPost, http.MethodDelete:
	default:
		// Not HEAD: a poll may forward the held request, and its answer
		// must not be thrown away.
		w.Header().Set("Allow", "GET, POST, DELETE")
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "Method not allowed.", 0)
		return "stepgate"
	}
	// Polls are paced per approval (and so are the PingOne reads they
	// cause), before anything else is looked up.
	if lim := s.cfg.Limits.PollPerApproval; lim != nil {
		if ok, wait := lim.Allow("a:" + approve.ID(ref)); !ok {
			s.m.RateLimited.WithLabelValues("poll_approval").Inc()
			writeError(w, http.StatusTooManyRequests, "rate_limited", "Polled too often; wait for Retry-After.", wait)
			return "rejected"
		}
	}
	switch r.Method {
	case http.MethodPost:
		return s.code(w, r, ref, user, client, forward)
	case http.MethodDelete:
		return s.cancel(w, r, ref, user, client)
	}
	return s.poll(w, r, ref, user, client, forward, nil, preferWait(r, s.cfg.MaxWait))
}

// load opens an approval's state for user. A missing record, a wrong key
// and another user's approval all read as not found.
func (s *Service) load(ctx context.Context, ref, user string) (*state, error) {
	b, err := s.cfg.Gate.Kept(ctx, ref, keptState)
	if errors.Is(err, approve.ErrExpired) || errors.Is(err, approve.ErrBadRef) {
		return nil, errNotFound
	}
	if err != nil {
		return nil, err
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("decoupled: state: %w", err)
	}
	if user != "" && st.User != user {
		return nil, errNotFound
	}
	return &st, nil
}

var errNotFound = errors.New("decoupled: no such approval")

func (s *Service) save(ctx context.Context, ref string, st *state, ttl time.Duration) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	return s.cfg.Gate.Keep(ctx, ref, keptState, b, ttl)
}

// loadPending loads user's approval under ref while it is pending; else it
// answers (404 unknown or another user's, 503 the store, or the decided
// outcome) and returns nil with the answer's label.
func (s *Service) loadPending(w http.ResponseWriter, r *http.Request, ref, user string) (*state, string) {
	st, err := s.load(r.Context(), ref, user)
	switch {
	case errors.Is(err, errNotFound):
		writeError(w, http.StatusNotFound, "not_found", "No such approval.", 0)
		return nil, "stepgate"
	case err != nil:
		s.storeDown(w, r, err)
		return nil, "store_unavailable"
	}
	if !st.pending() {
		return nil, s.answerOutcome(w, st)
	}
	return st, ""
}

// openHeld opens the held request of a pending approval, or answers and
// returns nil and the label: gone and past its time, it expires; gone
// before (released or withdrawn by another poll, which writes the outcome
// next), the client asks again in a second; the store down, 503.
func (s *Service) openHeld(w http.ResponseWriter, r *http.Request, ref string, st *state, client netip.Addr) (*approve.Held, string) {
	held, err := s.cfg.Gate.Open(r.Context(), ref)
	switch {
	case errors.Is(err, approve.ErrExpired) || errors.Is(err, approve.ErrBadRef):
		if !s.now().Before(st.Expires) {
			return nil, s.expire(w, r, ref, st, client)
		}
		return nil, s.deciding(w)
	case err != nil:
		s.storeDown(w, r, err)
		return nil, "store_unavailable"
	}
	return held, ""
}

// poll answers the approval's state; seen, when not nil, is a flow the
// watcher just read (no second read). With wait > 0 a pending approval is
// waited on, up to wait, before the 202.
func (s *Service) poll(w http.ResponseWriter, r *http.Request, ref, user string, client netip.Addr, forward ForwardFunc, seen *mfa.Flow, wait time.Duration) string {
	for {
		st, label := s.loadPending(w, r, ref, user)
		if st == nil {
			return label
		}
		held, label := s.openHeld(w, r, ref, st, client)
		if held == nil {
			return label
		}
		// Approved in a browser (the approval_url fallback): the digest
		// approval is there to use.
		if ok, err := s.cfg.Gate.Release(r.Context(), ref, held); err != nil {
			s.storeDown(w, r, err)
			return "store_unavailable"
		} else if ok {
			return s.forward(w, r, ref, st, held, client, forward)
		}
		flow := seen
		seen = nil
		if flow == nil {
			var err error
			flow, err = s.cfg.PingOne.Read(r.Context(), &st.Flow)
			if err != nil {
				var pe *mfa.Error
				if errors.As(err, &pe) && pe.Kind == mfa.KindFlowExpired {
					return s.expire(w, r, ref, st, client)
				}
				s.logPingOne(r, user, st.Flow.FlowID, err)
				// A passing fault: still pending, poll again later.
				flow = nil
			}
		}
		if flow != nil {
			if done, label := s.decide(w, r, ref, st, held, flow, client, forward); done {
				return label
			}
		}
		if wait <= 0 {
			s.pending(w, ref, held, st)
			return "approval_required"
		}
		s.m.ApprovalsWaiting.Inc()
		flowSeen, decided, admitted := s.w.wait(r.Context(), ref, wait)
		s.m.ApprovalsWaiting.Dec()
		if !admitted {
			// Over the bound of waiting clients, or shutting down: the
			// answer is the state now, as if no wait had been asked for.
			s.m.RateLimited.WithLabelValues("approval_wait").Inc()
			s.pending(w, ref, held, st)
			return "approval_required"
		}
		if !decided {
			if s.w.stopped() {
				w.Header().Set("Connection", "close")
			}
			// The wait ran out, the client left, or stepgate is shutting
			// down: the state now, without another PingOne read.
			if st2, err := s.load(r.Context(), ref, user); err == nil && !st2.pending() {
				return s.answerOutcome(w, st2)
			}
			s.pending(w, ref, held, st)
			return "approval_required"
		}
		// Decided: once more round the loop, with the flow the watcher
		// read (nil when the change was in the store: an outcome, a
		// release, the ttl).
		seen, wait = flowSeen, 0
	}
}

// decide acts on a flow read at PingOne. It reports true when it answered.
func (s *Service) decide(w http.ResponseWriter, r *http.Request, ref string, st *state, held *approve.Held, flow *mfa.Flow, client netip.Addr, forward ForwardFunc) (bool, string) {
	switch flow.Status {
	case mfa.StatusCompleted:
		res, err := s.cfg.PingOne.Complete(r.Context(), &st.Flow, flow)
		if err != nil {
			var pe *mfa.Error
			if errors.As(err, &pe) && pe.Kind == mfa.KindTokenInvalid {
				return true, s.end(w, r, ref, st, client, outcomeFailed, "id token rejected")
			}
			// Another poll may have redeemed the completion first (a code
			// is single-use): the outcome it writes answers the next poll.
			s.logPingOne(r, st.User, st.Flow.FlowID, err)
			return true, s.deciding(w)
		}
		if _, _, reason := challenge.CheckCompletion(res, s.now(), s.cfg.AllowBypass); reason != "" {
			return true, s.end(w, r, ref, st, client, outcomeFailed, reason)
		}
		switch err := s.cfg.Gate.ApproveAs(r.Context(), ref, held, res.Subject); {
		case errors.Is(err, approve.ErrExpired), errors.Is(err, approve.ErrBadRef):
			// Another poll approved it, or it was cancelled: its outcome
			// answers the next poll.
			return true, s.deciding(w)
		case err != nil:
			s.storeDown(w, r, err)
			return true, "store_unavailable"
		}
		s.event(r, ref, "approved", st.User, client, st.Digest, st.Flow.FlowID, slog.String("acr", res.ACR),
			slog.String("amr", strings.Join(res.AMR, ",")), slog.String("method", held.Method), slog.String("path", held.Match))
		ok, err := s.cfg.Gate.Release(r.Context(), ref, held)
		if err != nil {
			// The approval stays recorded: the next poll releases it.
			s.storeDown(w, r, err)
			return true, "store_unavailable"
		}
		if !ok {
			return true, s.deciding(w)
		}
		return true, s.forward(w, r, ref, st, held, client, forward)
	case mfa.StatusFailed:
		if st.Method == "push" {
			return true, s.end(w, r, ref, st, client, outcomeDenied, "push denied")
		}
		return true, s.end(w, r, ref, st, client, outcomeFailed, "flow failed")
	case mfa.StatusPushConfirmationTimedOut:
		// Never pushed again by itself: a person who did not answer is
		// not asked twice (push bombing). The client may send the request
		// again.
		return true, s.end(w, r, ref, st, client, outcomeTimedOut, "push timed out")
	}
	return false, ""
}

// forward records the outcome and hands the released request to the
// gateway: this answer is the upstream's.
func (s *Service) forward(w http.ResponseWriter, r *http.Request, ref string, st *state, held *approve.Held, client netip.Addr, forward ForwardFunc) string {
	st.Outcome, st.Decided = outcomeForwarded, s.now()
	if err := s.save(r.Context(), ref, st, max(st.Expires.Sub(s.now()), 0)+Retention); err != nil {
		// Forwarded all the same: the approval is used, and the next poll
		// finds neither request nor outcome (a 202, then a 408 at expiry).
		s.log.LogAttrs(r.Context(), slog.LevelError, "approval store: outcome not kept", slog.String("error", err.Error()))
	}
	s.w.notify(ref)
	s.event(r, ref, "forwarded", st.User, client, st.Digest, st.Flow.FlowID)
	w.Header().Set(HeaderStatus, outcomeForwarded)
	forward(w, r, held)
	return "approved"
}

// end withdraws a pending approval with an outcome: nothing can approve it
// after, and its request is dropped. When another poll decided first, its
// outcome is the answer.
func (s *Service) end(w http.ResponseWriter, r *http.Request, ref string, st *state, client netip.Addr, outcome, reason string) string {
	ok, err := s.cfg.Gate.Withdraw(r.Context(), ref)
	if err != nil {
		s.storeDown(w, r, err)
		return "store_unavailable"
	}
	if !ok {
		return s.deciding(w)
	}
	st.Outcome, st.Decided = outcome, s.now()
	if err := s.save(r.Context(), ref, st, max(st.Expires.Sub(s.now()), 0)+Retention); err != nil {
		s.log.LogAttrs(r.Context(), slog.LevelError, "approval store: outcome not kept", slog.String("error", err.Error()))
	}
	if outcome != outcomeCancelled {
		_, _ = s.cfg.PingOne.Reset(r.Context(), &st.Flow) // best effort
	}
	s.w.notify(ref)
	event := outcome
	if outcome == outcomeFailed {
		event = "refused"
	}
	s.event(r, ref, event, st.User, client, st.Digest, st.Flow.FlowID, slog.String("reason", reason))
	return s.answerOutcome(w, st)
}

// expire answers an approval whose ttl passed, recording it once.
func (s *Service) expire(w http.ResponseWriter, r *http.Request, ref string, st *state, client netip.Addr) string {
	if ok, _ := s.cfg.Gate.TakeMark(r.Context(), ref, markExpired); ok {
		_, _ = s.cfg.Gate.Withdraw(r.Context(), ref)
		_, _ = s.cfg.PingOne.Reset(r.Context(), &st.Flow)
		s.event(r, ref, "expired", st.User, client, st.Digest, st.Flow.FlowID)
	}
	st.Outcome = outcomeExpired
	return s.answerOutcome(w, st)
}

// code answers POST {"otp": "…"}: the code the user received.
func (s *Service) code(w http.ResponseWriter, r *http.Request, ref, user string, client netip.Addr, forward ForwardFunc) string {
	var body struct {
		OTP string `json:"otp"`
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, 4<<10))
	if err != nil || json.Unmarshal(raw, &body) != nil {
		writeError(w, http.StatusBadRequest, "bad_request", `Send {"otp": "123456"}.`, 0)
		return "rejected"
	}
	st, label := s.loadPending(w, r, ref, user)
	if st == nil {
		return label
	}
	if st.Method == "push" || st.Method == "" {
		writeError(w, http.StatusConflict, "no_code_expected", "This approval waits for a push on the phone, not a code.", 0)
		return "rejected"
	}
	otp, ok := challenge.NormaliseOTP(body.OTP)
	if !ok {
		writeError(w, http.StatusBadRequest, "otp_format", "A code is 4 to 12 digits.", 0)
		return "rejected"
	}
	held, label := s.openHeld(w, r, ref, st, client)
	if held == nil {
		return label
	}
	if lim := s.cfg.Limits.OTPPerUser; lim != nil {
		if ok, wait := lim.Allow("u:" + user); !ok {
			s.m.RateLimited.WithLabelValues("otp_user").Inc()
			s.event(r, ref, "refused", user, client, st.Digest, st.Flow.FlowID, slog.String("reason", "too many codes"))
			writeError(w, http.StatusTooManyRequests, "rate_limited", "Too many codes; wait for Retry-After.", wait)
			return "rejected"
		}
	}
	flow, err := s.cfg.PingOne.CheckOTP(r.Context(), &st.Flow, mfa.Secret(otp))
	var pe *mfa.Error
	if errors.As(err, &pe) && pe.Kind == mfa.KindWrongOTP {
		s.m.OTPChecks.WithLabelValues("wrong").Inc()
		s.audit(r, "mfa.otp_failed", user, client, st.Flow.FlowID, slog.Int("attempts_remaining", pe.AttemptsRemaining))
		if pe.AttemptsRemaining == 0 {
			return s.end(w, r, ref, st, client, outcomeFailed, "otp_limit")
		}
		writeJSONStatus(w, http.StatusBadRequest, map[string]any{
			"error": "otp_wrong", "message": "That code is not right.", "attempts_remaining": max(pe.AttemptsRemaining, -1),
		})
		return "rejected"
	}
	if err != nil {
		s.m.OTPChecks.WithLabelValues("error").Inc()
		if errors.As(err, &pe) && pe.Kind == mfa.KindFlowFailed {
			return s.end(w, r, ref, st, client, outcomeFailed, "flow failed")
		}
		s.pingOneError(w, r, ref, user, client, st.Digest, st.Flow.FlowID, err)
		return "rejected"
	}
	s.m.OTPChecks.WithLabelValues("ok").Inc()
	if done, label := s.decide(w, r, ref, st, held, flow, client, forward); done {
		return label
	}
	s.pending(w, ref, held, st)
	return "approval_required"
}

// cancel answers DELETE: the approval is withdrawn unless it was decided.
func (s *Service) cancel(w http.ResponseWriter, r *http.Request, ref, user string, client netip.Addr) string {
	st, label := s.loadPending(w, r, ref, user)
	if st == nil {
		return label
	}
	ok, err := s.cfg.Gate.Withdraw(r.Context(), ref)
	if err != nil {
		s.storeDown(w, r, err)
		return "store_unavailable"
	}
	if !ok {
		// Approved (and being forwarded) or decided a moment ago.
		return s.deciding(w)
	}
	st.Outcome, st.Decided = outcomeCancelled, s.now()
	if err := s.save(r.Context(), ref, st, max(st.Expires.Sub(s.now()), 0)+Retention); err != nil {
		s.log.LogAttrs(r.Context(), slog.LevelError, "approval store: outcome not kept", slog.String("error", err.Error()))
	}
	_, _ = s.cfg.PingOne.Reset(r.Context(), &st.Flow) // best effort: the phone's push goes stale
	s.w.notify(ref)
	s.event(r, ref, "cancelled", user, client, st.Digest, st.Flow.FlowID)
	w.WriteHeader(http.StatusNoContent)
	return "stepgate"
}

// answerOutcome is the documented answer to a decided approval.
func (s *Service) answerOutcome(w http.ResponseWriter, st *state) string {
	switch st.Outcome {
	case outcomeForwarded:
		writeOutcome(w, http.StatusGone, st, "approval_used", "The request was approved and forwarded once; its answer went to that poll.")
	case outcomeDenied:
		writeOutcome(w, http.StatusForbidden, st, "approval_denied", "The request was denied on the phone. It was not forwarded.")
	case outcomeFailed:
		writeOutcome(w, http.StatusForbidden, st, "approval_failed", "The approval failed (too many wrong codes, or PingOne refused it). The request was not forwarded.")
	case outcomeTimedOut:
		writeOutcome(w, http.StatusRequestTimeout, st, "approval_timed_out", "Nobody answered the push in time. The request was not forwarded; send it again to ask again.")
	case outcomeExpired:
		writeOutcome(w, http.StatusRequestTimeout, st, "approval_expired", "The approval expired. The request was not forwarded; send it again to ask again.")
	case outcomeCancelled:
		writeOutcome(w, http.StatusGone, st, "approval_cancelled", "The approval was cancelled. The request was not forwarded.")
	default:
		writeError(w, http.StatusInternalServerError, "internal", "Unknown approval state.", 0)
	}
	return "stepgate"
}

// deciding answers a poll that raced another replica's decision (its
// outcome answers the next poll, a second later).
func (s *Service) deciding(w http.ResponseWriter) string {
	writeJSONStatusRetry(w, http.StatusAccepted, map[string]any{"status": "pending", "message": "Being decided; poll again."}, time.Second)
	return "approval_required"
}

// pending writes the 202: what the user was asked, how, and until when.
func (s *Service) pending(w http.ResponseWriter, ref string, h *approve.Held, st *state) {
	loc := PathPrefix + ref
	w.Header().Set("Location", loc)
	body := map[string]any{
		"status":       "pending",
		"poll_url":     loc,
		"method":       st.Method,
		"expires_at":   st.Expires.UTC().Format(time.RFC3339),
		"expires_in":   int64(max(st.Expires.Sub(s.now()), 0) / time.Second),
		"approval_url": challenge.PathChallenge + "?approval=" + ref,
		"request":      map[string]string{"method": invisible.Escape(h.Method), "path": invisible.Escape(h.Match)},
	}
	if st.Device != "" {
		body["device"] = st.Device
	}
	if st.Number != "" {
		// INFERRED (docs/pingone.md §5.4): where PingOne's flow carries
		// the number is not documented; stepgate reads numberMatching.
		body["number"] = st.Number
	}
	if st.Method != "push" && st.Method != "" {
		body["otp_url"] = loc
	}
	if title, msg := s.describe(h); title != "" || msg != "" {
		if title != "" {
			body["title"] = title
		}
		if msg != "" {
			body["message"] = msg
		}
	}
	if len(h.Show) > 0 {
		shown := make([]map[string]string, len(h.Show))
		for i, f := range h.Show {
			shown[i] = map[string]string{"label": f.Label, "value": invisible.Escape(f.Value)}
		}
		body["shown"] = shown
	}
	writeJSONStatusRetry(w, http.StatusAccepted, body, 2*time.Second)
}

// describe is the rule's title and its message filled with the held
// values: the sentence the notification says (docs/design.md §14).
func (s *Service) describe(h *approve.Held) (title, message string) {
	if s.cfg.RuleFor == nil {
		return "", ""
	}
	rule := s.cfg.RuleFor(h.Method, h.Path)
	if rule.Action != rules.Approve || rule.Template != h.Tmpl || rule.Variant != h.Variant {
		return "", ""
	}
	var b strings.Builder
	for _, p := range rule.MessageParts() {
		if p.Var == "" {
			b.WriteString(p.Text)
			continue
		}
		if v := h.Vars[p.Var]; v != "" {
			b.WriteString(invisible.Escape(v))
		} else {
			b.WriteString("(not given)")
		}
	}
	return rule.Title, b.String()
}

// check is the watcher's look at one approval: decided is true when a
// waiting client has something new to answer (an outcome, the request
// gone, the ttl passed, or PingOne's flow at an end, which it returns).
func (s *Service) check(ctx context.Context, ref string) (bool, *mfa.Flow) {
	st, err := s.load(ctx, ref, "")
	if errors.Is(err, errNotFound) {
		return true, nil
	}
	if err != nil {
		return false, nil
	}
	if !st.pending() || !s.now().Before(st.Expires) {
		return true, nil
	}
	flow, err := s.cfg.PingOne.Read(ctx, &st.Flow)
	if err != nil {
		var pe *mfa.Error
		return errors.As(err, &pe) && pe.Kind == mfa.KindFlowExpired, nil
	}
	switch flow.Status {
	case mfa.StatusCompleted, mfa.StatusFailed, mfa.StatusPushConfirmationTimedOut:
		return true, flow
	}
	return false, nil
}

func (s *Service) pingOneError(w http.ResponseWriter, r *http.Request, ref, user string, client netip.Addr, digest, flowID string, err error) {
	s.logPingOne(r, user, flowID, err)
	var pe *mfa.Error
	if !errors.As(err, &pe) {
		writeError(w, http.StatusInternalServerError, "internal", "Internal error.", 0)
		return
	}
	switch {
	case pe.UserRefused():
		s.event(r, ref, "refused", user, client, digest, flowID, slog.String("reason", "pingone user not set up"))
		writeError(w, http.StatusForbidden, "not_set_up", "Your account is not set up for approvals.", 0)
	case pe.Kind == mfa.KindRateLimited:
		s.m.RateLimited.WithLabelValues("pingone").Inc()
		writeError(w, http.StatusTooManyRequests, "rate_limited", "Too many attempts; wait for Retry-After.", pe.RetryAfter)
	case pe.Kind == mfa.KindUnavailable:
		writeError(w, http.StatusServiceUnavailable, "unavailable", "PingOne is not reachable right now.", 5*time.Second)
	case pe.DetailCode == "LIMIT_EXCEEDED":
		writeError(w, http.StatusForbidden, "method_locked", "This method is locked for now at PingOne (too many attempts).", 0)
	default:
		writeError(w, http.StatusBadGateway, "pingone_error", "PingOne refused the approval.", 0)
	}
}

func (s *Service) logPingOne(r *http.Request, user, flowID string, err error) {
	attrs := []slog.Attr{slog.String("user", user), slog.String("flow_id", flowID), slog.String("error", err.Error())}
	var pe *mfa.Error
	if errors.As(err, &pe) {
		attrs = append(attrs, slog.String("kind", pe.Kind.String()), slog.String("correlation_id", pe.CorrelationID))
	}
	s.log.LogAttrs(r.Context(), slog.LevelWarn, "pingone error (phone approval)", attrs...)
}

func (s *Service) storeDown(w http.ResponseWriter, r *http.Request, err error) {
	s.log.LogAttrs(r.Context(), slog.LevelError, "approval store", slog.String("error", err.Error()))
	writeError(w, http.StatusServiceUnavailable, "store_unavailable", "Approvals are not available right now.", 5*time.Second)
}

// event is one approval.* audit line and its metric. Values of the request
// are never in it: the digest says which request, the held request's id
// which of two identical ones.
func (s *Service) event(r *http.Request, ref, event, user string, client netip.Addr, digest, flowID string, attrs ...slog.Attr) {
	s.m.Approvals.WithLabelValues(event).Inc()
	attrs = append(attrs, slog.String("digest", digest), slog.String("api", "decoupled"))
	if id := approve.ID(ref); id != "" { // the id, never the reference: its key opens the request
		attrs = append(attrs, slog.String("approval_id", id))
	}
	s.audit(r, "approval."+event, user, client, flowID, attrs...)
}

func (s *Service) audit(r *http.Request, event, user string, client netip.Addr, flowID string, attrs ...slog.Attr) {
	attrs = append(attrs,
		slog.String("event", event),
		slog.String("user", user),
		slog.String("client_ip", addrString(client)),
		slog.String("flow_id", flowID))
	s.log.LogAttrs(r.Context(), slog.LevelInfo, "audit", attrs...)
}

// preferWait is the wait=N preference of RFC 7240 §4.3, bounded by max; 0
// when absent or malformed.
func preferWait(r *http.Request, maxWait time.Duration) time.Duration {
	for _, v := range r.Header.Values("Prefer") {
		for pref := range strings.SplitSeq(v, ",") {
			pref, _, _ = strings.Cut(pref, ";")
			_, val, ok := strings.Cut(strings.TrimSpace(pref), "=")
			if !ok || !isWait(pref) {
				continue
			}
			n, err := strconv.Atoi(strings.Trim(strings.TrimSpace(val), `"`))
			if err != nil || n <= 0 {
				return 0
			}
			return min(time.Duration(n)*time.Second, maxWait)
		}
	}
	return 0
}

// isWait reports whether one preference of a Prefer header (RFC 7240
// §2: name, then "=value" or ";param"s) is wait.
func isWait(pref string) bool {
	name := strings.TrimSpace(pref)
	if i := strings.IndexAny(name, "=;"); i >= 0 {
		name = strings.TrimSpace(name[:i])
	}
	return strings.EqualFold(name, "wait")
}

// DropWait removes the wait preference from h's Prefer, keeping any
// other: the upstream is not asked to wait for what stepgate waited on.
func DropWait(h http.Header) {
	vs := h.Values("Prefer")
	if len(vs) == 0 {
		return
	}
	var keep []string
	for _, v := range vs {
		for p := range strings.SplitSeq(v, ",") {
			if p = strings.TrimSpace(p); p != "" && !isWait(p) {
				keep = append(keep, p)
			}
		}
	}
	h.Del("Prefer")
	if len(keep) > 0 {
		h.Set("Prefer", strings.Join(keep, ", "))
	}
}

func writeOutcome(w http.ResponseWriter, status int, st *state, code, msg string) {
	body := map[string]any{"status": st.Outcome, "error": code, "message": msg}
	if !st.Decided.IsZero() {
		body["decided_at"] = st.Decided.UTC().Format(time.RFC3339)
	}
	writeJSONStatus(w, status, body)
}

func writeError(w http.ResponseWriter, status int, code, msg string, retry time.Duration) {
	writeJSONStatusRetry(w, status, map[string]any{"error": code, "message": msg}, retry)
}

func writeJSONStatusRetry(w http.ResponseWriter, status int, body any, retry time.Duration) {
	if retry > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt(int64((retry+time.Second-1)/time.Second), 10))
	}
	writeJSONStatus(w, status, body)
}

func writeJSONStatus(w http.ResponseWriter, status int, body any) {
	h := w.Header()
	setNoStore(h)
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func setNoStore(h http.Header) { h.Set("Cache-Control", "no-store") }

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}
