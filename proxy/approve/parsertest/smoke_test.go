//go:build unix

package parsertest_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/stepgate/stepgate/proxy/approve/parsertest"
)

func TestSmoke(t *testing.T) {
	ps := parsertest.Start(t)
	for _, c := range []struct {
		f parsertest.Fields
		q parsertest.Request
	}{
		{parsertest.Fields{Form: []string{"amount", "payee", "a_b"}, Query: []string{"amount"}}, parsertest.Request{RawQuery: "amount=7", ContentType: "application/x-www-form-urlencoded", Body: []byte("amount=5&payee=ACME&amount=6&a.b=1")}},
		{parsertest.Fields{JSON: []string{"/amount", "/payee/name", "/items/0", ""}}, parsertest.Request{ContentType: "application/json", Body: []byte(`{"amount":5.0,"AMOUNT":9,"payee":{"name":"A"},"items":[1e400]}`)}},
		{parsertest.Fields{Form: []string{"amount"}}, parsertest.Request{ContentType: "application/x-www-form-urlencoded", Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte("amount=5&_method=put")}},
	} {
		reps, err := parsertest.ParseAll(context.Background(), ps, c.f, c.q)
		if err != nil {
			t.Error(err)
		}
		for _, r := range reps {
			fmt.Printf("%-8s %-6s err=%q %v\n", r.Parser, r.Method, r.Error, r.Values)
		}
	}
}
