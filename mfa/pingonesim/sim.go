// Package pingonesim is an in-process PingOne simulator: a real net/http
// handler that speaks the MFA-only, non-redirect (response_mode=pi.flow)
// surface of a PingOne environment — /as/authorize, the flows API, /as/resume,
// /as/token, /as/jwks and discovery — well enough that a client passing
// against it works against PingOne (see docs/pingone.md
// and README.md in this directory for every inferred choice).
//
// It exists for tests, `stepgate demo` and `stepgate simulate`. It must never
// be used as an identity provider for real traffic: its keys live in memory,
// its test API under /_sim/ hands out one-time passcodes and approves pushes
// for anyone who asks, and it has no notion of passwords.
package pingonesim

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for Options and Policy zero values.
const (
	DefaultTokenTTL        = time.Hour
	DefaultCodeTTL         = 60 * time.Second
	DefaultFlowIdle        = 15 * time.Minute
	DefaultOTPFailureCount = 3
	DefaultPushTimeout     = 40 * time.Second // PingOne's default (40 s to 150 s)
	// DefaultOTPCoolDown is how long a user is blocked from OTP methods
	// after OTPFailureCount wrong codes (SDK-MFA/TF-MFAPOL: 2 min).
	DefaultOTPCoolDown = 2 * time.Minute
	// Push limit defaults (SDK-MFA): 5 denied or ignored pushes within
	// 10 min block push for the user for 30 min.
	DefaultPushLimitCount    = 5
	DefaultPushLimitWindow   = 10 * time.Minute
	DefaultPushLimitDuration = 30 * time.Minute
	// DefaultTOTPGraceWindows is PingOne's TOTP grace period in 30 s
	// windows (TF-MFAPOL: 1–10, default 5).
	DefaultTOTPGraceWindows = 5
	// OTPLifetime is how long a delivered SMS/VOICE/EMAIL code stays valid.
	OTPLifetime = 5 * time.Minute
	// maxBody bounds every request body the simulator reads.
	maxBody = 64 << 10
	// maxInbox bounds the delivered-message log so a long demo stays flat.
	maxInbox = 1000
)

// Device selection modes and no-device behaviours of a Policy.
const (
	DefaultToFirst       = "DEFAULT_TO_FIRST"
	PromptToSelect       = "PROMPT_TO_SELECT"
	AlwaysDisplayDevices = "ALWAYS_DISPLAY_DEVICES"
	NoDeviceBypass       = "BYPASS"
	NoDeviceBlock        = "BLOCK"
)

// Options configures a Server. Zero values get the documented defaults.
type Options struct {
	Tenant Tenant
	Now    func() time.Time // nil = time.Now (or Clock.Now when Clock is set)
	// Clock, when set, supplies Now and enables POST /_sim/clock.
	Clock  *Clock
	Logger *slog.Logger // nil = discard

	IDTokenTTL     time.Duration // default 1h
	AccessTokenTTL time.Duration // default 1h
	CodeTTL        time.Duration // authorization code lifetime, default 60s
	FlowIdle       time.Duration // sliding idle expiry of a flow, default 15m

	// SigningKey, when set, is the first RSA signing key instead of a freshly
	// generated one. Generating 2048-bit keys costs 50 ms–1 s (more under
	// -race), so test suites that build many servers can share one key.
	SigningKey *rsa.PrivateKey
}

// Tenant is one PingOne environment: its applications, sign-on policies and users.
type Tenant struct {
	EnvID string
	// CustomDomain serves the environment as PingOne does on a custom
	// domain: at the root, without the /{EnvID} path segment, with issuer
	// {base}/as.
	CustomDomain bool
	RPID         string   // WebAuthn relying-party id, e.g. "localhost"
	Origins      []string // allowed WebAuthn origins; empty = any origin whose host is RPID
	// WebAuthnBase64URL sends the assertion options' challenge and
	// credential ids as base64url strings instead of PingOne's arrays of
	// signed bytes.
	WebAuthnBase64URL bool
	Apps              []App
	Policies          []Policy
	Users             []User
	// Templates are the environment's notification templates by name
	// (strong_authentication, transaction, ...). strong_authentication
	// gets built-in texts when the tenant does not set it. A request
	// object's pi.template picks one; without it, strong_authentication.
	Templates map[string]Template
}

