package session

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gorilla/sessions"
)

const (
	// DefaultCookieName is the step-up cookie's name over https. The
	// __Host- prefix makes browsers refuse it unless it is Secure, Path=/
	// and has no Domain, so no sibling subdomain can plant or shadow it.
	DefaultCookieName = "__Host-stepgate"
	// DefaultInsecureCookieName is the default when Secure is false (local
	// http), where a __Host- cookie would be refused by the browser.
	DefaultInsecureCookieName = "stepgate"
	// DefaultFlowTTL is how long a pending challenge lives: PingOne expires
	// an idle flow after 15 minutes.
	DefaultFlowTTL = 15 * time.Minute

	// FlowSuffix is appended to the step-up cookie name for the flow cookie.
	FlowSuffix = "-flow"
	// ApprovedSuffix is appended to the step-up cookie name for the cookie
	// that carries an approved request's reference to the original URL,
	// where the gateway forwards the held request (docs/design.md §14).
	ApprovedSuffix = "-approved"

	// Keys of sessions.Session.Values used by the gorilla/sessions API.
	ValueStepUp = "stepup"
	ValueFlow   = "flow"
)

// Options configures a Store.
type Options struct {
	Keys       [][]byte // keys[0] seals, all open; see ParseKeys
	CookieName string   // default DefaultCookieName (DefaultInsecureCookieName if !Secure)
	Secure     bool     // false only for local http
	FlowTTL    time.Duration
	Now        func() time.Time // nil means time.Now
}

// Store reads and writes stepgate's two sealed cookies. The typed methods
// (StepUp, SaveStepUp, Flow, SaveFlow) are the hot path; Get, New and Save
// make it a gorilla sessions.Store as well.
//
// Cookies are always HttpOnly, SameSite=Lax, Path=/, without Domain, and
// Secure as configured; the gorilla API cannot weaken that.
type Store struct {
	keys     atomic.Pointer[keyring] // swapped whole by SetKeys
	name     string
	flowName string
	apprName string
	aad      []byte // name as additional data, converted once
	flowAAD  []byte
	apprAAD  []byte
	secure   bool
	flowTTL  time.Duration
	now      func() time.Time
}

// keyring is the codec of one key list with the step-up cookies it opened:
// a cache entry is only ever found under the keys that opened it, so a
// key dropped by SetKeys stops opening cookies at once, even for a request
// that opened one under the old keys while the keys were swapped.
type keyring struct {
	codec   *Codec
	stepUps *stepUpCache // opened step-up cookies, see stepupcache.go
}

var _ sessions.Store = (*Store)(nil)

