package main

import (
	"encoding/json"
	"errors"
	"github.com/stepgate/stepgate/proxy/identity"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"unicode"

	"github.com/stepgate/stepgate/store"
)

// revokeHandler serves POST /revoke on the admin listener (docs/design.md §15):
// {"user":"…"} refuses every step-up of that user completed until now,
// {"session":"…"} one step-up by its session id (logged at completion as
// session_id). Without STEPGATE_ADMIN_TOKEN it does not exist (404); the
// token is read at each request, so a reload changes it at once.
func revokeHandler(token *adminToken, rv store.Revoker, log *slog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		given, bearer := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		configured, ok := token.check(given)
		if !configured {
			http.NotFound(w, r)
			return
		}
		if !bearer || !ok {
			log.LogAttrs(r.Context(), slog.LevelWarn, "audit", slog.String("event", "admin.unauthorized"),
				slog.String("path", "/revoke"), slog.String("peer", r.RemoteAddr))
			w.Header().Set("WWW-Authenticate", `Bearer realm="stepgate-admin"`)
			adminJSON(w, http.StatusUnauthorized, map[string]string{"error": "unauthorized"})
			return
		}
		var req struct {
			User    string `json:"user,omitempty"`
			Session string `json:"session,omitempty"`
		}
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil || dec.Decode(&struct{}{}) != io.EOF {
			adminJSON(w, http.StatusBadRequest, map[string]string{"error": `want {"user":"…"} or {"session":"…"}`})
			return
		}
		// A user is what the gateway would accept as one (anything else
		// could never match, yet would take a slot in the bounded set); a
		// session id is printable and short.
		if (req.User == "") == (req.Session == "") || (req.User != "" && !identity.ValidUser(req.User)) ||
			!printable(req.Session) {
			adminJSON(w, http.StatusBadRequest, map[string]string{"error": `want exactly one of "user" (a valid user name) or "session" (printable, at most 1024 bytes)`})
			return
		}
		err := rv.Revoke(r.Context(), store.Revocation{User: req.User, Session: req.Session})
		log.LogAttrs(r.Context(), slog.LevelInfo, "audit", slog.String("event", "session.revoked"),
			slog.String("by", "admin"), slog.String("user", req.User), slog.String("session_id", req.Session),
			slog.Bool("stored", err == nil))
		if err != nil {
			log.LogAttrs(r.Context(), slog.LevelError, "revocation not stored", slog.String("error", err.Error()))
			w.Header().Set("Retry-After", "5")
			msg := "the store did not take the revocation (this replica refuses it; others may not): retry"
			if errors.Is(err, store.ErrRevocationsFull) {
				msg = "the revocation set is full: mfa paths fail closed until old revocations expire"
			}
			adminJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "store_unavailable", "message": msg})
			return
		}
		adminJSON(w, http.StatusOK, map[string]any{"revoked": req})
	}
}

func printable(s string) bool {
	if len(s) > 1024 {
		return false
	}
	for _, c := range s {
		if !unicode.IsPrint(c) {
			return false
		}
	}
	return true
}

func adminJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
