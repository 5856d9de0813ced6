package api

import (
	"net/http"
	"testing"

	"github.com/shoal-ci/shoal/errs"
)

// TestEveryCodeHasAStatus: each code of errs answers with its own status, not a 500 (a code missing from the
// table would hide a 4xx behind "internal error").
func TestEveryCodeHasAStatus(t *testing.T) {
	for _, c := range []string{errs.BadRequest, errs.NotFound, errs.Conflict, errs.Unauthorized, errs.Forbidden, errs.TooLarge,
		errs.TooManyRequests, errs.TooManyWatchers, errs.Unavailable, errs.NoLeader, errs.NotLeader, errs.DiskFull, errs.BadGateway,
		errs.BadSignature, errs.RepositoryUnreachable} {
		if a := answerOf(errs.New(c, "x")); a.Status == http.StatusInternalServerError || a.Code != c {
			t.Errorf("code %s answers %d %s", c, a.Status, a.Code)
		}
	}
	if a := answerOf(errs.New(errs.Internal, "disk on fire")); a.Status != http.StatusInternalServerError {
		t.Errorf("internal: %d", a.Status)
	}
}