// NewStore returns a Store. It refuses a __Host- or __Secure- name without
// Secure, because browsers would silently drop such a cookie.
func NewStore(o Options) (*Store, error) {
	c, err := NewCodec(o.Keys)
	if err != nil {
		return nil, err
	}
	name := o.CookieName
	if name == "" {
		name = DefaultInsecureCookieName
		if o.Secure {
			name = DefaultCookieName
		}
	}
	if !isToken(name) {
		return nil, fmt.Errorf("session: cookie name %q is not a valid cookie name", name)
	}
	if !o.Secure && (strings.HasPrefix(name, "__Host-") || strings.HasPrefix(name, "__Secure-")) {
		return nil, fmt.Errorf("session: cookie name %q requires Secure (https); use another name for local http", name)
	}
	if o.FlowTTL < 0 {
		return nil, fmt.Errorf("session: negative flow TTL %v", o.FlowTTL)
	}
	if o.FlowTTL == 0 {
		o.FlowTTL = DefaultFlowTTL
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	st := &Store{
		name:     name,
		flowName: name + FlowSuffix,
		apprName: name + ApprovedSuffix,
		aad:      []byte(name),
		flowAAD:  []byte(name + FlowSuffix),
		apprAAD:  []byte(name + ApprovedSuffix),
		secure:   o.Secure,
		flowTTL:  o.FlowTTL,
		now:      o.Now,
	}
	st.keys.Store(&keyring{codec: c, stepUps: newStepUpCache()})
	return st, nil
}

// SetKeys replaces the cookie keys (a reload, docs/design.md §9.1): keys[0]
// seals from now on, and only keys opens. It is the same three-phase roll
// as a restart with new keys: add the new key second, then first, then
// drop the old one.
func (s *Store) SetKeys(keys [][]byte) error {
	c, err := NewCodec(keys)
	if err != nil {
		return err
	}
	s.keys.Store(&keyring{codec: c, stepUps: newStepUpCache()})
	return nil
}

// CookieName is the step-up cookie's name.
func (s *Store) CookieName() string { return s.name }

// FlowCookieName is the pending-flow cookie's name.
func (s *Store) FlowCookieName() string { return s.flowName }

// StepUp returns the request's step-up, if it has exactly one step-up cookie
// that opens, decodes and whose ID token has not expired. Every other case
// is "no step-up": there is no error that a caller could mistake for valid.
// Checking the user, max_age and acr against the rule is the caller's job.
// The value is the caller's to change; Lookup is the same without a copy.
func (s *Store) StepUp(r *http.Request) (StepUp, bool) {
	p, ok := s.Lookup(r)
	if !ok {
		return StepUp{}, false
	}
	v := *p
	v.AMR = slices.Clone(v.AMR)
	v.header = nil // a copy may be changed: its headers are rendered anew
	return v, true
}

// Lookup is StepUp without the copy: the step-up is shared by every request
// that carries the same cookie, so the caller must not change it (nor its
// AMR, nor HeaderValues' slice). It is what the gateway's hot path reads.
func (s *Store) Lookup(r *http.Request) (*StepUp, bool) {
	value, ok := cookieValue(r.Header, s.name)
	if !ok {
		return nil, false
	}
	kr := s.keys.Load()
	v, ok := kr.stepUps.get(value)
	if !ok {
		opened, ok := openStepUp(kr.codec, s.aad, value)
		if !ok {
			return nil, false
		}
		v = new(StepUp) // only now: a cookie that does not open costs no allocation
		*v = opened
		v.header = v.renderHeader()
		kr.stepUps.put(value, v)
	}
	if !s.now().Before(v.TokenExpiry) {
		return nil, false
	}
	return v, true
}

func openStepUp(c *Codec, aad []byte, value string) (StepUp, bool) {
	bp := c.bufs.Get().(*[]byte)
	defer c.bufs.Put(bp)
	pt, err := c.open(aad, value, *bp)
	if err != nil {
		return StepUp{}, false
	}
	v, err := unmarshalStepUp(pt) // copies out of the pooled buffer
	if err != nil {
		return StepUp{}, false
	}
	return v, true
}

// SaveStepUp sets the step-up cookie; the browser keeps it until the ID
// token expires (the expiry is also sealed inside and enforced on open).
func (s *Store) SaveStepUp(w http.ResponseWriter, v StepUp) error {
	c, err := s.StepUpCookie(v)
	if err != nil {
		return err
	}
	http.SetCookie(w, c)
	return nil
}

// StepUpCookie returns the cookie SaveStepUp would set. Tests that are not
// about MFA use it to mint a real step-up and skip the challenge.
func (s *Store) StepUpCookie(v StepUp) (*http.Cookie, error) {
	now := s.now()
	if !v.TokenExpiry.After(now) {
		return nil, errors.New("session: save step-up: ID token already expired")
	}
	pt, err := marshalStepUp(v)
	if err != nil {
		return nil, err
	}
	c, err := s.sealedCookie(s.name, s.aad, pt, v.TokenExpiry.Sub(now))
	if err != nil {
		return nil, fmt.Errorf("session: save step-up: %w", err)
	}
	return c, nil
}

// ClearStepUp deletes the step-up cookie (logout).
func (s *Store) ClearStepUp(w http.ResponseWriter) { s.clear(w, s.name) }

// Flow returns the request's pending flow, if it has exactly one flow
// cookie that opens, decodes and is younger than the flow TTL.
func (s *Store) Flow(r *http.Request) (Flow, bool) {
	value, ok := cookieValue(r.Header, s.flowName)
	if !ok {
		return Flow{}, false
	}
	c := s.keys.Load().codec
	bp := c.bufs.Get().(*[]byte)
	defer c.bufs.Put(bp)
	pt, err := c.open(s.flowAAD, value, *bp)
	if err != nil {
		return Flow{}, false
	}
	f, err := unmarshalFlow(pt)
	if err != nil {
		return Flow{}, false
	}
	if f.Created.IsZero() || !s.now().Before(f.Created.Add(s.flowTTL)) {
		return Flow{}, false
	}
	return f, true
}

// SaveFlow sets the pending-flow cookie. A zero Created is set to now. The
// flow expires FlowTTL after Created, however often it is saved again, so
// the cookie's Max-Age is the time left (FlowTTL for a new flow).
func (s *Store) SaveFlow(w http.ResponseWriter, f Flow) error {
	c, err := s.FlowCookie(f)
	if err != nil {
		return err
	}
	http.SetCookie(w, c)
	return nil
}

// FlowCookie returns the cookie SaveFlow would set.
func (s *Store) FlowCookie(f Flow) (*http.Cookie, error) {
	now := s.now()
	if f.Created.IsZero() {
		f.Created = now
	}
	left := min(f.Created.Add(s.flowTTL).Sub(now), s.flowTTL)
	if left < time.Second {
		return nil, errors.New("session: save flow: flow already expired")
	}
	pt, err := marshalFlow(f)
	if err != nil {
		return nil, err
	}
	c, err := s.sealedCookie(s.flowName, s.flowAAD, pt, left)
	if err != nil {
		return nil, fmt.Errorf("session: save flow: %w", err)
	}
	return c, nil
}

// ClearFlow deletes the pending-flow cookie.
func (s *Store) ClearFlow(w http.ResponseWriter) { s.clear(w, s.flowName) }

// Approved returns the approval reference of the request's approved-request
// cookie, if it has exactly one that opens and has not expired.
func (s *Store) Approved(r *http.Request) (string, bool) {
	value, ok := cookieValue(r.Header, s.apprName)
	if !ok {
		return "", false
	}
	c := s.keys.Load().codec
	bp := c.bufs.Get().(*[]byte)
	defer c.bufs.Put(bp)
	pt, err := c.open(s.apprAAD, value, *bp)
	if err != nil || len(pt) < 9 {
		return "", false
	}
	exp := time.Unix(int64(binary.BigEndian.Uint64(pt)), 0)
	if !s.now().Before(exp) {
		return "", false
	}
	return string(pt[8:]), true // copies out of the pooled buffer
}

// SaveApproved sets the approved-request cookie for ttl.
func (s *Store) SaveApproved(w http.ResponseWriter, ref string, ttl time.Duration) error {
	pt := binary.BigEndian.AppendUint64(nil, uint64(s.now().Add(ttl).Unix()))
	c, err := s.sealedCookie(s.apprName, s.apprAAD, append(pt, ref...), ttl)
	if err != nil {
		return fmt.Errorf("session: save approved: %w", err)
	}
	http.SetCookie(w, c)
	return nil
}

// ClearApproved deletes the approved-request cookie.
func (s *Store) ClearApproved(w http.ResponseWriter) { s.clear(w, s.apprName) }

func (s *Store) sealedCookie(name string, aad, plaintext []byte, maxAge time.Duration) (*http.Cookie, error) {
	value := s.keys.Load().codec.seal(aad, plaintext)
	if n := len(name) + 1 + len(value); n > MaxCookieSize {
		return nil, fmt.Errorf("sealed cookie is %d bytes, more than %d", n, MaxCookieSize)
	}
	return s.cookie(name, value, max(int(maxAge/time.Second), 1)), nil
}

func (s *Store) clear(w http.ResponseWriter, name string) {
	http.SetCookie(w, s.cookie(name, "", -1))
}

// cookie builds the cookie itself rather than through sessions.NewCookie,
// which reads the wall clock for Expires; Max-Age alone is enough for
// every current browser.
func (s *Store) cookie(name, value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name:     name,
		Value:    value,
		Path:     "/",
		MaxAge:   maxAge,
		Secure:   s.secure,
		HttpOnly: true,
		SameSite: http.SameSiteLaxMode,
	}
}

