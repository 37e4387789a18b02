package session

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/stepgate/stepgate/mfa"
)

// StepUp is the content of the step-up cookie: proof that User passed MFA
// as PingOne user Subject at AuthTime (docs/design.md §5).
type StepUp struct {
	ID          string    // random session id, new at every completion
	User        string    // upstream user
	Subject     string    // PingOne sub
	AuthTime    time.Time // gateway clock at completion (seconds precision)
	ACR         string
	AMR         []string
	IDToken     string    // raw verified ID token (up to ~2 KiB)
	TokenExpiry time.Time // ID token exp; the cookie is invalid from then on

	// header is HeaderValues, rendered once for a step-up the cache
	// shares (Store.Lookup); nil on any other value, which may be changed.
	header []string
}

// HeaderValues are the values of the forwarded headers of
// docs/design.md §6, in this order: the ID token, subject, user, auth_time
// in Unix seconds, acr and the comma-separated amr. For a step-up from
// Store.Lookup they were rendered once and are shared: read only.
func (v *StepUp) HeaderValues() []string {
	if v.header != nil {
		return v.header
	}
	return v.renderHeader()
}

func (v *StepUp) renderHeader() []string {
	return []string{v.IDToken, v.Subject, v.User, strconv.FormatInt(v.AuthTime.Unix(), 10), v.ACR, strings.Join(v.AMR, ",")}
}

// LogValue keeps the ID token out of logs.
func (v StepUp) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("id", v.ID),
		slog.String("user", v.User),
		slog.String("subject", v.Subject),
		slog.Int64("auth_time", v.AuthTime.Unix()),
		slog.String("acr", v.ACR),
		slog.Any("amr", v.AMR),
		slog.String("id_token", "[redacted]"),
	)
}

// Flow is the content of the pending-flow cookie: everything needed to
// continue a challenge on any replica.
type Flow struct {
	mfa.Pending
	User       string // upstream user who started it
	ReturnPath string
	CSRF       []byte // 32 random bytes
	Created    time.Time
	Status     string // last known flow status (for rendering without a PingOne call)

	// Optional fields, written in the flow's tail only when set (see the
	// format below), so that cookies sealed before a field existed still
	// open.

	// ReturnMethod is the method of the request that needed the step-up:
	// with ReturnPath it picks the rule (and so the acr and max_age) the
	// flow asks PingOne for. "" means GET.
	ReturnMethod string
	// Approval, for a flow that approves one held request (docs/design.md
	// §14), is the reference that finds and opens it; "" for a step-up.
	Approval string
	// What the page shows once after a redirect, so that every POST ends
	// in a 303 and a reload never re-submits.
	Flash  string    // one-time message key for the next GET of the page
	FlashN int       // its number: attempts left, or seconds to wait; 0 when none
	SentAt time.Time // when the last code or push was sent (resend cool-down)
	From   string    // where the user came from: Cancel goes back there
}

// LogValue keeps the flow's secrets (PingOne cookies, PKCE verifier, CSRF)
// out of logs.
func (f Flow) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("flow_id", f.FlowID),
		slog.String("user", f.User),
		slog.String("status", f.Status),
		slog.Int64("created", f.Created.Unix()),
	)
}

// Plaintext format, version 1. Every field in order; strings and byte
// strings are a uvarint length then the bytes; times are varint Unix
// seconds, 0 for the zero time; counts are uvarints.
//
//	step-up: 0x01 ID User Subject AuthTime ACR count(AMR) AMR... IDToken TokenExpiry
//	flow:    0x02 FlowID count(Cookies) (Name Value)... Nonce State CodeVerifier ACR
//	         Challenged(0|1) User ReturnPath CSRF Created Status Tail
//
// The flow's Tail is zero or more optional fields, each a tag byte and its
// value, in increasing tag order, each at most once and never with a zero
// value (one value, one encoding); a field left zero is not written, so a
// cookie sealed before a field existed still opens. An unknown tag is a
// decoding error (a cookie from a newer replica is absent, and the user
// starts again). Tags:
//
//	1 ReturnMethod (string)   2 Approval (string)   3 Flash (string)
//	4 FlashN (uvarint)        5 SentAt (time)       6 From (string)

