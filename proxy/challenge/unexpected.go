package challenge

import (
	"log/slog"
	"net/http"

	"github.com/stepgate/stepgate/mfa"
	"github.com/stepgate/stepgate/session"
)

// knownStatuses are the flow statuses the page can render. Anything else
// PingOne sends (a status added later, a policy stepgate does not drive)
// gets the "unknown_status" error page (502) and never completes a step-up.
var knownStatuses = map[mfa.Status]bool{
	mfa.StatusDeviceSelectionRequired:  true,
	mfa.StatusOTPRequired:              true,
	mfa.StatusPushConfirmationRequired: true,
	mfa.StatusPushConfirmationTimedOut: true,
	mfa.StatusAssertionRequired:        true,
	mfa.StatusCompleted:                true,
	mfa.StatusFailed:                   true,
}

// knownDeviceTypes have their own label on the page. PingOne also has OATH
// tokens and PingID types (SOURCES B21); those are listed as "another
// method" and may still be selected: PingOne decides what follows, and an
// unknown next status is caught like any other.
var knownDeviceTypes = map[string]bool{
	"SMS": true, "VOICE": true, "EMAIL": true, "WHATSAPP": true, "TOTP": true, "MOBILE": true, "FIDO2": true,
}

// otherDeviceType is the page's label key suffix for an unknown type.
const otherDeviceType = "OTHER"

// displayType is the type the page labels a device with.
func displayType(t string) string {
	if knownDeviceTypes[t] {
		return t
	}
	return otherDeviceType
}

// noteUnexpected records what in a flow stepgate does not know: one audit
// line (event pingone.unexpected) and one stepgate_pingone_unexpected_total
// increment per unknown status or device type. Values are PingOne's, cut
// to 64 bytes; they are never credentials.
func (h *Handler) noteUnexpected(r *http.Request, c caller, f *session.Flow, flow *mfa.Flow) {
	report := func(what, value string) {
		if len(value) > 64 {
			value = value[:64]
		}
		h.m.PingOneUnexpected.WithLabelValues(what).Inc()
		h.audit(r, "pingone.unexpected", c, f.FlowID, slog.String("what", what), slog.String("value", value))
	}
	if !knownStatuses[flow.Status] {
		report("status", string(flow.Status))
	}
	for _, d := range flow.Devices {
		if !knownDeviceTypes[d.Type] {
			report("device_type", d.Type)
		}
	}
}
