package session

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
)

const (
	// KeySize is the size of every cookie key: AES-256.
	KeySize = 32
	// MaxCookieSize is the largest cookie value Open accepts and, with the
	// cookie name, the largest cookie SaveStepUp and SaveFlow write: browsers
	// keep about 4096 bytes of name and value.
	MaxCookieSize = 4096

	sealVersion = 1 // the first byte of every sealed value
	nonceSize   = 12
	tagSize     = 16
	overhead    = 1 + nonceSize + tagSize
	// maxSealed is the decoded size of a MaxCookieSize base64 value.
	maxSealed = MaxCookieSize / 4 * 3
)

var (
	errTooLarge = errors.New("value too large")
	errEncoding = errors.New("not base64url")
	errShort    = errors.New("value too short")
	errVersion  = errors.New("unknown version")
	errAuth     = errors.New("authentication failed under every key")
)

// ParseKeys parses STEPGATE_COOKIE_KEYS: comma-separated keys in standard or
// URL-safe base64, padded or not, each exactly 32 bytes. Errors name the
// key's position (1-based) and never include key material.
func ParseKeys(s string) ([][]byte, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("session: no cookie keys")
	}
	parts := strings.Split(s, ",")
	keys := make([][]byte, 0, len(parts))
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if p == "" {
			return nil, fmt.Errorf("session: cookie key %d: empty", i+1)
		}
		k, err := decodeKey(p)
		if err != nil {
			return nil, fmt.Errorf("session: cookie key %d: %w", i+1, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func decodeKey(s string) ([]byte, error) {
	var enc *base64.Encoding
	switch {
	case strings.ContainsAny(s, "-_"):
		enc = base64.URLEncoding
	default:
		enc = base64.StdEncoding
	}
	if !strings.HasSuffix(s, "=") {
		enc = enc.WithPadding(base64.NoPadding)
	}
	k, err := enc.Strict().DecodeString(s)
	if err != nil {
		// The error from encoding/base64 names an offset, not the
		// content, but keep our own wording so no byte can leak.
		return nil, errors.New("not valid base64")
	}
	if len(k) != KeySize {
		return nil, fmt.Errorf("decodes to %d bytes, want %d", len(k), KeySize)
	}
	return k, nil
}

// Codec seals and opens cookie values with AES-256-GCM. The first key
// seals; every key opens, so keys can be rotated without logging anyone out:
// deploy [new, old], then, once old cookies have expired, [new].
//
// A sealed value is base64url (no padding) of
//
//	version (1 byte) | nonce (12 random bytes) | ciphertext | tag (16 bytes)
//
// with the cookie name as additional data, so a value sealed for one cookie
// never opens as another (a flow cookie is not a step-up cookie).
type Codec struct {
	aeads []cipher.AEAD
	b64   *base64.Encoding // strict, unpadded base64url
	// bufs holds *[]byte scratch buffers of 2*maxSealed bytes (sealed
	// value, then plaintext), so that the per-request open of the step-up
	// cookie does not allocate them.
	bufs sync.Pool
}

// NewCodec returns a Codec; keys[0] seals.
func NewCodec(keys [][]byte) (*Codec, error) {
	if len(keys) == 0 {
		return nil, errors.New("session: no cookie keys")
	}
	c := &Codec{aeads: make([]cipher.AEAD, len(keys)), b64: base64.RawURLEncoding.Strict()}
	for i, k := range keys {
		if len(k) != KeySize {
			return nil, fmt.Errorf("session: cookie key %d: %d bytes, want %d", i+1, len(k), KeySize)
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, fmt.Errorf("session: cookie key %d: %w", i+1, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("session: cookie key %d: %w", i+1, err)
		}
		c.aeads[i] = aead
	}
	c.bufs.New = func() any {
		b := make([]byte, 2*maxSealed)
		return &b
	}
	return c, nil
}

// Seal encrypts plaintext for the cookie called name.
func (c *Codec) Seal(name string, plaintext []byte) string {
	return c.seal([]byte(name), plaintext)
}

func (c *Codec) seal(aad, plaintext []byte) string {
	out := make([]byte, 1+nonceSize, overhead+len(plaintext))
	out[0] = sealVersion
	// crypto/rand.Read never fails (it crashes the program instead).
	_, _ = rand.Read(out[1 : 1+nonceSize])
	out = c.aeads[0].Seal(out, out[1:1+nonceSize], plaintext, aad)
	return c.b64.EncodeToString(out)
}

// Open authenticates and decrypts a value sealed for the cookie called
// name. It rejects values over MaxCookieSize bytes before decoding them.
func (c *Codec) Open(name, value string) ([]byte, error) {
	bp := c.bufs.Get().(*[]byte)
	defer c.bufs.Put(bp)
	pt, err := c.open([]byte(name), value, *bp)
	if err != nil {
		return nil, fmt.Errorf("session: open: %w", err)
	}
	return append([]byte(nil), pt...), nil
}

// open decodes value into buf (of 2*maxSealed bytes) and decrypts it; the
// plaintext it returns aliases buf. Its errors are unwrapped sentinels, so
// that refusing a junk cookie on the hot path allocates nothing.
func (c *Codec) open(aad []byte, value string, buf []byte) ([]byte, error) {
	if len(value) > MaxCookieSize {
		return nil, errTooLarge
	}
	n, err := c.b64.Decode(buf[:maxSealed], []byte(value))
	if err != nil {
		return nil, errEncoding
	}
	sealed := buf[:n]
	if len(sealed) < overhead {
		return nil, errShort
	}
	if sealed[0] != sealVersion {
		return nil, errVersion
	}
	nonce, ct := sealed[1:1+nonceSize], sealed[1+nonceSize:]
	// Decrypt into the second half of buf, not in place: a failed Open
	// clears its dst, which in place would destroy the ciphertext before
	// the next key could try it.
	dst := buf[maxSealed:maxSealed]
	for _, aead := range c.aeads {
		if pt, err := aead.Open(dst, nonce, ct, aad); err == nil {
			return pt, nil
		}
	}
	return nil, errAuth
}
