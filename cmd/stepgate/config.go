package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/stepgate/stepgate/mfa"
	"github.com/stepgate/stepgate/proxy"
	"github.com/stepgate/stepgate/proxy/clientip"
	"github.com/stepgate/stepgate/proxy/extauthz"
	"github.com/stepgate/stepgate/proxy/forwardauth"
	"github.com/stepgate/stepgate/proxy/identity"
	"github.com/stepgate/stepgate/proxy/rules"
	"github.com/stepgate/stepgate/session"
	"github.com/stepgate/stepgate/signals"
	"github.com/stepgate/stepgate/store"
	"github.com/stepgate/stepgate/tracing"
)

// config is every STEPGATE_ environment variable (docs/design.md §9). Loading (this
// struct) is kept apart from validation (validate), which builds the typed
// values the program runs on.
//
// It is also the configuration reference: docs/configuration.md is generated
// from these fields (their env tags, types and doc comments; a comment line
// "Default: …" describes a default the tag cannot hold). After a change run
// go generate ./cmd/stepgate; TestConfigurationReferenceIsCurrent fails until
// then.
//
//go:generate go run gen_configdoc.go
type config struct {
	// The app: absolute `http(s)://host[:port][/base]`, no query, fragment or credentials. Not
	// needed when stepgate only answers a front proxy (see [Front
	// doors](front-doors.md#front-doors-behind-nginx-caddy-traefik-envoy-gateway-istio)).
	// Default: required with the `proxy` front door.
	Upstream string `env:"UPSTREAM"`

	// The `Host` header sent to the app, `host[:port]`. The client's `Host` is never forwarded by
	// default (it goes in `X-Forwarded-Host`): an app that routes by `Host` could otherwise be
	// reached through rules written for another site.
	// Default: empty: the host of `STEPGATE_UPSTREAM`.
	UpstreamHost string `env:"UPSTREAM_HOST"`

	// Send the client's `Host` to the app instead (only for an app that needs it and serves one
	// site; cannot be combined with `STEPGATE_UPSTREAM_HOST`).
	PreserveHost bool `env:"PRESERVE_HOST" envDefault:"false"`

	// PingOne environment ID (UUID).
	PingOneEnvID string `env:"PINGONE_ENV_ID,required"`

	// PingOne application (OIDC, MFA-only policy) client ID.
	PingOneClientID string `env:"PINGONE_CLIENT_ID,required"`

	// Its client secret; also signs the `login_hint_token` and (unless
	// `STEPGATE_PINGONE_REQUEST_KEY_FILE` is set) the `request` JWT (HS256). At least 8
	// characters.
	PingOneClientSecret string `env:"PINGONE_CLIENT_SECRET,required" secret:"true"`

	// Comma-separated base64 keys, 32 bytes each. The first seals, all open: prepend a new key to
	// rotate without logging anyone out, drop the old one after `MFA_MAX_AGE` (several replicas:
	// roll in two phases, see [Running several replicas](replicas.md#running-several-replicas)).
	// Generate with `openssl rand -base64 32`.
	CookieKeys string `env:"COOKIE_KEYS,required" secret:"true"`

	// Proxy listener.
	Listen string `env:"LISTEN" envDefault:":8080"`

	// Admin listener: `/metrics`, `/healthz`, `/readyz`, optional pprof. Never expose it publicly.
	AdminListen string `env:"ADMIN_LISTEN" envDefault:":9090"`

	// `https://` only, except a loopback host (`http://127.0.0.1:8081`, a local simulator).
	// Regional host (`https://auth.pingone.eu`, `.ca`, `.asia`, `.com.au`) or the environment's
	// custom domain (`https://sso.example.com`, with `STEPGATE_PINGONE_CUSTOM_DOMAIN=true`).
	PingOneAuthBase string `env:"PINGONE_AUTH_BASE" envDefault:"https://auth.pingone.com"`

	// `true` when `PINGONE_AUTH_BASE` is a PingOne custom domain: PingOne then serves the
	// environment at the domain's root (`/as/authorize`, `/flows/{id}`, no environment id in
	// paths) and its issuer is `{AUTH_BASE}/as`. A wrong setting fails closed: PingOne answers
	// 404, the signing keys never load and `/readyz` stays 503.
	PingOneCustomDomain bool `env:"PINGONE_CUSTOM_DOMAIN" envDefault:"false"`

	// Default sign-on policy name(s) sent as `acr_values` and required in the token's `acr`; a
	// rule's `acr=` overrides it.
	PingOneACRValues string `env:"PINGONE_ACR_VALUES"`

	// Scopes requested.
	PingOneScopes string `env:"PINGONE_SCOPES" envDefault:"openid profile email"`

	// `token id_token`, `id_token`, or `code` (PKCE S256 plus the token endpoint).
	PingOneResponseType string `env:"PINGONE_RESPONSE_TYPE" envDefault:"token id_token"`

	// Per-call timeout to PingOne (1ms–2m).
	PingOneTimeout time.Duration `env:"PINGONE_TIMEOUT" envDefault:"10s"`

	// Global cap on calls to PingOne per second (burst 2×+1).
	PingOneRateLimit float64 `env:"PINGONE_RATE_LIMIT" envDefault:"50"`

	// PEM private key (RSA ≥ 2048 bits → RS256, or P-256 → ES256) that signs the `request` JWT
	// instead of HS256 with the client secret; its public JWKS is served on the admin listener at
	// `/jwks.json`. See [PingOne request object](pingone-setup.md#pingone-request-object).
	PingOneRequestKey string `env:"PINGONE_REQUEST_KEY_FILE"`

	// Window of the abuse limits `STEPGATE_LIMIT_*` ([design §8](design.md)); each answers 429 with
	// `Retry-After`.
	LimitWindow time.Duration `env:"LIMIT_WINDOW" envDefault:"10m"`

	// Challenge starts per user per window.
	LimitStartsPerUser int `env:"LIMIT_STARTS_PER_USER" envDefault:"5"`

	// Challenge starts per client IP (IPv6: per /64) per window.
	LimitStartsPerIP int `env:"LIMIT_STARTS_PER_IP" envDefault:"20"`

	// OTP checks per user per window (on top of PingOne's per-flow failure limit).
	LimitOTPPerUser int `env:"LIMIT_OTP_PER_USER" envDefault:"10"`

	// Device selections and resends (each sends an SMS, e-mail or push) per user per window.
	LimitSendsPerUser int `env:"LIMIT_SENDS_PER_USER" envDefault:"10"`

	// Rules, separated by `;` or newlines (see [Rules](rules.md#rules)). Rules that protect
	// nothing are refused unless `STEPGATE_ALLOW_UNPROTECTED=true`.
	Rules string `env:"RULES"`

	// A rules file, one rule per line, `#` comments. Not together with `STEPGATE_RULES`.
	RulesFile string `env:"RULES_FILE"`

	// Action where no rule matches: `allow`, `deny` or `mfa`.
	DefaultAction string `env:"DEFAULT_ACTION" envDefault:"allow"`

	// Start although nothing is protected (no `mfa`, `approve` or `deny` rule and an `allow`
	// default). Without it such a configuration is refused: it is usually a typo or a rules file
	// that did not load.
	AllowUnprotected bool `env:"ALLOW_UNPROTECTED" envDefault:"false"`

	// Default freshness of a step-up for `mfa` rules (`max_age=` overrides).
	MFAMaxAge time.Duration `env:"MFA_MAX_AGE" envDefault:"1h"`

	// Fold ASCII case for matching, and refuse Windows alias spellings (trailing dots, 8.3 names,
	// `::$DATA`) — for IIS-style apps.
	CaseInsensitive bool `env:"CASE_INSENSITIVE_PATHS" envDefault:"false"`

	// Where the upstream user comes from: `header` or `jwt` ([design §4](design.md)).
	Identity string `env:"IDENTITY" envDefault:"header"`

	// Header mode: the user, believed only from trusted peers.
	IdentityHeader string `env:"IDENTITY_HEADER" envDefault:"X-Forwarded-User"`

	// Comma-separated identity-family headers (e.g. `Remote-User,X-Auth-Request-Email`) the app
	// receives from trusted peers. Every other `Remote-*`, `X-Remote-*`, `X-Auth-Request-*`,
	// `X-Webauth-*`, `X-Authentik-*` and `X-Forwarded-User/-Email/-Preferred-Username/-Groups`
	// header is removed from every peer, except the identity header and the
	// `STEPGATE_PINGONE_USER_FROM` header. List one only when the hop before stepgate always sets
	// it.
	// Default: none.
	PassIdentityHeaders string `env:"PASS_IDENTITY_HEADERS"`

	// CIDRs whose identity headers, identity JWTs and `X-Forwarded-For` are believed; from any
	// other peer they are removed or ignored. With the `forward-auth` or `ext-authz` front door it
	// must be set explicitly (the front proxies or Envoys: only they are believed about the
	// original request).
	// Default: `127.0.0.1/32,::1/128`.
	TrustedProxies string `env:"TRUSTED_PROXIES"`

	// Comma-separated: `proxy` (forward to `STEPGATE_UPSTREAM`), `forward-auth` (answer nginx
	// `auth_request`, Traefik `forwardAuth`, Caddy `forward_auth` at `/.stepgate/auth`),
	// `ext-authz` (Envoy's HTTP ext_authz at `/.stepgate/ext-authz/…`, and gRPC on
	// `STEPGATE_AUTHZ_GRPC_LISTEN`). A door not listed is not served.
	FrontDoors string `env:"FRONT_DOORS" envDefault:"proxy"`

	// The method override the app honours, so that rules match the method it will act on: `none`
	// (override headers are stripped; a `_method` field is refused in any query, in a POST form
	// on a path whose rules name methods, and in every held request), `header` (a POST's
	// `X-HTTP-Method-Override` names the method; the app receives it in that one spelling) or
	// `form` (a POST form's `_method` field names it, as Rails, Laravel and Symfony read it; the
	// proxy door reads the form where the method matters, up to `STEPGATE_APPROVE_MAX_BODY`).
	// `form` cannot be used with the `forward-auth` front door, which never sees a body.
	MethodOverride string `env:"METHOD_OVERRIDE" envDefault:"none"`

	// With `ext-authz`: address of the gRPC `envoy.service.auth.v3.Authorization/Check` listener
	// (e.g. `:9191`); TLS with `STEPGATE_TLS_CERT_FILE` when set.
	// Default: empty: no gRPC.
	AuthzGRPCListen string `env:"AUTHZ_GRPC_LISTEN"`

	// With `ext-authz`: Envoy forwards request bodies (`with_request_body`; Envoy Gateway
	// `bodyToExtAuth`; Istio `includeRequestBodyInCheck`). Required for `approve` rules with
	// ext_authz; `approve` rules are refused at start-up with `forward-auth`, which never sees a
	// body.
	AuthzWithBody bool `env:"AUTHZ_WITH_BODY" envDefault:"false"`

	// JWT mode: header holding the token (`Bearer` scheme for `Authorization`, the raw token
	// otherwise).
	IdentityJWTHeader string `env:"IDENTITY_JWT_HEADER" envDefault:"Authorization"`

	// JWKS of the upstream IdP.
	// Default: empty; required with `STEPGATE_IDENTITY=jwt`.
	IdentityJWKSURL string `env:"IDENTITY_JWKS_URL"`

	// Expected `iss`.
	// Default: empty; required with `STEPGATE_IDENTITY=jwt`.
	IdentityIssuer string `env:"IDENTITY_ISSUER"`

	// Expected `aud`.
	// Default: empty; required with `STEPGATE_IDENTITY=jwt`.
	IdentityAudience string `env:"IDENTITY_AUDIENCE"`

	// Where a user without a (valid) identity signs in again, shown as a button on the page that
	// says so (and as `signin_url` in JSON): a path on this host or an https URL; `{rd}` is
	// replaced by the query-escaped path the user asked for. oauth2-proxy:
	// `/oauth2/sign_in?rd={rd}`.
	// Default: empty: no button.
	IdPSignInURL string `env:"IDP_SIGNIN_URL"`

	// Claim that names the user (e.g. `email`).
	IdentityClaim string `env:"IDENTITY_CLAIM" envDefault:"sub"`

	// JWT mode: believe a verified token from any peer, not only from `TRUSTED_PROXIES`. Only for
	// edges whose addresses you cannot list (IAP, Cloudflare Access), with the app unreachable any
	// other way.
	IdentityJWTAnyPeer bool `env:"IDENTITY_JWT_ANY_PEER" envDefault:"false"`

	// Where the PingOne user comes from: `header:NAME` (header mode; e.g.
	// `header:X-Forwarded-Email`) or `claim:NAME` (jwt mode; e.g. `claim:email`). See [The PingOne
	// user](getting-started.md#the-pingone-user).
	// Default: empty: the upstream user.
	PingOneUserFrom string `env:"PINGONE_USER_FROM"`

	// `username` or `id` (a PingOne user id, which must be a UUID).
	PingOneUserKind string `env:"PINGONE_USER_KIND" envDefault:"username"`

	// Comma-separated, applied in order: `lower`, `strip-domain` (cut at the last `@`).
	PingOneUserTransform string `env:"PINGONE_USER_TRANSFORM"`

	// Step-up cookie; the pending-flow cookie is this name plus `-flow`.
	// Default: `__Host-stepgate` (`stepgate` when not secure).
	CookieName string `env:"COOKIE_NAME"`

	// `false` only for plain-http local use (the demo).
	CookieSecure bool `env:"COOKIE_SECURE" envDefault:"true"`

	// Header carrying the PingOne ID token upstream; `Authorization` sends `Bearer <token>`.
	IDTokenHeader string `env:"ID_TOKEN_HEADER" envDefault:"X-Stepgate-Id-Token"`

	// Count a PingOne "bypass" completion (no MFA step) as a step-up. Leave it off.
	AllowMFABypass bool `env:"ALLOW_MFA_BYPASS" envDefault:"false"`

	// Branding: `page.html` replaces the built-in page; `messages/<lang>.json` add or override
	// catalogues.
	TemplatesDir string `env:"TEMPLATES_DIR"`

	// The application's name on the challenge page ("Example HR asks for a recent extra check…",
	// "Return to Example HR", the page title).
	// Default: the upstream's host name (none for an IP address or `localhost`).
	AppName string `env:"APP_NAME"`

	// Serve TLS on the proxy listener (with `_KEY_FILE`; both or neither).
	TLSCertFile string `env:"TLS_CERT_FILE"`

	// Its private key.
	TLSKeyFile string `env:"TLS_KEY_FILE"`

	// PEM CA bundle for an `https` upstream with a private CA.
	UpstreamCAFile string `env:"UPSTREAM_CA_FILE"`

	// Time to the upstream's response headers (streams may then run on).
	UpstreamTimeout time.Duration `env:"UPSTREAM_TIMEOUT" envDefault:"60s"`

	// Longest wait for the next bytes of a request body (100ms–10m); a body that stalls longer is
	// answered `408` and its upstream request abandoned. A slow but moving upload is not cut.
	BodyIdleTimeout time.Duration `env:"BODY_IDLE_TIMEOUT" envDefault:"30s"`

	// Largest request body (bytes) an `approve` rule holds while the user approves; a larger one
	// gets a 413 page before PingOne is called. 1 byte to 16 MiB.
	ApproveMaxBody int64 `env:"APPROVE_MAX_BODY" envDefault:"65536"`

	// Longest a client of an `api=decoupled` approve rule may wait with `Prefer: wait=N` (1s–10m): a
	// larger N is cut to this. See [Approve from the phone](agents.md).
	ApproveWaitMax time.Duration `env:"APPROVE_WAIT_MAX" envDefault:"60s"`

	// Clients that may wait with `Prefer: wait` at once on this replica (1–1000000). One more is
	// answered at once, as if it had not asked to wait (a `202` to poll).
	ApproveWaiters int `env:"APPROVE_WAITERS" envDefault:"10000"`

	// `debug`, `info`, `warn`, `error`. Audit events are `info`: below it they are lost.
	LogLevel string `env:"LOG_LEVEL" envDefault:"info"`

	// How audit events are written: `json` (stepgate's own lines, `"schema":"stepgate.audit/1"`,
	// [Audit log](audit.md)) or `ocsf` (one OCSF 1.1 event per line, for SIEMs that ingest OCSF:
	// Authentication for step-ups and approvals, HTTP Activity for held, forwarded and refused
	// requests; the mapping is in [Audit log](audit.md#ocsf)). Access lines are the same in both.
	AuditFormat string `env:"AUDIT_FORMAT" envDefault:"json"`

	// One JSON access line per request. `false` drops only those lines (a few µs per request; see
	// [Performance](performance.md#performance)), keeping audit events.
	AccessLog bool `env:"ACCESS_LOG" envDefault:"true"`

	// After SIGTERM: readiness fails at once, traffic keeps being served this long so load
	// balancers notice.
	ShutdownDrain time.Duration `env:"SHUTDOWN_DRAIN" envDefault:"5s"`

	// Then: how long in-flight requests (and SSE streams) get to finish.
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"30s"`

	// Serve `/debug/pprof/` on the admin listener (never on the proxy listener).
	Pprof bool `env:"PPROF" envDefault:"false"`

	// How trace spans name the user (`stepgate.user`): `hash` (an HMAC of the name under a key
	// derived from `STEPGATE_COOKIE_KEYS`: the same on every replica, and no name can be looked up
	// from it without the key), `plain` (the name itself) or `omit`. Traces themselves are configured
	// by the standard `OTEL_*` variables and are off unless an OTLP exporter is (see
	// [Traces](operations.md#traces)).
	TraceUser string `env:"TRACE_USER" envDefault:"hash"`

	// Where abuse-limit counters, approvals, held requests and revocations live: `memory` (this
	// process) or `redis` (Redis or Valkey, shared by every replica). See [Running several
	// replicas](replicas.md#running-several-replicas).
	Store string `env:"STORE" envDefault:"memory"`

	// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS (system CAs). Only with
	// `STEPGATE_STORE=redis`.
	// Default: empty; required with `STEPGATE_STORE=redis`.
	RedisURL string `env:"REDIS_URL" secret:"true"`

	// Redis password (or ACL user's password), overriding one in the URL; usually as
	// `STEPGATE_REDIS_PASSWORD_FILE`.
	RedisPassword string `env:"REDIS_PASSWORD" secret:"true"`

	// PEM CA bundle that verifies a `rediss://` server (a private CA); default the system's roots.
	// Certificate checks cannot be turned off (`skip_verify` in the URL is refused).
	RedisCAFile string `env:"REDIS_CA_FILE"`

	// Bound on every Redis call (dial, read, write); never retried (1ms–10s).
	RedisTimeout time.Duration `env:"REDIS_TIMEOUT" envDefault:"500ms"`

	// With Redis: how long a replica may go without confirming its in-process revocation view
	// before `mfa` paths answer 503 (1s–10m).
	StoreMaxStaleness time.Duration `env:"STORE_MAX_STALENESS" envDefault:"10s"`

	// Bearer token for `POST /revoke` on the admin listener (at least 32 characters; `openssl rand
	// -base64 32`). Without it the endpoint does not exist (404).
	AdminToken string `env:"ADMIN_TOKEN" secret:"true"`

	// How often `STEPGATE_RULES_FILE` and the `_FILE` secrets are checked for a change (where their
	// symlinks lead, inode, size, time: a Kubernetes ConfigMap or Secret update included); a change
	// reloads them as SIGHUP does ([design §9.1](design.md)). `0` turns the check off; SIGHUP still
	// reloads. 0 or 100ms–1m.
	ReloadInterval time.Duration `env:"RELOAD_INTERVAL" envDefault:"500ms"`

	// Listener for the identity provider's security events ([signals](signals.md)): only
	// `POST /signals/pingone` and `POST /signals/ssf` are served there, so it can be exposed to the provider alone, apart from
	// the admin listener (never public) and the application's origin.
	// Default: empty: no receivers.
	SignalsListen string `env:"SIGNALS_LISTEN"`

	// Shared secret PingOne sends in `STEPGATE_PINGONE_WEBHOOK_HEADER` (set in the webhook's
	// headers; at least 32 characters). Turns on `POST /signals/pingone`.
	PingOneWebhookSecret string `env:"PINGONE_WEBHOOK_SECRET" secret:"true"`

	// Header carrying the webhook secret, compared in constant time.
	PingOneWebhookHeader string `env:"PINGONE_WEBHOOK_HEADER" envDefault:"X-Stepgate-Webhook-Secret"`

	// Comma-separated PingOne action types that end the user's step-ups (see
	// [signals](signals.md#pingone) for which names are confirmed).
	PingOneWebhookActions string `env:"PINGONE_WEBHOOK_ACTIONS" envDefault:"USER.DELETED,USER.LOCKED,PASSWORD.RESET,DEVICE.DELETED,DEVICE.BLOCKED,SESSION.DELETED"`

	// Issuer of the OpenID Shared Signals (SSF 1.0) transmitter whose Security Event Tokens stepgate
	// receives at `POST /signals/ssf` ([signals](signals.md#openid-shared-signals-ssf-10-caep-10)):
	// a SET's `iss` must equal it. Turns the receiver on, with `STEPGATE_SSF_AUDIENCE`.
	SSFIssuer string `env:"SSF_ISSUER"`

	// The audience stepgate expects in a SET's `aud` (the stream's `aud`, as the transmitter
	// configured it).
	// Default: empty; required with `STEPGATE_SSF_ISSUER`.
	SSFAudience string `env:"SSF_AUDIENCE"`

	// The transmitter's JWKS. SETs are verified with ES256 or RS256 only.
	// Default: empty: the `jwks_uri` of the issuer's `/.well-known/ssf-configuration`.
	SSFJWKSURL string `env:"SSF_JWKS_URL"`

	// Bearer token the transmitter sends in `Authorization` (the stream's
	// `delivery.authorization_header`, without `Bearer `), compared in constant time; at least 32
	// characters.
	// Default: empty: none required (the SET's signature still is).
	SSFBearerToken string `env:"SSF_BEARER_TOKEN" secret:"true"`

	// Comma-separated transforms from a SET's `email` or `opaque` subject to the upstream user, in
	// order: `lower`, `strip-domain` (cut at the last `@`).
	// Default: empty: the subject is the upstream user as it is.
	SSFUserTransform string `env:"SSF_USER_TRANSFORM"`

	// How old a SET's `iat` may be; one minute of clock skew is allowed the other way. 1m–24h.
	SSFMaxAge time.Duration `env:"SSF_MAX_AGE" envDefault:"1h"`

	// otel is the OTEL_* part of the environment, read by the OpenTelemetry
	// conventions (tracing.FromEnv) rather than by a field of its own.
	otel []string
}

