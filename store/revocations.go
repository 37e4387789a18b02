package store

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Revocation names what to revoke: every step-up of a user completed up to
// now, every step-up of a PingOne user (its id, the step-up's subject)
// completed up to now, or one step-up by its session id. Exactly one is
// set.
type Revocation struct {
	User    string
	Session string
	// Subject is a PingOne user id: what an identity provider's signal
	// names when it knows the user only as PingOne does.
	Subject string
}

// RevocationTTL is how long a revocation is kept: longer than any step-up
// it could refuse lives (a step-up ends with its ID token, which PingOne
// issues for an hour by default).
const RevocationTTL = 24 * time.Hour

// ErrRevocationsFull reports that the revocation set reached its bound.
var ErrRevocationsFull = errors.New("store: revocation set full")

// Revoker records revocations.
type Revoker interface {
	Revoke(ctx context.Context, r Revocation) error
}

// RevocationsOptions configures a Revocations view.
type RevocationsOptions struct {
	// MaxEntries bounds the revocations kept in process; default 200,000
	// (about 30 MB at worst). A full set refuses new revocations and
	// reports itself stale, so mfa paths fail closed rather than forget.
	MaxEntries int
	// MaxStaleness, for a view fed by a shared store, is how long the view
	// may go unconfirmed before Stale reports true. Zero: a local view,
	// never stale.
	MaxStaleness time.Duration
	// Now is the gateway's clock, the one step-ups' AuthTime comes from:
	// it stamps revocations and expires them. Nil means time.Now.
	Now func() time.Time
	// Wall measures staleness against the store's confirmations; nil
	// means time.Now.
	Wall func() time.Time
}

// Revocations is the in-process set of revoked step-ups, read on every
// request through an mfa rule without any network call. With a shared
// store it is fed by RedisSync and knows how fresh it is.
type Revocations struct {
	now      func() time.Time
	wall     func() time.Time
	max      int
	maxStale time.Duration

	mu       sync.RWMutex
	users    map[string]time.Time // user -> revoked at (step-ups up to then)
	subjects map[string]time.Time // PingOne user id -> revoked at
	sessions map[string]time.Time // session id -> kept until

	confirmed atomic.Int64 // UnixNano up to which the view is known complete
	full      atomic.Bool
}

// NewRevocations returns an empty view.
func NewRevocations(o RevocationsOptions) *Revocations {
	if o.MaxEntries <= 0 {
		o.MaxEntries = 200_000
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Wall == nil {
		o.Wall = time.Now
	}
	return &Revocations{
		now: o.Now, wall: o.Wall, max: o.MaxEntries, maxStale: o.MaxStaleness,
		users: map[string]time.Time{}, sessions: map[string]time.Time{}, subjects: map[string]time.Time{},
	}
}

// Revoke records r in this process only (the memory store): the user's
// step-ups completed up to now, or the session, are refused from now on.
func (v *Revocations) Revoke(_ context.Context, r Revocation) error {
	now := v.now()
	switch {
	case r.User != "":
		return v.addUser(r.User, now)
	case r.Subject != "":
		return v.addSubject(r.Subject, now)
	}
	return v.addSession(r.Session, now.Add(RevocationTTL))
}

// Revoked reports whether a step-up of user with this session id, completed
// at authTime, was revoked. A step-up completed in the same second as a
// user's revocation is refused too: authTime has seconds precision.
func (v *Revocations) Revoked(user, session string, authTime time.Time) bool {
	v.mu.RLock()
	at, byUser := v.users[user]
	_, bySession := v.sessions[session]
	v.mu.RUnlock()
	return bySession || byUser && !authTime.After(at)
}

// subjectKey is how a PingOne user id is kept and looked up: in lower case.
// It is a UUID, which the signal receivers and the ID token may spell in
// either case; compared as spelt, a revocation could miss the step-up it
// was meant for.
func subjectKey(subject string) string { return strings.ToLower(subject) }

// RevokedSubject reports whether the step-ups of PingOne user subject
// completed at authTime were revoked.
func (v *Revocations) RevokedSubject(subject string, authTime time.Time) bool {
	subject = subjectKey(subject)
	v.mu.RLock()
	at, ok := v.subjects[subject]
	v.mu.RUnlock()
	return ok && !authTime.After(at)
}

// Stale reports that this view cannot be trusted to hold every revocation:
// it was not confirmed against the shared store within MaxStaleness, or it
// is full. Callers then fail closed.
func (v *Revocations) Stale() bool {
	if v.full.Load() {
		return true
	}
	if v.maxStale <= 0 {
		return false
	}
	return v.wall().Sub(time.Unix(0, v.confirmed.Load())) > v.maxStale
}

// Unconfirmed is how long ago the view was last confirmed complete (0 for a
// local view).
func (v *Revocations) Unconfirmed() time.Duration {
	if v.maxStale <= 0 {
		return 0
	}
	return v.wall().Sub(time.Unix(0, v.confirmed.Load()))
}

// Len is the number of revocations kept.
func (v *Revocations) Len() int {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.lenLocked()
}

func (v *Revocations) lenLocked() int { return len(v.users) + len(v.sessions) + len(v.subjects) }

// confirm records that every revocation made before t is in the view.
func (v *Revocations) confirm(t time.Time) {
	n := t.UnixNano()
	for {
		old := v.confirmed.Load()
		if n <= old || v.confirmed.CompareAndSwap(old, n) {
			return
		}
	}
}

func (v *Revocations) addUser(user string, at time.Time) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if old, ok := v.users[user]; ok {
		if at.After(old) {
			v.users[user] = at
		}
		return nil
	}
	if !v.room() {
		return ErrRevocationsFull
	}
	v.users[user] = at
	return nil
}

