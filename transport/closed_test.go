package transport

import (
	"fmt"
	"testing"

	"github.com/quic-go/quic-go"
)

// A stream ended by a close with code 0 (Endpoint.Close, streamConn.Close) reads as io.EOF, so Raft's transport
// does not log a clean shutdown as a broken command; any other code is an error.
func TestClosedOnPurpose(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&quic.ApplicationError{ErrorCode: 0, Remote: true}, true},
		{fmt.Errorf("read: %w", &quic.ApplicationError{ErrorCode: 0}), true},
		{&quic.StreamError{ErrorCode: 0, Remote: true}, true},
		{&quic.ApplicationError{ErrorCode: 1, Remote: true}, false},
		{&quic.StreamError{ErrorCode: 5}, false},
		{&quic.IdleTimeoutError{}, false},
	} {
		if got := closedOnPurpose(tc.err); got != tc.want {
			t.Errorf("closedOnPurpose(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
