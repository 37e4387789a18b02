package mfa

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/stepgate/stepgate/mfa/jwks"
)

// Response types the client can complete (docs/design.md §7).
const (
	ResponseTypeTokenIDToken = "token id_token"
	ResponseTypeIDToken      = "id_token"
	ResponseTypeCode         = "code"
)

const (
	maxBody        = 1 << 20 // any PingOne response body
	maxCookies     = 10      // PingOne cookies kept per flow
	maxCookieBytes = 4 << 10 // name + value of one cookie
	maxOTP         = 64
	maxAssertion   = 64 << 10
	defaultTimeout = 10 * time.Second
	// maxRetryAfter caps how long one 429 can block us, so a broken header
	// cannot take the gateway out for days.
	maxRetryAfter = time.Hour
)

// idPattern is what a flow id (and the environment id) must look like
// before it is put into a URL path.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// Client drives PingOne's MFA-only pi.flow. It is safe for concurrent use;
// the only state it keeps between calls is the Retry-After block of a 429
// and the JWKS cache. Everything about one flow lives in Pending, so any
// Client built from the same Config can continue a flow another started.
//
// Choices where PingOne's behaviour is only inferred (docs/pingone.md):
//   - Every method that receives a flow returns it with a nil error whatever
//     its status, FAILED and unknown statuses included; the caller renders
//     Status. Errors are for calls that did not yield a flow.
//   - Flow actions always go to {AuthBase}/{EnvID}/flows/{id} ({AuthBase}/flows/{id}
//     on a custom domain). Links in a
//     flow are only kept (in Flow.Links) when they point there, and a
//     resume URL only when it is under the auth base.
//   - A 404 is KindFlowExpired on flow and resume calls, but KindInvalid on
//     authorize and token, where it means a wrong environment.
//   - A missing state in authorizeResponse is tolerated; a different one is
//     not (the response arrives on our own back-channel, and the nonce in
//     the ID token binds it to this flow).
//   - Calls refused locally (429 block, Limiter) send no request and are
//     not reported to Observe.
type Client struct {
	cfg    Config
	base   *url.URL // AuthBase, parsed, without trailing slash
	issuer string
	http   *http.Client
	keys   *jwks.Cache
	log    *slog.Logger

	mu           sync.Mutex
	blockedUntil time.Time // PingOne said 429; no calls before this
}

// New validates cfg and returns a Client.
func New(cfg Config) (*Client, error) {
	cfg.AuthBase = strings.TrimRight(cfg.AuthBase, "/")
	base, err := url.Parse(cfg.AuthBase)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" ||
		base.User != nil || base.RawQuery != "" || base.Fragment != "" || base.Opaque != "" {
		return nil, fmt.Errorf("pingone: config: AuthBase %q is not an absolute http(s) URL without query", cfg.AuthBase)
	}
	if !idPattern.MatchString(cfg.EnvID) {
		return nil, errors.New("pingone: config: EnvID is empty or not an id")
	}
	if cfg.ClientID == "" {
		return nil, errors.New("pingone: config: ClientID is empty")
	}
	if cfg.ClientSecret == "" {
		return nil, errors.New("pingone: config: ClientSecret is empty")
	}
	if cfg.ResponseType == "" {
		cfg.ResponseType = ResponseTypeTokenIDToken
	}
	switch cfg.ResponseType {
	case ResponseTypeTokenIDToken, ResponseTypeIDToken, ResponseTypeCode:
	default:
		return nil, fmt.Errorf("pingone: config: ResponseType %q is not one of %q, %q, %q",
			cfg.ResponseType, ResponseTypeTokenIDToken, ResponseTypeIDToken, ResponseTypeCode)
	}
	if cfg.Scopes == "" {
		cfg.Scopes = "openid profile email"
	}
	if !contains(strings.Fields(cfg.Scopes), "openid") {
		return nil, fmt.Errorf("pingone: config: Scopes %q lack openid; no ID token would be issued", cfg.Scopes)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = defaultTimeout
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{
		cfg:    cfg,
		base:   base,
		issuer: cfg.AuthBase + envSegment(cfg) + "/as",
		log:    cfg.Logger,
	}
	c.http = httpClient(cfg.HTTPClient)
	c.keys = jwks.New(jwks.Options{
		URL:     c.issuer + "/jwks",
		Client:  c.http,
		Timeout: cfg.Timeout,
		Now:     cfg.Now,
		Observe: func(code int, d time.Duration) { c.observe("jwks", code, d) },
	})
	return c, nil
}

// httpClient returns a copy of hc (or a fresh client) that never follows
// redirects and has no cookie jar: cookies are kept per flow in Pending, and
// a shared jar would mix flows of different users.
func httpClient(hc *http.Client) *http.Client {
	var out http.Client
	if hc != nil {
		out = *hc
	} else {
		out.Transport = &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          64,
			MaxIdleConnsPerHost:   16,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   5 * time.Second,
			ExpectContinueTimeout: time.Second,
		}
	}
	out.Jar = nil
	out.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &out
}

