//go:build unix

package parsertest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stepgate/stepgate/proxy/upstreamtest"
)

// python is Debian's interpreter, which has python3-flask and
// python3-django; a pyenv or virtualenv python on PATH would not.
const python = "/usr/bin/python3"

// Names lists every parser Start can run, in Start's order.
func Names() []string { return []string{"php", "flask", "django", "express", "rack", "go"} }

// kind is how one parser's app is started.
type kind struct {
	form, query, json []string // accessor prefixes
	// check says what is missing to run it ("" when nothing is): the
	// program or module, and the Debian package that provides it.
	check func() (what, pkg string)
	// command is the app's server, to listen on 127.0.0.1:port.
	command func(apps string, port int) *exec.Cmd
}

var kinds = map[string]kind{
	// php -S with the php.ini-production orders spelled out (-n reads no
	// php.ini): $_REQUEST is $_GET then $_POST, the body's value winning.
	// Warnings are not displayed (they would come before the report) but
	// reported, as Report.Warning. Two workers, so parallel requests are
	// not serialised.
	"php": {
		// input: Laravel's $request->input(), which merges a JSON body (or
		// $_POST) over the query.
		form: []string{"post", "request", "input"}, query: []string{"get", "input"}, json: []string{"json"},
		check: func() (string, string) { return program("php", "php-cli") },
		command: func(apps string, port int) *exec.Cmd {
			cmd := exec.Command("php", "-n", "-d", "request_order=GP", "-d", "variables_order=EGPCS",
				"-d", "display_errors=0", "-d", "log_errors=0",
				"-S", "127.0.0.1:"+strconv.Itoa(port), "-t", apps, filepath.Join(apps, "router.php"))
			cmd.Env = []string{"PHP_CLI_SERVER_WORKERS=2"}
			return cmd
		},
	},
	"flask": {
		form: []string{"post", "request"}, query: []string{"get"}, json: []string{"json"},
		check: func() (string, string) { return pythonModule("flask", "python3-flask") },
		command: func(apps string, port int) *exec.Cmd {
			return exec.Command(python, filepath.Join(apps, "flask_app.py"), strconv.Itoa(port))
		},
	},
	"django": {
		form: []string{"post"}, query: []string{"get"}, json: []string{"json"},
		check: func() (string, string) { return pythonModule("django", "python3-django") },
		command: func(apps string, port int) *exec.Cmd {
			return exec.Command(python, filepath.Join(apps, "django_app.py"), strconv.Itoa(port))
		},
	},
	"express": {
		form: []string{"post", "request"}, query: []string{"get"}, json: []string{"json"},
		check: func() (string, string) { return program("node", "nodejs") },
		command: func(apps string, port int) *exec.Cmd {
			cmd := exec.Command("node", filepath.Join(apps, "express", "app.js"), strconv.Itoa(port))
			cmd.Env = []string{"NO_DEPRECATION=express", "NODE_ENV=production"} // req.param is deprecated
			return cmd
		},
	},
	"rack": {
		form: []string{"post", "request"}, query: []string{"get"}, json: []string{"json"},
		check: func() (string, string) {
			if what, pkg := program("ruby", "ruby"); what != "" {
				return what, pkg
			}
			return checkOnce("rack", "ruby library rack and webrick", "ruby-rack ruby-webrick",
				"ruby", "-e", `require "rack"; require "rack/handler/webrick"`)
		},
		command: func(apps string, port int) *exec.Cmd {
			return exec.Command("ruby", filepath.Join(apps, "rack_app.rb"), strconv.Itoa(port))
		},
	},
	"go": {form: []string{"post", "request"}, query: []string{"get"}, json: []string{"json", "jsonmap"}},
}

func program(name, pkg string) (string, string) {
	if _, err := exec.LookPath(name); err != nil {
		return name, pkg
	}
	return "", ""
}

func pythonModule(mod, pkg string) (string, string) {
	if _, err := os.Stat(python); err != nil {
		return python, "python3"
	}
	return checkOnce("python:"+mod, "python module "+mod+" for "+python, pkg, python, "-c", "import "+mod)
}

var checks sync.Map // key -> *checkResult

type checkResult struct {
	once      sync.Once
	what, pkg string
}

// checkOnce runs a probe command once per test binary: what and pkg when it
// fails, "" when it succeeds.
func checkOnce(key, what, pkg string, argv ...string) (string, string) {
	v, _ := checks.LoadOrStore(key, &checkResult{})
	r := v.(*checkResult)
	r.once.Do(func() {
		if exec.Command(argv[0], argv[1:]...).Run() != nil {
			r.what, r.pkg = what, pkg
		}
	})
	return r.what, r.pkg
}

