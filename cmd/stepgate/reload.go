package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stepgate/stepgate/metrics"
	"github.com/stepgate/stepgate/proxy/rules"
)

// Live reload (docs/design.md §9.1): the rules file, the cookie keys and
// the admin token are read again on SIGHUP and when one of their files
// changes. The new configuration goes through exactly the checks a start
// does (loadConfig and validate, on the same environment); when they fail
// the set in force stays, and the log, an audit line and
// stepgate_config_reloads_total{result="invalid"} say why. When they pass,
// each part is swapped whole by one atomic store: a request loads the
// rules once and decides on that set, so a request in flight finishes
// under the decision it started with, and no request waits for a reload.

// reloadResult is what one reload did.
type reloadResult struct {
	Trigger string // "signal", "file"
	// Result is applied, unchanged or invalid; "none" when a file poll
	// found no file changed (no reload was tried, nothing is counted).
	Result string
	// Changed names what was put in force: rules, cookie keys, admin token.
	Changed []string
	// Restart names the settings whose new value needs a restart
	// (a changed _FILE secret such as STEPGATE_PINGONE_CLIENT_SECRET_FILE).
	Restart []string
	Err     error // why an invalid configuration was refused
}

// reloadable is what a reload puts in force.
type reloadable interface {
	// apply puts the rules, keys and admin token of s and c in force; it
	// refuses (changing nothing) what the running gateway cannot serve.
	apply(c config, s settings) error
}

// reloader reloads the configuration from the environment it started
// with. One reload runs at a time.
type reloader struct {
	environ []string
	target  reloadable
	log     *slog.Logger
	metrics *metrics.Metrics

	mu  sync.Mutex
	cfg config   // in force
	s   settings // in force
}

func (r *reloader) reload(trigger string) reloadResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := reloadResult{Trigger: trigger}
	cfg, loadErr := loadConfig(r.environ)
	s, err := cfg.validate(os.ReadFile)
	if err = mergeProblems(loadErr, err); err == nil {
		res.Changed, res.Restart = changes(r.cfg, r.s, cfg, s)
		if len(res.Changed) > 0 {
			err = r.target.apply(cfg, s)
		}
	}
	switch {
	case err != nil:
		res.Result, res.Err = "invalid", err
		r.log.Error("reload refused: the configuration in force stays", "trigger", trigger, "error", err.Error())
		r.log.LogAttrs(context.Background(), slog.LevelInfo, "audit", slog.String("event", "config.reload_refused"),
			slog.String("trigger", trigger), slog.String("error", err.Error()))
	case len(res.Changed) == 0:
		res.Result = "unchanged"
		r.log.Info("reload: nothing to change", "trigger", trigger)
	default:
		res.Result = "applied"
		r.cfg, r.s = cfg, s
		r.log.LogAttrs(context.Background(), slog.LevelInfo, "audit", slog.String("event", "config.reloaded"),
			slog.String("trigger", trigger), slog.Any("changed", res.Changed), slog.Int("rules", len(s.rules.Rules())))
	}
	if len(res.Restart) > 0 {
		r.log.Warn("reload: changed settings that take effect only on restart", "settings", res.Restart)
	}
	r.metrics.ConfigReloads.WithLabelValues(res.Result).Inc()
	return res
}

// changes lists what differs between the configuration in force and the
// new one: the parts a reload puts in force, and the settings whose new
// value needs a restart. Secret values are compared, never printed.
func changes(oldC config, oldS settings, newC config, newS settings) (live, restart []string) {
	if ruleText(oldS.rules) != ruleText(newS.rules) {
		live = append(live, "rules")
	}
	if !slices.EqualFunc(oldS.cookieKeys, newS.cookieKeys, bytes.Equal) {
		live = append(live, "cookie keys")
	}
	if oldC.AdminToken != newC.AdminToken {
		live = append(live, "admin token")
	}
	ov, nv := reflect.ValueOf(oldC), reflect.ValueOf(newC)
	t := ov.Type()
	for i := range t.NumField() {
		switch f := t.Field(i); {
		case f.Name == "CookieKeys", f.Name == "AdminToken":
			continue
		case !f.IsExported(): // otel, the OTEL_* variables: compared below
			continue
		}
		if !reflect.DeepEqual(ov.Field(i).Interface(), nv.Field(i).Interface()) {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("env"), ",")
			restart = append(restart, envPrefix+name)
		}
	}
	if !slices.Equal(oldC.otel, newC.otel) {
		restart = append(restart, "OTEL_*")
	}
	return live, restart
}

