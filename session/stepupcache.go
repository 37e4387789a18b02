package session

import (
	"strings"
	"sync"
)

// stepUpCacheSize bounds the cache: a sidecar rarely has more stepped-up
// users active at once, and at about 3 KiB an entry (sealed value plus the
// decoded ID token) it costs at most a few MiB.
const stepUpCacheSize = 1024

// stepUpCache remembers step-up cookies that opened, keyed by their exact
// sealed value, so that the cookie sent with every request through an mfa
// rule is base64-decoded, AES-GCM-opened and decoded once rather than on
// every request (docs/design.md §13).
//
// Only values that authenticated under our keys are ever inserted, and a hit
// needs the byte-identical value, so a tampered or forged cookie can only
// miss; clients cannot fill the cache without completing MFA. Expiry is not
// cached: StepUp checks it on every hit.
type stepUpCache struct {
	mu sync.RWMutex
	m  map[string]*StepUp
}

func newStepUpCache() *stepUpCache {
	return &stepUpCache{m: make(map[string]*StepUp)}
}

func (c *stepUpCache) get(value string) (*StepUp, bool) {
	c.mu.RLock()
	v, ok := c.m[value]
	c.mu.RUnlock()
	return v, ok
}

// put stores v under value. When full it starts over: cheaper than LRU
// bookkeeping on every hit, and a miss only costs one decode.
func (c *stepUpCache) put(value string, v *StepUp) {
	// value points into the request's Cookie header; copy it so the cache
	// does not keep whole headers alive.
	value = strings.Clone(value)
	c.mu.Lock()
	if len(c.m) >= stepUpCacheSize {
		clear(c.m)
	}
	c.m[value] = v
	c.mu.Unlock()
}
