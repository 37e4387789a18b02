// Package approve implements approve rules (docs/design.md §14):
// it reads the request an approve rule intercepts, binds an approval to its
// digest, and holds the request, sealed, while the user approves it, so
// that exactly that request is forwarded, once.
//
// It must never forward a request that differs from the one approved, never
// let an approval be used twice (the store's Consume is atomic), never keep
// a held request in clear, and never log a body or a value from one.
package approve

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/stepgate/stepgate/proxy/reqpath"
	"github.com/stepgate/stepgate/proxy/rules"
	"github.com/stepgate/stepgate/store"
)

// DefaultMaxBody is STEPGATE_APPROVE_MAX_BODY's default.
const DefaultMaxBody = 64 << 10

// Errors of Read and Open.
var (
	ErrTooLarge = errors.New("approve: request body over the approve limit")
	ErrBadBody  = errors.New("approve: request body could not be read")
	ErrExpired  = errors.New("approve: held request expired or unknown")
	ErrBadRef   = errors.New("approve: malformed approval reference")
)

// Digest binds an approval to one request (docs/design.md §14): the
// upstream user, method, path as forwarded, raw query, Content-Type and the
// SHA-256 of the body, each length-prefixed so that no two requests share an
// encoding. It is keyed (HMAC-SHA256), because it is logged and sent to the
// upstream: a plain hash over mostly known fields would let anyone with a
// log line try amounts until one matched.
func (g *Gate) Digest(q *Request) string { return digest((*g.keys.Load())[0], q) }

func digest(key []byte, q *Request) string {
	body := sha256.Sum256(q.Body)
	h := hmac.New(sha256.New, key)
	for _, s := range []string{"stepgate-approval-v2", q.User, q.Method, q.Override, q.Path, q.RawQuery, q.ContentType} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	h.Write(body[:])
	return hex.EncodeToString(h.Sum(nil))
}

// Shown is one label and value on the challenge page.
type Shown struct {
	Label string `json:"l"`
	Value string `json:"v"`
	Found bool   `json:"f"`
}

// Held is a request kept while its user approves it, and what the page and
// PingOne are told about it.
type Held struct {
	Request
	Host    string            `json:"host"`
	Header  http.Header       `json:"header"` // the headers to forward, as they arrived after stripping
	Digest  string            `json:"digest"`
	Show    []Shown           `json:"show"`
	Vars    map[string]string `json:"vars"`
	Tmpl    string            `json:"tmpl"`
	Variant string            `json:"variant"`
	ACR     string            `json:"acr"`
	TTL     time.Duration     `json:"ttl"`
	Created time.Time         `json:"created"`
	API     bool              `json:"api"` // held for an API client: it retries, nothing is replayed
}

// Target is the original URL, path and query, as the browser should see it
// after approval.
func (h *Held) Target() string {
	if h.RawQuery == "" {
		return h.Path
	}
	return h.Path + "?" + h.RawQuery
}

// ReqPath is the held path in the form the gateway forwards.
func (h *Held) ReqPath() reqpath.Path {
	return reqpath.Path{Match: h.Match, Escaped: h.Path, Query: h.RawQuery}
}

// Gate reads, holds and releases approve-rule requests.
type Gate struct {
	store   store.Approvals
	keys    atomic.Pointer[[][]byte] // the first keys new digests; the others still match
	maxBody int64
	now     func() time.Time
	revoked func(user, subject string, at time.Time) bool // nil: nothing is revoked
}

// New returns a Gate. keys key the digest (every replica sharing a store
// needs the same ones; cmd/stepgate derives them from the cookie keys): the
// first keys new approvals, and an approval keyed by any of them is used,
// so that an API client's retry across a key roll finds its approval;
// maxBody <= 0 means DefaultMaxBody.
func New(s store.Approvals, keys [][]byte, maxBody int64, now func() time.Time) *Gate {
	if len(keys) == 0 {
		panic("approve: New without a digest key")
	}
	if maxBody <= 0 {
		maxBody = DefaultMaxBody
	}
	if now == nil {
		now = time.Now
	}
	g := &Gate{store: s, maxBody: maxBody, now: now}
	g.keys.Store(&keys)
	return g
}