// ruleText is the effective rule set in words: a comment or layout change
// in the file is no change.
func ruleText(s *rules.Set) string {
	var b strings.Builder
	for _, r := range s.Rules() {
		b.WriteString(r.String())
		b.WriteByte('\n')
	}
	b.WriteString(s.Default().String())
	return b.String()
}

// adminToken is the bearer token of POST /revoke, replaceable by a reload.
// It keeps only the token's SHA-256: hashing both sides makes the
// comparison constant-time in the token's length too.
type adminToken struct {
	h atomic.Pointer[[sha256.Size]byte]
}

func (t *adminToken) set(token string) {
	if token == "" {
		t.h.Store(nil)
		return
	}
	h := sha256.Sum256([]byte(token))
	t.h.Store(&h)
}

// check reports whether a token is configured, and whether given is it.
func (t *adminToken) check(given string) (configured, ok bool) {
	want := t.h.Load()
	if want == nil {
		return false, false
	}
	got := sha256.Sum256([]byte(given))
	return true, subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// watchedFiles are the files whose change triggers a reload: the rules
// file and every _FILE secret (a changed secret that needs a restart is
// then at least logged).
func watchedFiles(cfg config, environ []string) []string {
	var out []string
	if cfg.RulesFile != "" {
		out = append(out, cfg.RulesFile)
	}
	getenv := lookupEnv(environ)
	for _, name := range secretVars {
		if p := getenv(envPrefix + name + "_FILE"); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// fileWatch notices that a file changed by polling its identity: where
// its symlinks lead, and the file's device and inode, size and
// modification time. Polling is deliberate: Kubernetes updates a mounted
// ConfigMap or Secret by pointing the ..data symlink at a new directory,
// which an inotify watch on the file itself never sees (the file's own
// inode does not change; its parent's link does), and watching
// directories for that swap is what fsnotify users get wrong most often.
// A stat and a readlink per file and poll cost microseconds and need no
// dependency.
type fileWatch struct {
	paths []string
	last  map[string]fileID
}

type fileID struct {
	target string // the path after every symlink ("" if unresolvable)
	info   os.FileInfo
	err    string
}

func newFileWatch(paths []string) *fileWatch {
	w := &fileWatch{paths: paths, last: map[string]fileID{}}
	for _, p := range paths {
		w.last[p] = identify(p)
	}
	return w
}

func identify(path string) fileID {
	var id fileID
	id.target, _ = filepath.EvalSymlinks(path)
	fi, err := os.Stat(path)
	if err != nil {
		id.err = errors.Unwrap(err).Error()
		return id
	}
	id.info = fi
	return id
}

func (a fileID) same(b fileID) bool {
	if a.target != b.target || a.err != b.err || (a.info == nil) != (b.info == nil) {
		return false
	}
	if a.info == nil {
		return true
	}
	return os.SameFile(a.info, b.info) && a.info.Size() == b.info.Size() && a.info.ModTime().Equal(b.info.ModTime())
}

// changed reports whether any file changed since the last call, and
// remembers what it saw.
func (w *fileWatch) changed() bool {
	any := false
	for _, p := range w.paths {
		id := identify(p)
		if !id.same(w.last[p]) {
			any = true
		}
		w.last[p] = id
	}
	return any
}

// reloadLoop reloads on every value of hup and whenever a poll finds a
// watched file changed, until stop closes. report, optional, is told every
// outcome (tests wait on it instead of on time).
func reloadLoop(stop <-chan struct{}, r *reloader, w *fileWatch, hup <-chan struct{}, poll <-chan time.Time, report func(reloadResult)) {
	if report == nil {
		report = func(reloadResult) {}
	}
	for {
		select {
		case <-stop:
			return
		case <-hup:
			// A file may also have changed: remember its new identity so
			// the next poll does not reload it a second time.
			if w != nil {
				w.changed()
			}
			report(r.reload("signal"))
		case <-poll:
			if w == nil || !w.changed() {
				report(reloadResult{Trigger: "file", Result: "none"})
				continue
			}
			report(r.reload("file"))
		}
	}
}

func (r reloadResult) String() string {
	return fmt.Sprintf("%s: %s %v (restart: %v) %v", r.Trigger, r.Result, r.Changed, r.Restart, r.Err)
}
