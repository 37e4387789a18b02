package pingonesim

import (
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// jwtSkew is the clock skew tolerated on exp/nbf of inbound JWTs (docs/pingone.md §3, INFERRED).
const jwtSkew = 60 * time.Second

// authorizeParams are the single-valued parameters /as/authorize reads.
var authorizeParams = []string{
	"client_id", "response_type", "response_mode", "redirect_uri", "scope", "state", "nonce",
	"code_challenge", "code_challenge_method", "acr_values", "login_hint_token", "request",
	"max_age", "prompt", "login_hint",
}

func (s *Server) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		methodNotAllowed(w, "GET, POST")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	if err := r.ParseForm(); err != nil {
		writeError(w, http.StatusBadRequest, codeInvalidData, msgInvalidData,
			errDetail{Code: "INVALID_VALUE", Message: "The request body could not be parsed."})
		return
	}
	// OAuth parameters must not repeat (RFC 6749 §3.1): a second client_id or
	// login_hint_token is an attack on whichever one a server happens to read.
	for _, p := range authorizeParams {
		if len(r.Form[p]) > 1 {
			invalidValue(w, p, p+" must not be repeated")
			return
		}
	}
	get := r.Form.Get
	issuer := s.issuerFor(r)
	now := s.now()

	app := s.findApp(get("client_id"))
	if app == nil {
		invalidValue(w, "client_id", "Unknown client_id")
		return
	}
	if m := get("response_mode"); m != "pi.flow" {
		invalidValue(w, "response_mode", "The simulator only supports response_mode=pi.flow")
		return
	}
	rt, err := parseResponseType(get("response_type"))
	if err != nil {
		invalidValue(w, "response_type", err.Error())
		return
	}
	if (rt["token"] || rt["id_token"]) && get("nonce") == "" {
		invalidValue(w, "nonce", "nonce is required when response_type includes token or id_token")
		return
	}
	redirectURI := get("redirect_uri")
	if redirectURI != "" && len(app.RedirectURIs) > 0 && !slices.Contains(app.RedirectURIs, redirectURI) {
		invalidValue(w, "redirect_uri", "Redirect URI mismatch")
		return
	}
	scope := strings.Join(strings.Fields(get("scope")), " ")
	if !slices.Contains(strings.Fields(scope), "openid") {
		invalidValue(w, "scope", "scope must include openid")
		return
	}
	challenge, method := get("code_challenge"), get("code_challenge_method")
	if challenge == "" && method != "" {
		invalidValue(w, "code_challenge", "code_challenge_method without code_challenge")
		return
	}
	if challenge != "" {
		if method == "" {
			method = "plain" // RFC 7636 §4.3
		}
		if method != "S256" && method != "plain" {
			invalidValue(w, "code_challenge_method", "Unsupported code_challenge_method")
			return
		}
		if len(challenge) < 43 || len(challenge) > 128 {
			invalidValue(w, "code_challenge", "code_challenge must be 43 to 128 characters")
			return
		}
	}
	if app.PKCERequired && (challenge == "" || method != "S256") {
		invalidValue(w, "code_challenge", "PKCE with S256 is required for this application")
		return
	}
	policy, ok := s.pickPolicy(app, get("acr_values"))
	if !ok {
		invalidValue(w, "acr_values", "None of the acr_values is a sign-on policy assigned to the application")
		return
	}
	maxAge := int64(-1)
	if v := get("max_age"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			invalidValue(w, "max_age", "max_age must be a non-negative integer")
			return
		}
		maxAge = n
	}
	lht := get("login_hint_token")
	if lht == "" {
		invalidValue(w, "login_hint_token", "login_hint_token is required")
		return
	}
	claims, err := s.verifyClientJWT(lht, app, issuer, now, kindLoginHint)
	if err != nil {
		invalidValue(w, "login_hint_token", "Invalid login_hint_token: "+err.Error())
		return
	}
	sub, _ := claims["sub"].(string)
	user := s.findUser(sub)
	if user == nil {
		invalidValue(w, "login_hint_token", "The user in login_hint_token was not found")
		return
	}
	remoteIP, requestAlg := "", ""
	var tpl *TemplateRequest
	if app.RequireSignedRequestObject && get("request") == "" {
		invalidValue(w, "request", "A signed request object is required for this application")
		return
	}
	if req := get("request"); req != "" {
		// Unknown claims of the request object are ignored, as PingOne
		// ignores them (issue 17 item 5); only pi.remoteIp and
		// pi.template are read.
		rc, err := s.verifyClientJWT(req, app, issuer, now, kindRequest)
		if err != nil {
			invalidValue(w, "request", "Invalid request JWT: "+err.Error())
			return
		}
		requestAlg = jwtAlg(req)
		if ip, ok := rc["pi.remoteIp"]; ok {
			str, isStr := ip.(string)
			if !isStr {
				invalidValue(w, "request", "pi.remoteIp must be a string")
				return
			}
			remoteIP = str
		}
		if raw, ok := rc["pi.template"]; ok {
			t, target, err := parseTemplateClaim(raw)
			if err != nil {
				invalidValue(w, target, err.Error())
				return
			}
			// An unknown template name is refused at authorize (INFERRED:
			// PingOne's answer is not documented; a transaction text must
			// never silently become the plain MFA text).
			if _, ok := s.pickTemplate(t.Name, t.Variant); !ok {
				invalidValue(w, "pi.template.name", "Unknown notification template "+strconv.Quote(t.Name))
				return
			}
			tpl = t
		}
	}

	f := &flow{
		id:            newUUID(),
		st:            newUUID(),
		sid:           newUUID(),
		app:           app,
		policy:        policy,
		user:          user,
		issuer:        issuer,
		responseTypes: rt,
		scope:         scope,
		state:         get("state"),
		nonce:         get("nonce"),
		redirectURI:   redirectURI,
		codeChallenge: challenge,
		codeMethod:    method,
		remoteIP:      remoteIP,
		prompt:        get("prompt"),
		requestAlg:    requestAlg,
		template:      tpl,
		maxAge:        maxAge,
		createdAt:     now,
		lastUsed:      now,
	}
	s.mu.Lock()
	s.sweepLocked(now)
	s.flows[f.id] = f
	s.beginLocked(f, now)
	body := s.flowJSONLocked(f, baseURL(r))
	status := f.status // read under the lock: a push may be answered at once
	s.mu.Unlock()
	s.log.Info("pingonesim: authorize", "flow", f.id, "user", user.Username, "acr", policy.Name, "status", status)

	http.SetCookie(w, &http.Cookie{
		Name: "ST", Value: f.st, Path: s.envPath() + "/",
		HttpOnly: true, Secure: true, SameSite: http.SameSiteNoneMode,
	})
	writeJSON(w, http.StatusOK, body)
}