const envPrefix = "STEPGATE_"

// defaultTrustedProxies is STEPGATE_TRUSTED_PROXIES when it is not set (the
// proxy door only: forward-auth and ext_authz want it said explicitly).
const defaultTrustedProxies = "127.0.0.1/32,::1/128"

// trustedProxies is STEPGATE_TRUSTED_PROXIES or its default.
func (c config) trustedProxies() string {
	if c.TrustedProxies == "" {
		return defaultTrustedProxies
	}
	return c.TrustedProxies
}

// secretVars may be given as NAME or NAME_FILE (a path whose content,
// without a trailing newline, is the value): the fields tagged
// secret:"true", which docs/configuration.md says so of too (a list kept
// by hand here once missed SSF_BEARER_TOKEN).
var secretVars = func() (names []string) {
	t := reflect.TypeFor[config]()
	for i := range t.NumField() {
		if f := t.Field(i); f.Tag.Get("secret") == "true" {
			name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
			names = append(names, name)
		}
	}
	return names
}()

// loadConfig reads the STEPGATE_ variables of environ (os.Environ's
// "NAME=value" form; the first of two equal names wins, as with os.Getenv).
//
// It never stops at the first problem: an unknown STEPGATE_ name, a value
// of the wrong type, a required value missing and an unreadable _FILE are
// all returned together (a problems error), and the values at fault are
// left at their defaults so that validate can still check everything else.
func loadConfig(environ []string) (config, error) {
	var c config
	params, err := env.GetFieldParamsWithOptions(&c, env.Options{Prefix: envPrefix})
	if err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	getenv := lookupEnv(environ)
	var errs problems
	errs = append(errs, unknownVariables(environ)...)
	vars := map[string]string{}
	for _, p := range params {
		if v := getenv(p.Key); v != "" {
			vars[p.Key] = v
		}
	}
	for _, name := range secretVars {
		key := envPrefix + name
		path := getenv(key + "_FILE")
		if path == "" {
			continue
		}
		if _, both := vars[key]; both {
			errs = append(errs, problem{key, "set " + key + " or " + key + "_FILE, not both"})
			continue
		}
		b, err := os.ReadFile(path)
		if err != nil {
			errs = append(errs, problem{key + "_FILE", fmt.Sprintf("cannot read %s: %v", path, errors.Unwrap(err))})
			vars[key] = "" // a second problem ("not set") would say nothing new
			continue
		}
		vars[key] = strings.TrimRight(string(b), "\r\n")
	}
	perr := env.ParseWithOptions(&c, env.Options{Prefix: envPrefix, Environment: vars})
	bad := map[string]bool{}
	for _, e := range parseProblems(perr, vars) {
		errs = append(errs, e)
		bad[e.Var] = true
	}
	if len(bad) > 0 {
		// Parse again without the values at fault, so that they take their
		// defaults; what is still missing was reported above.
		for k := range bad {
			delete(vars, k)
		}
		c = config{}
		_ = env.ParseWithOptions(&c, env.Options{Prefix: envPrefix, Environment: vars})
	}
	c.otel = otelVars(environ)
	if len(errs) > 0 {
		return c, errs
	}
	return c, nil
}

