package main

// The OCSF form of the audit events (STEPGATE_AUDIT_FORMAT=ocsf): each
// stepgate.audit/1 event as one event of the Open Cybersecurity Schema
// Framework 1.1 (https://schema.ocsf.io/1.1.0/), for SIEMs that ingest it.
// Two classes carry everything (docs/audit.md#ocsf says why):
//
//   - Authentication (3002, category Identity & Access Management): every
//     step-up and every approval's MFA — started, completed, failed — and a
//     session's end. SIEMs map it onto their authentication models.
//   - HTTP Activity (4002, category Network Activity) with the Security
//     Control profile's action and disposition: what stepgate did with a
//     request — held for approval, forwarded once approved, refused.
//
// The mapping reads the fields of the JSON line, never more: what the JSON
// line does not carry (an OTP, a token, a cookie, a shown value) cannot
// reach an OCSF event either.

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// ocsfVersion is the OCSF schema version the events claim.
const ocsfVersion = "1.1.0"

// ocsfWriter writes audit events as OCSF lines, one Write per line.
type ocsfWriter struct {
	w       io.Writer
	version string // stepgate's
	mu      sync.Mutex
}

func (o *ocsfWriter) write(fields map[string]any) error {
	b, err := json.Marshal(ocsfEvent(fields, o.version))
	if err != nil {
		return err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	_, err = o.w.Write(append(b, '\n'))
	return err
}

// OCSF classes, categories and enumerations used here.
const (
	classBase           = 0 // Base Event: an event with no class of its own here
	classAuthentication = 3002
	classHTTPActivity   = 4002

	activityLogon  = 1
	activityLogoff = 2
	activityOther  = 99

	statusUnknown = 0
	statusSuccess = 1
	statusFailure = 2
	statusOther   = 99

	actionAllowed = 1
	actionDenied  = 2

	dispositionAllowed = 1
	dispositionBlocked = 2
	dispositionOther   = 99

	severityInformational = 1
	severityLow           = 2
	severityMedium        = 3

	authProtocolOpenID = 4 // PingOne's flows are OpenID Connect
)

// ocsfMapping is where one stepgate event goes.
type ocsfMapping struct {
	class    int
	activity int // Authentication's; HTTP Activity's comes from the method
	status   int
	action   int // HTTP Activity: the Security Control profile's action_id
	disp     int // and disposition_id
	dispName string
}

// ocsfMappings is the table of docs/audit.md#ocsf, event by event. An
// event not in it (stepgate's own configuration and signal events, or one
// added later, before its row) is a Base Event of activity Other with
// status Unknown: never dropped, and never passed off as a sign-in.
var ocsfMappings = map[string]ocsfMapping{
	"mfa.started":         {class: classAuthentication, activity: activityLogon, status: statusOther},
	"mfa.device_selected": {class: classAuthentication, activity: activityLogon, status: statusOther},
	"mfa.completed":       {class: classAuthentication, activity: activityLogon, status: statusSuccess},
	"mfa.failed":          {class: classAuthentication, activity: activityLogon, status: statusFailure},
	"mfa.otp_failed":      {class: classAuthentication, activity: activityLogon, status: statusFailure},
	"mfa.rate_limited":    {class: classAuthentication, activity: activityLogon, status: statusFailure},
	"mfa.refused":         {class: classAuthentication, activity: activityLogon, status: statusFailure},
	"mfa.cancelled":       {class: classAuthentication, activity: activityLogon, status: statusFailure},
	"identity.rejected":   {class: classAuthentication, activity: activityLogon, status: statusFailure},
	"pingone.unexpected":  {class: classAuthentication, activity: activityOther, status: statusOther},
	"session.revoked":     {class: classAuthentication, activity: activityLogoff, status: statusSuccess},

	// An approval is an MFA for one request: its steps are Authentication
	// events like a step-up's.
	"approval.requested": {class: classAuthentication, activity: activityLogon, status: statusOther},
	"approval.pushed":    {class: classAuthentication, activity: activityLogon, status: statusOther},
	"approval.code_sent": {class: classAuthentication, activity: activityLogon, status: statusOther},
	"approval.approved":  {class: classAuthentication, activity: activityLogon, status: statusSuccess},
	"approval.denied":    {class: classAuthentication, activity: activityLogon, status: statusFailure},
	"approval.timed_out": {class: classAuthentication, activity: activityLogon, status: statusFailure},

	// What became of the request itself.
	"approval.required":  {class: classHTTPActivity, status: statusOther, action: actionDenied, disp: dispositionOther, dispName: "Held for approval"},
	"approval.forwarded": {class: classHTTPActivity, status: statusSuccess, action: actionAllowed, disp: dispositionAllowed, dispName: "Allowed"},
	"approval.refused":   {class: classHTTPActivity, status: statusFailure, action: actionDenied, disp: dispositionBlocked, dispName: "Blocked"},
	"approval.expired":   {class: classHTTPActivity, status: statusFailure, action: actionDenied, disp: dispositionBlocked, dispName: "Blocked"},
	"approval.cancelled": {class: classHTTPActivity, status: statusFailure, action: actionDenied, disp: dispositionBlocked, dispName: "Blocked"},
	"request.rejected":   {class: classHTTPActivity, status: statusFailure, action: actionDenied, disp: dispositionBlocked, dispName: "Blocked"},
	"admin.unauthorized": {class: classHTTPActivity, status: statusFailure, action: actionDenied, disp: dispositionBlocked, dispName: "Blocked"},
}

var (
	ocsfClassNames    = map[int]string{classBase: "Base Event", classAuthentication: "Authentication", classHTTPActivity: "HTTP Activity"}
	ocsfCategoryNames = map[int]string{0: "Uncategorized", 3: "Identity & Access Management", 4: "Network Activity"}
	ocsfStatusNames   = map[int]string{statusUnknown: "Unknown", statusSuccess: "Success", statusFailure: "Failure", statusOther: "Other"}
	ocsfAuthActivity  = map[int]string{activityLogon: "Logon", activityLogoff: "Logoff", activityOther: "Other"}
	ocsfSeverityNames = map[int]string{severityInformational: "Informational", severityLow: "Low", severityMedium: "Medium"}
	ocsfActionNames   = map[int]string{actionAllowed: "Allowed", actionDenied: "Denied"}
	// HTTP Activity's activity_id is the request's method.
	ocsfHTTPActivity = map[string]int{
		http.MethodConnect: 1, http.MethodDelete: 2, http.MethodGet: 3, http.MethodHead: 4,
		http.MethodOptions: 5, http.MethodPost: 6, http.MethodPut: 7, http.MethodTrace: 8, http.MethodPatch: 9,
	}
)

// ocsfMapped are the audit fields the OCSF event carries in its own
// attributes; every other field goes, unchanged, into "unmapped".
var ocsfMapped = map[string]bool{
	"time": true, "level": true, "msg": true, "event": true, "user": true, "client_ip": true,
	"method": true, "path": true, "session_id": true,
}

// ocsfEvent maps the fields of one audit line (as its JSON decodes) to an
// OCSF event. version is stepgate's.
func ocsfEvent(f map[string]any, version string) map[string]any {
	str := func(k string) string { s, _ := f[k].(string); return s }
	event := str("event")
	m, ok := ocsfMappings[event]
	if !ok {
		m = ocsfMapping{class: classBase, activity: activityOther, status: statusUnknown}
	}
	category := m.class / 1000

	t, _ := time.Parse(time.RFC3339Nano, str("time"))
	severity := severityInformational
	switch {
	case str("level") == "WARN" || str("level") == "ERROR":
		severity = severityMedium
	case m.status == statusFailure:
		severity = severityLow
	}

	metadata := map[string]any{
		"version":    ocsfVersion,
		"product":    map[string]any{"name": "stepgate", "vendor_name": "stepgate", "version": version},
		"log_name":   "audit",
		"event_code": event,
	}
	// One approval's events, or one challenge's, share a correlation id.
	if id := str("approval_id"); id != "" {
		metadata["correlation_uid"] = id
	} else if id := str("flow_id"); id != "" {
		metadata["correlation_uid"] = id
	}

	out := map[string]any{
		"class_uid":     m.class,
		"class_name":    ocsfClassNames[m.class],
		"category_uid":  category,
		"category_name": ocsfCategoryNames[category],
		"status_id":     m.status,
		"status":        ocsfStatusNames[m.status],
		"severity_id":   severity,
		"severity":      ocsfSeverityNames[severity],
		"time":          t.UnixMilli(),
		"metadata":      metadata,
		"message":       event,
	}
	if d := str("detail"); d != "" {
		out["message"] = d
	}
	// status_detail: the reason code, else the refusal's phrase, else what
	// PingOne sent that stepgate does not know.
	switch {
	case str("reason") != "":
		out["status_detail"] = str("reason")
	case str("limit") != "":
		out["status_detail"] = "rate_limited:" + str("limit")
	case event == "pingone.unexpected":
		out["status_detail"] = str("what") + ":" + str("value")
	}
	if ip := str("client_ip"); ip != "" {
		out["src_endpoint"] = map[string]any{"ip": ip}
	}
	user := map[string]any{"name": str("user"), "type_id": 1, "type": "User"}
	if str("user") == "" {
		user = map[string]any{"type_id": 0, "type": "Unknown"}
	}
	req := map[string]any{}
	if p := str("path"); p != "" {
		req["url"] = map[string]any{"path": p}
	}
	if meth := str("method"); meth != "" {
		req["http_method"] = meth
	}

	activity, activityName := m.activity, ""
	switch m.class {
	case classBase:
		activityName = "Other"
	case classAuthentication:
		activityName = ocsfAuthActivity[activity]
		out["user"] = user
		out["is_mfa"] = event != "identity.rejected" && event != "pingone.unexpected"
		out["auth_protocol_id"], out["auth_protocol"] = authProtocolOpenID, "OpenID"
		out["service"] = map[string]any{"name": "stepgate"}
		if sid := str("session_id"); sid != "" {
			out["session"] = map[string]any{"uid": sid}
		}
		if len(req) > 0 {
			out["http_request"] = req
		}
	case classHTTPActivity:
		activity = activityOther
		if a, ok := ocsfHTTPActivity[strings.ToUpper(str("method"))]; ok {
			activity = a
			activityName = strings.ToUpper(str("method")[:1]) + strings.ToLower(str("method")[1:])
		} else {
			activityName = "Other"
		}
		out["actor"] = map[string]any{"user": user}
		out["http_request"] = req
		out["action_id"], out["action"] = m.action, ocsfActionNames[m.action]
		out["disposition_id"], out["disposition"] = m.disp, m.dispName
	}
	out["activity_id"] = activity
	out["activity_name"] = activityName
	out["type_uid"] = m.class*100 + activity
	out["type_name"] = ocsfClassNames[m.class] + ": " + activityName

	unmapped := map[string]any{}
	for k, v := range f {
		// A Base Event has no attribute for the user, method or path:
		// they stay in unmapped.
		if !ocsfMapped[k] || m.class == classBase && k != "time" && k != "level" && k != "msg" && k != "event" && k != "client_ip" {
			unmapped[k] = v
		}
	}
	out["unmapped"] = unmapped
	return out
}
