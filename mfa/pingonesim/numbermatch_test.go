package pingonesim

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
)

func numberHarness(t *testing.T, mode string) (*harness, string, string, string) {
	t.Helper()
	h := newHarness(t, func(ten *Tenant) { ten.Policies[0].NumberMatching = mode })
	r, st := h.start("bob", nil)
	id := str(r.body, "id")
	if got := str(r.body, "numberMatching", "type"); got != mode {
		t.Fatalf("numberMatching.type = %q, want %q; body %s", got, mode, r.raw)
	}
	n := str(r.body, "numberMatching", "number")
	if len(n) != 2 || n[0] < '1' || n[0] > '9' || n[1] < '0' || n[1] > '9' {
		t.Fatalf("numberMatching.number = %q, want two digits", n)
	}
	return h, id, st, n
}

func TestNumberMatchingSelect(t *testing.T) {
	t.Parallel()
	h, id, st, n := numberHarness(t, NumberMatchingSelect)
	m := h.sim.Inbox("bob")[0]
	if m.NumberMatching != NumberMatchingSelect || len(m.NumberChoices) != 3 || !slices.Contains(m.NumberChoices, n) || !slices.IsSorted(m.NumberChoices) {
		t.Errorf("push message = %+v, want three sorted choices including %s", m, n)
	}
	if err := h.sim.Push(id, PushApprove); err == nil {
		t.Error("a plain approval of a number-matching push was accepted")
	}
	req, _ := http.NewRequest(http.MethodGet, h.srv.URL+"/_sim/inbox/page", nil)
	page := h.do(req).raw
	for _, c := range m.NumberChoices {
		if !strings.Contains(page, `name="number" value="`+c+`"`) {
			t.Errorf("inbox page lacks the choice %s", c)
		}
	}
	req, _ = http.NewRequest(http.MethodPost, h.srv.URL+"/_sim/push/"+id+"/approve", strings.NewReader(url.Values{"number": {n}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if r := h.do(req); r.status != http.StatusOK { // the 303 back to the page, followed
		t.Fatalf("approve with the number = %d %s", r.status, r.raw)
	}
	r := h.getFlow(id, st)
	if str(r.body, "status") != "COMPLETED" {
		t.Errorf("status = %s", r.raw)
	}
	if _, ok := r.body["numberMatching"]; ok {
		t.Error("a completed flow still shows the number")
	}
}

func TestNumberMatchingWrongNumberDenies(t *testing.T) {
	t.Parallel()
	h, id, st, n := numberHarness(t, NumberMatchingEnter)
	if m := h.sim.Inbox("bob")[0]; len(m.NumberChoices) != 0 {
		t.Errorf("ENTER_MANUALLY push offers choices: %v", m.NumberChoices)
	}
	wrong := "10"
	if n == wrong {
		wrong = "11"
	}
	if err := h.sim.PushNumber(id, wrong); err != nil {
		t.Fatal(err)
	}
	if r := h.getFlow(id, st); str(r.body, "status") != "FAILED" {
		t.Errorf("after the wrong number: %s", r.raw)
	}
}

func TestNoNumberWithoutNumberMatching(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	r, _ := h.start("bob", nil)
	if _, ok := r.body["numberMatching"]; ok {
		t.Errorf("numberMatching without the policy setting: %s", r.raw)
	}
}
