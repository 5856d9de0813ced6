package raftfsm

import (
	"fmt"

	"github.com/shoal-ci/shoal/errs"
)

// Error kinds: the codes of errs that a command's rejection can have.
const (
	KindBadRequest = errs.BadRequest
	KindNotFound   = errs.NotFound
	KindConflict   = errs.Conflict
)

// Error is a command that Apply rejected (Shoal's one error type). It is a result, never a panic: the state is
// unchanged.
type Error = errs.Error

func badRequest(format string, a ...any) *Error {
	return &Error{Code: KindBadRequest, Message: fmt.Sprintf(format, a...)}
}
func notFound(format string, a ...any) *Error {
	return &Error{Code: KindNotFound, Message: fmt.Sprintf(format, a...)}
}
func conflict(format string, a ...any) *Error {
	return &Error{Code: KindConflict, Message: fmt.Sprintf(format, a...)}
}

// KindOf returns the kind of a rejected command, or "" for any other error.
func KindOf(err error) string {
	switch c := errs.CodeOf(err); c {
	case KindBadRequest, KindNotFound, KindConflict:
		return c
	}
	return ""
}