// Tags of the flow's optional fields.
const (
	tagReturnMethod byte = iota + 1
	tagApproval
	tagFlash
	tagFlashN
	tagSentAt
	tagFrom
)

const (
	kindStepUp byte = 1
	kindFlow   byte = 2

	maxAMR     = 16
	maxCookies = 10
)

var errDecode = errors.New("malformed plaintext")

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return binary.AppendVarint(b, 0)
	}
	return binary.AppendVarint(b, t.Unix())
}

func marshalStepUp(v StepUp) ([]byte, error) {
	if len(v.AMR) > maxAMR {
		return nil, fmt.Errorf("session: step-up: %d amr values, at most %d", len(v.AMR), maxAMR)
	}
	n := 1 + 6*binary.MaxVarintLen64 + len(v.ID) + len(v.User) + len(v.Subject) + len(v.ACR) + len(v.IDToken) + 2*binary.MaxVarintLen64
	for _, a := range v.AMR {
		n += binary.MaxVarintLen64 + len(a)
	}
	b := make([]byte, 0, n)
	b = append(b, kindStepUp)
	b = appendString(b, v.ID)
	b = appendString(b, v.User)
	b = appendString(b, v.Subject)
	b = appendTime(b, v.AuthTime)
	b = appendString(b, v.ACR)
	b = binary.AppendUvarint(b, uint64(len(v.AMR)))
	for _, a := range v.AMR {
		b = appendString(b, a)
	}
	b = appendString(b, v.IDToken)
	b = appendTime(b, v.TokenExpiry)
	return b, nil
}

func marshalFlow(f Flow) ([]byte, error) {
	if len(f.Cookies) > maxCookies {
		return nil, fmt.Errorf("session: flow: %d PingOne cookies, at most %d", len(f.Cookies), maxCookies)
	}
	b := make([]byte, 0, 512)
	b = append(b, kindFlow)
	b = appendString(b, f.FlowID)
	b = binary.AppendUvarint(b, uint64(len(f.Cookies)))
	for _, c := range f.Cookies {
		b = appendString(b, c.Name)
		b = appendString(b, c.Value)
	}
	b = appendString(b, f.Nonce)
	b = appendString(b, f.State)
	b = appendString(b, f.CodeVerifier)
	b = appendString(b, f.ACR)
	if f.Challenged {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = appendString(b, f.User)
	b = appendString(b, f.ReturnPath)
	b = appendString(b, string(f.CSRF))
	b = appendTime(b, f.Created)
	b = appendString(b, f.Status)
	if f.FlashN < 0 {
		return nil, fmt.Errorf("session: flow: negative flash number %d", f.FlashN)
	}
	str := func(tag byte, v string) {
		if v != "" {
			b = appendString(append(b, tag), v)
		}
	}
	str(tagReturnMethod, f.ReturnMethod)
	str(tagApproval, f.Approval)
	str(tagFlash, f.Flash)
	if f.FlashN != 0 {
		b = binary.AppendUvarint(append(b, tagFlashN), uint64(f.FlashN))
	}
	if !f.SentAt.IsZero() {
		b = appendTime(append(b, tagSentAt), f.SentAt)
	}
	str(tagFrom, f.From)
	return b, nil
}

// decoder reads the plaintext format strictly: every length is checked
// against the bytes that remain, counts are bounded, and the first problem
// sticks (later reads return zero values), so callers check err once.
type decoder struct {
	s   string // the plaintext; strings are substrings of it (one allocation)
	off int
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errDecode
	}
}