// lookupEnv is getenv over an os.Environ-style list.
func lookupEnv(environ []string) func(string) string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		if _, seen := m[k]; !seen {
			m[k] = v
		}
	}
	return func(k string) string { return m[k] }
}

// environOf is the os.Environ form of a map, in a stable order.
func environOf(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out
}

// parseProblems turns env's errors, which name Go struct fields and quote
// strconv, into sentences that name the variable an operator sets.
func parseProblems(err error, vars map[string]string) []problem {
	if err == nil {
		return nil
	}
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return []problem{{envPrefix, err.Error()}}
	}
	t := reflect.TypeFor[config]()
	var out []problem
	for _, e := range agg.Errors {
		var pe env.ParseError
		var unset env.VarIsNotSetError
		switch {
		case errors.As(e, &pe):
			f, _ := t.FieldByName(pe.Name)
			key, _, _ := strings.Cut(f.Tag.Get("env"), ",")
			key = envPrefix + key
			out = append(out, problem{key, notA(vars[key], f.Type, f.Tag.Get("secret") == "true")})
		case errors.As(e, &unset):
			if v, ok := vars[unset.Key]; ok && v == "" {
				continue // its _FILE could not be read, which is reported
			}
			out = append(out, problem{unset.Key, "required, and not set" + requiredHint[strings.TrimPrefix(unset.Key, envPrefix)]})
		default:
			out = append(out, problem{envPrefix, e.Error()})
		}
	}
	return out
}

