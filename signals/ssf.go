package signals

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/stepgate/stepgate/mfa/jwks"
	"github.com/stepgate/stepgate/proxy/identity"
	"github.com/stepgate/stepgate/store"
)

// The CAEP 1.0 event types that end the subject's step-ups
// (https://openid.net/specs/openid-caep-1_0-final.html §3.1, §3.2).
const (
	CAEPSessionRevoked   = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
	CAEPCredentialChange = "https://schemas.openid.net/secevent/caep/event-type/credential-change"
)

// maxSETBody bounds a push request: one SET, a few KiB in practice.
const maxSETBody = 64 << 10

// SSFOptions configures the Shared Signals push receiver.
type SSFOptions struct {
	// Issuer is the transmitter's issuer: a SET's iss must equal it, and
	// its SSF configuration is read from it when JWKSURL is empty.
	Issuer string
	// Audience must be one of a SET's aud values.
	Audience string
	// JWKSURL, optional, is the transmitter's key set; empty means the
	// jwks_uri of the issuer's /.well-known/ssf-configuration.
	JWKSURL string
	// Bearer, optional, is the token the transmitter sends in
	// Authorization (the stream's delivery.authorization_header).
	Bearer string
	// PingOneIssuer and UserIssuer say which iss_sub subjects stepgate can
	// map: one issued by PingOneIssuer names a PingOne user id (the
	// step-up's subject); one issued by UserIssuer names the upstream user
	// by its sub. Either may be empty.
	PingOneIssuer string
	UserIssuer    string
	// Transforms turn an email or opaque subject (and a UserIssuer sub)
	// into the upstream user, as STEPGATE_PINGONE_USER_TRANSFORM does the
	// other way round.
	Transforms []identity.Transform
	// MaxAge bounds how old a SET's iat may be (default 1 h); Skew how
	// far in the future (default 1 min).
	MaxAge, Skew time.Duration
	Client       *http.Client
	Revoker      store.Revoker
	Logger       *slog.Logger
	// Count, optional, is told each SET's result: revoked, ignored,
	// refused.
	Count func(result string)
	Now   func() time.Time
}

// SSF receives Security Event Tokens pushed by an SSF transmitter
// (RFC 8935).
type SSF struct {
	o      SSFOptions
	bearer [sha256.Size]byte
	seen   *seenIDs

	mu           sync.Mutex
	keys         *jwks.Cache
	lastDiscover time.Time
	discoverErr  error
}

// NewSSF returns the receiver. It fetches nothing until the first SET.
func NewSSF(o SSFOptions) (*SSF, error) {
	if o.Issuer == "" || o.Audience == "" || o.Revoker == nil || o.Logger == nil {
		return nil, errors.New("signals: ssf: issuer, audience, revoker and logger are required")
	}
	if o.MaxAge <= 0 {
		o.MaxAge = time.Hour
	}
	if o.Skew <= 0 {
		o.Skew = time.Minute
	}
	if o.Count == nil {
		o.Count = func(string) {}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: 10 * time.Second}
	}
	s := &SSF{o: o, bearer: sha256.Sum256([]byte(o.Bearer)),
		// A jti older than MaxAge+Skew is refused by its iat anyway, so
		// remembering it longer buys nothing.
		seen: newSeenIDs(100_000, o.MaxAge+o.Skew, o.Now)}
	if o.JWKSURL != "" {
		s.keys = s.cache(o.JWKSURL)
	}
	return s, nil
}

func (s *SSF) cache(u string) *jwks.Cache {
	return jwks.New(jwks.Options{URL: u, Client: s.o.Client, Now: s.o.Now})
}

// setError is a refusal: the RFC 8935 §2.4 error code for the transmitter,
// and stepgate's own reason code for the audit line.
type setError struct {
	err, reason, description string
}

func refusal(err, reason, format string, a ...any) *setError {
	return &setError{err: err, reason: reason, description: fmt.Sprintf(format, a...)}
}