// Issuer is the PingOne issuer of this environment: {AuthBase}/{EnvID}/as,
// or {AuthBase}/as on a custom domain.
func (c *Client) Issuer() string { return c.issuer }

// envSegment is the environment's path below the auth base: "/{EnvID}", or
// nothing on a custom domain.
func envSegment(cfg Config) string {
	if cfg.CustomDomain {
		return ""
	}
	return "/" + url.PathEscape(cfg.EnvID)
}

// LoadKeys fetches PingOne's JWKS now (start-up and readiness).
func (c *Client) LoadKeys(ctx context.Context) error {
	if err := c.keys.Refresh(ctx); err != nil {
		return fmt.Errorf("pingone: load keys: %w", err)
	}
	return nil
}

// Ready reports whether PingOne's signing keys have been loaded once.
func (c *Client) Ready() bool { return c.keys.Ready() }

// Start calls /as/authorize with response_mode=pi.flow for one user and
// returns the first flow state and the Pending state to keep. The first
// status can be any of them, including COMPLETED (a policy bypass).
func (c *Client) Start(ctx context.Context, req StartRequest) (*Flow, *Pending, error) {
	const op = "authorize"
	if req.User == "" {
		return nil, nil, newError(op, KindInvalid, errors.New("no user"))
	}
	if req.Prompt != "" && req.Prompt != PromptLogin {
		return nil, nil, newError(op, KindInvalid, fmt.Errorf("prompt %q is not %q", req.Prompt, PromptLogin))
	}
	tpl, err := templateClaim(req.Template)
	if err != nil {
		return nil, nil, newError(op, KindInvalid, err)
	}
	p := &Pending{ACR: req.ACR}
	if p.Nonce, err = randomString(32); err != nil {
		return nil, nil, newError(op, KindUnavailable, err)
	}
	if p.State, err = randomString(32); err != nil {
		return nil, nil, newError(op, KindUnavailable, err)
	}
	now := c.cfg.Now()
	lht, err := c.loginHintToken(req.User, now)
	if err != nil {
		return nil, nil, newError(op, KindUnavailable, err)
	}
	reqJWT, err := c.requestObject(req.RemoteIP, tpl, now)
	if err != nil {
		return nil, nil, newError(op, KindUnavailable, err)
	}
	form := url.Values{
		"client_id":        {c.cfg.ClientID},
		"response_type":    {c.cfg.ResponseType},
		"response_mode":    {"pi.flow"},
		"scope":            {c.cfg.Scopes},
		"nonce":            {p.Nonce},
		"state":            {p.State},
		"login_hint_token": {lht},
		"request":          {reqJWT},
	}
	if req.ACR != "" {
		form.Set("acr_values", req.ACR)
	}
	if req.Prompt != "" {
		form.Set("prompt", req.Prompt)
	}
	if req.MaxAge > 0 {
		secs := int64((req.MaxAge + time.Second - 1) / time.Second)
		form.Set("max_age", strconv.FormatInt(secs, 10))
	}
	if c.cfg.ResponseType == ResponseTypeCode {
		if p.CodeVerifier, err = randomString(32); err != nil {
			return nil, nil, newError(op, KindUnavailable, err)
		}
		sum := sha256.Sum256([]byte(p.CodeVerifier))
		form.Set("code_challenge", base64.RawURLEncoding.EncodeToString(sum[:]))
		form.Set("code_challenge_method", "S256")
	}
	// POST keeps the tokens out of URLs and access logs (docs/pingone.md §2.1).
	r, err := c.call(ctx, op, p, http.MethodPost, c.endpoint("as", "authorize"),
		"application/x-www-form-urlencoded", []byte(form.Encode()), false)
	if err != nil {
		return nil, nil, err
	}
	f, err := c.flowFromReply(op, r)
	if err != nil {
		return nil, nil, err
	}
	if !idPattern.MatchString(f.ID) {
		return nil, nil, newError(op, KindUnavailable, errors.New("flow id is not an id"))
	}
	p.FlowID = f.ID
	c.note(p, f)
	c.log.LogAttrs(ctx, slog.LevelDebug, "pingone flow started",
		slog.String("flow_id", f.ID), slog.String("status", string(f.Status)))
	return f, p, nil
}