// options are the cookie attributes, in gorilla's terms.
func (s *Store) options(maxAge int) *sessions.Options {
	return &sessions.Options{
		Path:     "/",
		MaxAge:   maxAge,
		Secure:   s.secure,
		HttpOnly: true,
		SameSite: http.SameSiteLaxMode,
	}
}

// Get returns the named session, cached for the request in gorilla's
// registry. name must be CookieName or FlowCookieName.
func (s *Store) Get(r *http.Request, name string) (*sessions.Session, error) {
	return sessions.GetRegistry(r).Get(s, name)
}

// New returns the named session: for CookieName, Values[ValueStepUp] holds
// a StepUp; for FlowCookieName, Values[ValueFlow] holds a Flow. A missing or
// invalid cookie gives an empty session with IsNew set and no error (it is
// simply absent); an unknown name is an error.
func (s *Store) New(r *http.Request, name string) (*sessions.Session, error) {
	sess := sessions.NewSession(s, name)
	sess.IsNew = true
	switch name {
	case s.name:
		sess.Options = s.options(0)
		if v, ok := s.StepUp(r); ok {
			sess.Values[ValueStepUp] = v
			sess.ID = v.ID
			sess.IsNew = false
		}
	case s.flowName:
		sess.Options = s.options(int(s.flowTTL / time.Second))
		if f, ok := s.Flow(r); ok {
			sess.Values[ValueFlow] = f
			sess.ID = f.FlowID
			sess.IsNew = false
		}
	default:
		sess.Options = s.options(0)
		return sess, fmt.Errorf("session: unknown cookie %q (want %q or %q)", name, s.name, s.flowName)
	}
	return sess, nil
}