// ServeHTTP answers one push delivery: 202 when the SET is believed (and
// its revocation stored), 400 with an RFC 8935 error otherwise, changing
// nothing.
func (s *SSF) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if e := s.authenticate(r); e != nil {
		s.refuse(w, r, e, "")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxSETBody))
	if err != nil {
		s.refuse(w, r, refusal("invalid_request", "too_large", "a body over %d bytes", maxSETBody), "")
		return
	}
	set, e := s.verify(r.Context(), strings.TrimSpace(string(body)))
	if e != nil {
		if e.reason == "keys_unavailable" {
			// Not the transmitter's fault as far as it can tell: ask it to
			// deliver again rather than drop the event.
			s.o.Logger.LogAttrs(r.Context(), slog.LevelError, "ssf: transmitter keys unavailable",
				slog.String("detail", e.description))
			w.Header().Set("Retry-After", "30")
			// The detail (URLs, dial errors) stays in the log: the caller
			// may not be the transmitter.
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"err": "temporarily_unavailable", "description": "the transmitter's keys cannot be fetched now"})
			s.o.Count("refused")
			return
		}
		s.refuse(w, r, e, set.JTI)
		return
	}
	var revoking []string
	for typ := range set.Events {
		if typ == CAEPSessionRevoked || typ == CAEPCredentialChange {
			revoking = append(revoking, typ)
		}
	}
	slices.Sort(revoking)
	if len(revoking) == 0 {
		types := make([]string, 0, len(set.Events))
		for typ := range set.Events {
			types = append(types, typ)
		}
		slices.Sort(types)
		if !s.seen.addIfAbsent(set.JTI) {
			s.refuse(w, r, refusal("invalid_request", "jti_replayed", "jti already received"), set.JTI)
			return
		}
		s.o.Logger.LogAttrs(r.Context(), slog.LevelInfo, "audit", slog.String("event", "signal.ignored"),
			slog.String("receiver", "ssf"), slog.String("action", strings.Join(types, " ")),
			slog.String("event_id", set.JTI), slog.String("peer", r.RemoteAddr))
		s.o.Count("ignored")
		w.WriteHeader(http.StatusAccepted)
		return
	}
	rev, format, e := s.subject(set, revoking[0])
	if e != nil {
		s.refuse(w, r, e, set.JTI)
		return
	}
	// Claimed before the revocation so that two deliveries of one SET at
	// once revoke once; released when the store refuses, so the
	// transmitter's retry is not taken for a replay.
	if !s.seen.addIfAbsent(set.JTI) {
		s.refuse(w, r, refusal("invalid_request", "jti_replayed", "jti already received"), set.JTI)
		return
	}
	if err := s.o.Revoker.Revoke(r.Context(), rev); err != nil {
		s.seen.remove(set.JTI)
		s.o.Logger.LogAttrs(r.Context(), slog.LevelError, "revocation not stored", slog.String("error", err.Error()),
			slog.String("receiver", "ssf"))
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"err": "temporarily_unavailable",
			"description": "the store did not take the revocation: deliver the SET again"})
		s.o.Count("refused")
		return
	}
	attrs := []slog.Attr{slog.String("event", "session.revoked"), slog.String("by", "ssf"),
		slog.String("subject_format", format), slog.String("action", strings.Join(revoking, " ")),
		slog.String("event_id", set.JTI)}
	if rev.User != "" {
		attrs = append(attrs, slog.String("user", rev.User))
	} else {
		attrs = append(attrs, slog.String("subject", rev.Subject))
	}
	s.o.Logger.LogAttrs(r.Context(), slog.LevelInfo, "audit", attrs...)
	s.o.Count("revoked")
	w.WriteHeader(http.StatusAccepted)
}

// authenticate checks the request itself: the media type RFC 8935 §2
// requires and, when configured, the transmitter's bearer token.
func (s *SSF) authenticate(r *http.Request) *setError {
	if s.o.Bearer != "" {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		got := sha256.Sum256([]byte(tok))
		if subtle.ConstantTimeCompare(got[:], s.bearer[:]) != 1 || !ok {
			return refusal("authentication_failed", "bearer", "wrong or missing bearer token")
		}
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/secevent+jwt" {
		return refusal("invalid_request", "content_type", "want Content-Type application/secevent+jwt")
	}
	return nil
}

// securityEvent is the part of a SET stepgate reads (RFC 8417 §2.2,
// SSF 1.0 §4 for sub_id).
type securityEvent struct {
	JTI    string
	Events map[string]json.RawMessage
	SubID  json.RawMessage
}

