package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/stepgate/stepgate/mfa/pingonesim"
)

// runSimulate runs the PingOne simulator alone with the demo tenant (docs/design.md §11).
func runSimulate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("stepgate simulate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8081", "listen address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(stdout, nil))
	sim := pingonesim.New(pingonesim.Options{Tenant: pingonesim.DemoTenant(), Logger: log, Clock: pingonesim.NewRunningClock()})
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("simulate: %w (choose another address with -addr)", err)
	}
	t := pingonesim.DemoTenant()
	fmt.Fprintf(stdout, "PingOne simulator on http://%s (environment %s, issuer http://%s/%s/as)\ninbox: http://%s/_sim/inbox/page\n",
		ln.Addr(), t.EnvID, ln.Addr(), t.EnvID, ln.Addr())
	return serveUntil(ctx, ln, sim)
}

// runDemo starts, on loopback, the simulator, a demo "legacy" app, a
// stand-in upstream IdP and stepgate guarding /admin/ (docs/design.md §12).
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("stepgate demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	idpAddr := fs.String("idp-addr", "127.0.0.1:8080", "stand-in identity provider (the entry point)")
	simAddr := fs.String("sim-addr", "127.0.0.1:8081", "PingOne simulator")
	appAddr := fs.String("app-addr", "127.0.0.1:8082", "demo legacy app")
	proxyAddr := fs.String("proxy-addr", "127.0.0.1:8083", "stepgate proxy listener")
	adminAddr := fs.String("admin-addr", "127.0.0.1:9090", "stepgate admin listener")
	logLevel := fs.String("log-level", "info", "stepgate log level")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var lns [5]net.Listener
	flags := []string{"-idp-addr", "-sim-addr", "-app-addr", "-proxy-addr", "-admin-addr"}
	for i, a := range []string{*idpAddr, *simAddr, *appAddr, *proxyAddr, *adminAddr} {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			for _, l := range lns[:i] {
				l.Close()
			}
			return fmt.Errorf("demo: %w (choose another address with %s; the flags are -idp-addr, -sim-addr, -app-addr, -proxy-addr, -admin-addr)", err, flags[i])
		}
		lns[i] = ln
	}
	idpLn, simLn, appLn, proxyLn, adminLn := lns[0], lns[1], lns[2], lns[3], lns[4]

	tenant := pingonesim.DemoTenant()
	// One running clock for the simulator and the gateway: it follows the
	// wall clock, and POST /_sim/clock moves both (e.g. to show an expired
	// step-up or flow without waiting).
	clock := pingonesim.NewRunningClock()
	sim := pingonesim.New(pingonesim.Options{
		Tenant: tenant, Clock: clock,
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)),
	})
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	env := map[string]string{
		"STEPGATE_UPSTREAM":              "http://" + appLn.Addr().String(),
		"STEPGATE_PINGONE_ENV_ID":        tenant.EnvID,
		"STEPGATE_PINGONE_CLIENT_ID":     tenant.Apps[0].ClientID,
		"STEPGATE_PINGONE_CLIENT_SECRET": tenant.Apps[0].Secret,
		"STEPGATE_PINGONE_AUTH_BASE":     "http://" + simLn.Addr().String(),
		"STEPGATE_PINGONE_ACR_VALUES":    "MFA-Only",
		"STEPGATE_COOKIE_KEYS":           base64.StdEncoding.EncodeToString(key),
		"STEPGATE_COOKIE_SECURE":         "false",
		"STEPGATE_RULES":                 demoRules,
		"STEPGATE_APP_NAME":              "Legacy demo app",
		"STEPGATE_LOG_LEVEL":             *logLevel,
	}
	cfg, err := loadConfig(environOf(env))
	if err != nil {
		return err
	}
	s, err := cfg.validate(os.ReadFile)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 4)
	go func() { errc <- serveUntil(ctx, simLn, sim) }()
	go func() { errc <- serveUntil(ctx, appLn, demoActions(demoApp())) }()
	go func() { errc <- serveUntil(ctx, idpLn, standInIdP(proxyLn.Addr().String())) }()
	cfg.ShutdownDrain = 0
	go func() {
		errc <- serve(ctx, cfg, s, stdout, &serveOptions{listeners: listeners{proxy: proxyLn, admin: adminLn}}, clock.Now)
	}()

	fmt.Fprintf(stderr, `
stepgate demo is running.
  open        http://%[1]s/           (the stand-in IdP signs you in as alice; pick another user at /.demo/login)
              http://localhost:%[6]s/  use this one for security keys (WebAuthn needs a host name)
  protected   http://%[1]s/admin/      step-up MFA required
  approve     http://%[1]s/payments/   a payment and a user deletion, each approved on its own
  inbox       http://%[2]s/_sim/inbox/page   SMS/e-mail codes and push approvals land here
  users       alice (SMS, e-mail), bob (push), carol (authenticator app, security key), dave (none: refused)
  agent API   POST /api/payments is approved on the phone, no browser (docs/agents.md):
    bob (push; approve in the inbox):
      curl -si -b demo_user=bob -H 'Prefer: wait=60' -H 'Content-Type: application/json' -d '%[7]s' http://%[1]s/api/payments
    alice (SMS; the code is in the inbox):
      stepgate approve-call -H 'Cookie: demo_user=alice' -d '%[7]s' POST http://%[1]s/api/payments
  metrics     http://%[5]s/metrics
  (demo app on %[3]s, stepgate proxy on %[4]s)
Press Ctrl-C to stop.
`, idpLn.Addr(), simLn.Addr(), appLn.Addr(), proxyLn.Addr(), adminLn.Addr(), port(idpLn.Addr().String()), demoAPIPayment)

	var first error
	for range 4 {
		err := <-errc
		if err != nil && first == nil {
			first = err
			cancel()
		}
	}
	return first
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// serveUntil serves h on ln until ctx ends.
func serveUntil(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

var demoUsers = []string{"alice", "bob", "carol", "dave"}

// demoUserNotes says what each demo user shows (docs/design.md §12's tenant).
var demoUserNotes = map[string]string{
	"alice": "text message and e-mail: picks one, types the code",
	"bob":   "phone app push only: approves it in the simulator's inbox",
	"carol": "authenticator app (code shown in the inbox) or security key",
	"dave":  "no method at all: PingOne would let him through, stepgate refuses",
}

// standInIdP plays the upstream identity provider: it signs the browser in
// as the user named by the demo_user cookie and forwards to stepgate with
// X-Forwarded-User, like oauth2-proxy would.
func standInIdP(stepgateAddr string) http.Handler {
	target := &url.URL{Scheme: "http", Host: stepgateAddr}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
			pr.Out.Header.Del("X-Forwarded-User")
			pr.Out.Header.Set("X-Forwarded-User", demoUser(pr.In))
		},
		FlushInterval: -1,
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/.demo/login", func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			u := r.PostFormValue("user")
			if validDemoUser(u) {
				http.SetCookie(w, &http.Cookie{Name: "demo_user", Value: u, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
			}
			http.Redirect(w, r, "/", http.StatusSeeOther)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = loginPage.Execute(w, map[string]any{"Users": demoUsers, "Notes": demoUserNotes, "Current": demoUser(r)})
	})
	mux.Handle("/", rp)
	return mux
}

