//go:build unix

package proxy

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stepgate/stepgate/metrics"
	"github.com/stepgate/stepgate/proxy/approve/parsertest"
	"github.com/stepgate/stepgate/proxy/clientip"
	"github.com/stepgate/stepgate/proxy/identity"
	"github.com/stepgate/stepgate/proxy/rules"
)

// overrideGateway serves rules that name methods in front of a real
// application parser.
func overrideGateway(t *testing.T, p *parsertest.Parser, mode MethodOverride) string {
	t.Helper()
	set, err := rules.Parse("test", "DELETE /users/ mfa", rules.Defaults{Action: rules.Allow})
	if err != nil {
		t.Fatal(err)
	}
	up, _ := url.Parse("http://" + p.Addr())
	now := time.Now()
	g, err := New(Config{
		Upstream:       up,
		Transport:      &http.Transport{},
		Rules:          set,
		ClientIP:       clientip.New([]netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}),
		Identity:       identity.NewHeader("X-Forwarded-User"),
		StepUps:        headerStepUps{now: now},
		Challenge:      stubChallenger{},
		IdentityHeader: "X-Forwarded-User",
		Logger:         slog.New(slog.DiscardHandler),
		Metrics:        metrics.New(prometheus.NewRegistry(), "override"),
		MethodOverride: mode,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// TestMethodOverrideCannotSlipPastARuleThatNamesMethods: PHP (Symfony's
// order), Rack::MethodOverride and Express's method-override turn a POST
// into a DELETE. A DELETE mfa rule must see that DELETE, or stepgate must
// refuse the request, in each STEPGATE_METHOD_OVERRIDE mode. Each attack is
// first sent straight to the application, to show that it would work.
func TestMethodOverrideCannotSlipPastARuleThatNamesMethods(t *testing.T) {
	ps := parsertest.Start(t, "php", "rack", "express")
	ctx := context.Background()
	form := "application/x-www-form-urlencoded"
	user := http.Header{"X-Forwarded-User": {"alice"}}
	with := func(h http.Header, kv ...string) http.Header {
		out := h.Clone()
		for i := 0; i < len(kv); i += 2 {
			out.Set(kv[i], kv[i+1])
		}
		return out
	}
	bodyDelete := parsertest.Request{Path: "/users/42", ContentType: form, Header: user, Body: []byte("name=x&_method=DELETE")}
	queryDelete := parsertest.Request{Path: "/users/42", RawQuery: "_method=DELETE", ContentType: form, Header: user, Body: []byte("name=x")}
	headerDelete := parsertest.Request{Path: "/users/42", ContentType: form, Header: with(user, "X-HTTP-Method-Override", "DELETE"), Body: []byte("name=x")}
	headerPatch := parsertest.Request{Path: "/users/42", ContentType: form, Header: with(user, "X-HTTP-Method-Override", "PATCH"), Body: []byte("name=x")}
	bodyPatch := parsertest.Request{Path: "/users/42", ContentType: form, Header: user, Body: []byte("name=x&_method=patch")}
	steppedDelete := parsertest.Request{Path: "/users/42", ContentType: form, Header: with(user, "X-Test-Stepped-Up", "1"), Body: []byte("name=x&_method=DELETE")}
	elsewhere := parsertest.Request{Path: "/notes/7", ContentType: form, Header: user, Body: []byte("_method=DELETE")}
	// Rack and Express neither trim _method nor fold it as Go does: to
	// them these stay POST, while a trimmed or Unicode-upper-cased
	// reading names another method.
	paddedDelete := parsertest.Request{Path: "/users/42", ContentType: form, Header: user, Body: []byte("name=x&_method=DELETE%20")}
	longSOptions := parsertest.Request{Path: "/users/42", ContentType: form, Header: user, Body: []byte("name=x&_method=OPTION%C5%BF")}
	// Express's method-override on req.body (and Laravel's input()) take
	// _method from a JSON body too.
	jsonDelete := parsertest.Request{Path: "/users/42", ContentType: "application/json", Header: user, Body: []byte(`{"name":"x","_method":"DELETE"}`)}
	jsonPlain := parsertest.Request{Path: "/users/42", ContentType: "application/json", Header: user, Body: []byte(`{"name":"x"}`)}

	tests := []struct {
		name string
		mode MethodOverride
		q    parsertest.Request
		// honoured: the parsers that act on the override when sent the
		// request directly (the control).
		honoured []string
		// status stepgate answers when it does not forward; 0: forwarded,
		// and the application must act on method.
		status int
		method string
	}{
		{"none: _method in the body is refused", MethodOverrideNone, bodyDelete, []string{"php", "rack", "express"}, http.StatusBadRequest, ""},
		{"none: _method in the query is refused", MethodOverrideNone, queryDelete, []string{"php"}, http.StatusBadRequest, ""},
		{"none: the override header is stripped", MethodOverrideNone, headerDelete, []string{"php", "rack", "express"}, 0, "POST"},
		{"none: where the method does not matter, the form goes on", MethodOverrideNone, elsewhere, []string{"php", "rack", "express"}, 0, "DELETE"},
		{"header: the header's DELETE meets the DELETE rule", MethodOverrideHeader, headerDelete, []string{"php", "rack", "express"}, http.StatusFound, ""},
		{"header: the header's PATCH is forwarded as PATCH", MethodOverrideHeader, headerPatch, []string{"php", "rack", "express"}, 0, "PATCH"},
		{"header: _method in the body is still refused", MethodOverrideHeader, bodyDelete, []string{"php", "rack", "express"}, http.StatusBadRequest, ""},
		{"form: _method=DELETE meets the DELETE rule", MethodOverrideForm, bodyDelete, []string{"php", "rack", "express"}, http.StatusFound, ""},
		{"form: _method=patch is forwarded as PATCH", MethodOverrideForm, bodyPatch, []string{"php", "rack", "express"}, 0, "PATCH"},
		{"form: a stepped-up DELETE is forwarded", MethodOverrideForm, steppedDelete, []string{"php", "rack", "express"}, 0, "DELETE"},
		{"form: the override header is stripped", MethodOverrideForm, headerDelete, []string{"php", "rack", "express"}, 0, "POST"},
		{"form: _method in the query is refused", MethodOverrideForm, queryDelete, []string{"php"}, http.StatusBadRequest, ""},
		{"none: _method in a JSON body is refused", MethodOverrideNone, jsonDelete, []string{"express"}, http.StatusBadRequest, ""},
		{"form: _method in a JSON body is refused", MethodOverrideForm, jsonDelete, []string{"express"}, http.StatusBadRequest, ""},
		{"form: a JSON body without _method goes on as POST", MethodOverrideForm, jsonPlain, nil, 0, "POST"},
		{"form: a _method padded with a space is refused", MethodOverrideForm, paddedDelete, nil, http.StatusBadRequest, ""},
		{"form: a _method that is OPTIONS only under Unicode folding is refused", MethodOverrideForm, longSOptions, nil, http.StatusBadRequest, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, p := range ps {
				direct, err := p.Parse(ctx, parsertest.Fields{}, tt.q)
				if err != nil {
					t.Fatal(err)
				}
				if slices.Contains(tt.honoured, p.Name()) && direct.Method == "POST" {
					t.Fatalf("control: %s does not honour this override (acts on %s): the test proves nothing", p.Name(), direct.Method)
				}
				gw := overrideGateway(t, p, tt.mode)
				rep, err := p.ParseThrough(ctx, gw, parsertest.Fields{}, tt.q)
				if err != nil {
					t.Fatal(err)
				}
				if tt.status != 0 {
					if rep.Method != "" || !strings.HasPrefix(rep.Error, "status "+strconv.Itoa(tt.status)) {
						t.Errorf("%s: the application acted on %q (error %q); want stepgate's %d", p.Name(), rep.Method, rep.Error, tt.status)
					}
					continue
				}
				if rep.Method != tt.method {
					t.Errorf("%s: through stepgate the application acts on %q (error %q), want %s", p.Name(), rep.Method, rep.Error, tt.method)
				}
			}
		})
	}
}

func TestAMethodOverrideFormTooLargeToCheckIsRefused(t *testing.T) {
	set, err := rules.Parse("test", "DELETE /users/ mfa", rules.Defaults{Action: rules.Allow})
	if err != nil {
		t.Fatal(err)
	}
	tr := &recordingTransport{}
	up, _ := url.Parse("http://upstream.internal")
	g, err := New(Config{
		Upstream: up, Transport: tr, Rules: set,
		ClientIP: clientip.New([]netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}),
		Identity: identity.NewHeader("X-Forwarded-User"),
		StepUps:  headerStepUps{now: time.Now()}, Challenge: stubChallenger{}, IdentityHeader: "X-Forwarded-User",
		Logger: slog.New(slog.DiscardHandler), Metrics: metrics.New(prometheus.NewRegistry(), "override"),
		MethodOverride: MethodOverrideForm, MethodOverrideMaxBody: 64,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, path, body string
		want             int
	}{
		{"a form over the bound where the method matters", "/users/42", "pad=" + strings.Repeat("x", 100) + "&_method=DELETE", http.StatusRequestEntityTooLarge},
		{"the same form where it does not", "/notes/7", "pad=" + strings.Repeat("x", 100) + "&_method=DELETE", http.StatusOK},
		{"a small form naming DELETE meets the DELETE rule", "/users/42", "_method=DELETE", http.StatusFound},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, tt.path, strings.NewReader(tt.body))
			r.RemoteAddr = "127.0.0.1:1234"
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			r.Header.Set("X-Forwarded-User", "alice")
			w := httptest.NewRecorder()
			g.ServeHTTP(w, r)
			if w.Code != tt.want {
				t.Errorf("got %d, want %d", w.Code, tt.want)
			}
		})
	}
}