// verify checks the SET's signature and claims. The header is read first so
// that an algorithm other than ES256 or RS256 ("none", HS256 with the RSA
// key as its secret) is refused before any key is looked at.
func (s *SSF) verify(ctx context.Context, raw string) (securityEvent, *setError) {
	var set securityEvent
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return set, refusal("invalid_request", "malformed", "not a signed JWT (JWS compact serialisation)")
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	var h struct {
		Alg string  `json:"alg"`
		Typ *string `json:"typ"`
	}
	if err != nil || json.Unmarshal(hb, &h) != nil {
		return set, refusal("invalid_request", "malformed", "the JWT header is not base64url JSON")
	}
	if h.Alg != "ES256" && h.Alg != "RS256" {
		return set, refusal("invalid_request", "alg", "alg %q: want ES256 or RS256", h.Alg)
	}
	// RFC 8417 §2.3: "secevent+jwt"; "application/" may be prefixed
	// (RFC 7515 §4.1.9).
	if h.Typ != nil && !strings.EqualFold(strings.TrimPrefix(*h.Typ, "application/"), "secevent+jwt") {
		return set, refusal("invalid_request", "typ", "typ %q: want secevent+jwt", *h.Typ)
	}
	keys, err := s.keySet(ctx)
	if err != nil {
		return set, refusal("", "keys_unavailable", "%v", err)
	}
	var keyErr error
	keyfunc := keys.Keyfunc(ctx)
	claims := jwt.MapClaims{}
	_, err = jwt.NewParser(jwt.WithValidMethods([]string{"ES256", "RS256"}), jwt.WithoutClaimsValidation()).
		ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
			k, err := keyfunc(t)
			keyErr = err
			return k, err
		})
	switch {
	case keyErr != nil && errors.Is(keyErr, jwks.ErrUnavailable):
		return set, refusal("", "keys_unavailable", "%v", keyErr)
	case keyErr != nil:
		return set, refusal("invalid_key", "unknown_key", "no key of the transmitter fits the SET's kid and alg")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return set, refusal("invalid_key", "bad_signature", "the signature does not verify with the transmitter's key")
	case err != nil:
		return set, refusal("invalid_request", "malformed", "not a JWT stepgate can read")
	}
	set.JTI, _ = claims["jti"].(string)
	if iss, _ := claims["iss"].(string); iss != s.o.Issuer {
		return set, refusal("invalid_issuer", "issuer", "iss is not the configured transmitter")
	}
	aud, err := claims.GetAudience()
	if err != nil || !slices.Contains(aud, s.o.Audience) {
		return set, refusal("invalid_audience", "audience", "aud does not name this receiver")
	}
	now := s.o.Now()
	iat, err := claims.GetIssuedAt()
	switch {
	case err != nil || iat == nil:
		return set, refusal("invalid_request", "iat", "iat missing or not a number")
	case iat.After(now.Add(s.o.Skew)):
		return set, refusal("invalid_request", "iat_future", "iat is in the future")
	case iat.Before(now.Add(-s.o.MaxAge)):
		return set, refusal("invalid_request", "iat_old", "iat is older than %v", s.o.MaxAge)
	}
	if exp, err := claims.GetExpirationTime(); err != nil || exp != nil && !now.Before(exp.Time) {
		return set, refusal("invalid_request", "expired", "exp has passed")
	}
	if set.JTI == "" {
		return set, refusal("invalid_request", "jti_missing", "jti missing")
	}
	if len(set.JTI) > 256 {
		return set, refusal("invalid_request", "malformed", "jti longer than 256 characters")
	}
	if s.seen.has(set.JTI) {
		return set, refusal("invalid_request", "jti_replayed", "jti already received")
	}
	if err := remarshal(claims["events"], &set.Events); err != nil || len(set.Events) == 0 {
		return set, refusal("invalid_request", "events", "events missing or not an object of event types")
	}
	if v, ok := claims["sub_id"]; ok {
		set.SubID, _ = json.Marshal(v)
	}
	return set, nil
}

func remarshal(v any, into any) error {
	if v == nil {
		return errors.New("missing")
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, into)
}

// subjectID is an RFC 9493 subject identifier, and SSF 1.0's complex one.
type subjectID struct {
	Format string     `json:"format"`
	Email  string     `json:"email"`
	Iss    string     `json:"iss"`
	Sub    string     `json:"sub"`
	ID     string     `json:"id"`
	User   *subjectID `json:"user"`
}

// subject maps the SET's subject to a revocation: the top-level sub_id
// (SSF 1.0), or else the event's own subject member (CAEP drafts, still
// sent by some transmitters).
func (s *SSF) subject(set securityEvent, typ string) (store.Revocation, string, *setError) {
	raw := set.SubID
	if raw == nil {
		var ev struct {
			Subject json.RawMessage `json:"subject"`
		}
		_ = json.Unmarshal(set.Events[typ], &ev)
		raw = ev.Subject
	}
	var id subjectID
	if raw == nil || json.Unmarshal(raw, &id) != nil {
		return store.Revocation{}, "", refusal("invalid_request", "unknown_subject", "no sub_id")
	}
	if id.Format == "complex" {
		if id.User == nil || id.User.Format == "complex" {
			return store.Revocation{}, "complex", refusal("invalid_request", "unknown_subject", "a complex subject without a user")
		}
		id = *id.User
	}
	unknown := func(why string) (store.Revocation, string, *setError) {
		return store.Revocation{}, id.Format, refusal("invalid_request", "unknown_subject", "%s", why)
	}
	user := func(v string) (store.Revocation, string, *setError) {
		v = identity.ApplyTransforms(v, s.o.Transforms)
		if !identity.ValidUser(v) {
			return unknown(id.Format + " subject is not an acceptable user name")
		}
		return store.Revocation{User: v}, id.Format, nil
	}
	switch id.Format {
	case "email":
		return user(id.Email)
	case "opaque":
		return user(id.ID)
	case "iss_sub":
		switch {
		case id.Iss == "" || id.Sub == "":
			return unknown("iss_sub without iss and sub")
		case s.o.PingOneIssuer != "" && id.Iss == s.o.PingOneIssuer:
			if !identity.IsUUID(id.Sub) {
				return unknown("iss_sub of PingOne whose sub is not a user id")
			}
			return store.Revocation{Subject: strings.ToLower(id.Sub)}, id.Format, nil
		case s.o.UserIssuer != "" && id.Iss == s.o.UserIssuer:
			return user(id.Sub)
		}
		return unknown("iss_sub of an issuer stepgate cannot map")
	}
	return unknown(fmt.Sprintf("subject format %q", id.Format))
}

