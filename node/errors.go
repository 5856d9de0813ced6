package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/shoal-ci/shoal/raftfsm"
	"github.com/shoal-ci/shoal/transport"
)

// APIError is an error the HTTP API returns as JSON {"error": ..., "code": ...}.
type APIError struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"error"`
	// RequestID is set on 5xx answers: the node logged the error under it.
	RequestID string `json:"request_id,omitempty"`
}

func (e *APIError) Error() string { return e.Message }

func apiErr(status int, code, format string, a ...any) *APIError {
	return &APIError{Status: status, Code: code, Message: fmt.Sprintf(format, a...)}
}

// Errorf returns an API error with the given HTTP status; the code is derived from the status. Handlers of other
// packages use it for their own 4xx answers.
func Errorf(status int, format string, a ...any) *APIError {
	code := map[int]string{400: raftfsm.KindBadRequest, 401: "unauthorized", 403: "forbidden", 404: raftfsm.KindNotFound,
		409: raftfsm.KindConflict, 413: "too_large", 429: "too_many_requests", 503: CodeUnavailable, 507: "disk_full"}[status]
	if code == "" {
		code = http.StatusText(status)
	}
	return apiErr(status, code, format, a...)
}

func badRequest(format string, a ...any) *APIError {
	return apiErr(http.StatusBadRequest, raftfsm.KindBadRequest, format, a...)
}

// statusOf is the one mapping from an error to an HTTP status and code.
func statusOf(err error) *APIError {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae
	}
	var fe *raftfsm.Error
	if errors.As(err, &fe) {
		switch fe.Kind {
		case raftfsm.KindBadRequest:
			return &APIError{Status: http.StatusBadRequest, Code: fe.Kind, Message: fe.Message}
		case raftfsm.KindNotFound:
			return &APIError{Status: http.StatusNotFound, Code: fe.Kind, Message: fe.Message}
		case raftfsm.KindConflict:
			return &APIError{Status: http.StatusConflict, Code: fe.Kind, Message: fe.Message}
		}
	}
	var re *transport.RemoteError
	if errors.As(err, &re) {
		switch re.Code {
		case CodeNoLeader, CodeUnavailable:
			return &APIError{Status: http.StatusServiceUnavailable, Code: re.Code, Message: re.Message}
		}
	}
	return &APIError{Status: http.StatusInternalServerError, Code: "internal", Message: err.Error()}
}

// writeErrorFor answers r with err. A 5xx is logged with the request's method and path under a new request id,
// which the answer carries (and X-Request-Id); an internal error's own message stays in the log, since it may
// name files, addresses or state the caller has no business seeing.
func (n *Node) writeErrorFor(w http.ResponseWriter, r *http.Request, err error) int {
	ae := statusOf(err)
	if ae.Status >= 500 {
		c := *ae
		c.RequestID = randomHex(8)
		w.Header().Set("X-Request-Id", c.RequestID)
		// 502 and 503 are the mesh's ordinary weather (an election, a peer away): a warning, not an error.
		level := slog.LevelError
		if c.Status == http.StatusBadGateway || c.Status == http.StatusServiceUnavailable {
			level = slog.LevelWarn
		}
		n.log.Log(r.Context(), level, "API request failed", "component", "api", "request_id", c.RequestID, "method", r.Method,
			"path", r.URL.Path, "status", c.Status, "code", c.Code, "err", err)
		if c.Code == "internal" {
			c.Message = fmt.Sprintf("internal error on node %s: an operator finds it in the node's log under request id %s", n.cfg.Name, c.RequestID)
		}
		ae = &c
	}
	return writeError(w, ae)
}

func writeError(w http.ResponseWriter, err error) int {
	ae := statusOf(err)
	if ae.Status == http.StatusServiceUnavailable || ae.Status == http.StatusTooManyRequests || ae.Status == http.StatusInsufficientStorage {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, ae.Status, ae)
	return ae.Status
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