// requiredHint says, after "required, and not set", what the value is.
var requiredHint = map[string]string{
	"PINGONE_ENV_ID":        ": the PingOne environment's ID (a UUID)",
	"PINGONE_CLIENT_ID":     ": the PingOne application's client ID (a UUID)",
	"PINGONE_CLIENT_SECRET": ": the PingOne application's client secret (or STEPGATE_PINGONE_CLIENT_SECRET_FILE)",
	"COOKIE_KEYS":           ": base64 keys of 32 bytes that seal the step-up cookie, for example $(openssl rand -base64 32) (or STEPGATE_COOKIE_KEYS_FILE)",
}

// notA says what is wrong with a value of type t.
func notA(v string, t reflect.Type, secret bool) string {
	q := strconv.Quote(v)
	if secret {
		q = "the value"
	}
	switch {
	case t == reflect.TypeFor[time.Duration]():
		return q + " is not a duration such as 500ms, 30s, 10m or 1h"
	case t.Kind() == reflect.Bool:
		return q + " is not true or false"
	case t.Kind() == reflect.Int || t.Kind() == reflect.Int64:
		return q + " is not a whole number"
	case t.Kind() == reflect.Float64:
		return q + " is not a number"
	}
	return q + " is not a valid " + t.String()
}

// problem is one variable's fault, in words an operator acts on.
type problem struct {
	Var string // STEPGATE_…
	Msg string
}

func (p problem) Error() string { return p.Var + ": " + p.Msg }

// problems is every fault of a configuration, reported together.
type problems []error

func (ps problems) Error() string {
	if len(ps) == 1 {
		return "configuration: " + ps[0].Error()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "configuration: %d problems:", len(ps))
	for _, p := range ps {
		b.WriteString("\n  ")
		b.WriteString(strings.ReplaceAll(p.Error(), "\n", "\n    "))
	}
	return b.String()
}

func (ps problems) Unwrap() []error { return ps }

