package pingonesim

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"math/big"
	"net/http"
	"net/url"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// authCode is an issued authorization code with a snapshot of its flow.
type authCode struct {
	flow   flow
	expiry time.Time
}

func newSigningKey() signingKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic("pingonesim: generate RSA key: " + err.Error())
	}
	return signingKey{kid: newUUID(), key: k}
}

// RotateKey makes a new RSA key current. The old keys stay in the JWKS until
// RetireOldKeys, as during a real key rollover.
func (s *Server) RotateKey() (newKid string) {
	k := newSigningKey()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = append(s.keys, k)
	return k.kid
}

// RetireOldKeys removes every key but the current one from the JWKS.
func (s *Server) RetireOldKeys() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = s.keys[len(s.keys)-1:]
}

// SignIDToken signs arbitrary claims with the current key (RS256 + kid), for
// negative tests of token verification.
func (s *Server) SignIDToken(claims map[string]any) string {
	s.mu.Lock()
	k := s.keys[len(s.keys)-1]
	s.mu.Unlock()
	return s.SignWith(jwt.SigningMethodRS256, k.key, k.kid, claims)
}

// SignWith signs claims with any method and key, setting kid when non-empty.
// It panics if the key does not suit the method: it is a test helper.
func (s *Server) SignWith(method jwt.SigningMethod, key any, kid string, claims map[string]any) string {
	t := jwt.NewWithClaims(method, jwt.MapClaims(claims))
	if kid != "" {
		t.Header["kid"] = kid
	}
	out, err := t.SignedString(key)
	if err != nil {
		panic("pingonesim: sign: " + err.Error())
	}
	return out
}

func (s *Server) signLocked(claims jwt.MapClaims) string {
	k := s.keys[len(s.keys)-1]
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	t.Header["kid"] = k.kid
	out, err := t.SignedString(k.key)
	if err != nil {
		panic("pingonesim: sign: " + err.Error())
	}
	return out
}

// idTokenLocked mints the ID token of a completed flow (docs/pingone.md §10).
func (s *Server) idTokenLocked(f *flow, accessToken string, now time.Time) string {
	c := jwt.MapClaims{
		"iss":                f.issuer,
		"sub":                f.user.ID,
		"aud":                f.app.ClientID,
		"iat":                now.Unix(),
		"exp":                now.Add(s.idTTL).Unix(),
		"auth_time":          f.authTime.Unix(),
		"acr":                f.policy.Name,
		"sid":                f.sid,
		"env":                s.tenant.EnvID,
		"p1.region":          "NA1",
		"preferred_username": f.user.Username,
	}
	if f.nonce != "" {
		c["nonce"] = f.nonce
	}
	if len(f.amr) > 0 {
		c["amr"] = f.amr
	}
	if accessToken != "" {
		h := sha256.Sum256([]byte(accessToken))
		c["at_hash"] = base64.RawURLEncoding.EncodeToString(h[:16])
	}
	return s.signLocked(c)
}

func (s *Server) accessTokenLocked(f *flow, now time.Time) string {
	return s.signLocked(jwt.MapClaims{
		"iss":       f.issuer,
		"sub":       f.user.ID,
		"aud":       []string{"https://api.pingone.com"},
		"client_id": f.app.ClientID,
		"scope":     f.scope,
		"iat":       now.Unix(),
		"exp":       now.Add(s.atTTL).Unix(),
		"auth_time": f.authTime.Unix(),
		"acr":       f.policy.Name,
		"sid":       f.sid,
		"env":       s.tenant.EnvID,
	})
}

