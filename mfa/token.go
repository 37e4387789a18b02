package mfa

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/stepgate/stepgate/mfa/jwks"
)

const (
	// hintLifetime is the login_hint_token and request JWT lifetime. PingOne
	// documents no maximum; short limits replay (docs/pingone.md §3: 60–300 s).
	hintLifetime = 2 * time.Minute
	// maxIDToken bounds the ID token we parse and later seal into a cookie.
	maxIDToken = 16 << 10
	// leeway is the clock skew allowed on exp/iat/nbf (docs/design.md §7).
	leeway = 60 * time.Second
)

// loginHintToken mints the JWT that names the user to PingOne (docs/pingone.md §3):
// HS256 with the client secret, header exactly {"alg":"HS256","typ":"JWT"}.
func (c *Client) loginHintToken(user string, now time.Time) (string, error) {
	jti, err := randomString(16)
	if err != nil {
		return "", err
	}
	return c.signHS256(jwt.MapClaims{
		"iss": c.cfg.ClientID,
		"sub": user,
		"aud": c.issuer, // a plain string, as in Ping's examples
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"exp": now.Add(hintLifetime).Unix(),
		"jti": jti,
	})
}

// requestObject mints the request JWT that carries pi.remoteIp, the end
// user's address, for PingOne's risk and audit (docs/pingone.md §4), and
// pi.template when the step-up shows a transaction (docs/pingone.md, the
// transaction-approval facts). tpl must have passed templateClaim.
func (c *Client) requestObject(remoteIP string, tpl map[string]any, now time.Time) (string, error) {
	jti, err := randomString(16)
	if err != nil {
		return "", err
	}
	claims := jwt.MapClaims{
		"iss": c.cfg.ClientID,
		"aud": c.issuer,
		"iat": now.Unix(),
		"exp": now.Add(hintLifetime).Unix(),
		"jti": jti,
	}
	if remoteIP != "" {
		claims["pi.remoteIp"] = remoteIP
	}
	if tpl != nil {
		claims["pi.template"] = tpl
	}
	if c.cfg.RequestKey != nil {
		return c.cfg.RequestKey.sign(claims)
	}
	return c.signHS256(claims)
}

func (c *Client) signHS256(claims jwt.MapClaims) (string, error) {
	// jwt.NewWithClaims sets exactly alg and typ; no kid, cty or enc.
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(c.cfg.ClientSecret.Reveal()))
}

// Complete turns a COMPLETED flow into a verified Result: it takes the
// authorizeResponse from the flow (or from /as/resume), checks state,
// exchanges a code when response_type is code, and verifies the ID token.
//
// Result.MFA is true only when p.Challenged is set (the flow was seen in an
// OTP, push or assertion state) and the ID token's amr has a value other
// than "pwd". PingOne's policy bypass completes straight from /as/authorize
// without any factor, and its ID token still looks like a normal sign-on;
// the flow never having asked for a factor is the primary signal, amr the
// second.
func (c *Client) Complete(ctx context.Context, p *Pending, f *Flow) (*Result, error) {
	if err := checkPending("resume", p); err != nil {
		return nil, err
	}
	if f == nil || f.Status != StatusCompleted {
		return nil, newError("resume", KindInvalid, errors.New("flow is not COMPLETED"))
	}
	if f.ID != p.FlowID {
		return nil, newError("resume", KindInvalid, errors.New("flow does not belong to this pending state"))
	}
	ar := f.AuthorizeResponse
	if ar == nil || (ar.IDToken == "" && ar.Code == "") {
		var err error
		if ar, err = c.resume(ctx, p, f); err != nil {
			return nil, err
		}
	}
	// In pi.flow the response comes back on our own TLS call, not through
	// the browser, so state's CSRF role is moot; an absent state is
	// tolerated (its presence in authorizeResponse is only inferred,
	// docs/pingone.md §7), a different one is not.
	if ar.State != "" && subtle.ConstantTimeCompare([]byte(ar.State), []byte(p.State)) != 1 {
		return nil, newError("resume", KindTokenInvalid, errors.New("state mismatch"))
	}
	idToken := ar.IDToken
	if c.cfg.ResponseType == ResponseTypeCode {
		if ar.Code == "" {
			return nil, newError("resume", KindTokenInvalid, errors.New("no code in authorize response"))
		}
		var err error
		if idToken, err = c.exchange(ctx, p, ar.Code); err != nil {
			return nil, err
		}
	}
	if idToken == "" {
		return nil, newError("resume", KindTokenInvalid, errors.New("no id_token in authorize response"))
	}
	return c.verifyIDToken(ctx, p, idToken)
}