// App is an OIDC application of the environment.
type App struct {
	ClientID, Secret string
	Name             string   // _embedded.application.name; default "Application {ClientID}"
	RedirectURIs     []string // optional; when set, a sent redirect_uri must be one of them
	PKCERequired     bool     // pkceEnforcement S256_REQUIRED
	Policies         []string // sign-on policy names assigned (acr_values must name one)
	AllowNoExp       bool     // accept a login_hint_token / request JWT without exp
	// JWKS (an inline JWKS document) and JWKSURL (fetched on each use,
	// 5 s timeout; PingOne requires https, the simulator also takes
	// http for loopback tests) hold the RSA keys that verify RS256/384/512
	// request objects and login_hint_tokens (SOURCES A9, B7).
	JWKS    string
	JWKSURL string
	// SupportUnsignedRequestObject accepts a request object with alg none;
	// RequireSignedRequestObject refuses an authorize without a signed
	// one. PingOne forbids setting both (A9); RequireSigned wins here.
	SupportUnsignedRequestObject bool
	RequireSignedRequestObject   bool
}

// Policy is an MFA-only sign-on policy.
type Policy struct {
	Name            string
	DeviceSelection string // DEFAULT_TO_FIRST (default) | PROMPT_TO_SELECT | ALWAYS_DISPLAY_DEVICES
	NoDevice        string // BYPASS | BLOCK (default BLOCK)
	// OTPFailureCount is the number of wrong OTPs, per flow and per user
	// across flows, before the flow fails and the user is blocked from OTP
	// methods for OTPCoolDown; default 3 (SOURCES A28).
	OTPFailureCount int
	// OTPCoolDown is the user's block after OTPFailureCount wrong codes;
	// 0 = DefaultOTPCoolDown, negative = no user block (PingOne's
	// "onetime authentication" mode, A28).
	OTPCoolDown time.Duration
	PushTimeout time.Duration // default 40 s, as PingOne's
	// Push limit (SDK-MFA, B13): PushLimitCount denied or timed-out
	// pushes within PushLimitWindow block push for PushLimitDuration.
	// Zero values get the defaults; a negative count disables the limit.
	PushLimitCount    int
	PushLimitWindow   time.Duration
	PushLimitDuration time.Duration
	// TOTPGraceWindows is how many 30 s windows a TOTP code is accepted
	// in, centred on the current one (odd: ±n/2; even: one more in the
	// past); default 5 (TF-MFAPOL), so ±2 steps. The centring is INFERRED.
	TOTPGraceWindows int
	// NumberMatching turns on push number matching: NumberMatchingSelect
	// or NumberMatchingEnter ("" = off). Where the flow carries the number
	// is INFERRED (numbermatch.go).
	NumberMatching string
}

// User is a PingOne user with ordered MFA devices (the first is the default).
type User struct {
	ID, Username    string
	DeviceSelection string // optional override of the policy's mode
	Devices         []Device
}

// Device is one paired MFA device.
type Device struct {
	ID, Type, Nickname string           // Type: SMS, VOICE, EMAIL, WHATSAPP, TOTP, MOBILE, FIDO2
	Phone, Email       string           // real values; flows show them masked
	TOTPSecret         []byte           // TOTP: RFC 6238 SHA1, 6 digits, 30 s step
	CredentialID       []byte           // FIDO2
	PublicKey          *ecdsa.PublicKey // FIDO2 (P-256, ES256)
}

// Message is an OTP (or push notification) the simulator "delivered".
type Message struct {
	DeviceID string `json:"device_id"`
	Type     string `json:"type"`
	OTP      string `json:"otp"`
	// Text is the message as the user reads it, rendered from the flow's
	// notification template: SMS and voice content (with the code), e-mail
	// "subject\n\nbody", push "title\nbody".
	Text string `json:"text"`
	// NumberMatching is the push's number-matching type ("" = none) and
	// NumberChoices the numbers a SELECT_NUMBER phone offers; the number
	// to match is shown only by the accessing device (the flow).
	NumberMatching string    `json:"number_matching,omitempty"`
	NumberChoices  []string  `json:"number_choices,omitempty"`
	FlowID         string    `json:"flow_id"`
	User           string    `json:"user"`
	SentAt         time.Time `json:"sent_at"`
}

