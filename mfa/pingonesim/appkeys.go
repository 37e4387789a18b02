package pingonesim

import (
	"context"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"time"
)

// jwksFetchTimeout bounds one fetch of an application's jwksUrl.
const jwksFetchTimeout = 5 * time.Second

// appKey returns the application's RSA public key for kid (any RSA key
// when kid is empty and the set has exactly one), from App.JWKS or, when
// that is empty, App.JWKSURL. It is called without Server.mu held.
func (s *Server) appKey(app *App, kid string) (*rsa.PublicKey, error) {
	doc := []byte(app.JWKS)
	if len(doc) == 0 {
		if app.JWKSURL == "" {
			return nil, errors.New("the application has no JWKS for RS* signatures")
		}
		var err error
		if doc, err = fetchJWKS(app.JWKSURL); err != nil {
			return nil, err
		}
	}
	var set struct {
		Keys []struct {
			Kty string `json:"kty"`
			Kid string `json:"kid"`
			Use string `json:"use"`
			N   string `json:"n"`
			E   string `json:"e"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(doc, &set); err != nil {
		return nil, fmt.Errorf("application JWKS: %w", err)
	}
	var found []*rsa.PublicKey
	for _, k := range set.Keys {
		if k.Kty != "RSA" || (k.Use != "" && k.Use != "sig") || (kid != "" && k.Kid != kid) {
			continue
		}
		n, err1 := base64.RawURLEncoding.DecodeString(k.N)
		e, err2 := base64.RawURLEncoding.DecodeString(k.E)
		if err1 != nil || err2 != nil || len(e) == 0 || len(e) > 4 {
			continue
		}
		found = append(found, &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())})
	}
	if len(found) != 1 {
		return nil, fmt.Errorf("application JWKS has %d RSA signing keys for kid %q, want one", len(found), kid)
	}
	return found[0], nil
}

func fetchJWKS(u string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), jwksFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("application jwksUrl: %w", err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("application jwksUrl: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("application jwksUrl answered %d", res.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(res.Body, maxBody+1))
	if err != nil || len(b) > maxBody {
		return nil, errors.New("application jwksUrl: body unreadable or over 64 KiB")
	}
	return b, nil
}