// mergeProblems joins what loading and validation found, dropping a
// validation problem of a variable that loading already reported (its
// value was replaced by the default, or is missing: one message is enough).
func mergeProblems(load, validate error) error {
	var out problems
	named := map[string]bool{}
	for _, e := range flatten(load) {
		out = append(out, e)
		if p, ok := e.(problem); ok {
			named[p.Var] = true
		}
	}
	for _, e := range flatten(validate) {
		if p, ok := e.(problem); ok && named[p.Var] {
			continue
		}
		out = append(out, e)
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// flatten lists the errors of a problems or errors.Join error.
func flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// knownVariables are the STEPGATE_ names stepgate reads: the config
// struct's env tags and the _FILE form of each secret.
func knownVariables() []string {
	params, err := env.GetFieldParamsWithOptions(&config{}, env.Options{Prefix: envPrefix})
	if err != nil {
		panic(err) // the struct's tags are fixed at compile time
	}
	var out []string
	for _, p := range params {
		out = append(out, p.Key)
	}
	for _, name := range secretVars {
		out = append(out, envPrefix+name+"_FILE")
	}
	return out
}

// unknownVariables reports every STEPGATE_ name that stepgate does not
// read, with the nearest known name: a misspelt setting would otherwise
// be ignored and its protection silently missing. The variables
// Kubernetes injects for a Service named stepgate are not settings and
// pass (serviceLinkVariable).
func unknownVariables(environ []string) []error {
	known := knownVariables()
	var errs []error
	seen := map[string]bool{}
	for _, kv := range environ {
		name, value, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, envPrefix) || seen[name] || slices.Contains(known, name) || serviceLinkVariable(name, value) {
			continue
		}
		seen[name] = true
		msg := "not a stepgate setting"
		if near := nearest(name, known); near != "" {
			msg += "; did you mean " + near + "?"
		}
		if name == envPrefix+"PORT" {
			msg += " (the listen address is STEPGATE_LISTEN, such as :8080)"
		}
		errs = append(errs, problem{name, msg + " (every setting: docs/configuration.md)"})
	}
	return errs
}

// nearest is the known name closest to name by edit distance, if it is
// close enough to be a typo: at most 2 edits, or a third of the name. Words
// in another order (SECURE_COOKIE for COOKIE_SECURE) count one edit more
// than the edits between the sorted words.
func nearest(name string, known []string) string {
	best, bestD := "", 0
	n := name[len(envPrefix):]
	for _, k := range known {
		k2 := k[len(envPrefix):]
		d := min(editDistance(n, k2), editDistance(sortedWords(n), sortedWords(k2))+1)
		if best == "" || d < bestD {
			best, bestD = k, d
		}
	}
	if bestD > max(2, (len(name)-len(envPrefix))/3) {
		return ""
	}
	return best
}

func sortedWords(s string) string {
	w := strings.Split(s, "_")
	slices.Sort(w)
	return strings.Join(w, "_")
}

// editDistance is the Levenshtein distance between a and b (bytes).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// serviceLinkVariable reports whether name=value is one of the variables
// Kubernetes injects into every pod of a namespace for a Service named
// stepgate (the docker-link forms plus _SERVICE_HOST/_PORT; see
// kubernetes pkg/kubelet/envvars): STEPGATE_SERVICE_HOST=10.0.0.11,
// STEPGATE_SERVICE_PORT=8080, STEPGATE_SERVICE_PORT_<PORT NAME>=8080,
// STEPGATE_PORT=tcp://10.0.0.11:8080, STEPGATE_PORT_8080_TCP=tcp://10.0.0.11:8080,
// and its _PROTO=tcp, _PORT=8080 and _ADDR=10.0.0.11. The value must have
// the injected shape too: STEPGATE_PORT=8080, set by hand, is a mistake.
// The Helm chart turns these off (enableServiceLinks: false).
func serviceLinkVariable(name, value string) bool {
	rest := strings.TrimPrefix(name, envPrefix)
	switch {
	case rest == "SERVICE_HOST":
		return isIP(value)
	case rest == "SERVICE_PORT":
		return isPort(value)
	case strings.HasPrefix(rest, "SERVICE_PORT_"):
		return portName(rest[len("SERVICE_PORT_"):]) && isPort(value)
	case rest == "PORT":
		return isLinkURL(value, "")
	case strings.HasPrefix(rest, "PORT_"):
		// PORT_<port>_<PROTO>[_PROTO|_PORT|_ADDR]
		f := strings.Split(rest[len("PORT_"):], "_")
		if len(f) < 2 || len(f) > 3 || !isPort(f[0]) {
			return false
		}
		proto := strings.ToLower(f[1])
		if f[1] != strings.ToUpper(proto) || proto != "tcp" && proto != "udp" && proto != "sctp" {
			return false
		}
		if len(f) == 2 {
			return isLinkURL(value, proto+"://") && strings.HasSuffix(value, ":"+f[0])
		}
		switch f[2] {
		case "PROTO":
			return value == proto
		case "PORT":
			return value == f[0]
		case "ADDR":
			return isIP(value)
		}
	}
	return false
}

func isIP(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

func isPort(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n > 0 && n < 65536 && strconv.Itoa(n) == s
}

// portName is a Service port name as Kubernetes writes it into a variable
// name: upper case, '-' as '_'.
func portName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// isLinkURL matches proto://ip:port (scheme "" means any of tcp, udp, sctp).
func isLinkURL(s, scheme string) bool {
	if scheme == "" {
		for _, p := range []string{"tcp://", "udp://", "sctp://"} {
			if strings.HasPrefix(s, p) {
				scheme = p
			}
		}
	}
	if scheme == "" || !strings.HasPrefix(s, scheme) {
		return false
	}
	ap, err := netip.ParseAddrPort(s[len(scheme):])
	return err == nil && ap.Port() != 0
}

// settings are the validated, typed values.
type settings struct {
	upstream   *url.URL
	authBase   string
	rules      *rules.Set
	trusted    *clientip.Resolver
	cookieKeys [][]byte
	cookieName string
	mapping    identity.MappingOptions // Source is set by build
	doors      proxy.Doors
	// passIdentity: STEPGATE_PASS_IDENTITY_HEADERS, canonical names.
	passIdentity []string
	requestKey   *mfa.RequestKey // nil: the request object is HS256 with the client secret
	redisCAs     *x509.CertPool  // STEPGATE_REDIS_CA_FILE; nil: the system's roots
	// traces: OTEL_* (docs/design.md §10); tracesOn false: off.
	traces   tracing.Options
	tracesOn bool
	// traceUser names a user in spans (STEPGATE_TRACE_USER).
	traceUser func(string) string
}

// protectsNothing reports whether every request would be allowed: no rule
// and no default that asks for mfa, approve or deny.
func protectsNothing(set *rules.Set) bool {
	return set.Default().Action == rules.Allow &&
		!slices.ContainsFunc(set.Rules(), func(r rules.Rule) bool { return r.Action != rules.Allow })
}

// mappingVars are the settings that decide the PingOne user, named in the
// log line of a refused user.
const mappingVars = "STEPGATE_PINGONE_USER_FROM, STEPGATE_PINGONE_USER_KIND, STEPGATE_PINGONE_USER_TRANSFORM"

// validate checks every value and names the variable at fault.
func (c config) validate(readFile func(string) ([]byte, error)) (settings, error) {
	var s settings
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, problem{envPrefix + name, fmt.Sprintf(format, args...)})
	}

	doors, err := parseDoors(c.FrontDoors)
	if err != nil {
		bad("FRONT_DOORS", "%v", err)
	}
	doors.ExtAuthzBody = doors.ExtAuthz && c.AuthzWithBody
	s.doors = doors
	switch proxy.MethodOverride(c.MethodOverride) {
	case proxy.MethodOverrideNone, proxy.MethodOverrideHeader:
	case proxy.MethodOverrideForm:
		if doors.ForwardAuth {
			bad("METHOD_OVERRIDE", "form needs the request body, which the forward-auth front door never sees; use header or none there")
		}
	default:
		bad("METHOD_OVERRIDE", "%q is not none, header or form", c.MethodOverride)
	}
	switch {
	case (doors.ForwardAuth || doors.ExtAuthz) && c.TrustedProxies == "":
		// The front proxy's word decides what the request was: whose word
		// that is must be said, not defaulted.
		bad("TRUSTED_PROXIES", "must be set explicitly with the forward-auth or ext-authz front door (the addresses of the front proxy or Envoy, which are believed about the original request)")
	case c.AuthzGRPCListen != "" && !doors.ExtAuthz:
		bad("AUTHZ_GRPC_LISTEN", "needs ext-authz in STEPGATE_FRONT_DOORS")
	case c.AuthzWithBody && !doors.ExtAuthz:
		bad("AUTHZ_WITH_BODY", "needs ext-authz in STEPGATE_FRONT_DOORS")
	}

	u, err := url.Parse(c.Upstream)
	switch {
	case c.Upstream == "" && !doors.Proxy:
		// forward-auth and ext_authz only: the front proxy forwards.
	case c.Upstream == "":
		bad("UPSTREAM", "required, and not set: the application's URL, such as http://127.0.0.1:3000 (it may be left out only when STEPGATE_FRONT_DOORS does not list proxy)")
	case err != nil:
		bad("UPSTREAM", "%v", err)
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "", u.RawQuery != "", u.Fragment != "", u.User != nil:
		bad("UPSTREAM", "want an absolute http(s) URL without query, fragment or credentials")
	default:
		s.upstream = u
	}
	switch {
	case c.UpstreamHost != "" && c.PreserveHost:
		bad("UPSTREAM_HOST", "set STEPGATE_UPSTREAM_HOST or STEPGATE_PRESERVE_HOST, not both")
	case c.UpstreamHost != "" && !validHostPort(c.UpstreamHost):
		bad("UPSTREAM_HOST", "want host[:port], such as app.internal or app.internal:8443")
	}
	base, err := url.Parse(c.PingOneAuthBase)
	if err != nil || (base.Scheme != "https" && base.Scheme != "http") || base.Host == "" || base.RawQuery != "" {
		bad("PINGONE_AUTH_BASE", "want an absolute https URL such as https://auth.pingone.eu")
	} else if base.Scheme == "http" && !isLoopbackHost(base.Hostname()) {
		// The client secret signs what travels there, and the tokens come
		// back: plain http only to a simulator on this machine.
		bad("PINGONE_AUTH_BASE", "http:// is accepted only for a loopback host (a local simulator); use https://")
	} else {
		s.authBase = strings.TrimSuffix(c.PingOneAuthBase, "/")
	}
	if !validUUIDish(c.PingOneEnvID) {
		bad("PINGONE_ENV_ID", "want the environment's UUID")
	}
	if !validUUIDish(c.PingOneClientID) {
		bad("PINGONE_CLIENT_ID", "want the application's client id (a UUID)")
	}
	if len(c.PingOneClientSecret) < 8 {
		bad("PINGONE_CLIENT_SECRET", "too short")
	}
	switch c.PingOneResponseType {
	case "token id_token", "id_token", "code":
	default:
		bad("PINGONE_RESPONSE_TYPE", "want \"token id_token\", \"id_token\" or \"code\"")
	}
	if c.PingOneTimeout <= 0 || c.PingOneTimeout > 2*time.Minute {
		bad("PINGONE_TIMEOUT", "want a duration between 1ms and 2m")
	}
	if c.PingOneRateLimit <= 0 {
		bad("PINGONE_RATE_LIMIT", "want calls per second > 0")
	}
	if c.LimitWindow < time.Second || c.LimitWindow > 24*time.Hour {
		bad("LIMIT_WINDOW", "want a duration between 1s and 24h")
	}
	for name, n := range map[string]int{
		"LIMIT_STARTS_PER_USER": c.LimitStartsPerUser, "LIMIT_STARTS_PER_IP": c.LimitStartsPerIP,
		"LIMIT_OTP_PER_USER": c.LimitOTPPerUser, "LIMIT_SENDS_PER_USER": c.LimitSendsPerUser,
	} {
		if n < 1 || n > 10000 {
			bad(name, "want a count between 1 and 10000 per STEPGATE_LIMIT_WINDOW")
		}
	}
	if c.UpstreamTimeout <= 0 {
		bad("UPSTREAM_TIMEOUT", "want a positive duration")
	}
	if c.ApproveMaxBody < 1 || c.ApproveMaxBody > 16<<20 {
		bad("APPROVE_MAX_BODY", "want a size in bytes between 1 and 16777216")
	}
	if c.ApproveWaitMax < time.Second || c.ApproveWaitMax > 10*time.Minute {
		bad("APPROVE_WAIT_MAX", "want a duration between 1s and 10m")
	}
	if c.ApproveWaiters < 1 || c.ApproveWaiters > 1_000_000 {
		bad("APPROVE_WAITERS", "want a count between 1 and 1000000")
	}
	if c.BodyIdleTimeout < 100*time.Millisecond || c.BodyIdleTimeout > 10*time.Minute {
		bad("BODY_IDLE_TIMEOUT", "want a duration between 100ms and 10m")
	}
	if c.MFAMaxAge <= 0 {
		bad("MFA_MAX_AGE", "want a positive duration")
	}
	if c.ShutdownDrain < 0 {
		bad("SHUTDOWN_DRAIN", "want a duration ≥ 0")
	}
	if c.ShutdownTimeout <= 0 {
		bad("SHUTDOWN_TIMEOUT", "want a positive duration")
	}

	if keys, err := session.ParseKeys(c.CookieKeys); err != nil {
		bad("COOKIE_KEYS", "%v", err)
	} else {
		s.cookieKeys = keys
	}
	s.cookieName = c.CookieName
	if s.cookieName == "" {
		s.cookieName = "__Host-stepgate"
		if !c.CookieSecure {
			s.cookieName = "stepgate"
		}
	}
	if strings.HasPrefix(s.cookieName, "__Host-") && !c.CookieSecure {
		bad("COOKIE_NAME", "a __Host- cookie needs STEPGATE_COOKIE_SECURE=true")
	}

	if prefixes, err := clientip.ParseCIDRs(c.trustedProxies()); err != nil {
		bad("TRUSTED_PROXIES", "%v", err)
	} else {
		s.trusted = clientip.New(prefixes)
	}

	defAction, defErr := rules.ParseAction(c.DefaultAction)
	if defErr != nil {
		bad("DEFAULT_ACTION", "%q is not allow, deny or mfa", c.DefaultAction)
	}
	ruleText, source, rulesVar := c.Rules, "STEPGATE_RULES", "RULES"
	readable := true
	switch {
	case c.Rules != "" && c.RulesFile != "":
		bad("RULES_FILE", "set STEPGATE_RULES or STEPGATE_RULES_FILE, not both")
		readable = false
	case c.RulesFile != "":
		b, err := readFile(c.RulesFile)
		if err != nil {
			bad("RULES_FILE", "cannot read the rules: %v", err)
			readable = false
		}
		ruleText, source, rulesVar = string(b), c.RulesFile, "RULES_FILE"
	}
	if readable {
		// With a bad default action the rules are still checked (against
		// allow), so that one run reports every problem.
		set, err := rules.Parse(source, ruleText, rules.Defaults{
			Action: defAction, MaxAge: c.MFAMaxAge, ACR: c.PingOneACRValues, CaseInsensitive: c.CaseInsensitive,
		})
		if err != nil {
			errs = append(errs, err)
		}
		if set != nil && defErr == nil && protectsNothing(set) && !c.AllowUnprotected {
			bad(rulesVar, "no rule asks for mfa, approve or deny, and STEPGATE_DEFAULT_ACTION is allow: stepgate would protect nothing. "+
				"Write the rules (STEPGATE_RULES or STEPGATE_RULES_FILE), or set STEPGATE_ALLOW_UNPROTECTED=true if every request is meant to pass")
		}
		s.rules = set
		if set != nil && slices.ContainsFunc(set.Rules(), func(r rules.Rule) bool { return r.Action == rules.Approve }) {
			switch {
			case doors.ForwardAuth:
				bad("FRONT_DOORS", "approve rules need the request body, which forward-auth never receives: serve them through the proxy door, or through ext-authz with STEPGATE_AUTHZ_WITH_BODY=true")
			case doors.ExtAuthz && !c.AuthzWithBody:
				bad("AUTHZ_WITH_BODY", "approve rules with ext-authz need the request body: set with_request_body in Envoy (Envoy Gateway: extAuth.bodyToExtAuth) and STEPGATE_AUTHZ_WITH_BODY=true")
			}
		}
	}

	if u := c.IdPSignInURL; u != "" {
		if !strings.HasPrefix(u, "https://") && !(strings.HasPrefix(u, "/") && !strings.HasPrefix(u, "//")) ||
			strings.ContainsAny(u, " \t\r\n\"<>\\") {
			bad("IDP_SIGNIN_URL", "want a path on this host (/oauth2/sign_in?rd={rd}) or an https:// URL")
		}
	}
	switch c.Identity {
	case "header":
		if c.IdentityHeader == "" {
			bad("IDENTITY_HEADER", "must not be empty")
		}
	case "jwt":
		if c.IdentityJWKSURL == "" || c.IdentityIssuer == "" || c.IdentityAudience == "" {
			bad("IDENTITY", "jwt needs STEPGATE_IDENTITY_JWKS_URL, _ISSUER and _AUDIENCE")
		}
		if strings.EqualFold(c.IdentityJWTHeader, c.IDTokenHeader) {
			bad("ID_TOKEN_HEADER", "must differ from STEPGATE_IDENTITY_JWT_HEADER (stepgate strips it from every request)")
		}
	default:
		bad("IDENTITY", "want header or jwt")
	}
	if strings.EqualFold(c.IDTokenHeader, c.IdentityHeader) && c.Identity == "header" {
		bad("ID_TOKEN_HEADER", "must differ from STEPGATE_IDENTITY_HEADER")
	}
	for _, h := range strings.Split(c.PassIdentityHeaders, ",") {
		switch h = strings.TrimSpace(h); {
		case h == "" && strings.TrimSpace(c.PassIdentityHeaders) == "":
		case !identity.ValidHeaderName(h):
			bad("PASS_IDENTITY_HEADERS", "want a comma-separated list of header names, e.g. Remote-User,X-Auth-Request-Email")
		case strings.HasPrefix(strings.ToLower(h), "x-stepgate-") || strings.EqualFold(h, c.IDTokenHeader):
			bad("PASS_IDENTITY_HEADERS", "must not name a header stepgate sets (%s)", h)
		default:
			s.passIdentity = append(s.passIdentity, http.CanonicalHeaderKey(h))
		}
	}
	if m, err := c.parseMapping(); err != nil {
		errs = append(errs, err)
	} else {
		s.mapping = m
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		bad("TLS_CERT_FILE", "set both STEPGATE_TLS_CERT_FILE and STEPGATE_TLS_KEY_FILE, or neither")
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		bad("LOG_LEVEL", "%q is not debug, info, warn or error", c.LogLevel)
	}
	if c.AuditFormat != "json" && c.AuditFormat != "ocsf" {
		bad("AUDIT_FORMAT", "%q is not json or ocsf", c.AuditFormat)
	}
	if c.PingOneRequestKey != "" {
		if b, err := readFile(c.PingOneRequestKey); err != nil {
			bad("PINGONE_REQUEST_KEY_FILE", "%v", err)
		} else if s.requestKey, err = mfa.ParseRequestKey(b); err != nil {
			bad("PINGONE_REQUEST_KEY_FILE", "%v", err)
		}
	}
	switch c.Store {
	case "memory":
		if c.RedisURL != "" {
			bad("REDIS_URL", "set, but STEPGATE_STORE is memory: set STEPGATE_STORE=redis to use it")
		}
	case "redis":
		if c.RedisURL == "" {
			bad("REDIS_URL", "required when STEPGATE_STORE=redis (redis://host:6379 or rediss:// for TLS)")
		} else if _, err := store.ParseRedisURL(c.RedisURL); err != nil {
			bad("REDIS_URL", "%v", err) // the value is not repeated: it may hold a password
		} else if c.RedisCAFile != "" && !strings.HasPrefix(c.RedisURL, "rediss://") {
			bad("REDIS_CA_FILE", "set, but STEPGATE_REDIS_URL is not rediss:// (TLS)")
		}
		if c.RedisCAFile != "" {
			pem, err := readFile(c.RedisCAFile)
			s.redisCAs = x509.NewCertPool()
			if err != nil {
				bad("REDIS_CA_FILE", "%v", err)
			} else if !s.redisCAs.AppendCertsFromPEM(pem) {
				bad("REDIS_CA_FILE", "no PEM certificate found")
			}
		}
	default:
		bad("STORE", "want memory or redis")
	}
	if c.RedisTimeout < time.Millisecond || c.RedisTimeout > 10*time.Second {
		bad("REDIS_TIMEOUT", "want a duration between 1ms and 10s")
	}
	if c.StoreMaxStaleness < time.Second || c.StoreMaxStaleness > 10*time.Minute {
		bad("STORE_MAX_STALENESS", "want a duration between 1s and 10m")
	}
	switch {
	case c.PingOneWebhookSecret != "" && c.SignalsListen == "":
		bad("PINGONE_WEBHOOK_SECRET", "set, but STEPGATE_SIGNALS_LISTEN is not: the receiver listens there")
	case c.SignalsListen != "" && c.PingOneWebhookSecret == "" && c.SSFIssuer == "":
		bad("SIGNALS_LISTEN", "set, but no receiver is configured (STEPGATE_PINGONE_WEBHOOK_SECRET or STEPGATE_SSF_ISSUER)")
	case c.PingOneWebhookSecret != "" && len(c.PingOneWebhookSecret) < 32:
		bad("PINGONE_WEBHOOK_SECRET", "too short: want at least 32 characters (for example openssl rand -base64 32)")
	case c.PingOneWebhookSecret != "" && !identity.ValidHeaderName(c.PingOneWebhookHeader):
		bad("PINGONE_WEBHOOK_HEADER", "want a header name")
	}
	c.validateSSF(bad)
	if c.PingOneWebhookSecret != "" {
		for _, a := range strings.Split(c.PingOneWebhookActions, ",") {
			if a = strings.TrimSpace(a); a == "" || strings.ToUpper(a) != a || !strings.Contains(a, ".") {
				bad("PINGONE_WEBHOOK_ACTIONS", "want comma-separated PingOne action types such as USER.DELETED,DEVICE.DELETED")
				break
			}
		}
	}
	if c.ReloadInterval != 0 && (c.ReloadInterval < 100*time.Millisecond || c.ReloadInterval > time.Minute) {
		bad("RELOAD_INTERVAL", "want 0 (no file checks) or a duration between 100ms and 1m")
	}
	if c.AdminToken != "" && len(c.AdminToken) < 32 {
		bad("ADMIN_TOKEN", "too short: want at least 32 characters (for example openssl rand -base64 32)")
	}
	errs = append(errs, c.validateTraces(&s)...)
	if len(errs) > 0 {
		return s, problems(errs)
	}
	return s, nil
}

