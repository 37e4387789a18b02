package mfa

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stepgate/stepgate/mfa/pingonesim"
)

// elsewhere is a server that must never be contacted; it records any hit
// and any cookie it is sent.
type elsewhere struct {
	*httptest.Server
	hits    atomic.Int64
	mu      sync.Mutex
	cookies []string
}

func newElsewhere(t *testing.T) *elsewhere {
	t.Helper()
	x := &elsewhere{}
	x.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		x.hits.Add(1)
		x.mu.Lock()
		x.cookies = append(x.cookies, r.Header.Get("Cookie"))
		x.mu.Unlock()
		w.Write([]byte(`{"id":"f","status":"COMPLETED","authorizeResponse":{"id_token":"a.b.c"}}`))
	}))
	t.Cleanup(x.Close)
	return x
}

func TestForeignLinksAreDropped(t *testing.T) {
	x := newElsewhere(t)
	e := newSimEnvWrapped(t, pingonesim.DemoTenant(), func(sim http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/flows/") {
				// A flow whose links and resume URL point off the auth host.
				id := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
				w.Header().Set("Content-Type", "application/json")
				w.Write([]byte(`{"id":"` + id + `","status":"OTP_REQUIRED","resumeUrl":"` + x.URL + `/resume",
					"_links":{"otp.check":{"href":"` + x.URL + `/flows/` + id + `"},"self":{"href":"http://` + r.Host + r.URL.Path + `"}}}`))
				return
			}
			sim.ServeHTTP(w, r)
		})
	}, nil)
	_, p := e.start("alice")
	f, err := e.client.Read(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := f.Links["otp.check"]; ok {
		t.Errorf("foreign link kept: %v", f.Links)
	}
	if _, ok := f.Links["self"]; !ok {
		t.Errorf("on-base link dropped: %v", f.Links)
	}
	if f.ResumeURL != "" {
		t.Errorf("foreign resume URL kept: %q", f.ResumeURL)
	}
}

func TestCompleteNeverResumesOffTheAuthBase(t *testing.T) {
	x := newElsewhere(t)
	e := newSimEnv(t, pingonesim.DemoTenant(), nil)
	f, p := e.start("dave")
	f.AuthorizeResponse = nil
	f.ResumeURL = x.URL + "/" + e.cfg.EnvID + "/as/resume?flowId=" + p.FlowID
	if _, err := e.client.Complete(context.Background(), p, f); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if n := x.hits.Load(); n != 0 {
		t.Errorf("foreign server hit %d times (cookies %q)", n, x.cookies)
	}
}

func TestRedirectsAreNeverFollowed(t *testing.T) {
	x := newElsewhere(t)
	e := newSimEnvWrapped(t, pingonesim.DemoTenant(), func(sim http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.URL.Path, "/flows/") {
				http.Redirect(w, r, x.URL+"/steal", http.StatusFound)
				return
			}
			sim.ServeHTTP(w, r)
		})
	}, nil)
	_, p := e.start("alice")
	_, err := e.client.Read(context.Background(), p)
	if ee := wantKind(t, err, KindUnavailable); ee.HTTPStatus != http.StatusFound {
		t.Errorf("HTTP status = %d, want 302", ee.HTTPStatus)
	}
	if _, err := e.client.SelectDevice(context.Background(), p, pingonesim.DemoAliceSMSID); err == nil {
		t.Error("a redirected action succeeded")
	}
	if n := x.hits.Load(); n != 0 {
		t.Errorf("redirect followed %d times", n)
	}
}

func TestResumeRedirectCarriesTheResponse(t *testing.T) {
	tests := []struct {
		name string
		rt   string
		// location builds the Location header from the real authorize response.
		location func(ar *AuthorizeResponse) string
	}{
		{"a code in the query", ResponseTypeCode, func(ar *AuthorizeResponse) string {
			return "https://app.example/cb?" + url.Values{"code": {ar.Code.Reveal()}, "state": {ar.State}}.Encode()
		}},
		{"an id token in the fragment", ResponseTypeIDToken, func(ar *AuthorizeResponse) string {
			return "https://app.example/cb#" + url.Values{"id_token": {ar.IDToken.Reveal()}, "state": {ar.State}}.Encode()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var loc atomic.Value
			loc.Store("")
			e := newSimEnvWrapped(t, pingonesim.DemoTenant(), func(sim http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if strings.HasSuffix(r.URL.Path, "/as/resume") {
						w.Header().Set("Location", loc.Load().(string))
						w.WriteHeader(http.StatusFound)
						return
					}
					sim.ServeHTTP(w, r)
				})
			}, func(c *Config) { c.ResponseType = tt.rt })
			f, p := e.start("dave")
			if f.AuthorizeResponse == nil {
				t.Fatal("bypass flow without authorizeResponse")
			}
			loc.Store(tt.location(f.AuthorizeResponse))
			f.AuthorizeResponse = nil
			res, err := e.client.Complete(context.Background(), p, f)
			if err != nil {
				t.Fatalf("Complete: %v", err)
			}
			if res.Subject != pingonesim.DemoDaveID {
				t.Errorf("subject = %q", res.Subject)
			}
		})
	}
}

