// Package signals receives security events from identity providers and
// turns the ones that end a user's sessions into revocations
// (docs/signals.md). It feeds the same revocation path as POST /revoke, so
// the request path still reads only process memory.
//
// It must never revoke on an event it could not authenticate, never let one
// bad event in a batch change anything for that event, and never answer a
// sender before the revocations it accepted are recorded.
package signals

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/stepgate/stepgate/proxy/identity"
	"github.com/stepgate/stepgate/store"
)

// MaxPingOneBatch is the most events PingOne puts in one webhook request
// ("a batch of up to 500 events",
// https://docs.pingidentity.com/pingone/integrations/p1_create_webhook.html).
const MaxPingOneBatch = 500

// maxPingOneBody bounds a webhook request body: 500 ACTIVITY events of a few
// KiB each.
const maxPingOneBody = 8 << 20

// DefaultPingOneActions are the action types that end step-ups unless
// configured otherwise. Each name appears in PingOne's own list of action
// types (a Ping Identity Terraform sample subscribing to every type);
// what each means for stepgate is docs/signals.md's reading, not Ping's.
var DefaultPingOneActions = []string{
	"USER.DELETED", "USER.LOCKED", // the account is gone or locked
	"PASSWORD.RESET",                   // credentials changed
	"DEVICE.DELETED", "DEVICE.BLOCKED", // an MFA device removed or blocked
	"SESSION.DELETED", // the PingOne session ended (sign-off)
}

// PingOneOptions configures the PingOne webhook receiver.
type PingOneOptions struct {
	// Header names the request header that carries Secret (set in the
	// subscription's httpEndpoint.headers).
	Header string
	Secret string
	// Actions are the action types that end the user's step-ups.
	Actions []string
	Revoker store.Revoker
	Logger  *slog.Logger
	// Count, optional, is told each event's result: revoked, ignored,
	// duplicate, refused.
	Count func(result string)
	Now   func() time.Time
}

// pingOneEvent is the part of an ACTIVITY-format event stepgate reads
// (PingOne's audit reporting data model: id, action.type, resources).
type pingOneEvent struct {
	ID     string `json:"id"`
	Action struct {
		Type string `json:"type"`
	} `json:"action"`
	Resources []struct {
		Type string `json:"type"`
		ID   string `json:"id"`
	} `json:"resources"`
}

// PingOne receives PingOne webhooks.
type PingOne struct {
	o       PingOneOptions
	secret  [sha256.Size]byte
	actions map[string]bool
	seen    *seenIDs
}

// NewPingOne returns the receiver.
func NewPingOne(o PingOneOptions) (*PingOne, error) {
	if o.Header == "" || len(o.Secret) < 16 || o.Revoker == nil || o.Logger == nil {
		return nil, errors.New("signals: pingone: header, a secret of 16 characters or more, revoker and logger are required")
	}
	if o.Count == nil {
		o.Count = func(string) {}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	p := &PingOne{o: o, secret: sha256.Sum256([]byte(o.Secret)), actions: map[string]bool{},
		seen: newSeenIDs(100_000, 24*time.Hour, o.Now)}
	for _, a := range o.Actions {
		p.actions[a] = true
	}
	return p, nil
}

// pingOneAnswer is the JSON answer: what was done with each event.
type pingOneAnswer struct {
	Revoked    int            `json:"revoked"`
	Ignored    int            `json:"ignored"`
	Duplicates int            `json:"duplicates"`
	Refused    []refusedEvent `json:"refused,omitempty"`
}

type refusedEvent struct {
	ID     string `json:"id"`
	Reason string `json:"reason"`
}

// ServeHTTP answers one webhook request. A request that cannot be believed
// (wrong secret, not JSON, more than 500 events) is refused whole and
// changes nothing. Within a believed batch each event stands alone: one
// whose user cannot be found is refused by name in the answer and the
// audit log, and the others still apply, with a 200 — PingOne retries a
// batch until it gets a 200 and sends nothing newer meanwhile, so one bad
// event must not stall every later one.
func (p *PingOne) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	got := sha256.Sum256([]byte(r.Header.Get(p.o.Header)))
	if subtle.ConstantTimeCompare(got[:], p.secret[:]) != 1 {
		p.refuse(w, r, http.StatusUnauthorized, "unauthorized", "wrong or missing "+p.o.Header+" header", 0)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxPingOneBody))
	if err != nil {
		p.refuse(w, r, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("a body over %d bytes", maxPingOneBody), 0)
		return
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		p.refuse(w, r, http.StatusBadRequest, "malformed", "want a JSON array of ACTIVITY events", 0)
		return
	}
	if len(raw) > MaxPingOneBatch {
		p.refuse(w, r, http.StatusRequestEntityTooLarge, "too_many_events",
			fmt.Sprintf("a batch of %d events; at most %d", len(raw), MaxPingOneBatch), len(raw))
		return
	}
	events := make([]pingOneEvent, len(raw))
	for i, m := range raw {
		if err := json.Unmarshal(m, &events[i]); err != nil || events[i].ID == "" || len(events[i].ID) > maxEventID {
			p.refuse(w, r, http.StatusBadRequest, "malformed", fmt.Sprintf("event %d is not an ACTIVITY event with an id", i), len(raw))
			return
		}
	}

	ans := pingOneAnswer{}
	var revoke []string        // PingOne user ids, in batch order, once each
	var ids []string           // event ids to remember once recorded
	var revoked []pingOneEvent // audited once the store took the revocations
	for _, e := range events {
		switch {
		case p.seen.has(e.ID) || slices.Contains(ids, e.ID):
			ans.Duplicates++
			p.o.Count("duplicate")
		case !p.actions[e.Action.Type]:
			ans.Ignored++
			ids = append(ids, e.ID)
			p.o.Count("ignored")
		default:
			user := e.user()
			if user == "" {
				ans.Refused = append(ans.Refused, refusedEvent{e.ID, "unknown subject: no USER resource with a PingOne user id"})
				p.o.Logger.LogAttrs(r.Context(), slog.LevelWarn, "audit", slog.String("event", "signal.refused"),
					slog.String("receiver", "pingone"), slog.String("reason", "unknown subject"),
					slog.String("event_id", e.ID), slog.String("action", e.Action.Type), slog.String("peer", r.RemoteAddr))
				p.o.Count("refused")
				continue
			}
			if !slices.Contains(revoke, user) {
				revoke = append(revoke, user)
			}
			ids = append(ids, e.ID)
			revoked = append(revoked, e)
		}
	}
	for _, user := range revoke {
		if err := p.o.Revoker.Revoke(r.Context(), store.Revocation{Subject: user}); err != nil {
			// Not remembered as seen: PingOne sends the batch again and
			// the revocation is tried again.
			p.o.Logger.LogAttrs(r.Context(), slog.LevelError, "revocation not stored", slog.String("error", err.Error()),
				slog.String("receiver", "pingone"))
			w.Header().Set("Retry-After", "5")
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "store_unavailable",
				"message": "the store did not take the revocation: send the batch again"})
			return
		}
	}
	for _, e := range revoked {
		ans.Revoked++
		p.o.Count("revoked")
		p.o.Logger.LogAttrs(r.Context(), slog.LevelInfo, "audit", slog.String("event", "session.revoked"),
			slog.String("by", "pingone"), slog.String("subject", e.user()), slog.String("action", e.Action.Type),
			slog.String("event_id", e.ID))
	}
	for _, id := range ids {
		p.seen.add(id)
	}
	writeJSON(w, http.StatusOK, ans)
}