// otelVars is the OTEL_* part of environ.
func otelVars(environ []string) []string {
	var out []string
	for _, kv := range environ {
		if strings.HasPrefix(kv, "OTEL_") {
			out = append(out, kv)
		}
	}
	return out
}

// validateTraces reads the OTEL_* variables and STEPGATE_TRACE_USER.
func (c config) validateTraces(s *settings) []error {
	var errs []error
	var err error
	if s.traces, s.tracesOn, err = tracing.FromEnv(c.otel); err != nil {
		errs = append(errs, err)
	}
	var key []byte
	if len(s.cookieKeys) > 0 {
		// Not the cookie key itself: a key derived from it for this use.
		m := hmac.New(sha256.New, s.cookieKeys[0])
		m.Write([]byte("stepgate trace user"))
		key = m.Sum(nil)
	}
	if s.traceUser, err = tracing.User(c.TraceUser, key); err != nil && c.TraceUser != "hash" {
		errs = append(errs, problem{envPrefix + "TRACE_USER", "want hash, plain or omit"})
	}
	return errs
}

// parseMapping reads STEPGATE_PINGONE_USER_* (docs/design.md §17): FROM is
// empty (the upstream user itself), "header:NAME" (header identity) or
// "claim:NAME" (jwt identity); KIND is username or id; TRANSFORM is a
// comma-separated list of lower and strip-domain.
func (c config) parseMapping() (identity.MappingOptions, error) {
	var o identity.MappingOptions
	bad := func(name, format string, args ...any) (identity.MappingOptions, error) {
		return o, problem{envPrefix + name, fmt.Sprintf(format, args...)}
	}
	if from := c.PingOneUserFrom; from != "" {
		where, name, ok := strings.Cut(from, ":")
		switch {
		case !ok || name == "" || strings.TrimSpace(name) != name:
			return bad("PINGONE_USER_FROM", "want header:NAME or claim:NAME, got %q", from)
		case where == "header" && c.Identity != "header":
			return bad("PINGONE_USER_FROM", "header:%s needs STEPGATE_IDENTITY=header (with jwt, map from a claim)", name)
		case where == "claim" && c.Identity != "jwt":
			return bad("PINGONE_USER_FROM", "claim:%s needs STEPGATE_IDENTITY=jwt (with header, map from a header)", name)
		case where == "header":
			if strings.EqualFold(name, c.IDTokenHeader) || len(name) >= 11 && strings.EqualFold(strings.ReplaceAll(name[:11], "_", "-"), "x-stepgate-") {
				return bad("PINGONE_USER_FROM", "%s is a header stepgate sets; name the header your identity proxy sets", name)
			}
			o.Header = name
		case where == "claim":
			o.Claim = name
		default:
			return bad("PINGONE_USER_FROM", "want header:NAME or claim:NAME, got %q", from)
		}
	}
	switch k := identity.Kind(c.PingOneUserKind); k {
	case identity.KindUsername, identity.KindID:
		o.Kind = k
	default:
		return bad("PINGONE_USER_KIND", "want username or id, got %q", c.PingOneUserKind)
	}
	if c.PingOneUserTransform != "" {
		for _, t := range strings.Split(c.PingOneUserTransform, ",") {
			o.Transforms = append(o.Transforms, identity.Transform(strings.TrimSpace(t)))
		}
	}
	if o.Header != "" {
		// NewMapping checks the header name, kind and transforms; a claim
		// mapping is checked the same way once the JWT source exists.
		if _, err := identity.NewMapping(o); err != nil {
			return bad("PINGONE_USER_FROM", "%v", err)
		}
	} else if _, err := identity.NewMapping(identity.MappingOptions{Kind: o.Kind, Transforms: o.Transforms}); err != nil {
		return bad("PINGONE_USER_TRANSFORM", "%v", err)
	}
	return o, nil
}

