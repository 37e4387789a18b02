package pingonesim

import (
	"net/http"
	"time"
)

// User-level limits of PingOne's MFA policy (SOURCES A28, B12, B13): wrong
// OTPs block the user from OTP methods for a cool-down, and denied or
// ignored pushes block push. How a blocked user's flow looks is not
// documented; the simulator's choices (README) are:
//   - selecting a blocked method (first selection at authorize, or
//     device.select) sends nothing: device.select answers 400 INVALID_DATA
//     with detail LIMIT_EXCEEDED (a real PingOne detail code, C7) and leaves
//     the flow as it was; at authorize the flow is FAILED with error code
//     LIMIT_EXCEEDED;
//   - otp.check while the user is blocked answers 400 LIMIT_EXCEEDED and
//     is neither checked nor counted;
//   - the wrong OTP that reaches the count fails the flow as well.

// limitExceeded is the error code of a blocked method.
const limitExceeded = "LIMIT_EXCEEDED"

func (s *Server) lockLocked(u *User) *userLock {
	l := s.locks[u.ID]
	if l == nil {
		l = &userLock{}
		s.locks[u.ID] = l
	}
	return l
}

func isOTPType(t string) bool {
	return t == "SMS" || t == "VOICE" || t == "EMAIL" || t == "TOTP" || t == "WHATSAPP"
}

// blockedUntilLocked is when d's method stops being blocked for f's user,
// or the zero time when it is not blocked at now.
func (s *Server) blockedUntilLocked(f *flow, d *Device, now time.Time) time.Time {
	l := s.lockLocked(f.user)
	var until time.Time
	switch {
	case isOTPType(d.Type):
		until = l.otpBlockedUntil
	case d.Type == "MOBILE":
		until = l.pushBlockedUntil
	}
	if now.Before(until) {
		return until
	}
	return time.Time{}
}

// otpFailedLocked counts a wrong OTP for f's user and reports whether the
// user is now blocked.
func (s *Server) otpFailedLocked(f *flow, now time.Time) bool {
	if f.policy.OTPCoolDown < 0 {
		return false
	}
	l := s.lockLocked(f.user)
	l.otpFailures++
	if l.otpFailures < f.policy.OTPFailureCount {
		return false
	}
	l.otpFailures = 0
	l.otpBlockedUntil = now.Add(f.policy.OTPCoolDown)
	s.log.Info("pingonesim: user blocked from OTP", "user", f.user.Username, "until", l.otpBlockedUntil)
	return true
}

// otpPassedLocked clears the user's wrong-OTP count after a right code.
func (s *Server) otpPassedLocked(f *flow) {
	s.lockLocked(f.user).otpFailures = 0
}

// pushFailedLocked counts a denied or timed-out push for f's user.
func (s *Server) pushFailedLocked(f *flow, now time.Time) {
	p := f.policy
	if p.PushLimitCount < 0 {
		return
	}
	l := s.lockLocked(f.user)
	kept := l.pushFailures[:0]
	for _, t := range l.pushFailures {
		if now.Sub(t) < p.PushLimitWindow {
			kept = append(kept, t)
		}
	}
	l.pushFailures = append(kept, now)
	if len(l.pushFailures) >= p.PushLimitCount {
		l.pushFailures = nil
		l.pushBlockedUntil = now.Add(p.PushLimitDuration)
		s.log.Info("pingonesim: user blocked from push", "user", f.user.Username, "until", l.pushBlockedUntil)
	}
}

// blockedAnswer is the 400 for an action on a blocked method.
func blockedAnswer(w http.ResponseWriter, target string, until time.Time) {
	writeError(w, http.StatusBadRequest, codeInvalidData, msgInvalidData, errDetail{
		Code: limitExceeded, Target: target,
		Message: "Too many failed attempts with this method; try again after " + rfc3339ms(until) + ".",
	})
}
