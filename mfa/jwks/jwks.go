// Package jwks is a JSON Web Key Set cache: it fetches a JWKS URL, keeps the
// keys, and refetches when asked for an unknown kid, at most once per
// MinRefreshInterval. It serves both PingOne ID tokens and upstream IdP
// tokens.
//
// It never accepts symmetric keys and never hands a key to a token whose
// algorithm does not match the key's type: the classic JWT confusions
// ("alg":"none", HS256 signed with an RSA public key as the HMAC secret, an
// RSA key offered for ES256) all end in an error here, whatever the parser's
// own method list says.
package jwks

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MaxBodyBytes bounds a JWKS response body.
const MaxBodyBytes = 1 << 20

// minRSABits is the smallest RSA modulus accepted (NIST SP 800-57: 2048).
const minRSABits = 2048

// Options configures a Cache.
type Options struct {
	URL string
	// Client is used for every fetch. The caller sets its timeouts; each
	// fetch is also bounded by Timeout. nil means a client with Timeout.
	Client *http.Client
	// Timeout bounds one fetch; default 10s.
	Timeout time.Duration
	// Now is the clock for the refetch rate limit; nil means time.Now.
	Now func() time.Time
	// MinRefreshInterval is how often an unknown kid may cause a refetch;
	// default 1 minute (docs/design.md §7). A token with a made-up kid must not turn
	// the gateway into a JWKS-fetching amplifier.
	MinRefreshInterval time.Duration
	// Observe, if set, is called after every fetch with the HTTP status (0 on
	// a transport error) and the duration.
	Observe func(code int, d time.Duration)
}

// Cache holds the keys of one JWKS URL. It is safe for concurrent use.
type Cache struct {
	o Options

	fetchMu sync.Mutex // serialises fetches so concurrent misses cause one request

	mu          sync.RWMutex
	keys        []key
	ready       bool
	lastAttempt time.Time // last fetch attempt, success or not
	lastErr     error     // its error, nil on success
}

type key struct {
	kid string
	alg string // the JWK's optional alg; "" means any alg matching the type
	pub any    // *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
}

// New returns a Cache; it does not fetch until Refresh or a Keyfunc call.
func New(o Options) *Cache {
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.MinRefreshInterval <= 0 {
		o.MinRefreshInterval = time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: o.Timeout}
	}
	return &Cache{o: o}
}

// Ready reports whether at least one fetch has succeeded.
func (c *Cache) Ready() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.ready
}

// Refresh fetches the key set now. On failure the keys already held stay in
// use, so a JWKS outage does not log anyone out.
func (c *Cache) Refresh(ctx context.Context) error {
	c.fetchMu.Lock()
	defer c.fetchMu.Unlock()
	return c.fetchLocked(ctx)
}

func (c *Cache) fetchLocked(ctx context.Context) error {
	c.mu.Lock()
	prevAttempt, prevErr := c.lastAttempt, c.lastErr
	c.lastAttempt = c.o.Now()
	c.mu.Unlock()

	keys, err := c.fetch(ctx)
	c.mu.Lock()
	c.lastErr = err
	if err != nil && ctx.Err() != nil {
		// The caller went away (a client that hung up, or its own
		// deadline): that says nothing about the key set, and must not
		// hold off the next miss for MinRefreshInterval (an anonymous
		// caller could otherwise keep the keys unfetched).
		c.lastAttempt, c.lastErr = prevAttempt, prevErr
	}
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("jwks: fetch %s: %w: %w", c.o.URL, ErrUnavailable, err)
	}
	c.mu.Lock()
	c.keys = keys
	c.ready = true
	c.mu.Unlock()
	return nil
}

func (c *Cache) fetch(ctx context.Context) ([]key, error) {
	ctx, cancel := context.WithTimeout(ctx, c.o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.o.URL, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	start := c.o.Now()
	resp, err := c.o.Client.Do(req)
	if err != nil {
		c.observe(0, c.o.Now().Sub(start))
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxBodyBytes+1))
	c.observe(resp.StatusCode, c.o.Now().Sub(start))
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	if len(body) > MaxBodyBytes {
		return nil, fmt.Errorf("body larger than %d bytes", MaxBodyBytes)
	}
	return parseSet(body)
}

