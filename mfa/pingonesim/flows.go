package pingonesim

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"strings"
	"time"
)

// Flow statuses (docs/pingone.md §6.1).
const (
	statusDeviceSelection = "DEVICE_SELECTION_REQUIRED"
	statusOTP             = "OTP_REQUIRED"
	statusPush            = "PUSH_CONFIRMATION_REQUIRED"
	statusPushTimedOut    = "PUSH_CONFIRMATION_TIMED_OUT"
	statusAssertion       = "ASSERTION_REQUIRED"
	statusCompleted       = "COMPLETED"
	statusFailed          = "FAILED"
)

// flow is the simulator's record of one pi.flow authorization. Guarded by Server.mu.
type flow struct {
	id, st, sid   string
	app           *App
	policy        *Policy
	user          *User
	issuer        string
	responseTypes map[string]bool
	scope, state  string
	nonce         string
	redirectURI   string
	codeChallenge string
	codeMethod    string
	remoteIP      string
	prompt        string
	requestAlg    string
	template      *TemplateRequest // pi.template; nil = strong_authentication
	maxAge        int64
	createdAt     time.Time
	lastUsed      time.Time

	status     string
	selected   *Device
	otp        string
	otpExpiry  time.Time
	failures   int
	pushSentAt time.Time
	pushNumber string   // number matching: the number to match ("" = off)
	pushChoice []string // SELECT_NUMBER: the three numbers the phone offers
	challenge  []byte
	challenged bool

	amr               []string
	authTime          time.Time
	authorizeResponse map[string]any
	failure           *flowError
}

// flowError is the error object of a FAILED flow.
type flowError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// beginLocked puts f in the first status for its user and policy.
func (s *Server) beginLocked(f *flow, now time.Time) {
	f.selected, f.otp, f.challenge = nil, "", nil
	devs := f.user.Devices
	if len(devs) == 0 {
		if f.policy.NoDevice == NoDeviceBypass {
			s.completeLocked(f, nil, now)
			return
		}
		f.status = statusFailed
		f.failure = &flowError{Code: "NO_USABLE_DEVICES", Message: "The user has no usable MFA device"}
		return
	}
	mode := f.user.DeviceSelection
	if mode == "" {
		mode = f.policy.DeviceSelection
	}
	switch {
	case mode == AlwaysDisplayDevices, mode == PromptToSelect && len(devs) > 1:
		f.status = statusDeviceSelection
	default:
		if until := s.blockedUntilLocked(f, &devs[0], now); !until.IsZero() {
			s.failLocked(f, limitExceeded, "The default device's method is blocked until "+rfc3339ms(until))
			return
		}
		s.selectLocked(f, &devs[0], now)
	}
}

// selectLocked selects d and sends (or expects) its factor. Selecting an OTP
// device again re-sends a fresh code; the old one stops working.
func (s *Server) selectLocked(f *flow, d *Device, now time.Time) {
	f.selected, f.otp, f.challenge = d, "", nil
	f.challenged = true
	switch d.Type {
	case "SMS", "VOICE", "EMAIL", "WHATSAPP":
		f.otp, f.otpExpiry = newOTP(), now.Add(OTPLifetime)
		s.deliverLocked(Message{DeviceID: d.ID, Type: d.Type, OTP: f.otp, Text: s.messageText(f, d, f.otp),
			FlowID: f.id, User: f.user.Username, SentAt: now})
		f.status = statusOTP
	case "TOTP":
		f.status = statusOTP
	case "MOBILE":
		f.pushSentAt = now
		f.pushNumber, f.pushChoice = "", nil
		if m := f.policy.NumberMatching; m != "" {
			f.pushNumber, f.pushChoice = newPushNumbers(m)
		}
		s.deliverLocked(Message{DeviceID: d.ID, Type: d.Type, Text: s.messageText(f, d, ""),
			NumberMatching: f.policy.NumberMatching, NumberChoices: f.pushChoice,
			FlowID: f.id, User: f.user.Username, SentAt: now})
		f.status = statusPush
	case "FIDO2":
		f.challenge = make([]byte, 32)
		_, _ = rand.Read(f.challenge)
		f.status = statusAssertion
	default:
		f.status = statusFailed
		f.failure = &flowError{Code: "UNSUPPORTED_DEVICE", Message: "The simulator does not support device type " + d.Type}
	}
}

