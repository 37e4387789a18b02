package pingonesim

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"net/url"
	"slices"
	"strings"
)

// decodeB64 accepts base64url with or without padding (what browsers and
// libraries emit), and plain base64 as a courtesy.
func decodeB64(s string) ([]byte, error) {
	if b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "=")); err == nil {
		return b, nil
	}
	return base64.StdEncoding.DecodeString(s)
}

// assertionJSON is a PublicKeyCredential as browsers serialise it (toJSON()).
type assertionJSON struct {
	ID       string `json:"id"`
	RawID    string `json:"rawId"`
	Type     string `json:"type"`
	Response struct {
		ClientDataJSON    string `json:"clientDataJSON"`
		AuthenticatorData string `json:"authenticatorData"`
		Signature         string `json:"signature"`
		UserHandle        string `json:"userHandle"`
	} `json:"response"`
}

// verifyAssertion checks a WebAuthn assertion for the flow's FIDO2 device
// (WebAuthn Level 2 §7.2): credential, clientData type/challenge/origin,
// rpIdHash, user presence, signature counter and the ES256 signature.
func (s *Server) verifyAssertion(f *flow, origin, raw string) error {
	d := f.selected
	if d == nil || d.PublicKey == nil {
		return errors.New("no FIDO2 device selected")
	}
	if origin == "" || raw == "" {
		return errors.New("origin and assertion are required")
	}
	var a assertionJSON
	if err := json.Unmarshal([]byte(raw), &a); err != nil {
		return errors.New("assertion is not valid JSON")
	}
	if a.Type != "public-key" {
		return errors.New("credential type is not public-key")
	}
	credID := a.RawID
	if credID == "" {
		credID = a.ID
	}
	rawID, err := decodeB64(credID)
	if err != nil || subtle.ConstantTimeCompare(rawID, d.CredentialID) != 1 {
		return errors.New("unknown credential")
	}
	cdj, err := decodeB64(a.Response.ClientDataJSON)
	if err != nil {
		return errors.New("clientDataJSON is not base64url")
	}
	var cd struct {
		Type      string `json:"type"`
		Challenge string `json:"challenge"`
		Origin    string `json:"origin"`
	}
	if err := json.Unmarshal(cdj, &cd); err != nil {
		return errors.New("clientDataJSON is not JSON")
	}
	if cd.Type != "webauthn.get" {
		return errors.New("clientData type is not webauthn.get")
	}
	ch, err := decodeB64(cd.Challenge)
	if err != nil || len(f.challenge) == 0 || subtle.ConstantTimeCompare(ch, f.challenge) != 1 {
		return errors.New("challenge mismatch")
	}
	if cd.Origin != origin {
		return errors.New("clientData origin differs from the posted origin")
	}
	if !s.originAllowed(origin) {
		return errors.New("origin not allowed for the relying party")
	}
	ad, err := decodeB64(a.Response.AuthenticatorData)
	if err != nil || len(ad) < 37 {
		return errors.New("authenticatorData is malformed")
	}
	rpHash := sha256.Sum256([]byte(s.tenant.RPID))
	if !bytes.Equal(ad[:32], rpHash[:]) {
		return errors.New("rpIdHash mismatch")
	}
	if ad[32]&0x01 == 0 {
		return errors.New("user presence flag not set")
	}
	sig, err := decodeB64(a.Response.Signature)
	if err != nil {
		return errors.New("signature is not base64url")
	}
	cdHash := sha256.Sum256(cdj)
	signed := sha256.Sum256(append(append([]byte(nil), ad...), cdHash[:]...))
	if !ecdsa.VerifyASN1(d.PublicKey, signed[:], sig) {
		return errors.New("bad signature")
	}
	// A counter that does not grow means a cloned authenticator (§6.1.1);
	// authenticators that keep it at zero are exempt.
	count := binary.BigEndian.Uint32(ad[33:37])
	if last := s.signCounts[d.ID]; count != 0 || last != 0 {
		if count <= last {
			return errors.New("signature counter did not increase")
		}
	}
	s.signCounts[d.ID] = count
	return nil
}

// originAllowed: the tenant's Origins list when set; otherwise https on the
// RP ID or a subdomain of it, and http only for localhost (as browsers allow).
func (s *Server) originAllowed(origin string) bool {
	if len(s.tenant.Origins) > 0 {
		return slices.Contains(s.tenant.Origins, origin)
	}
	u, err := url.Parse(origin)
	if err != nil || u.Path != "" || u.RawQuery != "" || u.User != nil {
		return false
	}
	host := u.Hostname()
	rp := s.tenant.RPID
	if host != rp && !strings.HasSuffix(host, "."+rp) {
		return false
	}
	switch u.Scheme {
	case "https":
		return true
	case "http":
		return host == "localhost"
	}
	return false
}
