package session

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// stepUpFields builds a step-up plaintext field by field, so tests can
// write what marshalStepUp never would.
func stepUpFields(amrCount uint64, amr []string, tail []byte) []byte {
	b := []byte{kindStepUp}
	b = appendString(b, "id")
	b = appendString(b, "alice")
	b = appendString(b, "sub")
	b = binary.AppendVarint(b, epoch.Unix())
	b = appendString(b, "acr")
	b = binary.AppendUvarint(b, amrCount)
	for _, a := range amr {
		b = appendString(b, a)
	}
	b = appendString(b, "token")
	b = binary.AppendVarint(b, epoch.Add(time.Hour).Unix())
	return append(b, tail...)
}

func TestDecodeIsStrict(t *testing.T) {
	good := stepUpFields(1, []string{"otp"}, nil)
	if _, err := unmarshalStepUp(good); err != nil {
		t.Fatalf("the control plaintext does not decode: %v", err)
	}
	seventeen := make([]string, 17)
	sixteen := make([]string, 16)
	flow, err := marshalFlow(testFlow(epoch))
	if err != nil {
		t.Fatal(err)
	}
	withMethod := testFlow(epoch)
	withMethod.ReturnMethod = "POST"
	flowPOST, err := marshalFlow(withMethod)
	if err != nil {
		t.Fatal(err)
	}
	manyCookies := append([]byte{kindFlow}, appendString(nil, "flow-id")...)
	manyCookies = binary.AppendUvarint(manyCookies, maxCookies+1)

	tests := []struct {
		name    string
		in      []byte
		decode  func([]byte) error
		wantErr bool
	}{
		{"sixteen amr values decode", stepUpFields(16, sixteen, nil), decodeStepUp, false},
		{"seventeen amr values are refused", stepUpFields(17, seventeen, nil), decodeStepUp, true},
		{"an amr count larger than the values present is refused", stepUpFields(3, []string{"otp"}, nil), decodeStepUp, true},
		{"a trailing byte is refused", stepUpFields(1, []string{"otp"}, []byte{0}), decodeStepUp, true},
		{"an empty plaintext is refused", nil, decodeStepUp, true},
		{"a flow plaintext is not a step-up", flow, decodeStepUp, true},
		{"a step-up plaintext is not a flow", good, decodeFlow, true},
		{"a string longer than what remains is refused", append([]byte{kindStepUp}, binary.AppendUvarint(nil, 1<<40)...), decodeStepUp, true},
		{"a length that overflows 64 bits is refused", append([]byte{kindStepUp}, bytes.Repeat([]byte{0xff}, 10)...), decodeStepUp, true},
		{"a non-minimal length is refused", append([]byte{kindStepUp, 0x82, 0x00}, good[2:]...), decodeStepUp, true},
		{"every truncation is refused", nil, func([]byte) error { return truncations(good) }, false},
		{"eleven PingOne cookies are refused", manyCookies, decodeFlow, true},
		{"a Challenged byte other than 0 or 1 is refused", bytes.Replace(flow, []byte("MFA-Only\x01"), []byte("MFA-Only\x02"), 1), decodeFlow, true},
		{"a flow with a trailing byte is refused", append(flow[:len(flow):len(flow)], 0), decodeFlow, true},
		{"the flow control decodes", flow, decodeFlow, false},
		{"a flow with a return method decodes", flowPOST, decodeFlow, false},
		{"a flow with a return method and a trailing byte is refused", append(flowPOST[:len(flowPOST):len(flowPOST)], 0), decodeFlow, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.decode(tt.in)
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Errorf("decode error = %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

func TestFlowReturnMethodRoundTripsAndOldFlowsStillOpen(t *testing.T) {
	for _, method := range []string{"", "POST"} {
		f := testFlow(epoch)
		f.ReturnMethod = method
		b, err := marshalFlow(f)
		if err != nil {
			t.Fatal(err)
		}
		got, err := unmarshalFlow(b)
		if err != nil {
			t.Fatalf("method %q: %v", method, err)
		}
		if got.ReturnMethod != method || got.ReturnPath != f.ReturnPath || got.Status != f.Status {
			t.Errorf("method %q: decoded %+v", method, got)
		}
	}
}

func decodeStepUp(b []byte) error { _, err := unmarshalStepUp(b); return err }
func decodeFlow(b []byte) error   { _, err := unmarshalFlow(b); return err }

// truncations fails if any proper prefix of b decodes.
func truncations(b []byte) error {
	for i := range b {
		if _, err := unmarshalStepUp(b[:i]); err == nil {
			return fmt.Errorf("the %d-byte prefix decoded", i)
		}
	}
	return nil
}

func TestMalformedPlaintextUnderAValidSealIsAbsent(t *testing.T) {
	// Authenticity is not validity: a value we sealed ourselves but that
	// does not decode strictly (an old format, a bug) is still absent.
	s, _ := newTestStore(t, Options{Secure: true})
	for _, pt := range [][]byte{
		stepUpFields(1, []string{"otp"}, []byte{0}),
		stepUpFields(17, make([]string, 17), nil),
		{},
	} {
		v := s.keys.Load().codec.Seal(s.CookieName(), pt)
		if got, ok := s.StepUp(requestWithCookie(s.CookieName() + "=" + v)); ok {
			t.Errorf("StepUp() of sealed plaintext %x = %+v, true; want absent", pt, got)
		}
	}
}

func TestDecodedStringsDoNotAliasThePooledBuffer(t *testing.T) {
	// StepUp decodes out of a pooled buffer; a later open must not change a
	// step-up already returned.
	s, c := newTestStore(t, Options{Secure: true})
	a, b := testStepUp(c.Now()), testStepUp(c.Now())
	a.IDToken, b.IDToken = strings.Repeat("a", 1000), strings.Repeat("b", 1000)
	ca := onlyCookie(t, func(w http.ResponseWriter) error { return s.SaveStepUp(w, a) })
	cb := onlyCookie(t, func(w http.ResponseWriter) error { return s.SaveStepUp(w, b) })
	gotA, _ := s.StepUp(requestWithCookie(ca.Name + "=" + ca.Value))
	for range 10 {
		s.StepUp(requestWithCookie(cb.Name + "=" + cb.Value))
	}
	if gotA.IDToken != a.IDToken {
		t.Errorf("IDToken changed after later opens: starts %q", gotA.IDToken[:10])
	}
}

func TestFlowTail(t *testing.T) {
	withTail := testFlow(epoch)
	withTail.Flash, withTail.FlashN = "otp_wrong", 2
	withTail.SentAt = epoch.Add(30 * time.Second)
	withTail.From = "/reports"
	tailed, err := marshalFlow(withTail)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := marshalFlow(testFlow(epoch))
	if err != nil {
		t.Fatal(err)
	}
	zeroTail := append(plain[:len(plain):len(plain)], 0, 0, 0, 0)

	t.Run("a flow without a tail (sealed before the tail existed) decodes", func(t *testing.T) {
		got, err := unmarshalFlow(plain)
		if err != nil || got.Flash != "" || !got.SentAt.IsZero() {
			t.Fatalf("unmarshalFlow(plain) = %+v, %v", got, err)
		}
	})
	t.Run("a flow with a flash, a send time and an origin round-trips", func(t *testing.T) {
		got, err := unmarshalFlow(tailed)
		if err != nil {
			t.Fatal(err)
		}
		if got.Flash != "otp_wrong" || got.FlashN != 2 || !got.SentAt.Equal(withTail.SentAt) || got.From != "/reports" {
			t.Errorf("tail = %q %d %v %q", got.Flash, got.FlashN, got.SentAt, got.From)
		}
	})
	t.Run("an all-zero tail is refused (one value, one encoding)", func(t *testing.T) {
		if _, err := unmarshalFlow(zeroTail); err == nil {
			t.Error("an all-zero tail decoded")
		}
	})
	t.Run("a truncation inside a tail field is refused; one at a field boundary is a flow with fewer fields", func(t *testing.T) {
		// The tail is tagged fields: a prefix that ends between two fields
		// is the encoding of a flow without the later ones (the seal, not
		// the format, is what stops a truncation). Every prefix either
		// fails or is the one encoding of what it decodes to.
		boundaries := 0
		for i := len(plain) + 1; i < len(tailed); i++ {
			got, err := unmarshalFlow(tailed[:i])
			if err != nil {
				continue
			}
			boundaries++
			again, _ := marshalFlow(got)
			if string(again) != string(tailed[:i]) {
				t.Errorf("the %d-byte prefix decoded to a flow that encodes differently", i)
			}
		}
		if boundaries != 3 { // after Flash, FlashN and SentAt
			t.Errorf("%d prefixes decoded, want the 3 field boundaries", boundaries)
		}
	})
	t.Run("a byte after the tail is refused", func(t *testing.T) {
		if _, err := unmarshalFlow(append(tailed[:len(tailed):len(tailed)], 0)); err == nil {
			t.Error("a trailing byte after the tail decoded")
		}
	})
}
