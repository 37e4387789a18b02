package mfa

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"

	"github.com/golang-jwt/jwt/v5"
)

// RequestKey is stepgate's own key for signing the request object (issue
// 17 item 6, SOURCES A9, C1): the PingOne application then verifies it
// with the public JWKS (its jwks or jwksUrl property), so a tenant can set
// requireSignedRequestObject without the client secret being the only key
// that can vouch for pi.remoteIp and pi.template.
//
// RSA keys (2048 bits or more) sign RS256; P-256 keys sign ES256. Ping's
// request-JWT page lists HS256/384/512 and RS256/384/512 only (REQJWT), so
// ES256 is unverified against PingOne; RS256 is the safe choice.
type RequestKey struct {
	signer crypto.Signer
	method jwt.SigningMethod
	kid    string
	jwks   []byte
}

// ParseRequestKey reads a PEM private key: PKCS#8 ("PRIVATE KEY"), PKCS#1
// ("RSA PRIVATE KEY") or SEC 1 ("EC PRIVATE KEY").
func ParseRequestKey(pemBytes []byte) (*RequestKey, error) {
	block, rest := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("request key: no PEM block")
	}
	if next, _ := pem.Decode(rest); next != nil {
		return nil, errors.New("request key: more than one PEM block")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("request key: PEM type %q is not a private key", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("request key: %w", err)
	}
	k := &RequestKey{}
	var jwk map[string]string
	switch priv := key.(type) {
	case *rsa.PrivateKey:
		if priv.N.BitLen() < 2048 {
			return nil, fmt.Errorf("request key: RSA key of %d bits, want at least 2048", priv.N.BitLen())
		}
		k.signer, k.method = priv, jwt.SigningMethodRS256
		// RFC 7638 member order for the thumbprint: e, kty, n.
		jwk = map[string]string{
			"e":   base64.RawURLEncoding.EncodeToString(big.NewInt(int64(priv.E)).Bytes()),
			"kty": "RSA",
			"n":   base64.RawURLEncoding.EncodeToString(priv.N.Bytes()),
		}
	case *ecdsa.PrivateKey:
		if priv.Curve != elliptic.P256() {
			return nil, errors.New("request key: EC key is not on P-256")
		}
		pub, err := priv.PublicKey.ECDH()
		if err != nil {
			return nil, fmt.Errorf("request key: %w", err)
		}
		raw := pub.Bytes() // 0x04 || X || Y, 32 bytes each
		k.signer, k.method = priv, jwt.SigningMethodES256
		jwk = map[string]string{
			"crv": "P-256",
			"kty": "EC",
			"x":   base64.RawURLEncoding.EncodeToString(raw[1:33]),
			"y":   base64.RawURLEncoding.EncodeToString(raw[33:]),
		}
	default:
		return nil, fmt.Errorf("request key: %T is neither RSA nor ECDSA", key)
	}
	// encoding/json sorts map keys, which is RFC 7638's canonical order.
	canon, _ := json.Marshal(jwk)
	sum := sha256.Sum256(canon)
	k.kid = base64.RawURLEncoding.EncodeToString(sum[:])
	jwk["kid"], jwk["use"], jwk["alg"] = k.kid, "sig", k.method.Alg()
	k.jwks, _ = json.Marshal(map[string]any{"keys": []map[string]string{jwk}})
	return k, nil
}

// Alg is the JWS algorithm the key signs with: RS256 or ES256.
func (k *RequestKey) Alg() string { return k.method.Alg() }

// KeyID is the key's kid: its RFC 7638 JWK thumbprint.
func (k *RequestKey) KeyID() string { return k.kid }

// JWKS is the public key as a JWKS document, for the PingOne
// application's jwks property or the document at its jwksUrl.
func (k *RequestKey) JWKS() []byte { return append([]byte(nil), k.jwks...) }

// sign signs claims with header {"alg", "typ":"JWT", "kid"}.
func (k *RequestKey) sign(claims jwt.MapClaims) (string, error) {
	t := jwt.NewWithClaims(k.method, claims)
	t.Header["kid"] = k.kid
	return t.SignedString(k.signer)
}