func (c *Cache) observe(code int, d time.Duration) {
	if c.o.Observe != nil {
		c.o.Observe(code, d)
	}
}

// parseSet parses a JWKS document. Keys with an unknown kty, a use other
// than "sig", or invalid parameters are skipped; a set without any usable
// key is an error, so that a broken response never replaces good keys.
func parseSet(body []byte) ([]key, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	var keys []key
	for _, raw := range doc.Keys {
		k, err := parseKey(raw)
		if err != nil {
			continue
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("no usable signing keys")
	}
	return keys, nil
}

type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	D   string `json:"d"`
}

func parseKey(raw json.RawMessage) (key, error) {
	var j jwk
	if err := json.Unmarshal(raw, &j); err != nil {
		return key{}, err
	}
	if j.Use != "" && j.Use != "sig" {
		return key{}, fmt.Errorf("use %q", j.Use)
	}
	if j.D != "" {
		// A private key in a public set is a publisher bug; refuse to touch it.
		return key{}, errors.New("private key material")
	}
	k := key{kid: j.Kid, alg: j.Alg}
	switch j.Kty {
	case "RSA":
		pub, err := parseRSA(j)
		if err != nil {
			return key{}, err
		}
		k.pub = pub
	case "EC":
		pub, err := parseEC(j)
		if err != nil {
			return key{}, err
		}
		k.pub = pub
	case "OKP":
		if j.Crv != "Ed25519" {
			return key{}, fmt.Errorf("OKP curve %q", j.Crv)
		}
		x, err := b64(j.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			return key{}, errors.New("bad Ed25519 x")
		}
		k.pub = ed25519.PublicKey(x)
	default:
		return key{}, fmt.Errorf("kty %q", j.Kty)
	}
	return k, nil
}

func parseRSA(j jwk) (*rsa.PublicKey, error) {
	nb, err := b64(j.N)
	if err != nil || len(nb) == 0 {
		return nil, errors.New("bad RSA n")
	}
	eb, err := b64(j.E)
	if err != nil || len(eb) == 0 || len(eb) > 4 {
		return nil, errors.New("bad RSA e")
	}
	n := new(big.Int).SetBytes(nb)
	if n.BitLen() < minRSABits {
		return nil, fmt.Errorf("RSA key of %d bits", n.BitLen())
	}
	e := new(big.Int).SetBytes(eb)
	if e.Cmp(big.NewInt(3)) < 0 || e.Bit(0) == 0 || e.BitLen() > 31 {
		return nil, errors.New("bad RSA exponent")
	}
	return &rsa.PublicKey{N: n, E: int(e.Int64())}, nil
}

func parseEC(j jwk) (*ecdsa.PublicKey, error) {
	var curve elliptic.Curve
	switch j.Crv {
	case "P-256":
		curve = elliptic.P256()
	case "P-384":
		curve = elliptic.P384()
	case "P-521":
		curve = elliptic.P521()
	default:
		return nil, fmt.Errorf("EC curve %q", j.Crv)
	}
	size := (curve.Params().BitSize + 7) / 8
	x, errX := b64(j.X)
	y, errY := b64(j.Y)
	if errX != nil || errY != nil || len(x) != size || len(y) != size {
		return nil, errors.New("bad EC coordinates")
	}
	point := make([]byte, 0, 1+2*size)
	point = append(point, 4)
	point = append(point, x...)
	point = append(point, y...)
	// ParseUncompressedPublicKey rejects points not on the curve (invalid
	// curve attacks) and the point at infinity.
	pub, err := ecdsa.ParseUncompressedPublicKey(curve, point)
	if err != nil {
		return nil, fmt.Errorf("EC point: %w", err)
	}
	return pub, nil
}