// Read fetches the flow's current state (GET /flows/{id}); it is how push
// confirmation is polled. Being idempotent, it is retried once after a
// transport error or a 5xx. It is not retried after a timeout: a PingOne
// that is slow now will be slow again, and the page must answer promptly.
func (c *Client) Read(ctx context.Context, p *Pending) (*Flow, error) {
	const op = "flow_read"
	if err := checkPending(op, p); err != nil {
		return nil, err
	}
	var lastErr error
	for attempt := 0; attempt < 2; attempt++ {
		r, err := c.call(ctx, op, p, http.MethodGet, c.flowURL(p.FlowID), "", nil, false)
		if err == nil {
			return c.flowAction(op, p, r)
		}
		lastErr = err
		if !retryable(err) || ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

// SelectDevice posts device.select. It also resends an OTP (select the same
// device again) and switches device (select another), docs/pingone.md §5.4.
func (c *Client) SelectDevice(ctx context.Context, p *Pending, deviceID string) (*Flow, error) {
	const op = "device_select"
	if deviceID == "" || len(deviceID) > maxField {
		return nil, newError(op, KindInvalid, errors.New("bad device id"))
	}
	body, _ := json.Marshal(map[string]any{"device": map[string]string{"id": deviceID}})
	return c.post(ctx, op, p, "device.select", body)
}

// CheckOTP posts otp.check. A wrong code is *Error{Kind: KindWrongOTP} with
// AttemptsRemaining when PingOne says it (else -1). When the failure limit
// is reached PingOne moves the flow to FAILED; the next Read shows it.
func (c *Client) CheckOTP(ctx context.Context, p *Pending, otp Secret) (*Flow, error) {
	const op = "otp_check"
	if otp == "" || len(otp) > maxOTP {
		return nil, newError(op, KindInvalid, errors.New("bad otp length"))
	}
	body, _ := json.Marshal(map[string]string{"otp": otp.Reveal()})
	return c.post(ctx, op, p, "otp.check", body)
}

// CheckAssertion posts assertion.check with the origin and the serialised
// WebAuthn credential the browser produced (a JSON string, docs/pingone.md §5.3).
func (c *Client) CheckAssertion(ctx context.Context, p *Pending, origin, assertion string) (*Flow, error) {
	const op = "assertion_check"
	if origin == "" || len(origin) > maxField || assertion == "" || len(assertion) > maxAssertion {
		return nil, newError(op, KindInvalid, errors.New("bad origin or assertion"))
	}
	body, _ := json.Marshal(map[string]string{"origin": origin, "assertion": assertion})
	return c.post(ctx, op, p, "assertion.check", body)
}

// Reset posts session.reset (the best-effort cancel, docs/pingone.md §5.4).
func (c *Client) Reset(ctx context.Context, p *Pending) (*Flow, error) {
	return c.post(ctx, "session_reset", p, "session.reset", []byte("{}"))
}

func (c *Client) post(ctx context.Context, op string, p *Pending, action string, body []byte) (*Flow, error) {
	if err := checkPending(op, p); err != nil {
		return nil, err
	}
	r, err := c.call(ctx, op, p, http.MethodPost, c.flowURL(p.FlowID),
		"application/vnd.pingidentity."+action+"+json", body, false)
	if err != nil {
		return nil, err
	}
	return c.flowAction(op, p, r)
}

// flowAction decodes a flow response to an action on p's flow.
//
// A FAILED flow is returned as (flow, nil): FAILED is a state the page
// renders, like any other, not a failure of the call.
func (c *Client) flowAction(op string, p *Pending, r *reply) (*Flow, error) {
	f, err := c.flowFromReply(op, r)
	if err != nil {
		return nil, err
	}
	if f.ID != p.FlowID {
		return nil, newError(op, KindUnavailable, errors.New("response is for another flow"))
	}
	c.note(p, f)
	return f, nil
}

func (c *Client) flowFromReply(op string, r *reply) (*Flow, error) {
	f, err := decodeFlow(r.body)
	if err != nil {
		e := newError(op, KindUnavailable, fmt.Errorf("decode flow: %w", err))
		e.HTTPStatus = r.status
		return nil, e
	}
	c.sanitise(f)
	return f, nil
}

// note records what a flow state tells us about the flow.
func (c *Client) note(p *Pending, f *Flow) {
	if isChallenge(f.Status) {
		p.Challenged = true
	}
}

// sanitise drops links and the resume URL unless they point at the
// configured auth base, so PingOne JSON can never make us (or the gateway)
// send a flow's cookies elsewhere.
func (c *Client) sanitise(f *Flow) {
	for name, href := range f.Links {
		if !c.onAuthBase(href) {
			delete(f.Links, name)
		}
	}
	if f.ResumeURL != "" && !c.onAuthBase(f.ResumeURL) {
		f.ResumeURL = ""
	}
}

// onAuthBase reports whether raw is under {AuthBase}/{EnvID}/ (a custom
// domain: {AuthBase}/) with the same
// scheme and host, no user info and no dot segments.
func (c *Client) onAuthBase(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil || u.User != nil || u.Opaque != "" || u.RawPath != "" || u.Fragment != "" {
		return false
	}
	if !strings.EqualFold(u.Scheme, c.base.Scheme) || !strings.EqualFold(u.Host, c.base.Host) {
		return false
	}
	prefix := c.base.Path + envSegment(c.cfg) + "/"
	if !strings.HasPrefix(u.Path, prefix) {
		return false
	}
	for _, seg := range strings.Split(u.Path, "/") {
		if seg == "." || seg == ".." {
			return false
		}
	}
	return true
}

// flowURL is the canonical flow URL. Action URLs are always built here
// rather than taken from _links: Pending (all that survives between the
// browser's requests) does not carry links, and in PingOne every link of a
// flow is this same URL anyway (docs/pingone.md §5.1).
func (c *Client) flowURL(flowID string) string {
	return c.endpoint("flows", flowID)
}

func (c *Client) endpoint(parts ...string) string {
	u := *c.base
	segs := slices.Clone(parts)
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	u.Path = c.base.Path + envSegment(c.cfg) + "/" + strings.Join(segs, "/")
	u.RawPath = ""
	return u.String()
}

// retryable reports whether a failed read may be tried again: a transport
// error or a 5xx, but not a timeout (see Read).
func retryable(err error) bool {
	var e *Error
	if !errors.As(err, &e) || e.Kind != KindUnavailable {
		return false
	}
	if e.HTTPStatus == 0 {
		return !errors.Is(e.Err, context.DeadlineExceeded)
	}
	return e.HTTPStatus >= 500
}

func checkPending(op string, p *Pending) error {
	if p == nil || !idPattern.MatchString(p.FlowID) {
		return newError(op, KindInvalid, errors.New("pending flow id missing or malformed"))
	}
	return nil
}

func newError(op string, kind ErrorKind, err error) *Error {
	return &Error{Op: op, Kind: kind, AttemptsRemaining: -1, Err: err}
}

// randomString returns n random bytes, base64url without padding.
func randomString(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