// Start runs the named parsers (every one of Names when none are named) and
// returns them in that order; they stop when the test ends. A parser whose
// program or packages are missing fails the test under CI=true and skips
// it otherwise. Starting all six takes a second or two: start them once
// for a test and its subtests.
func Start(t testing.TB, names ...string) []*Parser {
	t.Helper()
	if len(names) == 0 {
		names = Names()
	}
	for _, n := range names {
		k, ok := kinds[n]
		if !ok {
			t.Fatalf("parsertest: no parser %q (have %v)", n, Names())
		}
		if k.check == nil {
			continue
		}
		if what, pkg := k.check(); what != "" {
			upstreamtest.Missing(t, n, what, pkg)
		}
	}
	apps, err := appsDir()
	if err != nil {
		t.Fatalf("parsertest: %v", err)
	}
	if slices.Contains(names, "express") {
		installExpress(t, filepath.Join(apps, "express"))
	}

	ps := make([]*Parser, len(names))
	var procs []*upstreamtest.Process
	for i, n := range names {
		k := kinds[n]
		p := &Parser{name: n, form: k.form, query: k.query, jsonKeys: k.json}
		ps[i] = p
		if n == "go" {
			srv := httptest.NewServer(goEcho{})
			t.Cleanup(srv.Close)
			p.addr = srv.Listener.Addr().String()
			continue
		}
		port, err := upstreamtest.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		p.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		cmd := k.command(apps, port)
		cmd.Dir = apps
		cmd.Env = append(cmd.Env, "PYTHONDONTWRITEBYTECODE=1")
		proc := upstreamtest.Spawn(t, "parsertest-"+n, cmd, p.addr)
		p.output = proc.Output
		procs = append(procs, proc)
	}
	for _, proc := range procs {
		proc.WaitReady(t)
	}
	return ps
}

// appsDir finds apps/ beside this file's source: the apps run from there,
// and Express's node_modules is installed there.
func appsDir() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot locate the package's source (runtime.Caller)")
	}
	dir := filepath.Join(filepath.Dir(file), "apps")
	if _, err := os.Stat(filepath.Join(dir, "router.php")); err != nil {
		return "", fmt.Errorf("the apps are not beside the source (built with -trimpath?): %w", err)
	}
	return dir, nil
}

// npm state: once per test binary, and under a file lock across binaries
// (go test runs packages in parallel processes).
var (
	npmOnce      sync.Once
	npmMissing   bool
	npmErr       error
	npmInstalled bool
)

// installExpress runs npm ci in dir when its node_modules is missing or
// older than package-lock.json (a fresh clone in CI, a changed lock).
func installExpress(t testing.TB, dir string) {
	t.Helper()
	npmOnce.Do(func() {
		if fresh(dir) {
			return
		}
		if _, err := exec.LookPath("npm"); err != nil {
			npmMissing = true
			return
		}
		npmErr = npmCI(dir)
		npmInstalled = npmErr == nil
	})
	switch {
	case npmMissing:
		upstreamtest.Missing(t, "npm", "npm, to install the Express app's packages into "+dir, "npm")
	case npmErr != nil:
		t.Fatalf("parsertest: %v", npmErr)
	case npmInstalled:
		t.Logf("parsertest: installed the Express app's packages (npm ci in %s)", dir)
	}
}

// fresh says whether dir's node_modules is a complete install of its
// package-lock.json: npm writes node_modules/.package-lock.json last.
func fresh(dir string) bool {
	done, err := os.Stat(filepath.Join(dir, "node_modules", ".package-lock.json"))
	if err != nil {
		return false
	}
	lock, err := os.Stat(filepath.Join(dir, "package-lock.json"))
	return err == nil && !done.ModTime().Before(lock.ModTime())
}

func npmCI(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("npm ci: %w", err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("npm ci: lock %s: %w", dir, err)
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	if fresh(dir) { // another test binary installed it while this one waited
		return nil
	}
	// --prefer-offline: from npm's cache when it has the packages, from
	// the registry otherwise.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "ci", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "NODE_ENV=production")
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("npm ci in %s failed (it needs the npm registry, or npm's cache holding every package in package-lock.json): %v\n%s", dir, err, out)
	}
	return nil
}
