package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/stepgate/stepgate/mfa"
	"github.com/stepgate/stepgate/proxy"
	"github.com/stepgate/stepgate/proxy/clientip"
	"github.com/stepgate/stepgate/proxy/identity"
	"github.com/stepgate/stepgate/proxy/rules"
	"github.com/stepgate/stepgate/session"
	"github.com/stepgate/stepgate/store"
)

// config is every STEPGATE_ environment variable (docs/design.md §9). Loading (this
// struct) is kept apart from validation (validate), which builds the typed
// values the program runs on.
type config struct {
	Upstream             string        `env:"UPSTREAM"` // required with the proxy front door
	UpstreamHost         string        `env:"UPSTREAM_HOST"`
	PreserveHost         bool          `env:"PRESERVE_HOST" envDefault:"false"`
	PingOneEnvID         string        `env:"PINGONE_ENV_ID,required"`
	PingOneClientID      string        `env:"PINGONE_CLIENT_ID,required"`
	PingOneClientSecret  string        `env:"PINGONE_CLIENT_SECRET,required" secret:"true"`
	CookieKeys           string        `env:"COOKIE_KEYS,required" secret:"true"`
	Listen               string        `env:"LISTEN" envDefault:":8080"`
	AdminListen          string        `env:"ADMIN_LISTEN" envDefault:":9090"`
	PingOneAuthBase      string        `env:"PINGONE_AUTH_BASE" envDefault:"https://auth.pingone.com"`
	PingOneCustomDomain  bool          `env:"PINGONE_CUSTOM_DOMAIN" envDefault:"false"`
	PingOneACRValues     string        `env:"PINGONE_ACR_VALUES"`
	PingOneScopes        string        `env:"PINGONE_SCOPES" envDefault:"openid profile email"`
	PingOneResponseType  string        `env:"PINGONE_RESPONSE_TYPE" envDefault:"token id_token"`
	PingOneTimeout       time.Duration `env:"PINGONE_TIMEOUT" envDefault:"10s"`
	PingOneRateLimit     float64       `env:"PINGONE_RATE_LIMIT" envDefault:"50"`
	PingOneRequestKey    string        `env:"PINGONE_REQUEST_KEY_FILE"`
	LimitWindow          time.Duration `env:"LIMIT_WINDOW" envDefault:"10m"`
	LimitStartsPerUser   int           `env:"LIMIT_STARTS_PER_USER" envDefault:"5"`
	LimitStartsPerIP     int           `env:"LIMIT_STARTS_PER_IP" envDefault:"20"`
	LimitOTPPerUser      int           `env:"LIMIT_OTP_PER_USER" envDefault:"10"`
	LimitSendsPerUser    int           `env:"LIMIT_SENDS_PER_USER" envDefault:"10"`
	Rules                string        `env:"RULES"`
	RulesFile            string        `env:"RULES_FILE"`
	DefaultAction        string        `env:"DEFAULT_ACTION" envDefault:"allow"`
	MFAMaxAge            time.Duration `env:"MFA_MAX_AGE" envDefault:"1h"`
	CaseInsensitive      bool          `env:"CASE_INSENSITIVE_PATHS" envDefault:"false"`
	Identity             string        `env:"IDENTITY" envDefault:"header"`
	IdentityHeader       string        `env:"IDENTITY_HEADER" envDefault:"X-Forwarded-User"`
	PassIdentityHeaders  string        `env:"PASS_IDENTITY_HEADERS"`
	TrustedProxies       string        `env:"TRUSTED_PROXIES"` // default defaultTrustedProxies
	FrontDoors           string        `env:"FRONT_DOORS" envDefault:"proxy"`
	AuthzGRPCListen      string        `env:"AUTHZ_GRPC_LISTEN"`
	AuthzWithBody        bool          `env:"AUTHZ_WITH_BODY" envDefault:"false"`
	IdentityJWTHeader    string        `env:"IDENTITY_JWT_HEADER" envDefault:"Authorization"`
	IdentityJWKSURL      string        `env:"IDENTITY_JWKS_URL"`
	IdentityIssuer       string        `env:"IDENTITY_ISSUER"`
	IdentityAudience     string        `env:"IDENTITY_AUDIENCE"`
	IdentityClaim        string        `env:"IDENTITY_CLAIM" envDefault:"sub"`
	IdentityJWTAnyPeer   bool          `env:"IDENTITY_JWT_ANY_PEER" envDefault:"false"`
	PingOneUserFrom      string        `env:"PINGONE_USER_FROM"`
	PingOneUserKind      string        `env:"PINGONE_USER_KIND" envDefault:"username"`
	PingOneUserTransform string        `env:"PINGONE_USER_TRANSFORM"`
	CookieName           string        `env:"COOKIE_NAME"`
	CookieSecure         bool          `env:"COOKIE_SECURE" envDefault:"true"`
	IDTokenHeader        string        `env:"ID_TOKEN_HEADER" envDefault:"X-Stepgate-Id-Token"`
	AllowMFABypass       bool          `env:"ALLOW_MFA_BYPASS" envDefault:"false"`
	TemplatesDir         string        `env:"TEMPLATES_DIR"`
	AppName              string        `env:"APP_NAME"`
	TLSCertFile          string        `env:"TLS_CERT_FILE"`
	TLSKeyFile           string        `env:"TLS_KEY_FILE"`
	UpstreamCAFile       string        `env:"UPSTREAM_CA_FILE"`
	UpstreamTimeout      time.Duration `env:"UPSTREAM_TIMEOUT" envDefault:"60s"`
	BodyIdleTimeout      time.Duration `env:"BODY_IDLE_TIMEOUT" envDefault:"30s"`
	ApproveMaxBody       int64         `env:"APPROVE_MAX_BODY" envDefault:"65536"`
	LogLevel             string        `env:"LOG_LEVEL" envDefault:"info"`
	AccessLog            bool          `env:"ACCESS_LOG" envDefault:"true"`
	ShutdownDrain        time.Duration `env:"SHUTDOWN_DRAIN" envDefault:"5s"`
	ShutdownTimeout      time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"30s"`
	Pprof                bool          `env:"PPROF" envDefault:"false"`
	Store                string        `env:"STORE" envDefault:"memory"`
	RedisURL             string        `env:"REDIS_URL" secret:"true"`
	RedisPassword        string        `env:"REDIS_PASSWORD" secret:"true"`
	RedisCAFile          string        `env:"REDIS_CA_FILE"`
	RedisTimeout         time.Duration `env:"REDIS_TIMEOUT" envDefault:"500ms"`
	StoreMaxStaleness    time.Duration `env:"STORE_MAX_STALENESS" envDefault:"10s"`
	AdminToken           string        `env:"ADMIN_TOKEN" secret:"true"`
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
// without a trailing newline, is the value).
var secretVars = []string{"PINGONE_CLIENT_SECRET", "COOKIE_KEYS", "REDIS_URL", "REDIS_PASSWORD", "ADMIN_TOKEN"}

// loadConfig reads the environment through getenv.
func loadConfig(getenv func(string) string) (config, error) {
	var c config
	params, err := env.GetFieldParamsWithOptions(&c, env.Options{Prefix: envPrefix})
	if err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
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
			return c, fmt.Errorf("config: set %s or %s_FILE, not both", key, key)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return c, fmt.Errorf("config: %s_FILE: %w", key, err)
		}
		vars[key] = strings.TrimRight(string(b), "\r\n")
	}
	if err := env.ParseWithOptions(&c, env.Options{Prefix: envPrefix, Environment: vars}); err != nil {
		return c, fmt.Errorf("config: %w", nameVariables(err))
	}
	return c, nil
}

// nameVariables rewrites env's parse errors, which name Go struct fields, to
// name the environment variables an operator actually sets.
func nameVariables(err error) error {
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return err
	}
	t := reflect.TypeFor[config]()
	var out []error
	for _, e := range agg.Errors {
		var pe env.ParseError
		if errors.As(e, &pe) {
			if f, ok := t.FieldByName(pe.Name); ok {
				key, _, _ := strings.Cut(f.Tag.Get("env"), ",")
				out = append(out, fmt.Errorf("%s%s: %w", envPrefix, key, pe.Err))
				continue
			}
		}
		out = append(out, e)
	}
	return errors.Join(out...)
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
}

// mappingVars are the settings that decide the PingOne user, named in the
// log line of a refused user.
const mappingVars = "STEPGATE_PINGONE_USER_FROM, STEPGATE_PINGONE_USER_KIND, STEPGATE_PINGONE_USER_TRANSFORM"

// validate checks every value and names the variable at fault.
func (c config) validate(readFile func(string) ([]byte, error)) (settings, error) {
	var s settings
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s%s: %s", envPrefix, name, fmt.Sprintf(format, args...)))
	}

	doors, err := parseDoors(c.FrontDoors)
	if err != nil {
		bad("FRONT_DOORS", "%v", err)
	}
	doors.ExtAuthzBody = doors.ExtAuthz && c.AuthzWithBody
	s.doors = doors
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
		bad("UPSTREAM", "required with the proxy front door (STEPGATE_FRONT_DOORS)")
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

	defAction, err := rules.ParseAction(c.DefaultAction)
	if err != nil {
		bad("DEFAULT_ACTION", "%v", err)
	}
	ruleText, source := c.Rules, "STEPGATE_RULES"
	switch {
	case c.Rules != "" && c.RulesFile != "":
		bad("RULES_FILE", "set STEPGATE_RULES or STEPGATE_RULES_FILE, not both")
	case c.RulesFile != "":
		b, err := readFile(c.RulesFile)
		if err != nil {
			bad("RULES_FILE", "%v", err)
		}
		ruleText, source = string(b), c.RulesFile
	}
	if err == nil {
		set, err := rules.Parse(source, ruleText, rules.Defaults{
			Action: defAction, MaxAge: c.MFAMaxAge, ACR: c.PingOneACRValues, CaseInsensitive: c.CaseInsensitive,
		})
		if err != nil {
			errs = append(errs, err)
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
		case !validHeaderName(h):
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
		bad("LOG_LEVEL", "%v", err)
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
	if c.AdminToken != "" && len(c.AdminToken) < 32 {
		bad("ADMIN_TOKEN", "too short: want at least 32 characters (for example openssl rand -base64 32)")
	}
	return s, errors.Join(errs...)
}

// parseMapping reads STEPGATE_PINGONE_USER_* (docs/design.md §17): FROM is
// empty (the upstream user itself), "header:NAME" (header identity) or
// "claim:NAME" (jwt identity); KIND is username or id; TRANSFORM is a
// comma-separated list of lower and strip-domain.
func (c config) parseMapping() (identity.MappingOptions, error) {
	var o identity.MappingOptions
	bad := func(name, format string, args ...any) (identity.MappingOptions, error) {
		return o, fmt.Errorf("%s%s: %s", envPrefix, name, fmt.Sprintf(format, args...))
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
		out = append(out, "forward-auth ("+proxy.PathForwardAuth+" on STEPGATE_LISTEN, believed only from "+c.trustedProxies()+")")
	}
	if s.doors.ExtAuthz {
		e := "ext-authz (HTTP at " + proxy.PathExtAuthz + "/ on STEPGATE_LISTEN"
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

// validHeaderName reports whether h is an HTTP field name (RFC 9110 §5.1: a
// token).
func validHeaderName(h string) bool {
	if h == "" {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}