// b64 decodes base64url with or without padding (RFC 7515 says without;
// some publishers pad).
func b64(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

// ErrUnavailable marks a key lookup that failed because the key set could
// not be fetched (transport error, HTTP error, malformed set), as opposed to
// a token naming a key the set does not have. Callers still refuse the
// token; they may tell the user to try again later.
var ErrUnavailable = errors.New("jwks: key set unavailable")

// Keyfunc returns a jwt.Keyfunc that looks the token's kid up, refetching
// once (rate-limited by MinRefreshInterval) when the kid is unknown, and
// returns the key only if its type fits the token's algorithm. ctx bounds
// any refetch.
func (c *Cache) Keyfunc(ctx context.Context) jwt.Keyfunc {
	return func(t *jwt.Token) (any, error) {
		alg := t.Method.Alg()
		if !asymmetric(alg) {
			return nil, fmt.Errorf("jwks: algorithm %q not allowed", alg)
		}
		kid, _ := t.Header["kid"].(string)
		if _, present := t.Header["kid"]; present && kid == "" {
			return nil, errors.New("jwks: kid is not a non-empty string")
		}
		k, ok := c.lookup(kid)
		if !ok {
			if err := c.refetchForMiss(ctx, kid); err != nil {
				return nil, err
			}
			if k, ok = c.lookup(kid); !ok {
				return nil, fmt.Errorf("jwks: no key for kid %q", kid)
			}
		}
		if err := fits(k, alg); err != nil {
			return nil, fmt.Errorf("jwks: kid %q: %w", kid, err)
		}
		return k.pub, nil
	}
}

// refetchForMiss refetches unless a fetch happened within
// MinRefreshInterval. Concurrent misses wait for one fetch.
func (c *Cache) refetchForMiss(ctx context.Context, kid string) error {
	c.fetchMu.Lock()
	defer c.fetchMu.Unlock()
	if _, ok := c.lookup(kid); ok {
		return nil // another goroutine's fetch brought it in
	}
	c.mu.RLock()
	last, lastErr := c.lastAttempt, c.lastErr
	c.mu.RUnlock()
	if !last.IsZero() && c.o.Now().Sub(last) < c.o.MinRefreshInterval {
		if lastErr != nil {
			// The key may well exist; we just could not fetch the set.
			return fmt.Errorf("jwks: no key for kid %q: %w (last fetch: %v)", kid, ErrUnavailable, lastErr)
		}
		return fmt.Errorf("jwks: no key for kid %q (refetch rate-limited)", kid)
	}
	if err := c.fetchLocked(ctx); err != nil {
		return err
	}
	return nil
}

func (c *Cache) lookup(kid string) (key, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if kid == "" {
		// Without a kid the only safe choice is the only key, and only if it
		// has no kid either; anything else would be guessing.
		if len(c.keys) == 1 && c.keys[0].kid == "" {
			return c.keys[0], true
		}
		return key{}, false
	}
	for _, k := range c.keys {
		if k.kid == kid {
			return k, true
		}
	}
	return key{}, false
}

func asymmetric(alg string) bool {
	switch alg {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
		"ES256", "ES384", "ES512", "EdDSA":
		return true
	}
	return false
}

// fits checks that the key type (and curve) is the one the algorithm needs,
// and that the JWK's own alg, when given, names this algorithm.
func fits(k key, alg string) error {
	if k.alg != "" && k.alg != alg {
		return fmt.Errorf("key is for %s, token uses %s", k.alg, alg)
	}
	switch pub := k.pub.(type) {
	case *rsa.PublicKey:
		if strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS") {
			return nil
		}
	case *ecdsa.PublicKey:
		want := map[string]string{"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}[alg]
		if want != "" && pub.Curve.Params().Name == want {
			return nil
		}
	case ed25519.PublicKey:
		if alg == "EdDSA" {
			return nil
		}
	}
	return fmt.Errorf("key type %T does not fit %s", k.pub, alg)
}