func (s *Server) deliverLocked(m Message) {
	for _, ch := range s.subs {
		select {
		case ch <- m:
		default: // a subscriber that does not keep up misses messages, never blocks the simulator
		}
	}
	s.inbox = append(s.inbox, m)
	if len(s.inbox) > maxInbox {
		s.inbox = append([]Message(nil), s.inbox[len(s.inbox)-maxInbox:]...)
	}
}

// amrFor is the RFC 8176 amr the ID token carries for a device type (README).
func amrFor(d *Device) []string {
	switch d.Type {
	case "SMS":
		return []string{"otp", "sms"}
	case "VOICE":
		return []string{"otp", "tel"}
	case "EMAIL", "TOTP", "WHATSAPP":
		return []string{"otp"}
	case "MOBILE":
		return []string{"swk", "user"}
	case "FIDO2":
		return []string{"hwk", "user"}
	}
	return nil
}

// completeLocked marks f COMPLETED and mints its authorizeResponse.
func (s *Server) completeLocked(f *flow, amr []string, now time.Time) {
	f.status, f.amr, f.authTime = statusCompleted, amr, now
	f.otp, f.challenge = "", nil
	ar := map[string]any{}
	if f.state != "" {
		ar["state"] = f.state
	}
	var accessToken string
	if f.responseTypes["code"] {
		code := randomToken(32)
		s.codes[code] = &authCode{flow: *f, expiry: now.Add(s.codeTTL)}
		ar["code"] = code
	}
	if f.responseTypes["token"] {
		accessToken = s.accessTokenLocked(f, now)
		ar["access_token"] = accessToken
		ar["token_type"] = "Bearer"
		ar["expires_in"] = int(s.atTTL / time.Second)
		ar["scope"] = f.scope
	}
	if f.responseTypes["id_token"] {
		ar["id_token"] = s.idTokenLocked(f, accessToken, now)
	}
	f.authorizeResponse = ar
}

func (s *Server) failLocked(f *flow, code, msg string) {
	f.status, f.otp, f.challenge = statusFailed, "", nil
	f.failure = &flowError{Code: code, Message: msg}
}

// refreshLocked applies time-driven changes: an unanswered push times out
// (and counts towards the user's push limit).
func (s *Server) refreshLocked(f *flow, now time.Time) {
	if f.status == statusPush {
		if timeout := f.pushSentAt.Add(f.policy.PushTimeout); !now.Before(timeout) {
			f.status = statusPushTimedOut
			s.pushFailedLocked(f, timeout)
		}
	}
}

// lookupLocked returns a live flow, dropping it if it has been idle too long.
func (s *Server) lookupLocked(id string, now time.Time) *flow {
	f := s.flows[id]
	if f == nil {
		return nil
	}
	if now.Sub(f.lastUsed) > s.flowIdle {
		delete(s.flows, id)
		return nil
	}
	s.refreshLocked(f, now)
	return f
}

// sweepLocked drops expired flows and codes so memory stays bounded.
func (s *Server) sweepLocked(now time.Time) {
	for id, f := range s.flows {
		if now.Sub(f.lastUsed) > s.flowIdle {
			delete(s.flows, id)
		}
	}
	for c, ac := range s.codes {
		if now.After(ac.expiry) {
			delete(s.codes, c)
		}
	}
}

