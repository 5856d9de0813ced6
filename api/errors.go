package api

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/shoal-ci/shoal/errs"
)

// statusOf is the one table from an error's code to an HTTP status. A code not in it is an internal error.
var statusOf = map[string]int{
	errs.BadRequest: http.StatusBadRequest, errs.Unauthorized: http.StatusUnauthorized, errs.BadSignature: http.StatusUnauthorized,
	errs.Forbidden: http.StatusForbidden, errs.NotFound: http.StatusNotFound, errs.Conflict: http.StatusConflict,
	errs.TooLarge: http.StatusRequestEntityTooLarge, errs.TooManyRequests: http.StatusTooManyRequests, errs.TooManyWatchers: http.StatusTooManyRequests,
	errs.BadGateway: http.StatusBadGateway, errs.RepositoryUnreachable: http.StatusBadGateway,
	errs.Unavailable: http.StatusServiceUnavailable, errs.NoLeader: http.StatusServiceUnavailable,
	errs.NotLeader: http.StatusServiceUnavailable, errs.DiskFull: http.StatusInsufficientStorage,
}

// answer is an error as the HTTP API sends it: {"code": ..., "error": ..., "request_id": ...}.
type answer struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"error"`
	// RequestID is set on 5xx answers: the node logged the error under it.
	RequestID string `json:"request_id,omitempty"`
}

// answerOf maps err to its answer: an errs.Error by its code, anything else an internal error.
func answerOf(err error) *answer {
	var e *errs.Error
	if errors.As(err, &e) {
		if status, ok := statusOf[e.Code]; ok {
			return &answer{Status: status, Code: e.Code, Message: e.Message}
		}
	}
	return &answer{Status: http.StatusInternalServerError, Code: errs.Internal, Message: err.Error()}
}

// writeErrorFor answers r with err. A 5xx is logged with the request's method and path under a new request id,
// which the answer carries (and X-Request-Id); an internal error's own message stays in the log, since it may
// name files, addresses or state the caller has no business seeing.
func (srv *Server) writeErrorFor(w http.ResponseWriter, r *http.Request, err error) int {
	ae := answerOf(err)
	if ae.Status >= 500 {
		c := *ae
		c.RequestID = newRequestID()
		w.Header().Set("X-Request-Id", c.RequestID)
		// 502 and 503 are the mesh's ordinary weather (an election, a peer away): a warning, not an error.
		level := slog.LevelError
		if c.Status == http.StatusBadGateway || c.Status == http.StatusServiceUnavailable {
			level = slog.LevelWarn
		}
		srv.log.Log(r.Context(), level, "API request failed", "component", "api", "request_id", c.RequestID, "method", r.Method,
			"path", r.URL.Path, "status", c.Status, "code", c.Code, "err", err)
		if c.Code == errs.Internal {
			c.Message = fmt.Sprintf("internal error on node %s: an operator finds it in the node's log under request id %s", srv.n.Name(), c.RequestID)
		}
		ae = &c
	}
	return writeAnswer(w, ae)
}

func writeError(w http.ResponseWriter, err error) int { return writeAnswer(w, answerOf(err)) }

func writeAnswer(w http.ResponseWriter, ae *answer) int {
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

// newRequestID returns a new random request id (16 hex digits).
func newRequestID() string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return hex.EncodeToString(b)
}
