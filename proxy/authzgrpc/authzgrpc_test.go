package authzgrpc

import (
	"context"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/stepgate/stepgate/proxy"
)

// seen records what the decision core was asked.
type seen struct{ q proxy.Request }

func (s *seen) Check(_ context.Context, q proxy.Request, _ proxy.Style, _ *proxy.Body) proxy.Answer {
	s.q = q
	return proxy.Answer{Status: 403}
}

func TestAMalformedCheckRequestDescribesNoRequest(t *testing.T) {
	// attributes → request → http → path "/admin", then a truncated field.
	path := protowire.AppendString(protowire.AppendTag(nil, fHTTPPath, protowire.BytesType), "/admin")
	http := protowire.AppendBytes(protowire.AppendTag(nil, fRequestHTTP, protowire.BytesType), path)
	req := protowire.AppendBytes(protowire.AppendTag(nil, fAttrRequest, protowire.BytesType), http)
	msg := protowire.AppendBytes(protowire.AppendTag(nil, fCheckAttributes, protowire.BytesType), req)
	for name, in := range map[string][]byte{
		"truncated": append(append([]byte{}, msg...), 0x0a, 0x7f),
		"garbage":   {0xff, 0xff, 0xff},
	} {
		t.Run(name, func(t *testing.T) {
			c := &seen{}
			if _, err := New(c, false).check(context.Background(), raw(in)); err != nil {
				t.Fatal(err)
			}
			if c.q.Target != "" || c.q.Method != "" {
				t.Fatalf("a malformed message described %s %q", c.q.Method, c.q.Target)
			}
		})
	}
	c := &seen{}
	if _, err := New(c, false).check(context.Background(), raw(msg)); err != nil || c.q.Target != "/admin" {
		t.Fatalf("the well-formed prefix: %q, %v", c.q.Target, err)
	}
}

func FuzzDecodeCheck(f *testing.F) {
	f.Add([]byte{0x0a, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = decodeCheck(b) // must not panic
	})
}