// The flow JSON (docs/pingone.md §6.5).
type (
	link struct {
		Href string `json:"href"`
	}
	idRef struct {
		ID string `json:"id"`
	}
	deviceJSON struct {
		ID          string `json:"id"`
		Type        string `json:"type"`
		Status      string `json:"status"`
		UserRetries int    `json:"userRetries"`
		Nickname    string `json:"nickname,omitempty"`
		Phone       string `json:"phone,omitempty"`
		Email       string `json:"email,omitempty"`
	}
	appName struct {
		Name string `json:"name"`
	}
	embedded struct {
		User        map[string]string `json:"user,omitempty"`
		Devices     []deviceJSON      `json:"devices,omitempty"`
		Application *appName          `json:"application,omitempty"`
	}
	flowJSON struct {
		ID                                string              `json:"id"`
		Environment                       idRef               `json:"environment"`
		Status                            string              `json:"status"`
		ResumeURL                         string              `json:"resumeUrl"`
		CreatedAt                         string              `json:"createdAt"`
		ExpiresAt                         string              `json:"expiresAt"`
		BypassAllowed                     bool                `json:"bypassAllowed"`
		Links                             map[string]link     `json:"_links"`
		Embedded                          embedded            `json:"_embedded"`
		SelectedDevice                    *idRef              `json:"selectedDevice,omitempty"`
		PublicKeyCredentialRequestOptions string              `json:"publicKeyCredentialRequestOptions,omitempty"`
		NumberMatching                    *numberMatchingJSON `json:"numberMatching,omitempty"`
		AuthorizeResponse                 map[string]any      `json:"authorizeResponse,omitempty"`
		Error                             *flowError          `json:"error,omitempty"`
	}
)

// linksFor lists the actions a status advertises; self is always there,
// signOnPage in every non-terminal status. PingOne's example OTP_REQUIRED
// flow has otp.check, device.select, self and signOnPage, and no
// session.reset (SEED, SOURCES A22/B17), so no status advertises
// session.reset; the action itself is still accepted (its real behaviour
// is unknown).
var linksFor = map[string][]string{
	statusDeviceSelection: {"device.select"},
	statusOTP:             {"otp.check", "device.select"},
	statusPush:            {"device.select"},
	statusPushTimedOut:    {"device.select"},
	statusAssertion:       {"assertion.check", "device.select"},
}

func (s *Server) flowJSONLocked(f *flow, base string) flowJSON {
	env := base + s.envPath()
	self := env + "/flows/" + f.id
	j := flowJSON{
		ID:          f.id,
		Environment: idRef{ID: s.tenant.EnvID},
		Status:      f.status,
		ResumeURL:   env + "/as/resume?flowId=" + f.id,
		CreatedAt:   rfc3339ms(f.createdAt),
		ExpiresAt:   rfc3339ms(f.lastUsed.Add(s.flowIdle)),
		// bypassAllowed: false in PingOne's example (SEED), whose policy
		// would be BLOCK, PingOne's default; INFERRED to follow NoDevice.
		BypassAllowed: f.policy.NoDevice == NoDeviceBypass,
		Links:         map[string]link{"self": {self}},
		Embedded:      embedded{Application: &appName{Name: f.app.name()}},
		Error:         f.failure,
	}
	for _, l := range linksFor[f.status] {
		j.Links[l] = link{self}
	}
	switch f.status {
	case statusCompleted:
		// The seed shows no _embedded.user in OTP_REQUIRED; the completed
		// flow's shape is not documented, and here keeps the user.
		j.Embedded.User = map[string]string{"id": f.user.ID, "username": f.user.Username}
		j.AuthorizeResponse = f.authorizeResponse
	case statusFailed:
	default:
		// PingOne's sign-on page for the flow, on apps.pingone.com (SEED);
		// a client must not follow it (it is not on the auth base).
		j.Links["signOnPage"] = link{"https://apps.pingone.com/" + s.tenant.EnvID + "/signon/?flowId=" + f.id}
		for _, d := range f.user.Devices {
			// userRetries: 0 in the seed; its meaning is unknown.
			dj := deviceJSON{ID: d.ID, Type: d.Type, Status: "ACTIVE", Nickname: d.Nickname}
			if d.Phone != "" {
				dj.Phone = maskPhone(d.Phone)
			}
			if d.Email != "" {
				dj.Email = maskEmail(d.Email)
			}
			j.Embedded.Devices = append(j.Embedded.Devices, dj)
		}
		if f.selected != nil {
			j.SelectedDevice = &idRef{ID: f.selected.ID}
		}
		if f.status == statusAssertion {
			j.PublicKeyCredentialRequestOptions = s.requestOptions(f)
		}
		if f.status == statusPush && f.pushNumber != "" {
			j.NumberMatching = &numberMatchingJSON{Type: f.policy.NumberMatching, Number: f.pushNumber}
		}
	}
	return j
}