// user is the PingOne user id the event is about: its USER resource.
func (e pingOneEvent) user() string {
	for _, r := range e.Resources {
		if strings.EqualFold(r.Type, "USER") && identity.IsUUID(r.ID) {
			return strings.ToLower(r.ID)
		}
	}
	return ""
}

func (p *PingOne) refuse(w http.ResponseWriter, r *http.Request, status int, code, msg string, events int) {
	p.o.Logger.LogAttrs(r.Context(), slog.LevelWarn, "audit", slog.String("event", "signal.refused"),
		slog.String("receiver", "pingone"), slog.String("reason", code), slog.String("detail", msg),
		slog.Int("events", events), slog.String("peer", r.RemoteAddr))
	p.o.Count("refused")
	writeJSON(w, status, map[string]string{"error": code, "message": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// seenIDs remembers event ids (PingOne's, or SETs' jti) for ttl, bounded:
// a redelivered event is answered 200 and changes nothing. When full, the
// oldest is dropped.
type seenIDs struct {
	mu    sync.Mutex
	m     map[string]time.Time
	order []seenID // as added, oldest first: every id lives ttl, so the oldest goes first
	max   int
	ttl   time.Duration
	now   func() time.Time
}

type seenID struct {
	id string
	at time.Time
}

// maxEventID bounds an event id kept in memory (PingOne's are UUIDs).
const maxEventID = 256

func newSeenIDs(max int, ttl time.Duration, now func() time.Time) *seenIDs {
	return &seenIDs{m: map[string]time.Time{}, max: max, ttl: ttl, now: now}
}

func (s *seenIDs) has(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.m[id]
	return ok && s.now().Sub(at) < s.ttl
}

func (s *seenIDs) add(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addLocked(id)
}

func (s *seenIDs) addLocked(id string) {
	now := s.now()
	// Expired ids go, and when full the oldest: never a random one (an
	// id forgotten early could be replayed), and no walk of the map.
	for len(s.order) > 0 && (len(s.m) >= s.max || now.Sub(s.order[0].at) >= s.ttl) {
		e := s.order[0]
		s.order = s.order[1:]
		if at, ok := s.m[e.id]; ok && at.Equal(e.at) { // not re-added since
			delete(s.m, e.id)
		}
	}
	s.m[id] = now
	s.order = append(s.order, seenID{id, now})
}

// addIfAbsent remembers id and reports true, or reports false when id is
// already remembered: one check for two deliveries arriving at once.
func (s *seenIDs) addIfAbsent(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if at, ok := s.m[id]; ok && s.now().Sub(at) < s.ttl {
		return false
	}
	s.addLocked(id)
	return true
}

// remove forgets id (its revocation was not stored after all).
func (s *seenIDs) remove(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, id)
}