// FlowInfo is what the simulator recorded about a flow, for assertions.
type FlowInfo struct {
	ID         string
	User       string // username
	Status     string
	RemoteIP   string // pi.remoteIp from the request JWT
	ACR        string // the policy that ran
	ClientID   string
	Challenged bool   // a factor was asked for (OTP, push or assertion)
	Prompt     string // the prompt parameter as sent
	RequestAlg string // alg of the request object ("" without one)
	// Template is the request object's pi.template (nil without one).
	Template *TemplateRequest
}

// Server is the simulator. It is an http.Handler and safe for concurrent use.
type Server struct {
	tenant   Tenant
	now      func() time.Time
	clock    *Clock
	log      *slog.Logger
	idTTL    time.Duration
	atTTL    time.Duration
	codeTTL  time.Duration
	flowIdle time.Duration
	requests atomic.Int64

	mu         sync.Mutex
	flows      map[string]*flow
	codes      map[string]*authCode
	inbox      []Message
	subs       []chan Message // Subscribe
	keys       []signingKey   // last is current
	faults     map[string]*Fault
	signCounts map[string]uint32 // FIDO2 device id -> last signature counter
	// locks is the per-user lockout state, by user id; bounded by the
	// tenant's users.
	locks map[string]*userLock
}

// userLock is what PingOne's MFA policy keeps per user: wrong OTPs and
// their cool-down, denied or ignored pushes and the push block.
type userLock struct {
	otpFailures      int
	otpBlockedUntil  time.Time
	pushFailures     []time.Time
	pushBlockedUntil time.Time
}

type signingKey struct {
	kid string
	key *rsa.PrivateKey
}

// New builds a Server with a fresh RSA signing key.
func New(opts Options) *Server {
	s := &Server{
		tenant:     cloneTenant(opts.Tenant),
		now:        opts.Now,
		clock:      opts.Clock,
		log:        opts.Logger,
		idTTL:      orDuration(opts.IDTokenTTL, DefaultTokenTTL),
		atTTL:      orDuration(opts.AccessTokenTTL, DefaultTokenTTL),
		codeTTL:    orDuration(opts.CodeTTL, DefaultCodeTTL),
		flowIdle:   orDuration(opts.FlowIdle, DefaultFlowIdle),
		flows:      map[string]*flow{},
		codes:      map[string]*authCode{},
		faults:     map[string]*Fault{},
		signCounts: map[string]uint32{},
		locks:      map[string]*userLock{},
	}
	if s.clock != nil {
		s.now = s.clock.Now
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	for i := range s.tenant.Policies {
		p := &s.tenant.Policies[i]
		if p.DeviceSelection == "" {
			p.DeviceSelection = DefaultToFirst
		}
		if p.NoDevice == "" {
			p.NoDevice = NoDeviceBlock
		}
		if p.OTPFailureCount <= 0 {
			p.OTPFailureCount = DefaultOTPFailureCount
		}
		if p.PushTimeout <= 0 {
			p.PushTimeout = DefaultPushTimeout
		}
		if p.OTPCoolDown == 0 {
			p.OTPCoolDown = DefaultOTPCoolDown
		}
		if p.PushLimitCount == 0 {
			p.PushLimitCount = DefaultPushLimitCount
		}
		if p.PushLimitWindow <= 0 {
			p.PushLimitWindow = DefaultPushLimitWindow
		}
		if p.PushLimitDuration <= 0 {
			p.PushLimitDuration = DefaultPushLimitDuration
		}
		if p.TOTPGraceWindows <= 0 {
			p.TOTPGraceWindows = DefaultTOTPGraceWindows
		}
	}
	if opts.SigningKey != nil {
		s.keys = []signingKey{{kid: newUUID(), key: opts.SigningKey}}
	} else {
		s.keys = []signingKey{newSigningKey()}
	}
	return s
}

func orDuration(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// cloneTenant copies the slices so the caller cannot change a running server.
func cloneTenant(t Tenant) Tenant {
	t.Origins = append([]string(nil), t.Origins...)
	t.Apps = append([]App(nil), t.Apps...)
	for i := range t.Apps {
		t.Apps[i].RedirectURIs = append([]string(nil), t.Apps[i].RedirectURIs...)
		t.Apps[i].Policies = append([]string(nil), t.Apps[i].Policies...)
	}
	t.Policies = append([]Policy(nil), t.Policies...)
	templates := defaultTemplates()
	for name, tpl := range t.Templates {
		c := Template{}
		for v, content := range tpl {
			c[v] = content
		}
		templates[name] = c
	}
	t.Templates = templates
	t.Users = append([]User(nil), t.Users...)
	for i := range t.Users {
		t.Users[i].Devices = append([]Device(nil), t.Users[i].Devices...)
	}
	return t
}

// Issuer is the issuer the simulator uses when reached at baseURL.
func (s *Server) Issuer(baseURL string) string {
	return strings.TrimSuffix(baseURL, "/") + s.envPath() + "/as"
}

// envPath is the environment's path prefix: "/{EnvID}", or "" on a custom
// domain.
func (s *Server) envPath() string {
	if s.tenant.CustomDomain {
		return ""
	}
	return "/" + s.tenant.EnvID
}

// Requests is the number of PingOne-surface requests served (not /_sim/).
func (s *Server) Requests() int64 { return s.requests.Load() }

// ServeHTTP routes /{env}/… to the PingOne surface and /_sim/… to the test API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/_sim" || strings.HasPrefix(r.URL.Path, "/_sim/") {
		s.serveSim(w, r)
		return
	}
	s.requests.Add(1)
	w.Header().Set("Correlation-Id", newUUID())
	rest, ok := strings.CutPrefix(r.URL.Path, s.envPath()+"/")
	if !ok {
		writeError(w, http.StatusNotFound, codeNotFound, "The requested resource was not found.")
		return
	}
	op, h := s.route(rest)
	if h == nil {
		writeError(w, http.StatusNotFound, codeNotFound, "The requested resource was not found.")
		return
	}
	if !s.applyFault(w, r, op) {
		return
	}
	h(w, r)
}

