package idp

import (
	"encoding/json"
	"net/http"
	"net/url"
)

// OAuth 2.0 and OpenID Connect error codes (RFC 6749 §4.1.2.1 and §5.2,
// RFC 6750 §3.1, OpenID Connect Core §3.1.2.6).
const (
	ErrInvalidRequest          = "invalid_request"
	ErrInvalidClient           = "invalid_client"
	ErrInvalidGrant            = "invalid_grant"
	ErrUnauthorizedClient      = "unauthorized_client"
	ErrUnsupportedGrantType    = "unsupported_grant_type"
	ErrUnsupportedResponseType = "unsupported_response_type"
	ErrInvalidScope            = "invalid_scope"
	ErrAccessDenied            = "access_denied"
	ErrServerError             = "server_error"
	ErrTemporarilyUnavailable  = "temporarily_unavailable"
	ErrInvalidToken            = "invalid_token"
	ErrInsufficientScope       = "insufficient_scope"
	ErrLoginRequired           = "login_required"
	ErrConsentRequired         = "consent_required"
	ErrRequestNotSupported     = "request_not_supported"
	ErrRequestURINotSupported  = "request_uri_not_supported"
)

// Error is an OAuth error. Code and Description go to the client; Cause
// only to the log, so what the client sees never carries internals.
type Error struct {
	Code        string `json:"error"`
	Description string `json:"error_description,omitempty"`
	Cause       error  `json:"-"`
}

func (e *Error) Error() string {
	s := "idp: " + e.Code
	if e.Description != "" {
		s += ": " + e.Description
	}
	if e.Cause != nil {
		s += ": " + e.Cause.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Cause }

func oauthErr(code, description string) *Error { return &Error{Code: code, Description: description} }

// unavailable is the error of a request that the store failed: a Store
// that does not answer (a Redis server down or slow) is a condition that
// passes, which RFC 6749 §4.1.2.1 names temporarily_unavailable. The token
// endpoint answers it with 503 and Retry-After as well: a client that
// retries later succeeds, where server_error would say something is broken.
func unavailable(description string, cause error) *Error {
	return &Error{Code: ErrTemporarilyUnavailable, Description: description, Cause: cause}
}

// unavailableRetryAfter is the Retry-After, in seconds, of a
// temporarily_unavailable answer: long enough for a failover, short enough
// that a user does not notice the retry.
const unavailableRetryAfter = "5"

// cleanDescription keeps an error_description within the characters RFC
// 6749 §5.2 allows (%x20-21 / %x23-5B / %x5D-7E): a double quote, which
// the descriptions use around names and values, becomes a single quote,
// which is allowed; a backslash, a control character or non-ASCII
// echoed from a request becomes '?'.
func cleanDescription(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case c == '"':
			b[i] = '\''
		case c < 0x20 || c > 0x7e || c == '\\':
			b[i] = '?'
		}
	}
	return string(b)
}

// params returns the request's parameters with those sent without a value
// removed: RFC 6749 §3.1 treats them as omitted.
func params(q url.Values) url.Values {
	out := make(url.Values, len(q))
	for name, vals := range q {
		var kept []string
		for _, v := range vals {
			if v != "" {
				kept = append(kept, v)
			}
		}
		if len(kept) > 0 {
			out[name] = kept
		}
	}
	return out
}

// repeated returns the first of names given more than once in q, or "".
// Only the parameters a request defines are checked: unknown ones are
// ignored (RFC 6749 §3.1), and some extensions may repeat.
func repeated(q url.Values, names ...string) string {
	for _, n := range names {
		if len(q[n]) > 1 {
			return n
		}
	}
	return ""
}

// writeError writes e as the JSON error response of RFC 6749 §5.2.
func writeError(w http.ResponseWriter, status int, e *Error) {
	writeJSON(w, status, &Error{Code: e.Code, Description: cleanDescription(e.Description)})
}

// writeJSON writes v with the headers every token-bearing response needs
// (RFC 6749 §5.1): no caching anywhere.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		body = []byte(`{"error":"server_error"}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json;charset=UTF-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	w.WriteHeader(status)
	w.Write(body)
}