// SetKeys replaces the digest keys (a reload of the cookie keys they are
// derived from); an empty list is ignored.
func (g *Gate) SetKeys(keys [][]byte) {
	if len(keys) > 0 {
		g.keys.Store(&keys)
	}
}

// MaxBody is the largest body an approve rule holds.
func (g *Gate) MaxBody() int64 { return g.maxBody }

// Read reads the whole body (up to MaxBody) of a request an approve rule
// matched, and restores it on r so the request can still be forwarded.
func (g *Gate) Read(r *http.Request, user string, p reqpath.Path) (*Request, error) {
	if r.ContentLength > g.maxBody {
		return nil, ErrTooLarge
	}
	var body []byte
	if r.Body != nil && r.Body != http.NoBody {
		b, err := io.ReadAll(io.LimitReader(r.Body, g.maxBody+1))
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadBody, err)
		}
		if int64(len(b)) > g.maxBody {
			return nil, ErrTooLarge
		}
		body = b
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.TransferEncoding = nil
	r.Header.Del("Transfer-Encoding")
	return &Request{
		User: user, Method: r.Method, Path: p.Escaped, Match: p.Match, RawQuery: p.Query,
		ContentType: r.Header.Get("Content-Type"), Body: body,
	}, nil
}

// Consume uses the approval of q, if there is one, and returns its digest
// and the id of the held request that was approved (for the audit line;
// "" when the store no longer says).
func (g *Gate) Consume(ctx context.Context, q *Request) (used bool, digestUsed, id string, err error) {
	for _, k := range *g.keys.Load() {
		d := digest(k, q)
		ok, err := g.store.Consume(ctx, d)
		if err != nil || ok {
			if ok {
				id = g.approvedID(ctx, d)
			}
			return ok, d, id, err
		}
	}
	return false, "", "", nil
}

// approvedID is the id of the held request whose approval of digest was
// just used: two identical requests share a digest, and only the id tells
// the audit which approval a forward used. Best effort: it only names.
func (g *Gate) approvedID(ctx context.Context, digest string) string {
	b, err := g.store.Held(ctx, approvedKey(digest))
	if err != nil || len(b) != idLen {
		return ""
	}
	_ = g.store.Drop(ctx, approvedKey(digest))
	return string(b)
}

// approvedKey names the record, beside an approval of digest, of the held
// request that was approved: never a held id (22 characters) nor a kept key.
func approvedKey(digest string) string { return "approved:" + digest }

// idLen is the length of a held request's id.
const idLen = 22

// auditRecord is what the audit needs of a held request once it is gone
// (its expiry is noticed when the user comes back): its digest, method and
// path, which the audit lines carry anyway. Never a value, a header or the
// body. It is kept in clear beside the sealed request, a while longer.
type auditRecord struct {
	Digest string `json:"d"`
	Method string `json:"m"`
	Path   string `json:"p"`
}

// auditRetention is how long an audit record outlives its held request:
// as long as a flow cookie that could still come back to it.
const auditRetention = 15 * time.Minute