// resume GETs /as/resume for a COMPLETED flow without authorizeResponse. It
// accepts a 200 JSON flow (pi.flow) or a 302 whose Location carries the
// response parameters in the query or the fragment.
func (c *Client) resume(ctx context.Context, p *Pending, f *Flow) (*AuthorizeResponse, error) {
	const op = "resume"
	target := f.ResumeURL
	if target == "" || !c.onAuthBase(target) {
		target = c.endpoint("as", "resume") + "?flowId=" + url.QueryEscape(p.FlowID)
	}
	r, err := c.call(ctx, op, p, http.MethodGet, target, "", nil, true)
	if err != nil {
		return nil, err
	}
	if r.status >= 300 {
		return fromLocation(op, r.header.Get("Location"))
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(r.body, &top); err != nil || top == nil {
		return nil, newError(op, KindUnavailable, errors.New("resume body is not a JSON object"))
	}
	var ar *AuthorizeResponse
	if raw, ok := top["authorizeResponse"]; ok {
		ar = decodeAuthorizeResponse(raw)
	} else {
		ar = decodeAuthorizeResponse(r.body) // the parameters at the top level
	}
	if ar == nil || (ar.IDToken == "" && ar.Code == "") {
		return nil, newError(op, KindUnavailable, errors.New("resume answered without authorize response"))
	}
	return ar, nil
}

// fromLocation reads OAuth response parameters from a redirect Location.
// The Location is never requested; it is only parsed.
func fromLocation(op, loc string) (*AuthorizeResponse, error) {
	u, err := url.Parse(loc)
	if err != nil || loc == "" {
		return nil, newError(op, KindUnavailable, errors.New("redirect without a usable Location"))
	}
	q := u.Query()
	if frag, err := url.ParseQuery(u.Fragment); err == nil {
		for k, v := range frag {
			if _, ok := q[k]; !ok {
				q[k] = v
			}
		}
	}
	if e := q.Get("error"); e != "" {
		ee := newError(op, KindInvalid, errors.New("authorization error in redirect"))
		ee.Code, ee.Message = e, q.Get("error_description")
		return nil, ee
	}
	ar := &AuthorizeResponse{
		Code:        Secret(q.Get("code")),
		IDToken:     Secret(q.Get("id_token")),
		AccessToken: Secret(q.Get("access_token")),
		TokenType:   q.Get("token_type"),
		Scope:       q.Get("scope"),
		State:       q.Get("state"),
	}
	if ar.Code == "" && ar.IDToken == "" {
		return nil, newError(op, KindUnavailable, errors.New("redirect without code or id_token"))
	}
	return ar, nil
}

// exchange redeems an authorization code at /as/token with
// client_secret_basic and the PKCE verifier, returning the ID token.
func (c *Client) exchange(ctx context.Context, p *Pending, code Secret) (Secret, error) {
	const op = "token"
	if p.CodeVerifier == "" {
		return "", newError(op, KindInvalid, errors.New("no PKCE verifier in pending state"))
	}
	form := url.Values{
		"grant_type":    {"authorization_code"},
		"code":          {code.Reveal()},
		"code_verifier": {p.CodeVerifier},
	}
	r, err := c.tokenCall(ctx, op, []byte(form.Encode()))
	if err != nil {
		return "", err
	}
	ar := decodeAuthorizeResponse(r.body)
	if ar == nil || ar.IDToken == "" {
		return "", newError(op, KindUnavailable, errors.New("token response without id_token"))
	}
	return ar.IDToken, nil
}

// tokenCall is call() for /as/token, which authenticates the client with
// HTTP Basic and carries no flow cookies.
func (c *Client) tokenCall(ctx context.Context, op string, body []byte) (*reply, error) {
	return c.send(ctx, op, nil, http.MethodPost, c.endpoint("as", "token"),
		"application/x-www-form-urlencoded", body, false, func(req *http.Request) {
			// RFC 6749 §2.3.1: form-encode id and secret before Basic.
			req.SetBasicAuth(url.QueryEscape(c.cfg.ClientID), url.QueryEscape(c.cfg.ClientSecret.Reveal()))
		})
}

// idClaims are the ID token claims we check.
type idClaims struct {
	jwt.RegisteredClaims
	Nonce    string           `json:"nonce"`
	ACR      string           `json:"acr"`
	AMR      jwt.ClaimStrings `json:"amr"`
	AZP      string           `json:"azp"`
	AuthTime *jwt.NumericDate `json:"auth_time"`
}

// verifyIDToken checks the ID token (docs/design.md §7): RS256 only, key by kid from
// PingOne's JWKS, iss, aud (and azp when there are several audiences),
// exp/iat/nbf with 60 s leeway on our clock, nonce, acr, sub.
func (c *Client) verifyIDToken(ctx context.Context, p *Pending, raw Secret) (*Result, error) {
	const op = "id_token"
	fail := func(err error) (*Result, error) {
		return nil, newError(op, KindTokenInvalid, err)
	}
	if len(raw) > maxIDToken {
		return fail(fmt.Errorf("id token larger than %d bytes", maxIDToken))
	}
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{"RS256"}),
		jwt.WithIssuer(c.issuer),
		jwt.WithAudience(c.cfg.ClientID),
		jwt.WithLeeway(leeway),
		jwt.WithTimeFunc(c.cfg.Now),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
	)
	var cl idClaims
	if _, err := parser.ParseWithClaims(raw.Reveal(), &cl, c.keys.Keyfunc(ctx)); err != nil {
		if errors.Is(err, jwks.ErrUnavailable) {
			// Still refused, but the user should hear "try again later",
			// not "your sign-in was bad".
			return nil, newError(op, KindUnavailable, err)
		}
		return fail(err)
	}
	if cl.Subject == "" {
		return fail(errors.New("no sub"))
	}
	if cl.IssuedAt == nil {
		return fail(errors.New("no iat"))
	}
	if len(cl.Audience) > 1 && cl.AZP != c.cfg.ClientID {
		return fail(errors.New("several audiences and azp is not our client"))
	}
	if p.Nonce == "" || subtle.ConstantTimeCompare([]byte(cl.Nonce), []byte(p.Nonce)) != 1 {
		return fail(errors.New("nonce mismatch"))
	}
	if p.ACR != "" && !slices.Contains(strings.Fields(p.ACR), cl.ACR) {
		return fail(fmt.Errorf("acr %q is not the requested %q", cl.ACR, p.ACR))
	}
	res := &Result{
		Subject: cl.Subject,
		ACR:     cl.ACR,
		AMR:     []string(cl.AMR),
		Expiry:  cl.ExpiresAt.Time,
		IDToken: raw,
		MFA:     p.Challenged && slices.ContainsFunc(cl.AMR, func(m string) bool { return m != "" && m != "pwd" }),
	}
	if cl.AuthTime != nil {
		res.AuthTime = cl.AuthTime.Time
	}
	return res, nil
}
