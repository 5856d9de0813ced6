// Package errs is Shoal's one error type. An Error has a code, which says to a program what went wrong (and the
// HTTP layer maps to a status in one table, api/errors.go), and a message, which says to a person what to do.
// The state machine's rejections, the answers of node-to-node calls and the services' refusals are all Errors;
// only the HTTP layer knows status numbers.
package errs

import (
	"errors"
	"fmt"
)

// The codes. New ones are added here, and to the HTTP layer's table.
const (
	BadRequest      = "bad_request"       // the request is wrong: its message says how
	NotFound        = "not_found"         // no such record
	Conflict        = "conflict"          // the state does not allow it now (exists already, changed since read, in use)
	Unauthorized    = "unauthorized"      // no valid token
	Forbidden       = "forbidden"         // the token's role is too low
	TooLarge        = "too_large"         // the body is over its limit
	TooManyRequests = "too_many_requests" // a rate or concurrency limit: retry later
	TooManyWatchers = "too_many_watchers" // a token holds too many blocking reads at once
	Unavailable     = "unavailable"       // not now (a peer away, a service stopped): retry, elsewhere or later
	NoLeader        = "no_leader"         // the mesh has no leader within the request's deadline: retry
	NotLeader       = "not_leader"        // a node-to-node call reached a node that no longer leads: the caller retries
	DiskFull        = "disk_full"         // this node's disk is full
	BadGateway      = "bad_gateway"       // a peer this node asked answered wrongly
	Internal        = "internal"          // a bug or an I/O failure: logged, never shown

	BadSignature          = "bad_signature"          // a webhook's signature does not match the app's secret
	RepositoryUnreachable = "repository_unreachable" // the node could not reach an app's git repository
)

// Error is a code and a message. Its JSON is what node-to-node calls carry.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

// ErrorCode lets the error cross a node-to-node call with its code.
func (e *Error) ErrorCode() string { return e.Code }

// New makes an Error.
func New(code, format string, a ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, a...)}
}

// CodeOf returns the code of err's Error, or "" when it has none.
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}