// Hold keeps q with what rule says to show and send, and returns the
// reference that finds and opens it. The reference holds the only copy of
// the key that seals the request at rest.
func (g *Gate) Hold(ctx context.Context, q *Request, r *http.Request, rule rules.Rule, api bool) (ref string, h *Held, err error) {
	h = &Held{
		Request: *q, Host: r.Host, Header: r.Header.Clone(), Digest: g.Digest(q),
		Tmpl: rule.Template, Variant: rule.Variant, ACR: rule.ACR, TTL: rule.TTL,
		Created: g.now(), API: api,
	}
	h.Show = summary(q, rule.Show)
	if len(rule.Vars) > 0 {
		h.Vars = make(map[string]string, len(rule.Vars))
		for _, f := range rule.Vars {
			v, _ := q.Value(f.From)
			h.Vars[f.Label] = Clean(v)
		}
	}
	plain, err := json.Marshal(h)
	if err != nil {
		return "", nil, fmt.Errorf("approve: hold: %w", err)
	}
	if int64(len(plain)) > g.maxBody*2+maxHeldOverhead {
		// The body is bounded already; this bounds the headers (Go reads
		// up to 1 MiB of them), so one request cannot fill the store.
		return "", nil, ErrTooLarge
	}
	id, key := randomID(), randomKey(32)
	sealed, err := seal(key, id, plain)
	if err != nil {
		return "", nil, err
	}
	if err := g.store.Hold(ctx, string(id), sealed, rule.TTL); err != nil {
		return "", nil, fmt.Errorf("approve: hold: %w", err)
	}
	if rec, err := json.Marshal(auditRecord{Digest: h.Digest, Method: h.Method, Path: h.Match}); err == nil {
		_ = g.store.Hold(ctx, keptKey(string(id), "audit"), rec, rule.TTL+auditRetention) // best effort: it only names
	}
	// One approval per held request: a second completion of the flow
	// (a kept flow cookie, a reload racing the push poll) finds this token
	// gone and approves nothing.
	if err := g.store.Approve(ctx, approvableKey(string(id)), rule.TTL); err != nil {
		return "", nil, fmt.Errorf("approve: hold: %w", err)
	}
	return string(id) + "." + base64.RawURLEncoding.EncodeToString(key), h, nil
}

// maxHeldOverhead bounds what a held request may add to its body: headers
// and the page's values. The body is base64 in the sealed JSON, hence the
// factor of two on it.
const maxHeldOverhead = 64 << 10

// approvableKey names the one-time token that lets a held request be
// approved; it shares the store's approval space but never a digest's
// shape (a digest is 64 hex characters).
func approvableKey(id string) string { return "held:" + id }

// summary is what the page shows: every label the rule names, in order,
// each value cleaned and cut, the whole at most MaxSummarySize bytes. A
// label is never dropped to fit: its value is cut to "…" instead, so a long
// early value cannot hide a later field.
func summary(q *Request, fields []rules.Field) []Shown {
	out := make([]Shown, 0, len(fields))
	budget := MaxSummarySize
	for _, f := range fields {
		budget -= len(f.Label)
	}
	for i, f := range fields {
		v, ok := q.Value(f.From)
		s := Shown{Label: strings.ReplaceAll(f.Label, "_", " "), Value: Clean(v), Found: ok}
		// What this value may use: an equal share of what is left.
		share := budget / (len(fields) - i)
		if len(s.Value) > share {
			s.Value = cutBytes(s.Value, share-len("…")) + "…"
		}
		budget -= len(s.Value)
		out = append(out, s)
	}
	return out
}