// requestOptions is publicKeyCredentialRequestOptions as a JSON string, with
// the challenge and credential ids in the tenant's byte encoding.
func (s *Server) requestOptions(f *flow) string {
	b, _ := json.Marshal(map[string]any{
		"challenge":        s.webAuthnBytes(f.challenge),
		"timeout":          120000,
		"rpId":             s.tenant.RPID,
		"userVerification": "discouraged",
		"allowCredentials": []map[string]any{{
			"type": "public-key",
			"id":   s.webAuthnBytes(f.selected.CredentialID),
		}},
	})
	return string(b)
}

// webAuthnBytes encodes a challenge or credential id as PingOne does: a
// JSON array of signed bytes (-128…127, Java's byte), or, with
// Tenant.WebAuthnBase64URL, a base64url string.
func (s *Server) webAuthnBytes(b []byte) any {
	if s.tenant.WebAuthnBase64URL {
		return base64.RawURLEncoding.EncodeToString(b)
	}
	out := make([]int, len(b))
	for i, c := range b {
		out[i] = int(int8(c))
	}
	return out
}

// DecodeWebAuthnBytes reads a challenge or credential id from assertion
// options in either encoding webAuthnBytes writes (and PingOne's unsigned
// variant, 0…255).
func DecodeWebAuthnBytes(raw json.RawMessage) ([]byte, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	}
	var ints []int
	if err := json.Unmarshal(raw, &ints); err != nil {
		return nil, fmt.Errorf("webauthn bytes: neither a base64url string nor a byte array: %w", err)
	}
	out := make([]byte, len(ints))
	for i, v := range ints {
		if v < -128 || v > 255 {
			return nil, fmt.Errorf("webauthn bytes: %d is not a byte", v)
		}
		out[i] = byte(v)
	}
	return out, nil
}

// callerFlowLocked is the live flow id for a request that holds its ST
// cookie, marked used; otherwise it answers 404 NOT_FOUND or 401
// INVALID_TOKEN itself and returns nil.
func (s *Server) callerFlowLocked(w http.ResponseWriter, r *http.Request, id string, now time.Time) *flow {
	f := s.lookupLocked(id, now)
	if f == nil {
		flowNotFound(w)
		return nil
	}
	if !checkST(r, f) {
		invalidToken(w)
		return nil
	}
	f.lastUsed = now
	return f
}

// checkST enforces the flow's ST cookie: missing or wrong → 401 INVALID_TOKEN.
func checkST(r *http.Request, f *flow) bool {
	c, err := r.Cookie("ST")
	return err == nil && subtle.ConstantTimeCompare([]byte(c.Value), []byte(f.st)) == 1
}

func invalidToken(w http.ResponseWriter) {
	writeError(w, http.StatusUnauthorized, codeInvalidToken, "The authorization token is either missing or invalid")
}

func flowNotFound(w http.ResponseWriter) {
	writeError(w, http.StatusNotFound, codeNotFound, "The flow was not found or has expired.")
}

