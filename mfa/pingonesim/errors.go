package pingonesim

import (
	"encoding/json"
	"net/http"
)

// PingOne top-level error codes the simulator emits (docs/pingone.md §8.2). 405 and
// 415 answer INVALID_REQUEST: PingOne's published OpenAPI has no
// METHOD_NOT_ALLOWED or UNSUPPORTED_MEDIA_TYPE code (its 415 schema allows
// only INVALID_REQUEST; README, divergences).
const (
	codeInvalidData     = "INVALID_DATA"
	codeInvalidRequest  = "INVALID_REQUEST"
	codeRequestFailed   = "REQUEST_FAILED"
	codeInvalidToken    = "INVALID_TOKEN"
	codeNotFound        = "NOT_FOUND"
	codeRequestLimited  = "REQUEST_LIMITED"
	codeUnexpectedError = "UNEXPECTED_ERROR"

	msgInvalidData   = "The request could not be completed. One or more validation errors were in the request."
	msgRequestFailed = "The request could not be completed. There was an issue processing the request."
)

// errDetail is one entry of a PingOne error's details[].
type errDetail struct {
	Code       string         `json:"code"`
	Target     string         `json:"target,omitempty"`
	Message    string         `json:"message"`
	InnerError map[string]any `json:"innerError,omitempty"`
}

// apiError is PingOne's error body: {id, code, message, details?}.
type apiError struct {
	ID      string      `json:"id"`
	Code    string      `json:"code"`
	Message string      `json:"message"`
	Details []errDetail `json:"details,omitempty"`
}

// writeError answers with a PingOne error body whose id equals the response's
// Correlation-Id header, as PingOne does.
func writeError(w http.ResponseWriter, status int, code, message string, details ...errDetail) {
	id := w.Header().Get("Correlation-Id")
	if id == "" {
		id = newUUID()
		w.Header().Set("Correlation-Id", id)
	}
	writeJSON(w, status, apiError{ID: id, Code: code, Message: message, Details: details})
}

// invalidValue is the common 400 INVALID_DATA / INVALID_VALUE answer.
func invalidValue(w http.ResponseWriter, target, message string) {
	writeError(w, http.StatusBadRequest, codeInvalidData, msgInvalidData,
		errDetail{Code: "INVALID_VALUE", Target: target, Message: message})
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	writeError(w, http.StatusMethodNotAllowed, codeInvalidRequest, "The request method is not allowed for this resource.")
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