// keySet returns the transmitter's key cache, discovering its jwks_uri
// first when none is configured (at most once a minute while that fails).
func (s *SSF) keySet(ctx context.Context) (*jwks.Cache, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.keys != nil {
		return s.keys, nil
	}
	now := s.o.Now()
	if !s.lastDiscover.IsZero() && now.Sub(s.lastDiscover) < time.Minute {
		return nil, fmt.Errorf("ssf configuration: %w", s.discoverErr)
	}
	u, err := s.discover(ctx)
	if err != nil {
		if ctx.Err() == nil {
			// Held off for a minute only when the transmitter failed, not
			// when the caller hung up (anyone may POST to the receiver).
			s.lastDiscover, s.discoverErr = now, err
		}
		return nil, fmt.Errorf("ssf configuration: %w", err)
	}
	s.keys = s.cache(u)
	return s.keys, nil
}

// KeyURL parses where the transmitter's configuration or keys are fetched
// from: https, or http only on loopback (a local transmitter, tests). Keys
// fetched in the clear would let anyone on the path sign revocations.
func KeyURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("%q is not an absolute URL", s)
	}
	switch {
	case u.Scheme == "https":
	case u.Scheme == "http" && (strings.EqualFold(u.Hostname(), "localhost") || isLoopbackIP(u.Hostname())):
	default:
		return nil, fmt.Errorf("%q: want https (http only on loopback)", u.Redacted())
	}
	return u, nil
}

func isLoopbackIP(host string) bool {
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// WellKnown is where the SSF configuration of issuer lives: the well-known
// name goes between the host and the issuer's path (SSF 1.0 §7.2.1, as in
// RFC 8414 §3.1).
func WellKnown(issuer string) (string, error) {
	u, err := KeyURL(issuer)
	if err != nil {
		return "", fmt.Errorf("issuer: %w", err)
	}
	u.Path = "/.well-known/ssf-configuration" + strings.TrimSuffix(u.Path, "/")
	u.RawPath, u.RawQuery, u.Fragment = "", "", ""
	return u.String(), nil
}

func (s *SSF) discover(ctx context.Context) (string, error) {
	wk, err := WellKnown(s.o.Issuer)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, wk, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.o.Client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: HTTP %d", wk, resp.StatusCode)
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&doc); err != nil {
		return "", fmt.Errorf("GET %s: %w", wk, err)
	}
	// SSF 1.0 §7.2.2: the issuer in the document must be the one asked for.
	if doc.Issuer != s.o.Issuer {
		return "", fmt.Errorf("GET %s: issuer %q is not the configured one", wk, doc.Issuer)
	}
	if _, err := KeyURL(doc.JWKSURI); err != nil {
		return "", fmt.Errorf("GET %s: jwks_uri: %w", wk, err)
	}
	return doc.JWKSURI, nil
}

// refuse answers 400 with the RFC 8935 §2.4 error and writes the audit
// line. jti, when the SET got far enough to have one, is named.
func (s *SSF) refuse(w http.ResponseWriter, r *http.Request, e *setError, jti string) {
	attrs := []slog.Attr{slog.String("event", "signal.refused"), slog.String("receiver", "ssf"),
		slog.String("reason", e.reason), slog.String("detail", e.description), slog.String("peer", r.RemoteAddr)}
	if jti != "" {
		attrs = append(attrs, slog.String("event_id", jti))
	}
	s.o.Logger.LogAttrs(r.Context(), slog.LevelWarn, "audit", attrs...)
	s.o.Count("refused")
	writeJSON(w, http.StatusBadRequest, map[string]string{"err": e.err, "description": e.description})
}
