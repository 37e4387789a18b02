package pingonesim

import (
	"encoding/json"
	"html/template"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"
)

// serveSim is the test API under /_sim/ (docs/design.md §11). It is not PingOne's
// surface: faults do not apply and Requests does not count it.
func (s *Server) serveSim(w http.ResponseWriter, r *http.Request) {
	p := strings.TrimPrefix(r.URL.Path, "/_sim")
	switch {
	case p == "" || p == "/":
		http.Redirect(w, r, "/_sim/inbox/page", http.StatusSeeOther)
	case p == "/inbox":
		if r.Method != http.MethodGet {
			methodNotAllowed(w, "GET")
			return
		}
		writeJSON(w, http.StatusOK, s.Inbox(r.URL.Query().Get("user")))
	case p == "/inbox/page":
		if r.Method != http.MethodGet {
			methodNotAllowed(w, "GET")
			return
		}
		s.serveInboxPage(w)
	case strings.HasPrefix(p, "/push/"):
		s.serveSimPush(w, r, strings.TrimPrefix(p, "/push/"))
	case p == "/faults":
		s.serveSimFaults(w, r)
	case p == "/clock":
		s.serveSimClock(w, r)
	default:
		writeError(w, http.StatusNotFound, codeNotFound, "No such simulator endpoint.")
	}
}

// isFormPost is a browser form from the inbox page, which wants a redirect back.
func isFormPost(r *http.Request) bool {
	return strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded")
}

func (s *Server) serveSimPush(w http.ResponseWriter, r *http.Request, rest string) {
	if r.Method != http.MethodPost {
		methodNotAllowed(w, "POST")
		return
	}
	id, outcome, ok := strings.Cut(rest, "/")
	if !ok || id == "" {
		writeError(w, http.StatusNotFound, codeNotFound, "Use /_sim/push/{flowId}/approve|deny|timeout.")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	var err error
	if n := r.FormValue("number"); n != "" && PushOutcome(outcome) == PushApprove {
		err = s.PushNumber(id, n) // number matching: the number picked or typed on the phone
	} else {
		err = s.Push(id, PushOutcome(outcome))
	}
	if err != nil {
		writeError(w, http.StatusConflict, codeRequestFailed, err.Error())
		return
	}
	if isFormPost(r) {
		http.Redirect(w, r, "/_sim/inbox/page", http.StatusSeeOther)
		return
	}
	info, _ := s.Flow(id)
	writeJSON(w, http.StatusOK, map[string]string{"flow_id": id, "status": info.Status})
}

// faultJSON is the wire form of Fault for POST /_sim/faults.
type faultJSON struct {
	Clear      bool   `json:"clear"`
	Op         string `json:"op"`
	Kind       string `json:"kind"`
	Latency    string `json:"latency"` // Go duration, e.g. "3s"
	Status     int    `json:"status"`
	RetryAfter int    `json:"retry_after"`
	Count      int    `json:"count"`
}

func (s *Server) serveSimFaults(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		methodNotAllowed(w, "POST")
		return
	}
	var fj faultJSON
	if err := json.NewDecoder(io.LimitReader(r.Body, maxBody)).Decode(&fj); err != nil {
		invalidValue(w, "body", "body must be a JSON fault")
		return
	}
	if fj.Clear {
		s.ClearFaults()
		writeJSON(w, http.StatusOK, map[string]bool{"cleared": true})
		return
	}
	f := Fault{Op: fj.Op, Kind: fj.Kind, Status: fj.Status, RetryAfter: fj.RetryAfter, Count: fj.Count}
	switch f.Kind {
	case "latency", "status", "rate_limit", "malformed", "drop":
	default:
		invalidValue(w, "kind", "kind must be latency, status, rate_limit, malformed or drop")
		return
	}
	switch f.Op {
	case "", "authorize", "flows", "resume", "token", "jwks", "discovery":
	default:
		invalidValue(w, "op", "op must be empty or authorize, flows, resume, token, jwks, discovery")
		return
	}
	if fj.Latency != "" {
		d, err := time.ParseDuration(fj.Latency)
		if err != nil || d < 0 {
			invalidValue(w, "latency", "latency must be a Go duration such as 3s")
			return
		}
		f.Latency = d
	}
	s.SetFault(f)
	writeJSON(w, http.StatusOK, fj)
}