// action is a decoded flows POST: the media type's action name and its body.
type action struct {
	Name      string
	DeviceID  string
	OTP       string
	Origin    string
	Assertion string
}

var errUnsupportedMedia = errors.New("unsupported media type")

// parseAction decodes a flows POST from its Content-Type and body. It returns
// errUnsupportedMedia for anything but the four MFA actions the simulator
// knows, and another error for a malformed body.
func parseAction(contentType string, body []byte) (action, error) {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return action{}, errUnsupportedMedia
	}
	name, ok := strings.CutPrefix(mt, "application/vnd.pingidentity.")
	if ok {
		name, ok = strings.CutSuffix(name, "+json")
	}
	if !ok {
		return action{}, errUnsupportedMedia
	}
	a := action{Name: name}
	if len(bytes.TrimSpace(body)) == 0 && name == "session.reset" {
		return a, nil
	}
	dec := func(v any) error {
		d := json.NewDecoder(bytes.NewReader(body))
		if err := d.Decode(v); err != nil {
			return err
		}
		if _, err := d.Token(); err != io.EOF {
			return errors.New("trailing data after JSON body")
		}
		return nil
	}
	switch name {
	case "device.select":
		var b struct {
			Device *struct {
				ID string `json:"id"`
			} `json:"device"`
		}
		if err := dec(&b); err != nil {
			return a, err
		}
		if b.Device != nil {
			a.DeviceID = b.Device.ID
		}
	case "otp.check":
		var b struct {
			OTP string `json:"otp"`
		}
		if err := dec(&b); err != nil {
			return a, err
		}
		a.OTP = b.OTP
	case "assertion.check":
		var b struct {
			Origin        string `json:"origin"`
			Assertion     string `json:"assertion"`
			Compatibility string `json:"compatibility"`
		}
		if err := dec(&b); err != nil {
			return a, err
		}
		a.Origin, a.Assertion = b.Origin, b.Assertion
	case "session.reset":
		var b map[string]any
		if err := dec(&b); err != nil {
			return a, err
		}
	default:
		return action{}, errUnsupportedMedia
	}
	return a, nil
}

// allowedIn lists the statuses in which each action may be posted.
var allowedIn = map[string][]string{
	"device.select":   {statusDeviceSelection, statusOTP, statusPush, statusPushTimedOut, statusAssertion},
	"otp.check":       {statusOTP},
	"assertion.check": {statusAssertion},
	"session.reset":   {statusDeviceSelection, statusOTP, statusPush, statusPushTimedOut, statusAssertion},
}

