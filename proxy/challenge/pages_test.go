package challenge

import (
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stepgate/stepgate/mfa"
	"github.com/stepgate/stepgate/session"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func render(t *testing.T, p *Pages, acceptLanguage string, v *view) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, "/.stepgate/challenge", nil)
	if acceptLanguage != "" {
		r.Header.Set("Accept-Language", acceptLanguage)
	}
	w := httptest.NewRecorder()
	p.write(w, r, http.StatusOK, v)
	return w
}

func TestMessagesFollowAcceptLanguage(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "messages", "de.json"), `{"title": "Bestätigen Sie Ihre Identität", "start_button": "Weiter"}`)
	writeFile(t, filepath.Join(dir, "messages", "fr-ca.json"), `{"title": "Confirmez votre identité"}`)
	p, err := NewPages(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, header, wantTitle, wantLang string
	}{
		{"no header is English", "", "Verify it&#39;s you", "en"},
		{"an exact tag", "de", "Bestätigen Sie Ihre Identität", "de"},
		{"a region falls back to its language", "de-AT", "Bestätigen Sie Ihre Identität", "de"},
		{"a regional catalogue matches its full tag", "fr-CA", "Confirmez votre identité", "fr-ca"},
		{"the highest q-value wins", "en;q=0.4, de;q=0.9", "Bestätigen Sie Ihre Identität", "de"},
		{"an unknown language is English", "ja, ko;q=0.8", "Verify it&#39;s you", "en"},
		{"garbage is English", ";;;q=x,,", "Verify it&#39;s you", "en"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := render(t, p, tt.header, &view{State: "start", AttemptsLeft: -1})
			body := w.Body.String()
			if !strings.Contains(body, "<h1>"+tt.wantTitle+"</h1>") {
				t.Errorf("title not %q:\n%s", tt.wantTitle, body)
			}
			if !strings.Contains(body, `<html lang="`+tt.wantLang+`">`) {
				t.Errorf("lang attribute not %q", tt.wantLang)
			}
		})
	}
	// A key the catalogue lacks falls back to English, never to the raw key.
	w := render(t, p, "de", &view{State: "start", AttemptsLeft: -1})
	if !strings.Contains(w.Body.String(), "This page needs a recent extra check") {
		t.Error("a key missing from the German catalogue did not fall back to English")
	}
	if !strings.Contains(w.Body.String(), ">Weiter</button>") {
		t.Error("the German button label was not used")
	}
}

func TestTemplatesDirReplacesThePage(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "page.html"), `<!doctype html><title>ACME</title><main data-state="{{.State}}">{{.T "title"}} · ACME</main>`)
	p, err := NewPages(dir)
	if err != nil {
		t.Fatal(err)
	}
	body := render(t, p, "", &view{State: "start"}).Body.String()
	if !strings.Contains(body, "Verify it&#39;s you · ACME") {
		t.Errorf("custom page not used: %s", body)
	}
}

func TestBadTemplatesDirIsAStartupError(t *testing.T) {
	for _, tt := range []struct{ name, file, content, want string }{
		{"a catalogue that is not JSON", "messages/de.json", `{"title": `, "de.json"},
		{"a page that does not parse", "page.html", `{{if}}`, "parse template"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, tt.file), tt.content)
			if _, err := NewPages(dir); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewPages: %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}

func TestPagesAreHardened(t *testing.T) {
	p, err := NewPages("")
	if err != nil {
		t.Fatal(err)
	}
	w := render(t, p, "", &view{State: "otp", AttemptsLeft: -1})
	h := w.Header()
	for name, want := range map[string]string{
		"X-Frame-Options":        "DENY",
		"Cache-Control":          "no-store",
		"X-Content-Type-Options": "nosniff",
		"Content-Type":           "text/html; charset=utf-8",
	} {
		if got := h.Get(name); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	csp := h.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "frame-ancestors 'none'", "form-action 'self'", "base-uri 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") {
		t.Errorf("CSP allows inline code: %q", csp)
	}
	nonce := regexp.MustCompile(`script-src 'nonce-([A-Za-z0-9_-]{22})'`).FindStringSubmatch(csp)
	if nonce == nil {
		t.Fatalf("CSP has no 128-bit base64url script nonce: %q", csp)
	}
	body := w.Body.String()
	if !strings.Contains(body, `<script src="/.stepgate/assets/stepgate.js" nonce="`+nonce[1]+`">`) {
		t.Error("the page's script does not carry the CSP nonce")
	}
	if strings.Count(body, "<script") != 1 {
		t.Error("the page has a script besides the nonced external one")
	}
	// A new nonce for every page.
	if again := render(t, p, "", &view{State: "otp"}).Header().Get("Content-Security-Policy"); again == csp {
		t.Error("two pages share a CSP nonce")
	}
}