func TestResumeRedirectWithAnErrorIsInvalid(t *testing.T) {
	e := newSimEnvWrapped(t, pingonesim.DemoTenant(), func(sim http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, "/as/resume") {
				w.Header().Set("Location", "https://app.example/cb?error=access_denied&state=x")
				w.WriteHeader(http.StatusFound)
				return
			}
			sim.ServeHTTP(w, r)
		})
	}, nil)
	f, p := e.start("dave")
	f.AuthorizeResponse = nil
	_, err := e.client.Complete(context.Background(), p, f)
	if ee := wantKind(t, err, KindInvalid); ee.Code != "access_denied" {
		t.Errorf("code = %q, want access_denied", ee.Code)
	}
}

func TestOversizedResponsesAreRefused(t *testing.T) {
	e := newSimEnvWrapped(t, pingonesim.DemoTenant(), func(sim http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.URL.Path, "/flows/") {
				w.Write([]byte(`{"id":"x","status":"OTP_REQUIRED","pad":"`))
				w.Write([]byte(strings.Repeat("a", maxBody)))
				w.Write([]byte(`"}`))
				return
			}
			sim.ServeHTTP(w, r)
		})
	}, nil)
	_, p := e.start("alice")
	_, err := e.client.Read(context.Background(), p)
	wantKind(t, err, KindUnavailable)
}

func TestCookiesFollowSetCookie(t *testing.T) {
	e := newSimEnvWrapped(t, pingonesim.DemoTenant(), func(sim http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/flows/") {
				if c, err := r.Cookie("extra"); err == nil && c.Value == "1" {
					http.SetCookie(w, &http.Cookie{Name: "extra", MaxAge: -1})
				} else {
					http.SetCookie(w, &http.Cookie{Name: "extra", Value: "1"})
				}
			}
			sim.ServeHTTP(w, r)
		})
	}, nil)
	_, p := e.start("alice")
	ctx := context.Background()
	if _, err := e.client.Read(ctx, p); err != nil {
		t.Fatal(err)
	}
	if got := cookieHeader(p.Cookies); !strings.Contains(got, "extra=1") || !strings.Contains(got, "ST=") {
		t.Fatalf("cookies after Set-Cookie = %q, want ST and extra", got)
	}
	// The second read sends extra=1, and the answer deletes it.
	if _, err := e.client.Read(ctx, p); err != nil {
		t.Fatal(err)
	}
	if got := cookieHeader(p.Cookies); strings.Contains(got, "extra") || !strings.Contains(got, "ST=") {
		t.Fatalf("cookies after deletion = %q, want only ST", got)
	}
}

func TestLogsCarryNoSecrets(t *testing.T) {
	var mu sync.Mutex
	var buf strings.Builder
	e := newSimEnv(t, pingonesim.DemoTenant(), func(c *Config) {
		c.Logger = slog.New(slog.NewJSONHandler(lockedWriter{&mu, &buf}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	ctx := context.Background()
	_, p := e.start("alice")
	if _, err := e.client.SelectDevice(ctx, p, pingonesim.DemoAliceSMSID); err != nil {
		t.Fatal(err)
	}
	otp := e.lastOTP("alice", pingonesim.DemoAliceSMSID)
	f, err := e.client.CheckOTP(ctx, p, otp)
	if err != nil {
		t.Fatal(err)
	}
	res := e.complete(p, f)
	mu.Lock()
	logs := buf.String()
	mu.Unlock()
	if !strings.Contains(logs, "pingone call") {
		t.Fatalf("no call logs captured: %q", logs)
	}
	secrets := map[string]string{"otp": otp.Reveal(), "id token": res.IDToken.Reveal(), "client secret": pingonesim.DemoClientSecret, "nonce": p.Nonce}
	for _, c := range p.Cookies {
		secrets["cookie "+c.Name] = c.Value
	}
	for what, s := range secrets {
		if s != "" && strings.Contains(logs, s) {
			t.Errorf("logs contain the %s", what)
		}
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func TestConcurrentFlowsOnOneClient(t *testing.T) {
	e := newSimEnv(t, customTenant(), nil)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			f, p, err := e.client.Start(ctx, StartRequest{User: "erin"})
			if err != nil {
				errs <- err
				return
			}
			if f, err = e.client.Read(ctx, p); err != nil {
				errs <- err
				return
			}
			if f.Status != StatusOTPRequired {
				errs <- fmt.Errorf("status %s", f.Status)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