// parseResponseType accepts any non-empty combination of code, token and id_token.
func parseResponseType(v string) (map[string]bool, error) {
	set := map[string]bool{}
	for _, t := range strings.Fields(v) {
		switch t {
		case "code", "token", "id_token":
		default:
			return nil, fmt.Errorf("unsupported response_type %q", t)
		}
		if set[t] {
			return nil, fmt.Errorf("response_type repeats %q", t)
		}
		set[t] = true
	}
	if len(set) == 0 {
		return nil, errors.New("response_type is required")
	}
	return set, nil
}

// pickPolicy returns the first listed acr_values name assigned to the app
// (PingOne reads them in order of preference), or the app's first policy when
// none is asked for.
func (s *Server) pickPolicy(app *App, acrValues string) (*Policy, bool) {
	names := strings.Fields(acrValues)
	if len(names) == 0 {
		if len(app.Policies) == 0 {
			return nil, false
		}
		names = app.Policies[:1]
	}
	for _, n := range names {
		if slices.Contains(app.Policies, n) {
			if p := s.findPolicy(n); p != nil {
				return p, true
			}
		}
	}
	return nil, false
}

// jwtAlg is the alg header of a JWT that has already been verified.
func jwtAlg(raw string) string {
	head, _, _ := strings.Cut(raw, ".")
	hb, _ := base64.RawURLEncoding.DecodeString(head)
	var h struct {
		Alg string `json:"alg"`
	}
	_ = json.Unmarshal(hb, &h)
	return h.Alg
}