func demoUser(r *http.Request) string {
	if c, err := r.Cookie("demo_user"); err == nil && validDemoUser(c.Value) {
		return c.Value
	}
	return "alice"
}

func validDemoUser(u string) bool {
	for _, d := range demoUsers {
		if u == d {
			return true
		}
	}
	return false
}

var loginPage = template.Must(template.New("login").Parse(`<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Demo IdP sign-in</title></head>
<body style="font-family:system-ui;max-width:30rem;margin:2rem auto;padding:0 1rem">
<h1>Stand-in identity provider</h1><p>Signed in as <strong>{{.Current}}</strong>. Pick a demo user:</p>
<form method="post">{{range .Users}}<p><label><input type="radio" name="user" value="{{.}}" {{if eq . $.Current}}checked{{end}}> <strong>{{.}}</strong> — {{index $.Notes .}}</label></p>{{end}}
<button type="submit">Sign in</button></form><p><a href="/">Home</a> · <a href="/admin/">Admin (step-up)</a></p></body></html>`))

// demoApp is the "legacy" app: it shows what stepgate forwarded.
func demoApp() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var names []string
		for k := range r.Header {
			names = append(names, k)
		}
		sort.Strings(names)
		type header struct{ Name, Value string }
		var hs []header
		for _, k := range names {
			v := strings.Join(r.Header[k], ", ")
			if len(v) > 120 {
				v = v[:120] + "…"
			}
			hs = append(hs, header{k, v})
		}
		claims := "(no step-up on this request)"
		steppedUp := ""
		if tok := r.Header.Get("X-Stepgate-Id-Token"); tok != "" {
			claims = decodeClaims(tok)
			steppedUp = steppedUpLine(r.Header)
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = appPage.Execute(w, map[string]any{
			"Path": r.URL.Path, "Admin": strings.HasPrefix(r.URL.Path, "/admin"), "Headers": hs, "Claims": claims,
			"SteppedUp": steppedUp,
		})
	})
}