// Save writes the session's cookie. Options.MaxAge < 0 or empty Values
// delete it; otherwise Values must hold exactly one entry, ValueStepUp with
// a StepUp (CookieName) or ValueFlow with a Flow (FlowCookieName), values or
// pointers. Other Options are ignored: the attributes are fixed.
func (s *Store) Save(r *http.Request, w http.ResponseWriter, sess *sessions.Session) error {
	name := sess.Name()
	if name != s.name && name != s.flowName {
		return fmt.Errorf("session: save: unknown cookie %q", name)
	}
	if (sess.Options != nil && sess.Options.MaxAge < 0) || len(sess.Values) == 0 {
		s.clear(w, name)
		return nil
	}
	if len(sess.Values) != 1 {
		return fmt.Errorf("session: save %q: %d values, want exactly one", name, len(sess.Values))
	}
	if name == s.name {
		switch v := sess.Values[ValueStepUp].(type) {
		case StepUp:
			return s.SaveStepUp(w, v)
		case *StepUp:
			if v != nil {
				return s.SaveStepUp(w, *v)
			}
		}
		return fmt.Errorf("session: save %q: want Values[%q] of type session.StepUp", name, ValueStepUp)
	}
	switch f := sess.Values[ValueFlow].(type) {
	case Flow:
		return s.SaveFlow(w, f)
	case *Flow:
		if f != nil {
			return s.SaveFlow(w, *f)
		}
	}
	return fmt.Errorf("session: save %q: want Values[%q] of type session.Flow", name, ValueFlow)
}

// StripCookies removes every stepgate cookie from every Cookie header, so
// the upstream never sees them. A line without one is kept byte for byte;
// in a line with one, the other pairs keep their bytes and only the
// separators between them are normalised to "; ". A header left empty is
// removed.
func (s *Store) StripCookies(h http.Header) {
	lines := h["Cookie"]
	var out []string // nil until a line changes: nothing allocated otherwise
	for i, line := range lines {
		stripped, changed := s.stripLine(line)
		if changed && out == nil {
			out = make([]string, 0, len(lines))
			out = append(out, lines[:i]...)
		}
		if out != nil && stripped != "" {
			out = append(out, stripped)
		}
	}
	switch {
	case out == nil:
	case len(out) == 0:
		delete(h, "Cookie")
	default:
		h["Cookie"] = out
	}
}

// stripLine is one Cookie line without stepgate's cookies, the other pairs
// joined by "; ", and whether it held one of ours (if not, line itself).
// The pairs are gathered on the stack and copied out once, at their size,
// only when one of ours was there: a sealed step-up cookie is over a
// kilobyte, the rest often a few bytes.
func (s *Store) stripLine(line string) (string, bool) {
	var buf [256]byte
	b := buf[:0]
	ours := false
	for i := 0; i < len(line); {
		n, _, end := nextPair(line, i)
		pair := trimOWS(line[i:end])
		i = end + 1
		if n == s.name || n == s.flowName || n == s.apprName {
			ours = true
			continue
		}
		if pair == "" {
			continue
		}
		if len(b) > 0 {
			b = append(b, "; "...)
		}
		b = append(b, pair...)
	}
	if !ours {
		return line, false
	}
	return string(b), true
}

// cookieValue finds the value of the cookie called name in h's Cookie
// headers without allocating. Zero or several cookies of that name are
// "absent": with two, we cannot tell which one the browser meant (a
// related domain may have planted one), so we trust neither.
func cookieValue(h http.Header, name string) (string, bool) {
	var value string
	found := 0
	for _, line := range h["Cookie"] {
		for i := 0; i < len(line); {
			n, eq, end := nextPair(line, i)
			if eq >= 0 && n == name {
				found++
				value = trimOWS(line[eq+1 : end])
			}
			i = end + 1
		}
	}
	if found != 1 {
		return "", false
	}
	return value, true
}

// nextPair reads the pair of a Cookie line that starts at line[i:] as
// cookie parsers do (pairs cut at ';', the name before the first '=',
// spaces and tabs trimmed): its name, the index of its '=' (-1 for none)
// and the index where it ends (its ';', or the line's end). Both searches
// are IndexByte, which a 1.6 KiB step-up cookie costs a few dozen vector
// compares; a substring search for a cookie's name through the same bytes
// cost ten times that.
func nextPair(line string, i int) (name string, eq, end int) {
	end = len(line)
	if j := strings.IndexByte(line[i:], ';'); j >= 0 {
		end = i + j
	}
	pair := line[i:end]
	eq = -1
	if k := strings.IndexByte(pair, '='); k >= 0 {
		eq = i + k
		pair = pair[:k]
	}
	return trimOWS(pair), eq, end
}

// trimOWS trims spaces and tabs, as cookie parsers do around pairs.
func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// isToken reports whether s is an RFC 6265 cookie-name (an RFC 7230 token).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?={}`, c) >= 0 {
			return false
		}
	}
	return true
}