func (d *decoder) byte() byte {
	if d.err != nil || d.off >= len(d.s) {
		d.fail()
		return 0
	}
	c := d.s[d.off]
	d.off++
	return c
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	var x uint64
	for i := 0; ; i++ {
		if i == binary.MaxVarintLen64 || d.off >= len(d.s) {
			d.fail()
			return 0
		}
		c := d.s[d.off]
		d.off++
		if i == binary.MaxVarintLen64-1 && c > 1 {
			d.fail() // overflows 64 bits
			return 0
		}
		x |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			if c == 0 && i > 0 {
				d.fail() // not minimal: one value, one encoding
				return 0
			}
			return x
		}
	}
}

func (d *decoder) varint() int64 {
	ux := d.uvarint()
	x := int64(ux >> 1)
	if ux&1 != 0 {
		x = ^x
	}
	return x
}

func (d *decoder) count(limit int) int {
	n := d.uvarint()
	if n > uint64(limit) {
		d.fail()
		return 0
	}
	return int(n)
}

func (d *decoder) string() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.s)-d.off) {
		d.fail()
		return ""
	}
	s := d.s[d.off : d.off+int(n)]
	d.off += int(n)
	return s
}

func (d *decoder) time() time.Time {
	sec := d.varint()
	if sec == 0 {
		return time.Time{}
	}
	return time.Unix(sec, 0).UTC()
}

func (d *decoder) bool() bool {
	switch d.byte() {
	case 0:
		return false
	case 1:
		return true
	}
	d.fail()
	return false
}

// end reports the decoding error, also for trailing bytes.
func (d *decoder) end() error {
	if d.err == nil && d.off != len(d.s) {
		d.fail()
	}
	return d.err
}

func unmarshalStepUp(p []byte) (StepUp, error) {
	d := decoder{s: string(p)}
	if d.byte() != kindStepUp {
		return StepUp{}, errDecode
	}
	var v StepUp
	v.ID = d.string()
	v.User = d.string()
	v.Subject = d.string()
	v.AuthTime = d.time()
	v.ACR = d.string()
	if n := d.count(maxAMR); n > 0 {
		v.AMR = make([]string, n)
		for i := range v.AMR {
			v.AMR[i] = d.string()
		}
	}
	v.IDToken = d.string()
	v.TokenExpiry = d.time()
	if err := d.end(); err != nil {
		return StepUp{}, err
	}
	return v, nil
}

func unmarshalFlow(p []byte) (Flow, error) {
	d := decoder{s: string(p)}
	if d.byte() != kindFlow {
		return Flow{}, errDecode
	}
	var f Flow
	f.FlowID = d.string()
	if n := d.count(maxCookies); n > 0 {
		f.Cookies = make([]mfa.Cookie, n)
		for i := range f.Cookies {
			f.Cookies[i].Name = d.string()
			f.Cookies[i].Value = d.string()
		}
	}
	f.Nonce = d.string()
	f.State = d.string()
	f.CodeVerifier = d.string()
	f.ACR = d.string()
	f.Challenged = d.bool()
	f.User = d.string()
	f.ReturnPath = d.string()
	if csrf := d.string(); csrf != "" {
		f.CSRF = []byte(csrf)
	}
	f.Created = d.time()
	f.Status = d.string()
	last := byte(0)
	for d.err == nil && d.off < len(d.s) {
		tag := d.byte()
		if tag <= last {
			d.fail() // out of order or repeated
			break
		}
		last = tag
		zero := false
		switch tag {
		case tagReturnMethod:
			f.ReturnMethod = d.string()
			zero = f.ReturnMethod == ""
		case tagApproval:
			f.Approval = d.string()
			zero = f.Approval == ""
		case tagFlash:
			f.Flash = d.string()
			zero = f.Flash == ""
		case tagFlashN:
			n := d.uvarint()
			if n > 1<<20 {
				d.fail()
			}
			f.FlashN = int(n)
			zero = n == 0
		case tagSentAt:
			f.SentAt = d.time()
			zero = f.SentAt.IsZero()
		case tagFrom:
			f.From = d.string()
			zero = f.From == ""
		default:
			d.fail()
		}
		if zero {
			d.fail() // never written zero
		}
	}
	if err := d.end(); err != nil {
		return Flow{}, err
	}
	return f, nil
}