// steppedUpLine says, from stepgate's headers, who stepped up, how and
// when: "Stepped up as alice via SMS at 10:42 UTC".
func steppedUpLine(h http.Header) string {
	// The most specific method the amr names (RFC 8176 values).
	amr := "," + strings.ReplaceAll(h.Get("X-Stepgate-Amr"), " ", "") + ","
	line := "Stepped up as " + h.Get("X-Stepgate-User")
	for _, m := range []struct{ amr, says string }{
		{"sms", "SMS"}, {"tel", "a phone call"}, {"mail", "e-mail"}, {"email", "e-mail"},
		{"swk", "a phone app push"}, {"hwk", "a security key"}, {"fido", "a security key"},
		{"otp", "a one-time code"}, {"mfa", "MFA"},
	} {
		if strings.Contains(amr, ","+m.amr+",") {
			line += " via " + m.says
			break
		}
	}
	if sec, err := strconv.ParseInt(h.Get("X-Stepgate-Auth-Time"), 10, 64); err == nil {
		line += " at " + time.Unix(sec, 0).UTC().Format("15:04 UTC")
	}
	return line
}

// decodeClaims shows the ID token payload. stepgate verified the token
// before forwarding it; the demo app only displays it.
func decodeClaims(tok string) string {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return "(malformed)"
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "(malformed)"
	}
	var v map[string]any
	if json.Unmarshal(b, &v) != nil {
		return "(malformed)"
	}
	out, _ := json.MarshalIndent(v, "", "  ")
	return string(out)
}

var appPage = template.Must(template.New("app").Parse(`<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Legacy app {{.Path}}</title></head>
<body style="font-family:system-ui;max-width:50rem;margin:2rem auto;padding:0 1rem">
<h1>{{if .Admin}}Admin area{{else}}Legacy app{{end}}</h1><p>Path: <code>{{.Path}}</code></p>
<p><a href="/">Home</a> · <a href="/admin/">Admin (step-up)</a> · <a href="/.demo/login">Switch user</a></p>
{{if .SteppedUp}}<p id="stepped-up"><strong>{{.SteppedUp}}</strong></p>
<form method="post" action="/.stepgate/logout"><button type="submit">Forget the step-up</button></form>{{else}}<p>Not stepped up on this request.</p>{{end}}
<h2>Headers received from stepgate</h2><table style="table-layout:fixed;width:100%;border-collapse:collapse">{{range .Headers}}<tr><th style="text-align:left;vertical-align:top;padding-right:.75rem;width:35%;overflow-wrap:anywhere">{{.Name}}</th><td style="overflow-wrap:anywhere;word-break:break-all"><code>{{.Value}}</code></td></tr>{{end}}</table>
<h2>ID token claims</h2><pre style="white-space:pre-wrap;overflow-wrap:anywhere">{{.Claims}}</pre></body></html>`))