func TestRetryTextRoundsUpAndNeverSaysZero(t *testing.T) {
	p, err := NewPages("")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		wait time.Duration
		want string
	}{
		{0, "Wait a moment, then try again."},
		{-time.Second, "Wait a moment, then try again."},
		{time.Millisecond, "You can try again in 1 s."},
		{59 * time.Second, "You can try again in 59 s."},
		{59*time.Second + time.Millisecond, "You can try again in 1 min."},
		{60 * time.Second, "You can try again in 1 min."},
		{61 * time.Second, "You can try again in 2 min."},
		{10 * time.Minute, "You can try again in 10 min."},
	} {
		body := render(t, p, "", &view{State: "error", Message: "rate_limited", RetryAfter: tt.wait}).Body.String()
		_, after, found := strings.Cut(body, `<p id="retry">`)
		got, _, _ := strings.Cut(after, "</p>")
		if !found || got != tt.want {
			t.Errorf("wait %v: retry line %q (present %v), want %q", tt.wait, got, found, tt.want)
		}
		// One wait, said once: never "a moment" beside a number (issue 16).
		if tt.wait > 0 && strings.Contains(body, "moment") {
			t.Errorf("wait %v: the 429 page says both a moment and %q", tt.wait, got)
		}
	}
}

func TestDevicesThatWouldReadTheSameAreToldApart(t *testing.T) {
	h := &Handler{}
	flow := &mfa.Flow{Status: mfa.StatusDeviceSelectionRequired, Devices: []mfa.Device{
		{ID: "a", Type: "SMS", Target: "+1 •••• 1234", Nickname: "Phone"},
		{ID: "b", Type: "SMS", Target: "+1 •••• 1234", Nickname: "Phone"},
		{ID: "c", Type: "SMS", Target: "+1 •••• 9999", Nickname: "Phone"},
		{ID: "d", Type: "MOBILE", Nickname: "Phone"},
	}}
	v := h.flowView(&session.Flow{}, flow)
	p, err := NewPages("")
	if err != nil {
		t.Fatal(err)
	}
	body := render(t, p, "", v).Body.String()
	labels := regexp.MustCompile(`<span class="device-type">([^<]*)</span>`).FindAllStringSubmatch(body, -1)
	var got []string
	for _, l := range labels {
		got = append(got, l[1])
	}
	want := []string{"Text message (1 of 2)", "Text message (2 of 2)", "Text message", "Phone app notification"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("device labels = %q, want %q", got, want)
	}
	for _, action := range []string{">Send code<", ">Send push<"} {
		if !strings.Contains(body, action) {
			t.Errorf("no button that says %q", action)
		}
	}
}

// WCAG 1.4.11: the focus ring must reach 3:1 against the white card.
func TestFocusRingContrastOnWhite(t *testing.T) {
	css, err := builtin.ReadFile("assets/stepgate.css")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`:focus-visible\{outline:\d+px solid #([0-9a-fA-F]{6})`).FindSubmatch(css)
	if m == nil {
		t.Fatal("no :focus-visible outline colour in stepgate.css")
	}
	lum := func(hex string) float64 {
		var rgb [3]float64
		for i := range rgb {
			var v int
			fmt.Sscanf(hex[2*i:2*i+2], "%02x", &v)
			c := float64(v) / 255
			if c <= 0.03928 {
				rgb[i] = c / 12.92
			} else {
				rgb[i] = math.Pow((c+0.055)/1.055, 2.4)
			}
		}
		return 0.2126*rgb[0] + 0.7152*rgb[1] + 0.0722*rgb[2]
	}
	if ratio := (1 + 0.05) / (lum(string(m[1])) + 0.05); ratio < 3 {
		t.Errorf("focus ring #%s has contrast %.2f:1 on white, want at least 3:1", m[1], ratio)
	} else {
		t.Logf("focus ring #%s: %.2f:1 on white", m[1], ratio)
	}
}
