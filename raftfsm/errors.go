package raftfsm

import (
	"errors"
	"fmt"
)

// Error kinds. The HTTP API maps them to status codes in one place (node/errors.go).
const (
	KindBadRequest = "bad_request"
	KindNotFound   = "not_found"
	KindConflict   = "conflict"
)

// Error is a command that Apply rejected. It is a result, never a panic: the state is unchanged.
type Error struct {
	Kind    string `json:"kind"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

// ErrorCode lets the error cross the node-to-node RPC with its kind.
func (e *Error) ErrorCode() string { return e.Kind }

func badRequest(format string, a ...any) *Error {
	return &Error{Kind: KindBadRequest, Message: fmt.Sprintf(format, a...)}
}
func notFound(format string, a ...any) *Error {
	return &Error{Kind: KindNotFound, Message: fmt.Sprintf(format, a...)}
}
func conflict(format string, a ...any) *Error {
	return &Error{Kind: KindConflict, Message: fmt.Sprintf(format, a...)}
}

// KindOf returns the kind of a rejected command, or "" for any other error.
func KindOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return ""
}