func (s *Server) serveSimClock(w http.ResponseWriter, r *http.Request) {
	if s.clock == nil {
		writeError(w, http.StatusConflict, codeRequestFailed, "The simulator runs on the real clock.")
		return
	}
	switch r.Method {
	case http.MethodGet:
	case http.MethodPost:
		var body struct {
			Advance string `json:"advance"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, maxBody)).Decode(&body); err != nil {
			invalidValue(w, "advance", "body must be {\"advance\":\"<duration>\"}")
			return
		}
		d, err := time.ParseDuration(body.Advance)
		if err != nil || d < 0 {
			invalidValue(w, "advance", "advance must be a non-negative Go duration such as 16m")
			return
		}
		s.clock.Advance(d)
	default:
		methodNotAllowed(w, "GET, POST")
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"now": rfc3339ms(s.clock.Now())})
}

type pendingPush struct {
	FlowID, User, Device, Text string
	NumberMatching             string   // "" = none
	Choices                    []string // SELECT_NUMBER
	SentAt                     time.Time
}

// totpCode is an authenticator app's current code, as its owner's phone
// would show it.
type totpCode struct {
	User, Device, Code string
	Left               int // seconds the code stays current
}

var inboxPage = template.Must(template.New("inbox").Funcs(template.FuncMap{
	// The simulator runs on the demo user's own machine: its local time
	// zone is theirs.
	"ts":  func(t time.Time) string { return t.Local().Format("15:04:05 MST") },
	"iso": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
{{if not .Pushes}}<meta http-equiv="refresh" content="3">{{end}}
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>PingOne simulator inbox</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5rem;max-width:50rem;color:#222}
h1{font-size:1.3rem}h2{font-size:1.1rem;margin-top:1.5rem}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #ddd}
.otp{font-family:monospace;font-size:1.2rem;letter-spacing:.1em}
.text{white-space:pre-line}
form{display:inline}button{margin-right:.3rem}.empty{color:#777}
</style></head><body>
<h1>PingOne simulator inbox</h1>
<p>Simulated codes and push notifications. {{if .Pushes}}While a push waits for an answer this page
stays still (no button moves under the pointer); <a href="/_sim/inbox/page">refresh</a>.{{else}}This page
refreshes every 3 seconds.{{end}}</p>
<h2>Pending pushes</h2>
{{if .Pushes}}<table><tr><th>User</th><th>Device</th><th>Notification</th><th>Sent</th><th>Answer</th></tr>
{{range .Pushes}}<tr><td>{{.User}}</td><td>{{.Device}}</td><td class="text">{{.Text}}</td><td><time datetime="{{iso .SentAt}}">{{ts .SentAt}}</time></td><td>
{{if eq .NumberMatching "SELECT_NUMBER"}}{{$id := .FlowID}}Pick the number shown on the sign-in screen:
{{range .Choices}}<form method="post" action="/_sim/push/{{$id}}/approve"><input type="hidden" name="number" value="{{.}}"><button>{{.}}</button></form>{{end}}
{{else if .NumberMatching}}<form method="post" action="/_sim/push/{{.FlowID}}/approve"><label>Number shown on the sign-in screen <input name="number" inputmode="numeric" size="4" required></label> <button>Approve</button></form>
{{else}}<form method="post" action="/_sim/push/{{.FlowID}}/approve"><button>Approve</button></form>{{end}}
<form method="post" action="/_sim/push/{{.FlowID}}/deny"><button>Deny</button></form>
<form method="post" action="/_sim/push/{{.FlowID}}/timeout"><button>Time out</button></form>
</td></tr>{{end}}</table>
{{else}}<p class="empty">No push is waiting.</p>{{end}}
{{if .TOTP}}<h2>Authenticator apps</h2>
<table><tr><th>User</th><th>Device</th><th>Current code</th><th>Changes in</th></tr>
{{range .TOTP}}<tr><td>{{.User}}</td><td>{{.Device}}</td><td class="otp">{{.Code}}</td><td>{{.Left}} s</td></tr>{{end}}</table>{{end}}
<h2>Messages</h2>
{{if .Messages}}<table><tr><th>User</th><th>Type</th><th>Code</th><th>Message</th><th>Sent</th></tr>
{{range .Messages}}<tr><td>{{.User}}</td><td>{{.Type}}</td><td class="otp">{{if .OTP}}{{.OTP}}{{else}}push{{end}}</td><td class="text">{{.Text}}</td><td><time datetime="{{iso .SentAt}}">{{ts .SentAt}}</time></td></tr>
{{end}}</table>
{{else}}<p class="empty">No messages yet.</p>{{end}}
</body></html>
`))

func (s *Server) serveInboxPage(w http.ResponseWriter) {
	now := s.now()
	s.mu.Lock()
	var pushes []pendingPush
	for id := range s.flows {
		f := s.lookupLocked(id, now)
		if f != nil && f.status == statusPush {
			pushes = append(pushes, pendingPush{FlowID: f.id, User: f.user.Username, Device: f.selected.Nickname,
				Text: s.messageText(f, f.selected, ""), NumberMatching: f.policy.NumberMatching,
				Choices: f.pushChoice, SentAt: f.pushSentAt})
		}
	}
	s.mu.Unlock()
	sort.Slice(pushes, func(i, j int) bool { return pushes[i].SentAt.After(pushes[j].SentAt) })
	msgs := s.Inbox("")
	if len(msgs) > 50 {
		msgs = msgs[:50]
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'")
	var codes []totpCode
	for _, u := range s.tenant.Users {
		for _, d := range u.Devices {
			if d.Type == "TOTP" {
				codes = append(codes, totpCode{User: u.Username, Device: d.Nickname, Code: totpAt(d.TOTPSecret, now), Left: 30 - int(now.Unix()%30)})
			}
		}
	}
	_ = inboxPage.Execute(w, map[string]any{"Pushes": pushes, "Messages": msgs, "TOTP": codes})
}
