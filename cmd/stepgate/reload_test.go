package main

// Live reload (issue 26, docs/design.md §9.1): the rules file, cookie keys
// and admin token are read again on SIGHUP and when their files change,
// including Kubernetes' ..data symlink swap. Tests drive the reload loop
// through its channels (the signal, the poll tick) and wait for its report,
// never for time to pass.

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// reloadHooks stand in for SIGHUP and the poll ticker, and hear every
// reload's outcome.
type reloadHooks struct {
	hup     chan struct{}
	poll    chan time.Time
	results chan reloadResult
}

func newReloadHooks() *reloadHooks {
	return &reloadHooks{hup: make(chan struct{}), poll: make(chan time.Time), results: make(chan reloadResult, 64)}
}

func withReload(h *reloadHooks) stackOption { return func(c *stackConfig) { c.reload = h } }

func (h *reloadHooks) options(environ []string) *serveOptions {
	return &serveOptions{environ: environ, hup: h.hup, poll: h.poll, reloaded: func(r reloadResult) { h.results <- r }}
}

// hangGuard only turns a hang into a failure; nothing waits on it.
const hangGuard = 30 * time.Second

func (h *reloadHooks) wait(t *testing.T) reloadResult {
	t.Helper()
	select {
	case r := <-h.results:
		return r
	case <-time.After(hangGuard):
		t.Fatal("no reload outcome reported")
		return reloadResult{}
	}
}

// signal does what SIGHUP does and returns the outcome.
func (h *reloadHooks) signal(t *testing.T) reloadResult {
	t.Helper()
	h.hup <- struct{}{}
	return h.wait(t)
}

// tick is one poll of the watched files.
func (h *reloadHooks) tick(t *testing.T) reloadResult {
	t.Helper()
	h.poll <- time.Time{}
	return h.wait(t)
}

// configMap is a directory laid out as the kubelet mounts a ConfigMap or
// Secret: name -> ..data/name, ..data -> ..<timestamp>, updated by
// writing a new timestamped directory and renaming a new ..data link over
// the old one (atomic), then deleting the old directory.
type configMap struct {
	t   *testing.T
	dir string
	gen int
}