// route maps the path below /{env}/ to a fault op and a handler.
func (s *Server) route(rest string) (string, http.HandlerFunc) {
	switch rest {
	case "as/authorize":
		return "authorize", s.handleAuthorize
	case "as/resume":
		return "resume", s.handleResume
	case "as/token":
		return "token", s.handleToken
	case "as/jwks":
		return "jwks", s.handleJWKS
	case "as/.well-known/openid-configuration":
		return "discovery", s.handleDiscovery
	}
	if id, ok := strings.CutPrefix(rest, "flows/"); ok && id != "" && !strings.Contains(id, "/") {
		return "flows", func(w http.ResponseWriter, r *http.Request) { s.handleFlow(w, r, id) }
	}
	return "", nil
}

// baseURL is scheme://Host of the request, so the issuer follows however the
// simulator was reached (httptest port, demo address).
func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

func (s *Server) issuerFor(r *http.Request) string { return s.Issuer(baseURL(r)) }

// name is the application's name as flows embed it.
func (a *App) name() string {
	if a.Name != "" {
		return a.Name
	}
	return "Application " + a.ClientID
}

func (s *Server) findApp(clientID string) *App {
	for i := range s.tenant.Apps {
		if s.tenant.Apps[i].ClientID == clientID {
			return &s.tenant.Apps[i]
		}
	}
	return nil
}

func (s *Server) findPolicy(name string) *Policy {
	for i := range s.tenant.Policies {
		if s.tenant.Policies[i].Name == name {
			return &s.tenant.Policies[i]
		}
	}
	return nil
}

// findUser matches a PingOne user id or username exactly.
func (s *Server) findUser(idOrName string) *User {
	for i := range s.tenant.Users {
		u := &s.tenant.Users[i]
		if u.ID == idOrName || u.Username == idOrName {
			return u
		}
	}
	return nil
}

func (s *Server) findDevice(id string) (*User, *Device) {
	for i := range s.tenant.Users {
		u := &s.tenant.Users[i]
		for j := range u.Devices {
			if u.Devices[j].ID == id {
				return u, &u.Devices[j]
			}
		}
	}
	return nil, nil
}
