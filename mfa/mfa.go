// Package mfa is stepgate's client for PingOne's MFA-only, non-redirect flow
// (response_mode=pi.flow): it mints the login_hint_token and request JWTs,
// calls /as/authorize, drives the flows API, completes the flow and verifies
// the resulting ID token.
//
// It never renders anything and never knows about the gateway's HTTP
// handlers. All state needed to continue a flow lives in Pending, which the
// caller seals into a browser cookie, so any replica can continue any flow.
package mfa

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// Secret is a string that must never be logged (client secret, OTP, token).
type Secret string

// LogValue redacts the secret.
func (Secret) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// String redacts the secret so that fmt cannot print it by mistake.
func (Secret) String() string { return "[redacted]" }

// Reveal returns the secret itself, for the one place that must send it.
func (s Secret) Reveal() string { return string(s) }

// Config configures a Client. Zero values get the documented defaults.
type Config struct {
	AuthBase string // e.g. https://auth.pingone.com or a custom domain; no trailing slash
	EnvID    string
	// CustomDomain says AuthBase is the environment's PingOne custom domain
	// (https://sso.example.com): PingOne then serves the environment at the
	// domain's root, without the {EnvID} path segment, and issues tokens
	// as {AuthBase}/as.
	CustomDomain bool
	ClientID     string
	ClientSecret Secret
	// RequestKey, when set, signs the request object (RS256 or ES256)
	// instead of HS256 with the client secret. The login_hint_token stays
	// HS256 with the secret.
	RequestKey   *RequestKey
	Scopes       string        // default "openid profile email"
	ResponseType string        // "token id_token" (default), "id_token" or "code"
	Timeout      time.Duration // per call, default 10s
	HTTPClient   *http.Client  // default: own transport; redirects are never followed
	Now          func() time.Time
	Logger       *slog.Logger
	// Limiter caps calls to PingOne (docs/design.md §8): a *rate.Limiter for this
	// process, or a cap shared by every replica; nil means no cap.
	Limiter interface{ Allow() bool }
	// Observe, if set, is called once per PingOne call: op is one of
	// authorize, flow_read, device_select, otp_check, assertion_check,
	// session_reset, resume, token, jwks; code is the HTTP status or 0 on a
	// transport error.
	Observe func(op string, code int, d time.Duration)
	// Tracer, optional, records a client span per PingOne call (its op,
	// host and status; never the URL or a body): nil means traces are off.
	Tracer trace.Tracer
}

// Status is a PingOne flow status.
type Status string

const (
	StatusDeviceSelectionRequired  Status = "DEVICE_SELECTION_REQUIRED"
	StatusOTPRequired              Status = "OTP_REQUIRED"
	StatusPushConfirmationRequired Status = "PUSH_CONFIRMATION_REQUIRED"
	StatusPushConfirmationTimedOut Status = "PUSH_CONFIRMATION_TIMED_OUT"
	StatusAssertionRequired        Status = "ASSERTION_REQUIRED"
	StatusCompleted                Status = "COMPLETED"
	StatusFailed                   Status = "FAILED"
)

// Cookie is one cookie PingOne set on a flow (ST and any other).
type Cookie struct {
	Name, Value string
}

// Pending is the complete client-side state of one flow. The gateway seals it
// into the browser's flow cookie and restores it on any replica.
type Pending struct {
	FlowID       string
	Cookies      []Cookie
	Nonce        string
	State        string
	CodeVerifier string // PKCE verifier, response_type=code only
	ACR          string // acr_values requested, checked against the ID token
	// Challenged is set once the flow has been seen in a state that asks the
	// user for a factor (OTP, push, assertion). A flow that completes without
	// it is a PingOne "bypass".
	Challenged bool
}

// Device is one MFA device offered by a flow.
type Device struct {
	ID       string
	Type     string // SMS, VOICE, EMAIL, TOTP, MOBILE, FIDO2, ...
	Target   string // masked phone or e-mail as PingOne sent it; may be empty
	Nickname string
}

// Flow is a typed view of a PingOne flow object.
type Flow struct {
	ID               string
	Status           Status
	Devices          []Device
	SelectedDeviceID string
	Links            map[string]string // link name -> href
	// AssertionOptions is publicKeyCredentialRequestOptions as a JSON
	// object, normalised from PingOne's string or object form.
	AssertionOptions  json.RawMessage
	ExpiresAt         time.Time // zero when PingOne did not say
	ResumeURL         string
	AuthorizeResponse *AuthorizeResponse
	UserID            string
	// PushNumber is the number the user must pick or type on the phone
	// when the tenant uses push number matching (SOURCES C3). Where PingOne
	// puts it is not documented: the client reads numberMatching.number
	// (a string or an integer, 1–8 digits), the simulator's INFERRED shape;
	// "" when absent or not digits.
	PushNumber string
}

// AuthorizeResponse is the pi.flow authorizeResponse object.
type AuthorizeResponse struct {
	Code        Secret
	AccessToken Secret
	IDToken     Secret
	TokenType   string
	Scope       string
	State       string
	ExpiresIn   int
}

// StartRequest starts a step-up for one user.
type StartRequest struct {
	User     string        // login_hint_token sub: PingOne user id or username
	RemoteIP string        // pi.remoteIp in the request JWT
	ACR      string        // acr_values; "" sends none
	MaxAge   time.Duration // max_age; 0 sends none
	// Template, when set, is sent as pi.template in the request JWT: the
	// notification template PingOne renders into the SMS, e-mail, voice
	// or push message (transaction approval, SOURCES C1).
	Template *Template
	// Prompt is the OIDC prompt parameter: "" sends none, "login" asks
	// for a fresh authentication. Other values are refused.
	Prompt string
}

// PromptLogin is the only Prompt value the client sends.
const PromptLogin = "login"

// Template is a PingOne notification template reference with its variables
// (pi.template, SOURCES C1). Name is the template (e.g. "transaction"),
// Variant one of its variants ("" = the default content), Variables the
// values of its ${name} placeholders. Values longer than MaxTemplateValue
// characters are cut and control characters become spaces; names and
// variants that do not fit PingOne's limits are refused.
type Template struct {
	Name      string
	Variant   string
	Variables map[string]string
}

// Result is a verified completion.
type Result struct {
	Subject  string // ID token sub (PingOne user id)
	ACR      string
	AMR      []string
	AuthTime time.Time // auth_time claim (PingOne's clock); zero if absent
	Expiry   time.Time // ID token exp
	IDToken  Secret
	// MFA reports whether the user passed an MFA step (not a bypass).
	MFA bool
}