func newConfigMap(t *testing.T, files map[string]string) *configMap {
	m := &configMap{t: t, dir: t.TempDir()}
	m.update(files)
	for name := range files {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(m.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

func (m *configMap) path(name string) string { return filepath.Join(m.dir, name) }

func (m *configMap) update(files map[string]string) {
	m.t.Helper()
	m.gen++
	ts := fmt.Sprintf("..2026_12_01_00_00_%02d.%d", m.gen, m.gen)
	if err := os.Mkdir(filepath.Join(m.dir, ts), 0o755); err != nil {
		m.t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(m.dir, ts, name), []byte(content), 0o644); err != nil {
			m.t.Fatal(err)
		}
	}
	old, _ := os.Readlink(filepath.Join(m.dir, "..data"))
	tmp := filepath.Join(m.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		m.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(m.dir, "..data")); err != nil {
		m.t.Fatal(err)
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(m.dir, old)); err != nil {
			m.t.Fatal(err)
		}
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// rulesFileStack is a stack whose rules come from a file, with reload hooks.
func rulesFileStack(t *testing.T, rulesPath string, opts ...stackOption) (*stack, *reloadHooks) {
	h := newReloadHooks()
	opts = append([]stackOption{withReload(h), func(c *stackConfig) {
		delete(c.env, "STEPGATE_RULES")
		c.env["STEPGATE_RULES_FILE"] = rulesPath
	}}, opts...)
	return newStack(t, opts...), h
}

func TestReloadOnSignalPutsTheNewRulesInForce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rules")
	writeFile(t, path, "/admin/ mfa\n")
	s, h := rulesFileStack(t, path)
	b := s.browser("alice")
	if r := b.get("/reports/q3"); r.StatusCode != http.StatusOK {
		t.Fatalf("before the reload /reports/ is allowed: got %d", r.StatusCode)
	}

	writeFile(t, path, "/admin/ mfa\n/reports/ deny\n")
	res := h.signal(t)
	if res.Result != "applied" || strings.Join(res.Changed, ",") != "rules" {
		t.Fatalf("reload: %s, want applied [rules]", res)
	}
	if r := b.get("/reports/q3"); r.StatusCode != http.StatusForbidden {
		t.Errorf("after the reload /reports/ is denied: got %d", r.StatusCode)
	}
	if ev := s.Logs.Events("config.reloaded"); len(ev) != 1 || ev[0]["trigger"] != "signal" {
		t.Errorf("config.reloaded audit lines: %v", ev)
	}
	if got := s.metric(t, `stepgate_config_reloads_total{result="applied"}`); got != 1 {
		t.Errorf("reloads applied: %v, want 1", got)
	}

	// The same rules again, written differently: nothing to change.
	writeFile(t, path, "# quarterly reports are closed\n/reports/   deny\n/admin/ mfa\n")
	if res := h.signal(t); res.Result != "unchanged" {
		t.Errorf("a comment and another order: %s, want unchanged", res)
	}
}

func TestReloadFollowsAConfigMapSymlinkSwap(t *testing.T) {
	cm := newConfigMap(t, map[string]string{"rules": "/admin/ mfa\n"})
	s, h := rulesFileStack(t, cm.path("rules"))
	b := s.browser("alice")

	if res := h.tick(t); res.Result != "none" {
		t.Fatalf("a poll before any change: %s, want none", res)
	}
	cm.update(map[string]string{"rules": "/admin/ mfa\n/reports/ deny\n"})
	res := h.tick(t)
	if res.Result != "applied" || res.Trigger != "file" {
		t.Fatalf("the poll after the ..data swap: %s, want file: applied", res)
	}
	if r := b.get("/reports/q3"); r.StatusCode != http.StatusForbidden {
		t.Errorf("after the swap /reports/ is denied: got %d", r.StatusCode)
	}
	if res := h.tick(t); res.Result != "none" {
		t.Errorf("the next poll: %s, want none (one swap, one reload)", res)
	}
}

func TestReloadOfAnInvalidRulesFileKeepsTheRulesInForce(t *testing.T) {
	cm := newConfigMap(t, map[string]string{"rules": "/admin/ mfa\n/reports/ deny\n"})
	s, h := rulesFileStack(t, cm.path("rules"))
	b := s.browser("alice")

	for _, bad := range []struct{ name, rules string }{
		{"a rule that does not parse", "/admin/ mfa\n/reports/ dney\n"},
		{"rules that protect nothing", "/reports/ allow\n"},
		{"an empty file", ""},
	} {
		cm.update(map[string]string{"rules": bad.rules})
		res := h.tick(t)
		if res.Result != "invalid" || res.Err == nil {
			t.Fatalf("%s: %s, want invalid", bad.name, res)
		}
		if r := b.get("/reports/q3"); r.StatusCode != http.StatusForbidden {
			t.Errorf("%s: /reports/ got %d, want 403 (the old rules stay)", bad.name, r.StatusCode)
		}
		if r := b.get("/admin/"); r.StatusCode != http.StatusFound {
			t.Errorf("%s: /admin/ got %d, want 302 to the challenge (the old rules stay)", bad.name, r.StatusCode)
		}
	}
	if code, body := readyz(t, s); code != http.StatusOK {
		t.Errorf("/readyz after refused reloads: %d %s", code, body)
	}
	if got := s.metric(t, `stepgate_config_reloads_total{result="invalid"}`); got != 3 {
		t.Errorf("reloads refused: %v, want 3", got)
	}
	if ev := s.Logs.Events("config.reload_refused"); len(ev) != 3 || !strings.Contains(fmt.Sprint(ev[0]["error"]), "dney") {
		t.Errorf("config.reload_refused audit lines: %v", ev)
	}
	// A file deleted under its link is refused the same way.
	if err := os.RemoveAll(filepath.Join(cm.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if res := h.tick(t); res.Result != "invalid" {
		t.Errorf("a missing file: %s, want invalid", res)
	}
	if r := b.get("/reports/q3"); r.StatusCode != http.StatusForbidden {
		t.Errorf("a missing file: /reports/ got %d, want 403", r.StatusCode)
	}
}

// A request in flight finishes under the decision it started with: allowed
// and forwarded before the reload, it is answered by the app, while the
// next request is decided under the new rules.
func TestReloadLetsARequestInFlightFinishUnderItsDecision(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rules")
	writeFile(t, path, "/admin/ mfa\n")
	arrived, release := make(chan struct{}), make(chan struct{})
	var seen atomic.Int32
	s, h := rulesFileStack(t, path, withUpstream(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Only the first request is held: a second one reaching the app
		// (the reload not in force) must fail the test, not hang it.
		if seen.Add(1) == 1 {
			arrived <- struct{}{}
			<-release
		}
		fmt.Fprint(w, "ok")
	})))
	b := s.browser("alice")
	inFlight := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, s.Proxy+"/slow/export", nil)
		req.Header.Set("X-Forwarded-User", "alice")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			inFlight <- 0
			return
		}
		resp.Body.Close()
		inFlight <- resp.StatusCode
	}()
	<-arrived
	writeFile(t, path, "/admin/ mfa\n/slow/ deny\n")
	if res := h.signal(t); res.Result != "applied" {
		t.Fatalf("reload: %s", res)
	}
	if r := b.get("/slow/export"); r.StatusCode != http.StatusForbidden {
		t.Errorf("a request after the reload: %d, want 403", r.StatusCode)
	}
	close(release)
	if code := <-inFlight; code != http.StatusOK {
		t.Errorf("the request in flight across the reload: %d, want 200", code)
	}
}

