package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"reflect"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/stepgate/stepgate/proxy/clientip"
	"github.com/stepgate/stepgate/proxy/rules"
	"github.com/stepgate/stepgate/session"
	"github.com/stepgate/stepgate/store"
)

// config is every STEPGATE_ environment variable (SPEC §9). Loading (this
// struct) is kept apart from validation (validate), which builds the typed
// values the program runs on.
type config struct {
	Upstream            string        `env:"UPSTREAM,required"`
	PingOneEnvID        string        `env:"PINGONE_ENV_ID,required"`
	PingOneClientID     string        `env:"PINGONE_CLIENT_ID,required"`
	PingOneClientSecret string        `env:"PINGONE_CLIENT_SECRET,required" secret:"true"`
	CookieKeys          string        `env:"COOKIE_KEYS,required" secret:"true"`
	Listen              string        `env:"LISTEN" envDefault:":8080"`
	AdminListen         string        `env:"ADMIN_LISTEN" envDefault:":9090"`
	PingOneAuthBase     string        `env:"PINGONE_AUTH_BASE" envDefault:"https://auth.pingone.com"`
	PingOneCustomDomain bool          `env:"PINGONE_CUSTOM_DOMAIN" envDefault:"false"`
	PingOneACRValues    string        `env:"PINGONE_ACR_VALUES"`
	PingOneScopes       string        `env:"PINGONE_SCOPES" envDefault:"openid profile email"`
	PingOneResponseType string        `env:"PINGONE_RESPONSE_TYPE" envDefault:"token id_token"`
	PingOneTimeout      time.Duration `env:"PINGONE_TIMEOUT" envDefault:"10s"`
	PingOneRateLimit    float64       `env:"PINGONE_RATE_LIMIT" envDefault:"50"`
	LimitWindow         time.Duration `env:"LIMIT_WINDOW" envDefault:"10m"`
	LimitStartsPerUser  int           `env:"LIMIT_STARTS_PER_USER" envDefault:"5"`
	LimitStartsPerIP    int           `env:"LIMIT_STARTS_PER_IP" envDefault:"20"`
	LimitOTPPerUser     int           `env:"LIMIT_OTP_PER_USER" envDefault:"10"`
	LimitSendsPerUser   int           `env:"LIMIT_SENDS_PER_USER" envDefault:"10"`
	Rules               string        `env:"RULES"`
	RulesFile           string        `env:"RULES_FILE"`
	DefaultAction       string        `env:"DEFAULT_ACTION" envDefault:"allow"`
	MFAMaxAge           time.Duration `env:"MFA_MAX_AGE" envDefault:"1h"`
	CaseInsensitive     bool          `env:"CASE_INSENSITIVE_PATHS" envDefault:"false"`
	Identity            string        `env:"IDENTITY" envDefault:"header"`
	IdentityHeader      string        `env:"IDENTITY_HEADER" envDefault:"X-Forwarded-User"`
	TrustedProxies      string        `env:"TRUSTED_PROXIES" envDefault:"127.0.0.1/32,::1/128"`
	IdentityJWTHeader   string        `env:"IDENTITY_JWT_HEADER" envDefault:"Authorization"`
	IdentityJWKSURL     string        `env:"IDENTITY_JWKS_URL"`
	IdentityIssuer      string        `env:"IDENTITY_ISSUER"`
	IdentityAudience    string        `env:"IDENTITY_AUDIENCE"`
	IdentityClaim       string        `env:"IDENTITY_CLAIM" envDefault:"sub"`
	CookieName          string        `env:"COOKIE_NAME"`
	CookieSecure        bool          `env:"COOKIE_SECURE" envDefault:"true"`
	IDTokenHeader       string        `env:"ID_TOKEN_HEADER" envDefault:"X-Stepgate-Id-Token"`
	AllowMFABypass      bool          `env:"ALLOW_MFA_BYPASS" envDefault:"false"`
	TemplatesDir        string        `env:"TEMPLATES_DIR"`
	TLSCertFile         string        `env:"TLS_CERT_FILE"`
	TLSKeyFile          string        `env:"TLS_KEY_FILE"`
	UpstreamCAFile      string        `env:"UPSTREAM_CA_FILE"`
	UpstreamTimeout     time.Duration `env:"UPSTREAM_TIMEOUT" envDefault:"60s"`
	LogLevel            string        `env:"LOG_LEVEL" envDefault:"info"`
	AccessLog           bool          `env:"ACCESS_LOG" envDefault:"true"`
	ShutdownDrain       time.Duration `env:"SHUTDOWN_DRAIN" envDefault:"5s"`
	ShutdownTimeout     time.Duration `env:"SHUTDOWN_TIMEOUT" envDefault:"30s"`
	Pprof               bool          `env:"PPROF" envDefault:"false"`
	Store               string        `env:"STORE" envDefault:"memory"`
	RedisURL            string        `env:"REDIS_URL" secret:"true"`
	RedisPassword       string        `env:"REDIS_PASSWORD" secret:"true"`
	RedisCAFile         string        `env:"REDIS_CA_FILE"`
	RedisTimeout        time.Duration `env:"REDIS_TIMEOUT" envDefault:"500ms"`
	StoreMaxStaleness   time.Duration `env:"STORE_MAX_STALENESS" envDefault:"10s"`
	AdminToken          string        `env:"ADMIN_TOKEN" secret:"true"`
}

const envPrefix = "STEPGATE_"

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
	redisCAs   *x509.CertPool // STEPGATE_REDIS_CA_FILE; nil: the system's roots
}

// validate checks every value and names the variable at fault.
func (c config) validate(readFile func(string) ([]byte, error)) (settings, error) {
	var s settings
	var errs []error
	bad := func(name, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s%s: %s", envPrefix, name, fmt.Sprintf(format, args...)))
	}

	u, err := url.Parse(c.Upstream)
	switch {
	case err != nil:
		bad("UPSTREAM", "%v", err)
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "", u.RawQuery != "", u.Fragment != "", u.User != nil:
		bad("UPSTREAM", "want an absolute http(s) URL without query, fragment or credentials")
	default:
		s.upstream = u
	}
	base, err := url.Parse(c.PingOneAuthBase)
	if err != nil || (base.Scheme != "https" && base.Scheme != "http") || base.Host == "" || base.RawQuery != "" {
		bad("PINGONE_AUTH_BASE", "want an absolute https URL such as https://auth.pingone.eu")
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

	if prefixes, err := clientip.ParseCIDRs(c.TrustedProxies); err != nil {
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
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		bad("TLS_CERT_FILE", "set both STEPGATE_TLS_CERT_FILE and STEPGATE_TLS_KEY_FILE, or neither")
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		bad("LOG_LEVEL", "%v", err)
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
