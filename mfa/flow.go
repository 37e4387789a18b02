package mfa

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"time"
)

// maxDevices bounds the devices kept from one flow. PingOne allows at most
// 15 paired devices per user (mfaSettings.pairing.maxAllowedDevices).
const maxDevices = 32

// maxField bounds any string copied from a flow into a Device, so a hostile
// or broken response cannot inflate the page or the logs.
const maxField = 512

// decodeFlow turns a PingOne flow object into a Flow. It is deliberately
// tolerant (docs/pingone.md §6.4): only id and status are required; a field of an
// unexpected type is ignored rather than failing the whole flow, because most
// of the shape is inferred rather than documented.
func decodeFlow(body []byte) (*Flow, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return nil, err
	}
	if top == nil {
		return nil, errors.New("flow is not a JSON object")
	}
	f := &Flow{}
	str(top["id"], &f.ID)
	var status string
	str(top["status"], &status)
	f.Status = Status(status)
	if f.ID == "" || f.Status == "" {
		return nil, errors.New("flow without id or status")
	}
	str(top["resumeUrl"], &f.ResumeURL)

	var expires string
	if str(top["expiresAt"], &expires) {
		if t, err := time.Parse(time.RFC3339Nano, expires); err == nil {
			f.ExpiresAt = t
		}
	}

	var links map[string]json.RawMessage
	if json.Unmarshal(top["_links"], &links) == nil {
		for name, raw := range links {
			var l struct {
				Href string `json:"href"`
			}
			if json.Unmarshal(raw, &l) == nil && l.Href != "" {
				if f.Links == nil {
					f.Links = make(map[string]string, len(links))
				}
				f.Links[name] = l.Href
			}
		}
	}

	var emb map[string]json.RawMessage
	if json.Unmarshal(top["_embedded"], &emb) == nil {
		var devices []json.RawMessage
		if json.Unmarshal(emb["devices"], &devices) == nil {
			for _, raw := range devices {
				if len(f.Devices) == maxDevices {
					break
				}
				if d, ok := decodeDevice(raw); ok {
					f.Devices = append(f.Devices, d)
				}
			}
		}
		var user map[string]json.RawMessage
		if json.Unmarshal(emb["user"], &user) == nil {
			str(user["id"], &f.UserID)
		}
	}

	var sel map[string]json.RawMessage
	if json.Unmarshal(top["selectedDevice"], &sel) == nil {
		str(sel["id"], &f.SelectedDeviceID)
	}

	f.AssertionOptions = normaliseOptions(top["publicKeyCredentialRequestOptions"])

	var nm map[string]json.RawMessage
	if json.Unmarshal(top["numberMatching"], &nm) == nil {
		f.PushNumber = pushNumber(nm["number"])
	}

	if raw, ok := top["authorizeResponse"]; ok {
		f.AuthorizeResponse = decodeAuthorizeResponse(raw)
	}
	return f, nil
}

func decodeDevice(raw json.RawMessage) (Device, bool) {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return Device{}, false
	}
	var d Device
	str(m["id"], &d.ID)
	if d.ID == "" || len(d.ID) > maxField {
		// A device without an id cannot be selected; skip it.
		return Device{}, false
	}
	str(m["type"], &d.Type)
	str(m["nickname"], &d.Nickname)
	if !str(m["phone"], &d.Target) || d.Target == "" {
		str(m["email"], &d.Target)
	}
	d.Type = clip(d.Type)
	d.Nickname = clip(d.Nickname)
	d.Target = clip(d.Target)
	return d, true
}

func clip(s string) string {
	if len(s) > maxField {
		return s[:maxField]
	}
	return s
}

// normaliseOptions accepts publicKeyCredentialRequestOptions as a JSON object
// or as a string holding one (PingOne sends the string form) and returns a
// compact JSON object, or nil if it is neither.
func normaliseOptions(raw json.RawMessage) json.RawMessage {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return nil
	}
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return nil
		}
		raw = bytes.TrimSpace([]byte(s))
	}
	if len(raw) == 0 || raw[0] != '{' || !json.Valid(raw) {
		return nil
	}
	var buf bytes.Buffer
	if json.Compact(&buf, raw) != nil {
		return nil
	}
	return json.RawMessage(buf.Bytes())
}

// decodeAuthorizeResponse reads the OAuth authorization response parameters
// PingOne wraps into authorizeResponse (or returns from /as/token).
// expires_in may be a number or a string.
func decodeAuthorizeResponse(raw json.RawMessage) *AuthorizeResponse {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil || m == nil {
		return nil
	}
	var ar AuthorizeResponse
	var s string
	if str(m["code"], &s) {
		ar.Code = Secret(s)
	}
	s = ""
	if str(m["access_token"], &s) {
		ar.AccessToken = Secret(s)
	}
	s = ""
	if str(m["id_token"], &s) {
		ar.IDToken = Secret(s)
	}
	str(m["token_type"], &ar.TokenType)
	str(m["scope"], &ar.Scope)
	str(m["state"], &ar.State)
	if e := m["expires_in"]; len(e) > 0 {
		var n json.Number
		if json.Unmarshal(e, &n) == nil {
			if v, err := strconv.Atoi(n.String()); err == nil {
				ar.ExpiresIn = v
			}
		}
	}
	return &ar
}

// pushNumber reads a number-matching number: a JSON string or integer of
// 1 to 8 decimal digits; anything else is "" (never shown).
func pushNumber(raw json.RawMessage) string {
	var s string
	if !str(raw, &s) {
		var n json.Number
		if json.Unmarshal(raw, &n) != nil {
			return ""
		}
		s = n.String()
	}
	if len(s) < 1 || len(s) > 8 {
		return ""
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return ""
		}
	}
	return s
}

// str decodes raw into *dst when it is a JSON string, reporting success.
func str(raw json.RawMessage, dst *string) bool {
	if len(raw) == 0 {
		return false
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return false
	}
	*dst = s
	return true
}

// isChallenge reports whether a status asks the user for a factor; seeing
// one is what makes a completion count as MFA rather than a bypass.
func isChallenge(s Status) bool {
	switch s {
	case StatusOTPRequired, StatusPushConfirmationRequired, StatusAssertionRequired:
		return true
	}
	return false
}