// Under steady load, rule swaps lose no request: every answer is one of
// the two rule sets' answers, never an error, and each swap is in force
// for the request after it.
func TestReloadUnderSteadyLoadLosesNoRequest(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rules")
	open, closed := "/admin/ mfa\n", "/admin/ mfa\n/reports/ deny\n"
	writeFile(t, path, open)
	s, h := rulesFileStack(t, path, withEnv("STEPGATE_ACCESS_LOG", "false", "STEPGATE_LOG_LEVEL", "info"))

	const workers, perWorker, swaps = 4, 150, 20
	tr := &http.Transport{MaxIdleConnsPerHost: workers}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var wg sync.WaitGroup
	errs := make(chan string, workers*perWorker)
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				path := "/reports/q3"
				if i%2 == 1 {
					path = "/public/" + fmt.Sprint(w)
				}
				req, _ := http.NewRequest(http.MethodGet, s.Proxy+path, nil)
				req.Header.Set("X-Forwarded-User", "alice")
				resp, err := client.Do(req)
				if err != nil {
					errs <- fmt.Sprintf("%s: %v", path, err)
					continue
				}
				resp.Body.Close()
				ok := resp.StatusCode == http.StatusOK || path == "/reports/q3" && resp.StatusCode == http.StatusForbidden
				if !ok {
					errs <- fmt.Sprintf("%s: %d", path, resp.StatusCode)
				}
			}
		})
	}
	b := s.browser("alice")
	for i := range swaps {
		content, want := closed, http.StatusForbidden
		if i%2 == 1 {
			content, want = open, http.StatusOK
		}
		writeFile(t, path, content)
		if res := h.signal(t); res.Result != "applied" {
			t.Fatalf("swap %d: %s", i, res)
		}
		if r := b.get("/reports/q3"); r.StatusCode != want {
			t.Fatalf("swap %d: the request after it got %d, want %d", i, r.StatusCode, want)
		}
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("a request under load failed: %s", e)
	}
}