func (s *Server) handleFlow(w http.ResponseWriter, r *http.Request, id string) {
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		methodNotAllowed(w, "GET, POST")
		return
	}
	var body []byte
	if r.Method == http.MethodPost {
		var err error
		body, err = io.ReadAll(io.LimitReader(r.Body, maxBody+1))
		if err != nil {
			writeError(w, http.StatusBadRequest, codeInvalidData, msgInvalidData,
				errDetail{Code: "INVALID_VALUE", Message: "The request body could not be read."})
			return
		}
		if len(body) > maxBody {
			writeError(w, http.StatusRequestEntityTooLarge, codeInvalidData, "The request body is too large.")
			return
		}
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.callerFlowLocked(w, r, id, now)
	if f == nil {
		return
	}
	if r.Method == http.MethodGet {
		writeJSON(w, http.StatusOK, s.flowJSONLocked(f, baseURL(r)))
		return
	}
	a, err := parseAction(r.Header.Get("Content-Type"), body)
	if errors.Is(err, errUnsupportedMedia) {
		writeError(w, http.StatusUnsupportedMediaType, codeInvalidRequest,
			"The media type is not supported; use application/vnd.pingidentity.<action>+json.")
		return
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, codeInvalidData, msgInvalidData,
			errDetail{Code: "INVALID_VALUE", Message: "The request body is not valid JSON for " + a.Name + "."})
		return
	}
	allowed := false
	for _, st := range allowedIn[a.Name] {
		allowed = allowed || st == f.status
	}
	if !allowed {
		writeError(w, http.StatusBadRequest, codeRequestFailed, msgRequestFailed,
			errDetail{Code: "INVALID_VALUE", Target: "Content-Type",
				Message: fmt.Sprintf("The action %s is not allowed when the flow status is %s.", a.Name, f.status)})
		return
	}
	switch a.Name {
	case "device.select":
		d := f.deviceByID(a.DeviceID)
		if d == nil {
			invalidValue(w, "device.id", "The device was not found for this user")
			return
		}
		if until := s.blockedUntilLocked(f, d, now); !until.IsZero() {
			blockedAnswer(w, "device.id", until)
			return
		}
		s.selectLocked(f, d, now)
	case "otp.check":
		if a.OTP == "" {
			writeError(w, http.StatusBadRequest, codeInvalidData, msgInvalidData,
				errDetail{Code: "REQUIRED_VALUE", Target: "otp", Message: "otp is required"})
			return
		}
		if until := s.blockedUntilLocked(f, f.selected, now); !until.IsZero() {
			blockedAnswer(w, "otp", until)
			return
		}
		if !s.otpValid(f, a.OTP, now) {
			f.failures++
			left := max(f.policy.OTPFailureCount-f.failures, 0)
			if s.otpFailedLocked(f, now) {
				left = 0
			}
			if left == 0 {
				s.failLocked(f, "TOO_MANY_ATTEMPTS", "Too many invalid one-time passcodes")
			}
			writeError(w, http.StatusBadRequest, codeInvalidData, msgInvalidData, errDetail{
				Code: "INVALID_OTP", Target: "otp", Message: "Invalid one-time passcode",
				InnerError: map[string]any{"attemptsRemaining": left},
			})
			return
		}
		s.otpPassedLocked(f)
		s.completeLocked(f, amrFor(f.selected), now)
	case "assertion.check":
		if err := s.verifyAssertion(f, a.Origin, a.Assertion); err != nil {
			s.log.Info("pingonesim: assertion rejected", "flow", f.id, "err", err)
			invalidValue(w, "assertion", "The assertion could not be verified: "+err.Error())
			return
		}
		s.completeLocked(f, amrFor(f.selected), now)
	case "session.reset":
		s.beginLocked(f, now)
	}
	s.log.Info("pingonesim: flow action", "flow", f.id, "action", a.Name, "status", f.status)
	writeJSON(w, http.StatusOK, s.flowJSONLocked(f, baseURL(r)))
}

func (f *flow) deviceByID(id string) *Device {
	for i := range f.user.Devices {
		if f.user.Devices[i].ID == id {
			return &f.user.Devices[i]
		}
	}
	return nil
}

// otpValid checks a code in constant time: the delivered code within its
// lifetime, or for TOTP any 30 s step of the policy's grace windows.
func (s *Server) otpValid(f *flow, otp string, now time.Time) bool {
	eq := func(want string) bool { return subtle.ConstantTimeCompare([]byte(otp), []byte(want)) == 1 }
	if f.selected.Type == "TOTP" {
		n := f.policy.TOTPGraceWindows
		ok := false
		for step := -(n / 2); step < n-n/2; step++ {
			ok = eq(totpAt(f.selected.TOTPSecret, now.Add(time.Duration(step)*30*time.Second))) || ok
		}
		return ok
	}
	return f.otp != "" && now.Before(f.otpExpiry) && eq(f.otp)
}

func (s *Server) handleResume(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		methodNotAllowed(w, "GET")
		return
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.callerFlowLocked(w, r, r.URL.Query().Get("flowId"), now)
	if f == nil {
		return
	}
	if f.status != statusCompleted {
		writeError(w, http.StatusBadRequest, codeRequestFailed, msgRequestFailed,
			errDetail{Code: "INVALID_VALUE", Target: "flowId", Message: "The flow is not completed; its status is " + f.status + "."})
		return
	}
	writeJSON(w, http.StatusOK, s.flowJSONLocked(f, baseURL(r)))
}

