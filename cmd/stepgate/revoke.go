package main

import (
	"crypto/sha256"
	"crypto/subtle"
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
// session_id). It is only mounted when STEPGATE_ADMIN_TOKEN is set.
func revokeHandler(token string, rv store.Revoker, log *slog.Logger) http.HandlerFunc {
	want := sha256.Sum256([]byte(token))
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		// Hashing both sides first makes the comparison constant-time in
		// the token's length too.
		given, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		got := sha256.Sum256([]byte(given))
		if !ok || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
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
