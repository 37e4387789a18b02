//go:build unix

package parsertest_test

import (
	"context"
	"testing"
	"time"

	"github.com/stepgate/stepgate/proxy/approve/parsertest"
)

func TestSpeedTmp(t *testing.T) {
	ps := parsertest.Start(t)
	f := parsertest.Fields{Form: []string{"amount", "payee"}, Query: []string{"amount"}, JSON: []string{"/amount"}}
	q := parsertest.Request{RawQuery: "x=1", ContentType: "application/x-www-form-urlencoded", Body: []byte("amount=5&payee=ACME")}
	for _, p := range ps {
		start := time.Now()
		for range 1000 {
			if _, err := p.Parse(context.Background(), f, q); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("%s: 1000 sequential in %v", p.Name(), time.Since(start))
	}
	start := time.Now()
	for range 1000 {
		if _, err := parsertest.ParseAll(context.Background(), ps, f, q); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("ParseAll x1000 in %v", time.Since(start))
}