// Flow reports what the simulator recorded about a flow.
func (s *Server) Flow(id string) (FlowInfo, bool) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.lookupLocked(id, now)
	if f == nil {
		return FlowInfo{}, false
	}
	info := FlowInfo{
		ID: f.id, User: f.user.Username, Status: f.status, RemoteIP: f.remoteIP,
		ACR: f.policy.Name, ClientID: f.app.ClientID, Challenged: f.challenged, Prompt: f.prompt,
		RequestAlg: f.requestAlg,
	}
	if f.template != nil {
		t := *f.template
		t.Variables = maps.Clone(t.Variables)
		info.Template = &t
	}
	return info, true
}

// PushOutcome is how the simulated phone answers a push.
type PushOutcome string

const (
	PushApprove PushOutcome = "approve"
	PushDeny    PushOutcome = "deny"
	PushTimeout PushOutcome = "timeout"
)

// Push answers the pending push of a flow: approve → COMPLETED, deny →
// FAILED, timeout → PUSH_CONFIRMATION_TIMED_OUT.
func (s *Server) Push(flowID string, o PushOutcome) error {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.lookupLocked(flowID, now)
	if f == nil {
		return fmt.Errorf("pingonesim: push: flow %q not found", flowID)
	}
	if f.status != statusPush {
		return fmt.Errorf("pingonesim: push: flow %q is %s, not waiting for a push", flowID, f.status)
	}
	switch o {
	case PushApprove:
		if f.pushNumber != "" {
			return fmt.Errorf("pingonesim: push: flow %q uses number matching; answer with PushNumber", flowID)
		}
		s.completeLocked(f, amrFor(f.selected), now)
	case PushDeny:
		s.failLocked(f, "PUSH_DENIED", "The user denied the push notification")
		s.pushFailedLocked(f, now)
	case PushTimeout:
		f.status = statusPushTimedOut
		s.pushFailedLocked(f, now)
	default:
		return fmt.Errorf("pingonesim: push: unknown outcome %q", o)
	}
	s.log.Info("pingonesim: push answered", "flow", f.id, "outcome", string(o))
	return nil
}

// ForceStatus puts a flow into any status, known to PingOne or not, so that
// tests can check how a client copes with a status it does not know. The
// flow keeps its devices; no action is allowed in a status the simulator
// does not know, so such a flow can only be read or left to expire.
func (s *Server) ForceStatus(flowID, status string) error {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.lookupLocked(flowID, now)
	if f == nil {
		return fmt.Errorf("pingonesim: force status: flow %q not found", flowID)
	}
	f.status = status
	return nil
}

// Subscribe returns a channel that receives every message (code or push)
// delivered from now on, so a test can act on a push while the request that
// caused it is still waiting, without polling the inbox. The channel holds
// 16; messages beyond that are dropped for this subscriber.
func (s *Server) Subscribe() <-chan Message {
	ch := make(chan Message, 16)
	s.mu.Lock()
	s.subs = append(s.subs, ch)
	s.mu.Unlock()
	return ch
}

// Inbox lists the messages delivered to a user (username or id), newest first.
func (s *Server) Inbox(user string) []Message {
	u := s.findUser(user)
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []Message{}
	for i := len(s.inbox) - 1; i >= 0; i-- {
		if user == "" || (u != nil && s.inbox[i].User == u.Username) {
			out = append(out, s.inbox[i])
		}
	}
	return out
}

// TOTP returns the current code of a TOTP device ("" if there is none).
func (s *Server) TOTP(deviceID string) string {
	_, d := s.findDevice(deviceID)
	if d == nil || d.Type != "TOTP" {
		return ""
	}
	return totpAt(d.TOTPSecret, s.now())
}