func (v *Revocations) addSubject(subject string, at time.Time) error {
	subject = subjectKey(subject)
	v.mu.Lock()
	defer v.mu.Unlock()
	if old, ok := v.subjects[subject]; ok {
		if at.After(old) {
			v.subjects[subject] = at
		}
		return nil
	}
	if !v.room() {
		return ErrRevocationsFull
	}
	v.subjects[subject] = at
	return nil
}

func (v *Revocations) addSession(id string, until time.Time) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if old, ok := v.sessions[id]; ok {
		if until.After(old) {
			v.sessions[id] = until
		}
		return nil
	}
	if !v.room() {
		return ErrRevocationsFull
	}
	v.sessions[id] = until
	return nil
}

// room makes room for one more entry by dropping expired ones; when none
// can go, the view is marked full. Called with mu held.
func (v *Revocations) room() bool {
	if v.lenLocked() < v.max {
		return true
	}
	v.sweepLocked()
	if v.lenLocked() < v.max {
		return true
	}
	v.full.Store(true)
	return false
}

// messages is every revocation kept, in the form RedisRevocations stores
// and publishes ("u <nanos> user", "p <nanos> subject" or "s <nanos> id"), with how long each
// still has to live.
func (v *Revocations) messages() (msgs []string, ttls []time.Duration) {
	now := v.now()
	v.mu.RLock()
	defer v.mu.RUnlock()
	for u, at := range v.users {
		if ttl := RevocationTTL - now.Sub(at); ttl > 0 {
			msgs = append(msgs, "u "+strconv.FormatInt(at.UnixNano(), 10)+" "+u)
			ttls = append(ttls, ttl)
		}
	}
	for p, at := range v.subjects {
		if ttl := RevocationTTL - now.Sub(at); ttl > 0 {
			msgs = append(msgs, "p "+strconv.FormatInt(at.UnixNano(), 10)+" "+p)
			ttls = append(ttls, ttl)
		}
	}
	for s, until := range v.sessions {
		if ttl := until.Sub(now); ttl > 0 {
			msgs = append(msgs, "s "+strconv.FormatInt(until.UnixNano(), 10)+" "+s)
			ttls = append(ttls, ttl)
		}
	}
	return msgs, ttls
}

// Sweep forgets revocations older than RevocationTTL: the step-ups they
// refused have expired.
func (v *Revocations) Sweep() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.sweepLocked()
}

func (v *Revocations) sweepLocked() {
	now := v.now()
	for u, at := range v.users {
		if now.Sub(at) > RevocationTTL {
			delete(v.users, u)
		}
	}
	for p, at := range v.subjects {
		if now.Sub(at) > RevocationTTL {
			delete(v.subjects, p)
		}
	}
	for s, until := range v.sessions {
		if now.After(until) {
			delete(v.sessions, s)
		}
	}
	if v.lenLocked() < v.max {
		v.full.Store(false)
	}
}
