package mfa

import (
	"fmt"
	"strings"
	"time"
)

// ErrorKind says what a caller (the challenge page) can do about an error.
type ErrorKind int

const (
	KindInvalid      ErrorKind = iota // PingOne refused the request (4xx); see Code/DetailCode
	KindWrongOTP                      // otp.check failed; AttemptsRemaining may be known
	KindFlowExpired                   // 404: unknown or idle-expired flow; start again
	KindRateLimited                   // 429 (or the local cap); RetryAfter set
	KindUnavailable                   // timeout, transport error, 5xx, malformed response
	KindTokenInvalid                  // the ID token failed verification
	KindFlowFailed                    // flow reached FAILED
)

func (k ErrorKind) String() string {
	switch k {
	case KindInvalid:
		return "invalid"
	case KindWrongOTP:
		return "wrong_otp"
	case KindFlowExpired:
		return "flow_expired"
	case KindRateLimited:
		return "rate_limited"
	case KindUnavailable:
		return "unavailable"
	case KindTokenInvalid:
		return "token_invalid"
	case KindFlowFailed:
		return "flow_failed"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Error is every error the Client returns. Message and CorrelationID come
// from PingOne and are for logs only, never for the page.
type Error struct {
	Kind         ErrorKind
	Op           string // the operation, as in Config.Observe
	HTTPStatus   int    // 0 when no response
	Code         string // PingOne top-level code, e.g. INVALID_DATA
	DetailCode   string // details[0].code, e.g. INVALID_OTP
	DetailTarget string // details[0].target, e.g. login_hint_token
	// Targets are the parameter names every details[] entry targets
	// (names only: PingOne puts no value there; anything that does not
	// look like a parameter name is left out), for the log.
	Targets           []string
	Message           string
	CorrelationID     string // PingOne error id
	RetryAfter        time.Duration
	AttemptsRemaining int // -1 when PingOne did not say
	Err               error
}

func (e *Error) Error() string {
	s := fmt.Sprintf("pingone: %s: %s", e.Op, e.Kind)
	if e.HTTPStatus != 0 {
		s += fmt.Sprintf(" (HTTP %d", e.HTTPStatus)
		if e.Code != "" {
			s += " " + e.Code
		}
		if e.DetailCode != "" {
			s += "/" + e.DetailCode
		}
		if len(e.Targets) > 0 {
			s += " target " + strings.Join(e.Targets, ",")
		}
		s += ")"
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// UserRefused reports whether PingOne refused the user named in the
// login_hint_token: a 400 from authorize whose detail targets
// login_hint_token. PingOne documents that sub must be a username or user
// id of the environment; an unknown one is refused this way (the exact code
// is not documented, see docs/pingone.md §2.5), and so is a token PingOne
// cannot verify, which stepgate mints itself, so the user value is by far
// the likelier cause.
func (e *Error) UserRefused() bool {
	return e.Op == "authorize" && e.HTTPStatus == 400 && e.DetailTarget == "login_hint_token"
}

// parameterName reports whether a details[].target looks like the name of
// a parameter (login_hint_token, device.id, selectedDevice[0].id), so that
// a malformed or hostile answer cannot put arbitrary text into the log.
func parameterName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '_' || c == '.' || c == '-' || c == '[' || c == ']') {
			return false
		}
	}
	return true
}