func TestReloadRollsCookieKeysInThreePhases(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "cookie-keys")
	writeFile(t, keys, testKey+"\n")
	h := newReloadHooks()
	s := newStack(t, withReload(h), func(c *stackConfig) {
		delete(c.env, "STEPGATE_COOKIE_KEYS")
		c.env["STEPGATE_COOKIE_KEYS_FILE"] = keys
	})
	before := s.stepUpAlice("/admin/")
	phase := func(name, content string) {
		t.Helper()
		writeFile(t, keys, content)
		if res := h.tick(t); res.Result != "applied" || strings.Join(res.Changed, ",") != "cookie keys" {
			t.Fatalf("%s: %s, want applied [cookie keys]", name, res)
		}
	}
	phase("phase 1 (old,new)", testKey+","+testKey2)
	if r := before.get("/admin/"); r.StatusCode != http.StatusOK {
		t.Fatalf("phase 1: a step-up sealed with the old key: %d, want 200", r.StatusCode)
	}
	phase("phase 2 (new,old)", testKey2+","+testKey)
	if r := before.get("/admin/"); r.StatusCode != http.StatusOK {
		t.Fatalf("phase 2: a step-up sealed with the old key: %d, want 200", r.StatusCode)
	}
	s.Clock.Advance(2 * time.Second)
	after := s.stepUpAlice("/admin/") // sealed with the new key
	phase("phase 3 (new)", testKey2)
	if r := after.get("/admin/"); r.StatusCode != http.StatusOK {
		t.Errorf("phase 3: a step-up sealed with the new key: %d, want 200", r.StatusCode)
	}
	if r := before.get("/admin/"); r.StatusCode != http.StatusFound {
		t.Errorf("phase 3: a step-up sealed with the dropped key: %d, want 302 to the challenge", r.StatusCode)
	}

	writeFile(t, keys, "not base64!")
	if res := h.tick(t); res.Result != "invalid" {
		t.Fatalf("a bad key file: %s, want invalid", res)
	}
	if r := after.get("/admin/"); r.StatusCode != http.StatusOK {
		t.Errorf("after a refused key file the keys in force still open: %d", r.StatusCode)
	}
}

func TestReloadChangesTheAdminToken(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "admin-token")
	oldToken, newToken := testAdminToken, "another-admin-token-0123456789abcdefghij"
	writeFile(t, tokenFile, oldToken)
	h := newReloadHooks()
	s := newStack(t, withReload(h), withEnv("STEPGATE_ADMIN_TOKEN_FILE", tokenFile))
	if code, body := revoke(t, s, oldToken, `{"session":"s-1"}`); code != http.StatusOK {
		t.Fatalf("with the first token: %d %s", code, body)
	}
	writeFile(t, tokenFile, newToken+"\n")
	if res := h.tick(t); res.Result != "applied" || strings.Join(res.Changed, ",") != "admin token" {
		t.Fatalf("reload: %s", res)
	}
	if code, _ := revoke(t, s, oldToken, `{"session":"s-2"}`); code != http.StatusUnauthorized {
		t.Errorf("the old token after the reload: %d, want 401", code)
	}
	if code, body := revoke(t, s, newToken, `{"session":"s-3"}`); code != http.StatusOK {
		t.Errorf("the new token after the reload: %d %s", code, body)
	}
	writeFile(t, tokenFile, "short")
	if res := h.tick(t); res.Result != "invalid" {
		t.Errorf("a token too short: %s, want invalid", res)
	}
	if code, _ := revoke(t, s, newToken, `{"session":"s-4"}`); code != http.StatusOK {
		t.Errorf("after a refused token the one in force still works: %d", code)
	}
}

// The real signal, on the real program: SIGHUP makes a stepgate process
// reload its rules file.
func TestSIGHUPReloadsTheRulesOfTheProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rules")
	writeFile(t, path, "/admin/ mfa\n")
	rs := newReplicaSet(t, 0, testKey)
	env := map[string]string{"STEPGATE_COOKIE_KEYS": testKey, "STEPGATE_RULES_FILE": path, "STEPGATE_RELOAD_INTERVAL": "0"}
	for k, v := range rs.env {
		if k != "STEPGATE_RULES" {
			env[k] = v
		}
	}
	c := startChild(t, env)
	waitStatus(t, "http://"+c.admin+"/readyz", http.StatusOK, 15*time.Second)
	get := func() int {
		req, _ := http.NewRequest(http.MethodGet, "http://"+c.proxy+"/reports/q3", nil)
		req.Header.Set("X-Forwarded-User", "alice")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(); code != http.StatusOK {
		t.Fatalf("before SIGHUP: %d", code)
	}
	writeFile(t, path, "/admin/ mfa\n/reports/ deny\n")
	if err := c.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	ev := c.out.waitEvent(t, "config.reloaded", hangGuard)
	if ev["trigger"] != "signal" {
		t.Errorf("config.reloaded: %v", ev)
	}
	if code := get(); code != http.StatusForbidden {
		t.Errorf("after SIGHUP: %d, want 403", code)
	}
}