// describeMapping explains, for -check-config, how the PingOne user is found.
func (c config) describeMapping(m identity.MappingOptions) string {
	var from string
	switch {
	case m.Header != "":
		from = "the header " + m.Header + " (believed only from STEPGATE_TRUSTED_PROXIES)"
	case m.Claim != "":
		from = "the claim " + m.Claim + " of the verified identity JWT"
	case c.Identity == "jwt":
		from = "the upstream user (the claim " + c.IdentityClaim + " of the verified identity JWT)"
	default:
		from = "the upstream user (the header " + c.IdentityHeader + ")"
	}
	s := "the PingOne user is read from " + from
	if len(m.Transforms) > 0 {
		var ts []string
		for _, t := range m.Transforms {
			switch t {
			case identity.Lower:
				ts = append(ts, "lower-cased")
			case identity.StripDomain:
				ts = append(ts, "cut at the last @")
			}
		}
		s += ", " + strings.Join(ts, ", then ")
	}
	kind := "a PingOne username"
	if m.Kind == identity.KindID {
		kind = "a PingOne user id (a UUID)"
	}
	return s + ", and sent to PingOne as " + kind + "; it must exist in the PingOne environment.\n" +
		"  the step-up cookie stays bound to the upstream user."
}

// validHostPort accepts a Host header value: a host name or IP literal
// with an optional port, nothing else.
func validHostPort(s string) bool {
	u, err := url.Parse("http://" + s)
	if err != nil || u.Host != s || u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.Hostname() == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

func validUUIDish(s string) bool {
	if len(s) < 8 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == '-') {
			return false
		}
	}
	return true
}

