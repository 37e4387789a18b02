package approve

import (
	"context"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stepgate/stepgate/proxy/reqpath"
	"github.com/stepgate/stepgate/proxy/rules"
	"github.com/stepgate/stepgate/store"
)

// TestMemoryFlatUnderAMillionHeldRequests holds a million payment requests
// from a million distinct users in the embedded store as cmd/stepgate
// configures it, none of them ever approved, and checks that the heap
// stays flat once the store is full: held requests are bounded in entries
// and bytes whatever clients send (docs/design.md §15).
//
// Like the proxy's million-client test it runs without -race (.ci/run's
// memory step): go test -run TestMemoryFlat -v ./proxy/approve/
func TestMemoryFlatUnderAMillionHeldRequests(t *testing.T) {
	if testing.Short() || (raceEnabled && os.Getenv("STEPGATE_SOAK") != "1") {
		t.Skip("holds a million requests; run without -race and -short")
	}
	const total, checkpoint = 1_000_000, 250_000
	now := time.Unix(1_800_000_000, 0)
	s := store.NewMemory(store.MemoryOptions{Now: func() time.Time { return now }})
	g := New(s, [][]byte{testDigestKey}, DefaultMaxBody, func() time.Time { return now })
	rule := rules.Rule{TTL: 5 * time.Minute, Template: "transaction",
		Show: []rules.Field{{Label: "Amount", From: rules.Source{Kind: rules.FromForm, Name: "amount"}}},
		Vars: []rules.Field{{Label: "sum", From: rules.Source{Kind: rules.FromForm, Name: "amount"}}}}
	body := "amount=500&currency=EUR&payee=" + strings.Repeat("p", 400)
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	p := reqpath.Path{Match: "/payments/transfer", Escaped: "/payments/transfer"}
	var baseline uint64
	for i := range total {
		r, _ := http.NewRequest("POST", "http://gw/payments/transfer", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		q, err := g.Read(r, "user"+strconv.Itoa(i), p)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := g.Hold(context.Background(), q, r, rule, false); err != nil {
			t.Fatal(err)
		}
		if i+1 == checkpoint {
			baseline = heap()
		}
	}
	final := heap()
	grown := int64(final) - int64(baseline)
	t.Logf("%d held requests: heap %.1f MiB after %d, %.1f MiB after %d (%+.1f MiB); store %d entries, %.1f MiB",
		total, float64(baseline)/(1<<20), checkpoint, float64(final)/(1<<20), total, float64(grown)/(1<<20),
		s.Len(), float64(s.Bytes())/(1<<20))
	if grown > 8<<20 {
		t.Errorf("heap grew by %.1f MiB between %d and %d held requests; want flat (≤ 8 MiB)", float64(grown)/(1<<20), checkpoint, total)
	}
	if s.Len() > 20_000 { // 10,000 held requests and their 10,000 one-time approval tokens
		t.Errorf("the store keeps %d entries, want ≤ 20,000", s.Len())
	}
}
