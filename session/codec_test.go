package session

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
)

// testKey returns a deterministic 32-byte key; tests name keys by a byte.
func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, KeySize) }

func newTestCodec(t testing.TB, keys ...[]byte) *Codec {
	t.Helper()
	c, err := NewCodec(keys)
	if err != nil {
		t.Fatalf("NewCodec: %v", err)
	}
	return c
}

func TestParseKeys(t *testing.T) {
	k1, k2 := testKey(1), testKey(0xfb) // 0xfb makes + and / (or - and _) appear
	std := base64.StdEncoding.EncodeToString
	rawURL := base64.RawURLEncoding.EncodeToString
	tests := []struct {
		name    string
		in      string
		want    [][]byte
		wantErr string // substring; "" means no error
	}{
		{"one standard padded key", std(k1), [][]byte{k1}, ""},
		{"two keys with spaces around the comma keep their order", std(k1) + " , " + std(k2), [][]byte{k1, k2}, ""},
		{"an unpadded url-safe key", rawURL(k2), [][]byte{k2}, ""},
		{"an unpadded standard key", base64.RawStdEncoding.EncodeToString(k2), [][]byte{k2}, ""},
		{"a padded url-safe key", base64.URLEncoding.EncodeToString(k2), [][]byte{k2}, ""},
		{"a trailing newline from a _FILE is ignored", std(k1) + "\n", [][]byte{k1}, ""},
		{"an empty value is refused", "  ", nil, "no cookie keys"},
		{"an empty entry names its position", std(k1) + ",," + std(k2), nil, "cookie key 2: empty"},
		{"a short key names its position and size", std(k1) + "," + std(k1[:16]), nil, "cookie key 2: decodes to 16 bytes, want 32"},
		{"a long key is refused", std(append(k1, 0)), nil, "cookie key 1: decodes to 33 bytes"},
		{"a key that is not base64 is refused", "not*base64*at*all*secretsecret", nil, "cookie key 1: not valid base64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseKeys(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseKeys() error = %v, want one containing %q", err, tt.wantErr)
				}
				for _, p := range strings.Split(tt.in, ",") {
					if p = strings.TrimSpace(p); len(p) > 4 && strings.Contains(err.Error(), p) {
						t.Errorf("error %q prints key material %q", err, p)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseKeys() error = %v", err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("ParseKeys() returned %d keys, want %d", len(got), len(tt.want))
			}
			for i := range got {
				if !bytes.Equal(got[i], tt.want[i]) {
					t.Errorf("key %d = %x, want %x", i+1, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestNewCodecRefusesBadKeys(t *testing.T) {
	if _, err := NewCodec(nil); err == nil {
		t.Error("NewCodec(nil) succeeded; want an error")
	}
	if _, err := NewCodec([][]byte{testKey(1), make([]byte, 16)}); err == nil || !strings.Contains(err.Error(), "cookie key 2") {
		t.Errorf("NewCodec with a 16-byte second key: error = %v, want one naming key 2", err)
	}
}

func TestCodecRoundTrip(t *testing.T) {
	c := newTestCodec(t, testKey(1))
	for _, pt := range [][]byte{nil, []byte("x"), bytes.Repeat([]byte("abc"), 900)} {
		v := c.Seal("n", pt)
		got, err := c.Open("n", v)
		if err != nil {
			t.Fatalf("Open(Seal(%d bytes)): %v", len(pt), err)
		}
		if !bytes.Equal(got, pt) {
			t.Errorf("Open(Seal(%q)) = %q", pt, got)
		}
		if strings.ContainsAny(v, "=+/") {
			t.Errorf("sealed value %q is not unpadded base64url", v)
		}
	}
}

func TestSealUsesAFreshNonce(t *testing.T) {
	c := newTestCodec(t, testKey(1))
	a, b := c.Seal("n", []byte("same")), c.Seal("n", []byte("same"))
	if a == b {
		t.Error("two seals of the same plaintext are identical; the nonce must be random")
	}
}

// reseal decodes a sealed value, lets f change the bytes, and re-encodes.
func reseal(t testing.TB, v string, f func([]byte) []byte) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(f(b))
}

func TestOpenRefuses(t *testing.T) {
	c := newTestCodec(t, testKey(1))
	good := c.Seal("n", []byte("hello, world"))
	flip := func(i int) func([]byte) []byte {
		return func(b []byte) []byte {
			if i < 0 {
				i += len(b)
			}
			b[i] ^= 0x01
			return b
		}
	}
	tests := []struct {
		name, cookie, value string
	}{
		{"a value over 4096 bytes, before decoding", "n", strings.Repeat("A", MaxCookieSize+1)},
		{"a value that is not base64url", "n", "!!!!" + good},
		{"a padded value", "n", good + "=="},
		{"a standard base64 value", "n", strings.NewReplacer("-", "+", "_", "/").Replace(good) + "+"},
		{"an empty value", "n", ""},
		{"a value shorter than version, nonce and tag", "n", reseal(t, good, func(b []byte) []byte { return b[:overhead-1] })},
		{"an unknown version", "n", reseal(t, good, func(b []byte) []byte { b[0] = 2; return b })},
		{"a changed nonce", "n", reseal(t, good, flip(1))},
		{"a changed ciphertext", "n", reseal(t, good, flip(1+nonceSize))},
		{"a changed tag", "n", reseal(t, good, flip(-1))},
		{"a truncated value", "n", good[:len(good)-1]},
		{"a value sealed for another cookie name", "other", good},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.Open(tt.cookie, tt.value)
			if err == nil {
				t.Errorf("Open() = %q, nil; want an error", got)
			}
		})
	}
}

func TestKeyRotation(t *testing.T) {
	oldKey, newKey := testKey(1), testKey(2)
	sealedOld := newTestCodec(t, oldKey).Seal("n", []byte("payload"))

	rotated := newTestCodec(t, newKey, oldKey)
	if got, err := rotated.Open("n", sealedOld); err != nil || string(got) != "payload" {
		t.Errorf("[new, old].Open(sealed with old) = %q, %v; want payload", got, err)
	}
	if _, err := newTestCodec(t, newKey).Open("n", sealedOld); err == nil {
		t.Error("[new].Open(sealed with old) succeeded; a retired key must stop opening")
	}
	sealedNew := rotated.Seal("n", []byte("payload"))
	if _, err := newTestCodec(t, oldKey).Open("n", sealedNew); err == nil {
		t.Error("[old].Open(sealed by [new, old]) succeeded; the first key must seal")
	}
	// A failed attempt under the first key must not disturb the second.
	if got, err := newTestCodec(t, testKey(3), testKey(4), oldKey).Open("n", sealedOld); err != nil || string(got) != "payload" {
		t.Errorf("opening with the third of three keys = %q, %v; want payload", got, err)
	}
}
