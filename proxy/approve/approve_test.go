package approve

import (
	"bytes"
	"context"
	"errors"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stepgate/stepgate/proxy/reqpath"
	"github.com/stepgate/stepgate/proxy/rules"
	"github.com/stepgate/stepgate/store"
)

func multipartBody(t *testing.T, fields map[string]string, file string) (string, []byte) {
	t.Helper()
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	for k, v := range fields {
		_ = w.WriteField(k, v)
	}
	if file != "" {
		fw, _ := w.CreateFormFile(file, "x.txt")
		_, _ = fw.Write([]byte("file content"))
	}
	_ = w.Close()
	return w.FormDataContentType(), b.Bytes()
}

func TestValueReadsEverySource(t *testing.T) {
	mpType, mpBody := multipartBody(t, map[string]string{"amount": "700", "payee": "Bäcker"}, "receipt")
	tests := []struct {
		name   string
		q      Request
		src    string
		want   string
		wantOK bool
	}{
		{"an urlencoded field", Request{ContentType: "application/x-www-form-urlencoded", Body: []byte("amount=500&payee=ACME+GmbH")}, "form.payee", "ACME GmbH", true},
		{"the first of repeated fields", Request{ContentType: "application/x-www-form-urlencoded", Body: []byte("a=1&a=2")}, "form.a", "1", true},
		{"a missing field", Request{ContentType: "application/x-www-form-urlencoded", Body: []byte("a=1")}, "form.b", "", false},
		{"a form field of a JSON body is missing", Request{ContentType: "application/json", Body: []byte(`{"a":1}`)}, "form.a", "", false},
		{"a multipart field", Request{ContentType: mpType, Body: mpBody}, "form.payee", "Bäcker", true},
		{"a multipart file is not a value", Request{ContentType: mpType, Body: mpBody}, "form.receipt", "", false},
		{"a JSON string", Request{ContentType: "application/json", Body: []byte(`{"payee":{"name":"ACME"}}`)}, "json./payee/name", "ACME", true},
		{"a JSON number as written", Request{ContentType: "application/json; charset=utf-8", Body: []byte(`{"amount":500.10}`)}, "json./amount", "500.10", true},
		{"a JSON array element", Request{ContentType: "application/vnd.api+json", Body: []byte(`{"items":[{"id":7}]}`)}, "json./items/0/id", "7", true},
		{"an escaped pointer", Request{ContentType: "application/json", Body: []byte(`{"a/b":{"c~d":"x"}}`)}, "json./a~1b/c~0d", "x", true},
		{"an object as compact JSON", Request{ContentType: "application/json", Body: []byte(`{"a": {"b": true}}`)}, "json./a", `{"b":true}`, true},
		{"a leading-zero index is refused", Request{ContentType: "application/json", Body: []byte(`[1,2]`)}, "json./01", "", false},
		{"trailing data is not one document", Request{ContentType: "application/json", Body: []byte(`{"a":1}{"a":2}`)}, "json./a", "", false},
		{"a JSON pointer into a form body is missing", Request{ContentType: "application/x-www-form-urlencoded", Body: []byte(`{"a":1}`)}, "json./a", "", false},
		{"a query parameter", Request{RawQuery: "ref=INV-7&x=1"}, "query.ref", "INV-7", true},
		{"the path", Request{Match: "/users/42", Path: "/users/%34%32"}, "path", "/users/42", true},
		{"the method", Request{Method: "DELETE"}, "method", "DELETE", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, err := rules.ParseSource(tt.src)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := tt.q.Value(src)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("Value(%s) = %q, %v; want %q, %v", tt.src, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestCleanCutsAndNeutralisesValues(t *testing.T) {
	long := strings.Repeat("é", 300)
	if got := Clean(long); got != strings.Repeat("é", MaxValueRunes)+"…" {
		t.Errorf("long value cut to %d runes", len([]rune(got)))
	}
	for _, in := range []string{"a\x00b", "\u202e005", "\xff"} {
		if got := Clean(in); !strings.ContainsRune(got, '\uFFFD') || strings.ContainsAny(got, "\x00\u202e") {
			t.Errorf("Clean(%q) = %q: control or bidi character kept", in, got)
		}
	}
	// Line breaks cannot fake a new line on the page or in the SMS: they
	// are white space, shown as one space.
	for _, in := range []string{"a\nb", "a\r\n\tb", "a\u2028b", "a\u0085b"} {
		if got := Clean(in); got != "a b" {
			t.Errorf("Clean(%q) = %q, want %q", in, got, "a b")
		}
	}
}

func TestDigestBindsEveryPart(t *testing.T) {
	base := Request{User: "alice", Method: "POST", Path: "/pay", RawQuery: "a=1", ContentType: "application/json", Body: []byte(`{"amount":500}`)}
	g := newGate(nil)
	seen := map[string]string{g.Digest(&base): "base"}
	change := map[string]func(q *Request){
		"user":         func(q *Request) { q.User = "bob" },
		"method":       func(q *Request) { q.Method = "PUT" },
		"path":         func(q *Request) { q.Path = "/pay2" },
		"query":        func(q *Request) { q.RawQuery = "a=2" },
		"content type": func(q *Request) { q.ContentType = "text/plain" },
		"body":         func(q *Request) { q.Body = []byte(`{"amount":501}`) },
		// Moving bytes between fields must not give the same digest.
		"shifted": func(q *Request) { q.User, q.Method = "aliceP", "OST" },
	}
	for name, f := range change {
		q := base
		f(&q)
		d := g.Digest(&q)
		if prev, dup := seen[d]; dup {
			t.Errorf("changing %s gives the digest of %s", name, prev)
		}
		seen[d] = name
	}
}

func FuzzDigestAndValue(f *testing.F) {
	f.Add("alice", "POST", "/p", "a=1", "application/json", []byte(`{"a":[1,{"b":"c"}]}`), "json./a/1/b")
	f.Add("bob", "PUT", "/p", "", "application/x-www-form-urlencoded", []byte("a=%zz&b=2"), "form.b")
	f.Add("c", "POST", "/p", "q=%", "multipart/form-data; boundary=x", []byte("--x\r\n\r\n--x--"), "query.q")
	f.Fuzz(func(t *testing.T, user, method, path, query, ctype string, body []byte, src string) {
		q := Request{User: user, Method: method, Path: path, Match: path, RawQuery: query, ContentType: ctype, Body: body}
		g := newGate(nil)
		d := g.Digest(&q)
		if len(d) != 64 || d != g.Digest(&q) {
			t.Fatalf("digest %q not a stable SHA-256", d)
		}
		s, err := rules.ParseSource(src)
		if err != nil {
			return
		}
		v, _ := q.Value(s)
		c := Clean(v)
		if n := len([]rune(c)); n > MaxValueRunes+1 {
			t.Fatalf("Clean kept %d runes", n)
		}
		if strings.ContainsAny(c, "\r\n\x00") {
			t.Fatalf("Clean kept a control character: %q", c)
		}
	})
}

var testDigestKey = []byte("a test digest key of 32 bytes!!!")

func newGate(now func() time.Time) *Gate {
	return New(store.NewMemory(store.MemoryOptions{Now: now}), [][]byte{testDigestKey}, 1024, now)
}

func heldRequest(t *testing.T, g *Gate, body string) (string, *Held) {
	t.Helper()
	r := httptest.NewRequest("POST", "/pay?x=1", strings.NewReader(body))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	q, err := g.Read(r, "alice", reqpath.Path{Match: "/pay", Escaped: "/pay", Query: "x=1"})
	if err != nil {
		t.Fatal(err)
	}
	rule := rules.Rule{TTL: time.Minute, Show: []rules.Field{{Label: "Amount", From: rules.Source{Kind: rules.FromForm, Name: "amount"}}}}
	ref, h, err := g.Hold(context.Background(), q, r, rule, false)
	if err != nil {
		t.Fatal(err)
	}
	return ref, h
}

func TestHeldRequestOpensOnlyWithItsReference(t *testing.T) {
	g := newGate(nil)
	ref, _ := heldRequest(t, g, "amount=500")
	h, err := g.Open(context.Background(), ref)
	if err != nil || h.Show[0].Value != "500" || string(h.Body) != "amount=500" {
		t.Fatalf("Open = %+v, %v", h, err)
	}
	id, _, _ := strings.Cut(ref, ".")
	other, _ := heldRequest(t, g, "amount=1")
	_, otherKey, _ := strings.Cut(other, ".")
	for name, bad := range map[string]string{
		"another request's key": id + "." + otherKey,
		"no key":                id,
		"a truncated key":       ref[:len(ref)-1],
		"garbage":               "x.y",
	} {
		if _, err := g.Open(context.Background(), bad); !errors.Is(err, ErrBadRef) && !errors.Is(err, ErrExpired) {
			t.Errorf("%s: Open err = %v, want a refusal", name, err)
		}
	}
}

func TestHeldRequestIsSealedAtRest(t *testing.T) {
	s := store.NewMemory(store.MemoryOptions{})
	g := New(s, [][]byte{testDigestKey}, 1024, nil)
	r := httptest.NewRequest("POST", "/pay", strings.NewReader("amount=500&payee=SECRET-PAYEE"))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	q, _ := g.Read(r, "alice", reqpath.Path{Match: "/pay", Escaped: "/pay"})
	ref, _, err := g.Hold(context.Background(), q, r, rules.Rule{TTL: time.Minute}, false)
	if err != nil {
		t.Fatal(err)
	}
	id, _, _ := strings.Cut(ref, ".")
	raw, err := s.Held(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("SECRET-PAYEE")) || bytes.Contains(raw, []byte("alice")) {
		t.Fatal("the held request is stored in clear")
	}
}

func TestReadBoundsTheBody(t *testing.T) {
	g := newGate(nil)
	for name, r := range map[string]*http.Request{
		"a declared length over the limit": httptest.NewRequest("POST", "/p", strings.NewReader(strings.Repeat("a", 1025))),
		"a chunked body over the limit": func() *http.Request {
			r := httptest.NewRequest("POST", "/p", strings.NewReader(strings.Repeat("a", 1025)))
			r.ContentLength = -1
			return r
		}(),
	} {
		if _, err := g.Read(r, "alice", reqpath.Path{Match: "/p", Escaped: "/p"}); !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s: err = %v, want ErrTooLarge", name, err)
		}
	}
	r := httptest.NewRequest("POST", "/p", strings.NewReader(strings.Repeat("a", 1024)))
	if _, err := g.Read(r, "alice", reqpath.Path{Match: "/p", Escaped: "/p"}); err != nil {
		t.Errorf("a body at the limit: %v", err)
	}
}

func TestReleaseUsesAnApprovalOnce(t *testing.T) {
	g := newGate(nil)
	ref, h := heldRequest(t, g, "amount=500")
	ctx := context.Background()
	if ok, _ := g.Release(ctx, ref, h); ok {
		t.Fatal("released before approval")
	}
	_ = g.Approve(ctx, ref, h)
	if ok, _ := g.Release(ctx, ref, h); !ok {
		t.Fatal("approved request not released")
	}
	if ok, _ := g.Release(ctx, ref, h); ok {
		t.Fatal("released twice")
	}
	if _, err := g.Open(ctx, ref); !errors.Is(err, ErrExpired) {
		t.Fatalf("held request still there after release: %v", err)
	}
}

func TestForwardRebuildsExactlyTheHeldRequest(t *testing.T) {
	g := newGate(nil)
	_, h := heldRequest(t, g, "amount=500")
	in := httptest.NewRequest("GET", "/pay?x=1", nil)
	in.Header.Set("X-Injected", "1")
	out := h.Forward(in)
	b := new(bytes.Buffer)
	_, _ = b.ReadFrom(out.Body)
	if out.Method != "POST" || b.String() != "amount=500" || out.URL.RawQuery != "x=1" || out.Header.Get("X-Injected") != "" ||
		out.Header.Get("Content-Type") != "application/x-www-form-urlencoded" || out.ContentLength != 10 {
		t.Fatalf("forwarded %s %s %q %v", out.Method, out.URL, b.String(), out.Header)
	}
}

func TestDigestIsKeyed(t *testing.T) {
	q := Request{User: "alice", Method: "POST", Path: "/pay", Body: []byte("amount=500")}
	a := New(store.NewMemory(store.MemoryOptions{}), [][]byte{[]byte("key one")}, 0, nil).Digest(&q)
	b := New(store.NewMemory(store.MemoryOptions{}), [][]byte{[]byte("key two")}, 0, nil).Digest(&q)
	if a == b {
		t.Fatal("the digest does not depend on the key: a logged digest could be brute-forced")
	}
}

func TestSummaryNeverDropsALabel(t *testing.T) {
	q := Request{ContentType: "application/x-www-form-urlencoded",
		Body: []byte("memo=" + strings.Repeat("x", 5000) + "&a=" + strings.Repeat("y", 300) + "&payee=EVIL+Corp")}
	var fields []rules.Field
	for _, n := range []string{"memo", "a", "payee"} {
		fields = append(fields, rules.Field{Label: n, From: rules.Source{Kind: rules.FromForm, Name: n}})
	}
	got := summary(&q, fields)
	if len(got) != 3 || got[2].Label != "payee" || got[2].Value != "EVIL Corp" {
		t.Fatalf("summary = %+v; a long early value hid a later field", got)
	}
	size := 0
	for _, s := range got {
		size += len(s.Label) + len(s.Value)
	}
	if size > MaxSummarySize {
		t.Errorf("summary is %d bytes, want ≤ %d", size, MaxSummarySize)
	}
}

func TestCleanCollapsesPadding(t *testing.T) {
	if got := Clean(strings.Repeat(" ", 300) + "EVIL"); got != "EVIL" {
		t.Errorf("leading padding: %q", got)
	}
	if got := Clean("ACME" + strings.Repeat("\u00a0", 300) + "EVIL"); got != "ACME EVIL" {
		t.Errorf("inner padding: %q", got)
	}
}

func TestAHeldRequestIsApprovedOnce(t *testing.T) {
	g := newGate(nil)
	ref, h := heldRequest(t, g, "amount=500")
	ctx := context.Background()
	if err := g.Approve(ctx, ref, h); err != nil {
		t.Fatal(err)
	}
	if ok, _, _, _ := g.Consume(ctx, &h.Request); !ok {
		t.Fatal("the approval was not usable")
	}
	if err := g.Approve(ctx, ref, h); !errors.Is(err, ErrExpired) {
		t.Fatalf("a second approval of one held request: err = %v, want ErrExpired", err)
	}
	if ok, _, _, _ := g.Consume(ctx, &h.Request); ok {
		t.Fatal("the request was usable a second time")
	}
}

func TestAUsedApprovalNamesTheHeldRequestItApproved(t *testing.T) {
	g := newGate(nil)
	ctx := context.Background()
	// Two identical requests share a digest: only the id tells them apart.
	ref1, h1 := heldRequest(t, g, "amount=500")
	ref2, h2 := heldRequest(t, g, "amount=500")
	if h1.Digest != h2.Digest || ID(ref1) == ID(ref2) {
		t.Fatalf("identical requests: digests %s %s, ids %s %s", h1.Digest, h2.Digest, ID(ref1), ID(ref2))
	}
	if err := g.Approve(ctx, ref2, h2); err != nil {
		t.Fatal(err)
	}
	ok, digest, id, err := g.Consume(ctx, &h1.Request)
	if err != nil || !ok || digest != h1.Digest {
		t.Fatalf("Consume = %v %s %v", ok, digest, err)
	}
	if id != ID(ref2) {
		t.Errorf("Consume named held request %q, want the approved one %q", id, ID(ref2))
	}
	if strings.Contains(id, ".") || strings.Contains(ref2, id+".") == false {
		t.Errorf("id %q is not the id part of the reference", id)
	}
}

func TestAnExpiredHeldRequestStillNamesItsDigestAndPath(t *testing.T) {
	now := time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	g := newGate(clock)
	ref, h := heldRequest(t, g, "amount=500")
	now = now.Add(2 * time.Minute) // past the rule's ttl: the store has dropped it
	got, err := g.Open(context.Background(), ref)
	if !errors.Is(err, ErrExpired) {
		t.Fatalf("Open after the ttl: err = %v, want ErrExpired", err)
	}
	if got == nil || got.Digest != h.Digest || got.Method != "POST" || got.Match != "/pay" {
		t.Fatalf("Open after the ttl = %+v, want the digest, method and path for the audit", got)
	}
	if len(got.Body) != 0 || got.Header != nil || got.Show != nil {
		t.Errorf("an expired request gave more than the audit needs: %+v", got)
	}
}

func TestARevokedUserOrSubjectEndsAHeldRequest(t *testing.T) {
	revokedAt := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name             string
		user, subject    string
		created          time.Time
		wantApproved     bool
		wantReleasedOnce bool
	}{
		{"a held request of another user", "bob", "sub-bob", revokedAt.Add(-time.Minute), true, true},
		{"a request held before its user's revocation", "alice", "sub-alice", revokedAt.Add(-time.Minute), false, false},
		{"a request held after it", "alice", "sub-alice", revokedAt.Add(time.Minute), true, true},
		{"approved by a PingOne subject revoked since the hold", "carol", "sub-revoked", revokedAt.Add(-time.Minute), false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := newGate(nil)
			g.SetRevoked(func(user, subject string, at time.Time) bool {
				return (user == "alice" || subject == "sub-revoked") && !at.After(revokedAt)
			})
			ref, h := heldRequest(t, g, "amount=500")
			h.User, h.Created = tt.user, tt.created
			err := g.ApproveAs(context.Background(), ref, h, tt.subject)
			if (err == nil) != tt.wantApproved {
				t.Fatalf("ApproveAs = %v, want approved %v", err, tt.wantApproved)
			}
			if !tt.wantApproved {
				if _, err := g.Open(context.Background(), ref); !errors.Is(err, ErrExpired) {
					t.Errorf("the ended request can still be opened: %v", err)
				}
				return
			}
			if ok, _ := g.Release(context.Background(), ref, h); ok != tt.wantReleasedOnce {
				t.Errorf("Release = %v", ok)
			}
		})
	}
}