// jwtKind says which JWT verifyClientJWT checks.
type jwtKind int

const (
	kindLoginHint jwtKind = iota
	kindRequest
)

// verifyClientJWT checks a login_hint_token or request JWT (SOURCES A9,
// A11, B4, B7, REQJWT): header without cty/enc (no nesting or
// encryption); aud = issuer; exp required unless the app allows its
// absence; 60 s skew. The key depends on alg:
//   - HS256/384/512: the client secret of the application named by iss;
//   - RS256/384/512: that application's JWKS (App.JWKS or App.JWKSURL);
//   - none: only for a request object, and only when the authorizing app
//     sets SupportUnsignedRequestObject.
//
// A login_hint_token may be issued by any application of the environment
// (SEED names its issuer "issuerApplicationID", B4; which key PingOne then
// uses is unknown, A6: the simulator uses the issuing app's). A request
// object must be issued by the authorizing client. ES* request objects
// are refused: REQJWT lists only HS* and RS*.
func (s *Server) verifyClientJWT(raw string, app *App, issuer string, now time.Time, kind jwtKind) (jwt.MapClaims, error) {
	head, _, ok := strings.Cut(raw, ".")
	if !ok {
		return nil, errors.New("not a JWT")
	}
	hb, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return nil, errors.New("malformed header")
	}
	var h map[string]any
	if err := json.Unmarshal(hb, &h); err != nil {
		return nil, errors.New("malformed header")
	}
	if _, ok := h["cty"]; ok {
		return nil, errors.New("cty header is not allowed")
	}
	if _, ok := h["enc"]; ok {
		return nil, errors.New("enc header is not allowed")
	}
	methods := []string{"HS256", "HS384", "HS512", "RS256", "RS384", "RS512"}
	if alg, _ := h["alg"].(string); alg == "none" {
		if kind != kindRequest || !app.SupportUnsignedRequestObject || app.RequireSignedRequestObject {
			return nil, errors.New("unsigned JWTs are not accepted for this application")
		}
		methods = []string{"none"}
	}
	popts := []jwt.ParserOption{
		jwt.WithValidMethods(methods),
		jwt.WithTimeFunc(func() time.Time { return now }),
		jwt.WithLeeway(jwtSkew),
		jwt.WithAudience(issuer),
	}
	if kind == kindRequest {
		popts = append(popts, jwt.WithIssuer(app.ClientID))
	}
	if !app.AllowNoExp {
		popts = append(popts, jwt.WithExpirationRequired())
	}
	claims := jwt.MapClaims{}
	_, err = jwt.NewParser(popts...).ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		iss, _ := t.Claims.(jwt.MapClaims)["iss"].(string)
		signer := s.findApp(iss)
		if kind == kindRequest && subtle.ConstantTimeCompare([]byte(iss), []byte(app.ClientID)) != 1 {
			signer = nil
		}
		if signer == nil {
			return nil, errors.New("iss is not an application of this environment")
		}
		switch t.Method.Alg() {
		case "none":
			return jwt.UnsafeAllowNoneSignatureType, nil
		case "RS256", "RS384", "RS512":
			kid, _ := t.Header["kid"].(string)
			return s.appKey(signer, kid)
		}
		return []byte(signer.Secret), nil
	})
	if err != nil {
		return nil, err
	}
	return claims, nil
}