// cutBytes cuts s to at most n bytes on a rune boundary.
func cutBytes(s string, n int) string {
	if n <= 0 {
		return ""
	}
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// Open finds and opens the request held under ref. With ErrExpired it may
// return, in place of the request, what the audit line needs of it: its
// Digest, Method and Match, nothing else.
func (g *Gate) Open(ctx context.Context, ref string) (*Held, error) {
	id, key, err := parseRef(ref)
	if err != nil {
		return nil, err
	}
	sealed, err := g.store.Held(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return g.gone(ctx, id), ErrExpired
	}
	if err != nil {
		return nil, fmt.Errorf("approve: open: %w", err)
	}
	plain, err := open(key, []byte(id), sealed)
	if err != nil {
		return nil, ErrBadRef // the right id with the wrong key
	}
	var h Held
	if err := json.Unmarshal(plain, &h); err != nil {
		return nil, fmt.Errorf("approve: open: %w", err)
	}
	if !g.now().Before(h.Created.Add(h.TTL)) {
		return &Held{Request: Request{Method: h.Method, Match: h.Match}, Digest: h.Digest}, ErrExpired
	}
	return &h, nil
}

// gone is what the audit record of the expired request held under id says,
// or nil.
func (g *Gate) gone(ctx context.Context, id string) *Held {
	b, err := g.store.Held(ctx, keptKey(id, "audit"))
	if err != nil {
		return nil
	}
	var rec auditRecord
	if json.Unmarshal(b, &rec) != nil {
		return nil
	}
	return &Held{Request: Request{Method: rec.Method, Match: rec.Path}, Digest: rec.Digest}
}

// Approve records the approval of h (held under ref), usable once within
// its ttl. A held request is approved at most once: a second call answers
// ErrExpired.
func (g *Gate) Approve(ctx context.Context, ref string, h *Held) error {
	return g.ApproveAs(ctx, ref, h, "")
}

// ApproveAs is Approve by the PingOne user subject who passed the MFA:
// a revocation of that subject since the request was held (a PingOne
// webhook, a shared signal) ends it too.
func (g *Gate) ApproveAs(ctx context.Context, ref string, h *Held, subject string) error {
	id, _, err := parseRef(ref)
	if err != nil {
		return ErrBadRef
	}
	if g.endedByRevocation(ctx, id, h, subject) {
		return ErrExpired
	}
	ok, err := g.store.Consume(ctx, approvableKey(id))
	if err != nil {
		return fmt.Errorf("approve: approve: %w", err)
	}
	if !ok {
		return ErrExpired // approved once already, or expired
	}
	if err := g.store.Approve(ctx, h.Digest, h.TTL); err != nil {
		return err
	}
	// An API client's retry finds the approval by its digest alone: this
	// says which held request it was, for the forward's audit line.
	_ = g.store.Hold(ctx, approvedKey(h.Digest), []byte(id), h.TTL) // best effort: it only names
	return nil
}

// Release uses the approval of h and forgets it: true for exactly one caller.
func (g *Gate) Release(ctx context.Context, ref string, h *Held) (bool, error) {
	if id, _, err := parseRef(ref); err == nil && g.endedByRevocation(ctx, id, h, "") {
		return false, nil
	}
	ok, err := g.store.Consume(ctx, h.Digest)
	if err != nil || !ok {
		return false, err
	}
	if id, _, err := parseRef(ref); err == nil {
		_ = g.store.Drop(ctx, id)
	}
	return true, nil
}

// SetRevoked gives the gate the revocation view (docs/design.md §15): a
// request held by a user whose step-ups were revoked at or after it was
// held — by POST /revoke, a PingOne webhook or a shared signal, by user or
// (once the approving MFA names it) by PingOne subject — is neither
// approved nor forwarded, on every replica. Set before serving.
func (g *Gate) SetRevoked(revoked func(user, subject string, at time.Time) bool) { g.revoked = revoked }

// endedByRevocation drops the request held under id when its user (or the
// subject approving it) was revoked since it was held.
func (g *Gate) endedByRevocation(ctx context.Context, id string, h *Held, subject string) bool {
	if g.revoked == nil || !g.revoked(h.User, subject, h.Created) {
		return false
	}
	_ = g.store.Drop(ctx, id)
	return true
}

// Withdraw makes the request held under ref unapprovable and drops it: a
// denied, timed-out or cancelled approval. It reports true to exactly one
// caller, and only while no approval was given (Approve consumes the same
// one-time token), so a cancel racing a completion either stops the
// forward or learns it came too late.
func (g *Gate) Withdraw(ctx context.Context, ref string) (bool, error) {
	id, _, err := parseRef(ref)
	if err != nil {
		return false, ErrBadRef
	}
	ok, err := g.store.Consume(ctx, approvableKey(id))
	if err != nil {
		return false, fmt.Errorf("approve: withdraw: %w", err)
	}
	if ok {
		_ = g.store.Drop(ctx, id)
	}
	return ok, nil
}

// Keep stores v beside the request held under ref, under name, sealed with
// the same key (which only the reference carries), until ttl. A decoupled
// approval keeps its PingOne flow state and its outcome this way, so any
// replica holding the reference can read them and no store reader can.
func (g *Gate) Keep(ctx context.Context, ref, name string, v []byte, ttl time.Duration) error {
	id, key, err := parseRef(ref)
	if err != nil {
		return ErrBadRef
	}
	k := keptKey(id, name)
	sealed, err := seal(key, []byte(k), v)
	if err != nil {
		return err
	}
	if err := g.store.Hold(ctx, k, sealed, ttl); err != nil {
		return fmt.Errorf("approve: keep: %w", err)
	}
	return nil
}

// Kept returns what Keep stored under ref and name: ErrExpired when there
// is nothing, ErrBadRef when the reference's key does not open it.
func (g *Gate) Kept(ctx context.Context, ref, name string) ([]byte, error) {
	id, key, err := parseRef(ref)
	if err != nil {
		return nil, ErrBadRef
	}
	k := keptKey(id, name)
	sealed, err := g.store.Held(ctx, k)
	if errors.Is(err, store.ErrNotFound) {
		return nil, ErrExpired
	}
	if err != nil {
		return nil, fmt.Errorf("approve: kept: %w", err)
	}
	plain, err := open(key, []byte(k), sealed)
	if err != nil {
		return nil, ErrBadRef
	}
	return plain, nil
}

// Mark sets a one-time token named name for the request held under ref;
// TakeMark reports true to exactly one caller per Mark, across replicas
// (an event that must be recorded once, such as an expiry).
func (g *Gate) Mark(ctx context.Context, ref, name string, ttl time.Duration) error {
	id, _, err := parseRef(ref)
	if err != nil {
		return ErrBadRef
	}
	return g.store.Approve(ctx, keptKey(id, name), ttl)
}

// TakeMark uses the token Mark set.
func (g *Gate) TakeMark(ctx context.Context, ref, name string) (bool, error) {
	id, _, err := parseRef(ref)
	if err != nil {
		return false, ErrBadRef
	}
	return g.store.Consume(ctx, keptKey(id, name))
}

// keptKey names a record kept beside a held request: never a held id (22
// characters) nor a digest (64 hex characters).
func keptKey(id, name string) string { return "kept:" + id + ":" + name }

// ID is the held request's id within ref (not secret on its own: it finds
// the sealed request, and only the reference's key opens it), or "".
func ID(ref string) string {
	id, _, err := parseRef(ref)
	if err != nil {
		return ""
	}
	return id
}

// ValidRef reports whether ref has the form of a reference.
func ValidRef(ref string) bool {
	_, _, err := parseRef(ref)
	return err == nil
}

// Forget drops the request held under ref (a cancelled approval).
func (g *Gate) Forget(ctx context.Context, ref string) {
	if id, _, err := parseRef(ref); err == nil {
		_ = g.store.Drop(ctx, id)
	}
}

// Request rebuilds the held request to forward in place of in (the
// browser's GET of the original URL): method, path, query, headers and
// body all come from what was approved.
func (h *Held) Forward(in *http.Request) *http.Request {
	out := in.Clone(in.Context())
	out.Method = h.Method
	out.Header = h.Header.Clone()
	out.Host = h.Host
	out.URL.Path, out.URL.RawPath, out.URL.RawQuery = h.Match, h.Path, h.RawQuery
	out.RequestURI = h.Target()
	out.Body = io.NopCloser(bytes.NewReader(h.Body))
	out.ContentLength = int64(len(h.Body))
	out.TransferEncoding = nil
	return out
}

// randomID is a held request's id: 16 random bytes as base64url text, as
// it travels in cookies and URLs.
func randomID() []byte {
	return []byte(base64.RawURLEncoding.EncodeToString(randomKey(16)))
}

// randomKey is n random bytes.
func randomKey(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func parseRef(ref string) (id string, key []byte, err error) {
	id, k, ok := strings.Cut(ref, ".")
	if !ok || len(id) != idLen || len(k) != 43 {
		return "", nil, ErrBadRef
	}
	key, err = base64.RawURLEncoding.DecodeString(k)
	if err != nil || len(key) != 32 {
		return "", nil, ErrBadRef
	}
	if _, err := base64.RawURLEncoding.DecodeString(id); err != nil {
		return "", nil, ErrBadRef
	}
	return id, key, nil
}

func seal(key, aad, plain []byte) ([]byte, error) {
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	_, _ = rand.Read(nonce)
	return aead.Seal(nonce, nonce, plain, aad), nil
}

func open(key, aad, sealed []byte) ([]byte, error) {
	aead, err := newAEAD(key)
	if err != nil {
		return nil, err
	}
	if len(sealed) < aead.NonceSize() {
		return nil, errors.New("approve: short sealed value")
	}
	return aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], aad)
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("approve: %w", err)
	}
	return cipher.NewGCM(b)
}