// oauthError is the RFC 6749 §5.2 error body /as/token answers with.
func oauthError(w http.ResponseWriter, status int, code, desc string) {
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="token"`)
	}
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		methodNotAllowed(w, "POST")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "the request body could not be parsed")
		return
	}
	form := r.PostForm
	for _, p := range []string{"grant_type", "code", "code_verifier", "redirect_uri", "client_id", "client_secret"} {
		if len(form[p]) > 1 {
			oauthError(w, http.StatusBadRequest, "invalid_request", p+" must not be repeated")
			return
		}
	}
	clientID, secret, basic := r.BasicAuth()
	if basic {
		// RFC 6749 §2.3.1: both halves are form-urlencoded before base64.
		var e1, e2 error
		clientID, e1 = url.QueryUnescape(clientID)
		secret, e2 = url.QueryUnescape(secret)
		if e1 != nil || e2 != nil || form.Get("client_secret") != "" {
			oauthError(w, http.StatusUnauthorized, "invalid_client", "client authentication failed")
			return
		}
	} else {
		clientID, secret = form.Get("client_id"), form.Get("client_secret")
	}
	app := s.findApp(clientID)
	if app == nil || secret == "" || subtle.ConstantTimeCompare([]byte(secret), []byte(app.Secret)) != 1 {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "client authentication failed")
		return
	}
	if gt := form.Get("grant_type"); gt != "authorization_code" {
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "only authorization_code is supported")
		return
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	code := form.Get("code")
	ac := s.codes[code]
	// A code is burnt by any attempt to redeem it, right or wrong (RFC 6749 §4.1.2).
	delete(s.codes, code)
	switch {
	case ac == nil || code == "":
		oauthError(w, http.StatusBadRequest, "invalid_grant", "the authorization code is invalid or was already used")
		return
	case now.After(ac.expiry):
		oauthError(w, http.StatusBadRequest, "invalid_grant", "the authorization code has expired")
		return
	case ac.flow.app.ClientID != app.ClientID:
		oauthError(w, http.StatusBadRequest, "invalid_grant", "the authorization code was issued to another client")
		return
	case ac.flow.redirectURI != form.Get("redirect_uri"):
		oauthError(w, http.StatusBadRequest, "invalid_grant", "redirect_uri does not match the authorization request")
		return
	case !pkceOK(ac.flow.codeChallenge, ac.flow.codeMethod, form.Get("code_verifier")):
		oauthError(w, http.StatusBadRequest, "invalid_grant", "code_verifier does not match the code_challenge")
		return
	}
	f := &ac.flow
	at := s.accessTokenLocked(f, now)
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": at,
		"token_type":   "Bearer",
		"expires_in":   int(s.atTTL / time.Second),
		"scope":        f.scope,
		"id_token":     s.idTokenLocked(f, at, now),
	})
}

// pkceOK checks an RFC 7636 verifier. Without a challenge no verifier may be
// sent either (RFC 9700 §2.1.1: a verifier with no challenge is a downgrade).
func pkceOK(challenge, method, verifier string) bool {
	if challenge == "" {
		return verifier == ""
	}
	if len(verifier) < 43 || len(verifier) > 128 {
		return false
	}
	want := verifier
	if method == "S256" {
		h := sha256.Sum256([]byte(verifier))
		want = base64.RawURLEncoding.EncodeToString(h[:])
	}
	return subtle.ConstantTimeCompare([]byte(want), []byte(challenge)) == 1
}

func (s *Server) handleJWKS(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		methodNotAllowed(w, "GET")
		return
	}
	s.mu.Lock()
	keys := make([]map[string]string, 0, len(s.keys))
	for _, k := range s.keys {
		keys = append(keys, map[string]string{
			"kty": "RSA", "kid": k.kid, "use": "sig", "alg": "RS256",
			"n": base64.RawURLEncoding.EncodeToString(k.key.N.Bytes()),
			"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(k.key.E)).Bytes()),
		})
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"keys": keys})
}

func (s *Server) handleDiscovery(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		methodNotAllowed(w, "GET")
		return
	}
	iss := s.issuerFor(r)
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                iss,
		"authorization_endpoint":                iss + "/authorize",
		"pushed_authorization_request_endpoint": iss + "/par",
		"token_endpoint":                        iss + "/token",
		"userinfo_endpoint":                     iss + "/userinfo",
		"jwks_uri":                              iss + "/jwks",
		"end_session_endpoint":                  iss + "/signoff",
		"introspection_endpoint":                iss + "/introspect",
		"revocation_endpoint":                   iss + "/revoke",
		"device_authorization_endpoint":         iss + "/device_authorization",
		"claims_parameter_supported":            false,
		"request_parameter_supported":           true,
		"request_uri_parameter_supported":       false,
		"require_pushed_authorization_requests": false,
		"scopes_supported":                      []string{"openid", "profile", "email", "address", "phone"},
		"response_types_supported":              []string{"code", "id_token", "token id_token", "code id_token", "code token", "code token id_token"},
		"response_modes_supported":              []string{"pi.flow", "query", "fragment", "form_post"},
		"grant_types_supported":                 []string{"authorization_code", "implicit", "client_credentials", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"token_endpoint_auth_methods_supported": []string{"client_secret_basic", "client_secret_post"},
		"code_challenge_methods_supported":      []string{"plain", "S256"},
		"claims_supported": []string{"sub", "iss", "auth_time", "acr", "amr", "name", "given_name",
			"family_name", "preferred_username", "email", "sid", "env", "p1.region"},
	})
}
