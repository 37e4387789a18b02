package pingonesim

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/hex"
)

// Demo tenant identifiers (docs/design.md §12).
const (
	DemoEnvID        = "6f1c2a4e-0d7b-4c1e-9a52-3b8f0e6d2c11"
	DemoClientID     = "c0a8e3b2-5d4f-4e6a-8b7c-1d2e3f4a5b6c"
	DemoClientSecret = "demo-client-secret"
	DemoPolicy       = "MFA-Only"

	DemoAliceID = "3b9e2c1a-4d5f-4a6b-8c7d-a11ce0000001"
	DemoBobID   = "3b9e2c1a-4d5f-4a6b-8c7d-b0b000000002"
	DemoCarolID = "3b9e2c1a-4d5f-4a6b-8c7d-ca2010000003"
	DemoDaveID  = "3b9e2c1a-4d5f-4a6b-8c7d-da7e00000004"

	DemoAliceSMSID   = "5e1d0c2b-0000-4000-8000-a11ce00005a5"
	DemoAliceEmailID = "5e1d0c2b-0000-4000-8000-a11ce000e3a1"
	DemoBobMobileID  = "5e1d0c2b-0000-4000-8000-b0b00000b0b1"
	DemoCarolTOTPID  = "5e1d0c2b-0000-4000-8000-ca2010007070"
	DemoCarolFIDO2ID = "5e1d0c2b-0000-4000-8000-ca201000f1d0"

	// DemoTOTPSecretBase32 is carol's TOTP seed as an authenticator app takes
	// it: the ASCII bytes "12345678901234567890" (the RFC 6238 test seed).
	DemoTOTPSecretBase32 = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
)

// demoFIDO2Scalar is carol's FIDO2 private key, SHA-256("stepgate demo fido2
// key"). It is public on purpose: the demo and browser tests load it into a
// virtual authenticator.
const demoFIDO2Scalar = "b592c7c4ec4e8d3a3db7e26f27fa772e913076384e915ce4409c6df8da6a0561"

// DemoFIDO2CredentialID is carol's FIDO2 credential id,
// SHA-256("stepgate demo fido2 credential"). Treat it as read-only.
var DemoFIDO2CredentialID = mustHex("cfc2716ea32e6c3bceafddd85f4526bbd23b7df681cf34d7faa2fcf76b3f694e")

// DemoTOTPSecret returns carol's TOTP seed bytes.
func DemoTOTPSecret() []byte { return []byte("12345678901234567890") }

// DemoFIDO2PrivateKey returns carol's FIDO2 P-256 private key (a fresh copy).
func DemoFIDO2PrivateKey() *ecdsa.PrivateKey {
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), mustHex(demoFIDO2Scalar))
	if err != nil {
		panic("pingonesim: demo FIDO2 key: " + err.Error())
	}
	return k
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// DemoTransactionTemplate is the demo environment's transaction template
// (one default variant), with the variable names of Ping's own example
// (C1: sum, currency, recipient).
func DemoTransactionTemplate() Template {
	return Template{DefaultVariant: {
		SMS:          "Approve ${sum} ${currency} to ${recipient}? Code: ${otp}",
		Voice:        "To approve ${sum} ${currency} to ${recipient}, your code is ${otp}.",
		EmailSubject: "Approve ${sum} ${currency} to ${recipient}?",
		EmailBody: "Hello ${user.username}, to approve ${sum} ${currency} to ${recipient} enter the code ${otp}. " +
			"If you did not ask for this, do not enter it.",
		PushTitle: "Approve ${sum} ${currency}?",
		PushBody:  "To ${recipient}. Deny if you did not ask for this.",
	}}
}

// DemoTenant is the demo environment of docs/design.md §12: policy MFA-Only
// (DEFAULT_TO_FIRST, BYPASS for users without devices), RP ID localhost, and
// users alice (SMS+EMAIL, prompt), bob (push), carol (TOTP+FIDO2, prompt) and
// dave (no device: the bypass stepgate must refuse), and the notification
// templates strong_authentication and transaction.
func DemoTenant() Tenant {
	return Tenant{
		EnvID: DemoEnvID,
		RPID:  "localhost",
		Templates: map[string]Template{
			TemplateStrongAuthentication: defaultTemplates()[TemplateStrongAuthentication],
			TemplateTransaction:          DemoTransactionTemplate(),
		},
		Apps: []App{{
			ClientID: DemoClientID,
			Secret:   DemoClientSecret,
			Name:     "stepgate demo",
			Policies: []string{DemoPolicy},
		}},
		Policies: []Policy{{
			Name:            DemoPolicy,
			DeviceSelection: DefaultToFirst,
			NoDevice:        NoDeviceBypass,
			OTPFailureCount: DefaultOTPFailureCount,
			PushTimeout:     DefaultPushTimeout,
		}},
		Users: []User{
			{ID: DemoAliceID, Username: "alice", DeviceSelection: PromptToSelect, Devices: []Device{
				{ID: DemoAliceSMSID, Type: "SMS", Nickname: "Alice's phone", Phone: "+1 555 0100 1234"},
				{ID: DemoAliceEmailID, Type: "EMAIL", Nickname: "Work e-mail", Email: "alice@example.com"},
			}},
			{ID: DemoBobID, Username: "bob", Devices: []Device{
				{ID: DemoBobMobileID, Type: "MOBILE", Nickname: "Bob's iPhone"},
			}},
			{ID: DemoCarolID, Username: "carol", DeviceSelection: PromptToSelect, Devices: []Device{
				{ID: DemoCarolTOTPID, Type: "TOTP", Nickname: "Authenticator app", TOTPSecret: DemoTOTPSecret()},
				{ID: DemoCarolFIDO2ID, Type: "FIDO2", Nickname: "Security key",
					CredentialID: bytes.Clone(DemoFIDO2CredentialID), PublicKey: &DemoFIDO2PrivateKey().PublicKey},
			}},
			{ID: DemoDaveID, Username: "dave"},
		},
	}
}