// describeIdentity explains, for -check-config, where the upstream user
// comes from and which peers are believed.
func (c config) describeIdentity() string {
	if c.Identity == "jwt" {
		peers := "only from STEPGATE_TRUSTED_PROXIES (" + c.trustedProxies() + ")"
		if c.IdentityJWTAnyPeer {
			peers = "from any peer (STEPGATE_IDENTITY_JWT_ANY_PEER=true)"
		}
		return "a JWT in " + c.IdentityJWTHeader + " verified against " + c.IdentityJWKSURL +
			", user from the claim " + c.IdentityClaim + ", believed " + peers
	}
	return "the header " + c.IdentityHeader + ", believed only from STEPGATE_TRUSTED_PROXIES (" + c.trustedProxies() + ")"
}

// parseDoors reads STEPGATE_FRONT_DOORS (docs/design.md §16): a
// comma-separated list of proxy, forward-auth and ext-authz.
func parseDoors(s string) (proxy.Doors, error) {
	var d proxy.Doors
	for _, f := range strings.Split(s, ",") {
		switch strings.TrimSpace(f) {
		case "proxy":
			d.Proxy = true
		case "forward-auth":
			d.ForwardAuth = true
		case "ext-authz":
			d.ExtAuthz = true
		default:
			return d, fmt.Errorf("want a comma-separated list of proxy, forward-auth and ext-authz, got %q", f)
		}
	}
	return d, nil
}

// describeDoors explains, for -check-config, which front doors are open.
func (c config) describeDoors(s settings) string {
	var out []string
	if s.doors.Proxy {
		out = append(out, "proxy (forwards to "+s.upstream.Redacted()+")")
	}
	if s.doors.ForwardAuth {
		out = append(out, "forward-auth ("+forwardauth.Path+" on STEPGATE_LISTEN, believed only from "+c.trustedProxies()+")")
	}
	if s.doors.ExtAuthz {
		e := "ext-authz (HTTP at " + extauthz.PathPrefix + "/ on STEPGATE_LISTEN"
		if c.AuthzGRPCListen != "" {
			e += ", gRPC on " + c.AuthzGRPCListen
		}
		e += ", believed only from " + c.trustedProxies()
		if s.doors.ExtAuthzBody {
			e += ", with request bodies"
		}
		out = append(out, e+")")
	}
	return strings.Join(out, "; ")
}

// isLoopbackHost reports whether host is localhost or a loopback address.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// validateSSF checks the shared signals receiver's settings.
func (c config) validateSSF(bad func(name, format string, args ...any)) {
	switch {
	case c.SSFIssuer == "":
		for _, kv := range [][2]string{{"SSF_AUDIENCE", c.SSFAudience}, {"SSF_JWKS_URL", c.SSFJWKSURL},
			{"SSF_BEARER_TOKEN", c.SSFBearerToken}, {"SSF_USER_TRANSFORM", c.SSFUserTransform}} {
			if kv[1] != "" {
				bad(kv[0], "set, but STEPGATE_SSF_ISSUER is not: it names the transmitter")
			}
		}
		return
	case c.SignalsListen == "":
		bad("SSF_ISSUER", "set, but STEPGATE_SIGNALS_LISTEN is not: the receiver listens there")
	case c.SSFAudience == "":
		bad("SSF_AUDIENCE", "required with STEPGATE_SSF_ISSUER: the aud the transmitter puts in its SETs")
	}
	if _, err := signals.WellKnown(c.SSFIssuer); err != nil && c.SSFJWKSURL == "" {
		bad("SSF_ISSUER", "want an https URL (its /.well-known/ssf-configuration names the keys; http only on loopback), or set STEPGATE_SSF_JWKS_URL")
	}
	if _, err := signals.KeyURL(c.SSFJWKSURL); c.SSFJWKSURL != "" && err != nil {
		bad("SSF_JWKS_URL", "want an https URL (http only on loopback)")
	}
	if c.SSFBearerToken != "" && len(c.SSFBearerToken) < 32 {
		bad("SSF_BEARER_TOKEN", "too short: want at least 32 characters (for example openssl rand -base64 32)")
	}
	if _, err := ssfTransforms(c.SSFUserTransform); err != nil {
		bad("SSF_USER_TRANSFORM", "%v", err)
	}
	if c.SSFMaxAge < time.Minute || c.SSFMaxAge > 24*time.Hour {
		bad("SSF_MAX_AGE", "want a duration between 1m and 24h")
	}
}

// ssfTransforms parses STEPGATE_SSF_USER_TRANSFORM.
func ssfTransforms(v string) ([]identity.Transform, error) {
	var ts []identity.Transform
	if v == "" {
		return nil, nil
	}
	for _, t := range strings.Split(v, ",") {
		ts = append(ts, identity.Transform(strings.TrimSpace(t)))
	}
	if _, err := identity.NewMapping(identity.MappingOptions{Transforms: ts}); err != nil {
		return nil, err
	}
	return ts, nil
}
