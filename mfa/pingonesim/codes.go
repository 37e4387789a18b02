package pingonesim

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strings"
	"time"
)

// newUUID returns a random RFC 4122 version 4 UUID.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// randomToken returns n random bytes, base64url without padding.
func randomToken(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// newOTP returns six uniformly random digits from crypto/rand.
func newOTP() string {
	var b [8]byte
	for {
		_, _ = rand.Read(b[:])
		v := binary.BigEndian.Uint64(b[:])
		// Reject the top sliver so every code is equally likely.
		if v < (1<<64-1)/1000000*1000000 {
			return fmt.Sprintf("%06d", v%1000000)
		}
	}
}

// totpAt is RFC 6238 TOTP (HMAC-SHA1, 6 digits, 30 s step) at t.
func totpAt(secret []byte, t time.Time) string {
	return hotp(secret, uint64(t.Unix()/30))
}

// hotp is RFC 4226 HOTP with 6 digits.
func hotp(secret []byte, counter uint64) string {
	var msg [8]byte
	binary.BigEndian.PutUint64(msg[:], counter)
	m := hmac.New(sha1.New, secret)
	m.Write(msg[:])
	sum := m.Sum(nil)
	off := sum[len(sum)-1] & 0x0f
	v := binary.BigEndian.Uint32(sum[off:off+4]) & 0x7fffffff
	return fmt.Sprintf("%06d", v%1000000)
}

// maskPhone shows only the last two digits behind seven stars, as PingOne's
// example flow does (SEED, SOURCES A21: "*******01"): "+1 555 0100 1234" →
// "*******34". Whether the number of stars follows the number's length is
// unknown; the simulator always writes seven.
func maskPhone(p string) string {
	var digits []byte
	for i := 0; i < len(p); i++ {
		if c := p[i]; c >= '0' && c <= '9' {
			digits = append(digits, c)
		}
	}
	if len(digits) <= 2 {
		return strings.Repeat("*", 7)
	}
	return strings.Repeat("*", 7) + string(digits[len(digits)-2:])
}

// maskEmail keeps the first character of the local part and the domain:
// "alice@example.com" → "a****@example.com".
func maskEmail(e string) string {
	local, domain, ok := strings.Cut(e, "@")
	if !ok || local == "" {
		return "****"
	}
	return local[:1] + "****@" + domain
}

// rfc3339ms formats t as PingOne does: RFC 3339, milliseconds, UTC.
func rfc3339ms(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }
