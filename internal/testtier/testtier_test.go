package testtier

import (
	"testing"
)

// recorder is a testing.TB that records whether it was skipped or failed instead of stopping the goroutine.
type recorder struct {
	testing.TB
	skipped, failed bool
	msg             string
}

func (r *recorder) Helper()                        {}
func (r *recorder) Skip(args ...any)               { r.skipped = true }
func (r *recorder) Fatalf(format string, a ...any) { r.failed = true; r.msg = format }

func TestSkipFailsWhenTiersAreRequired(t *testing.T) {
	t.Setenv(Env, "1")
	r := &recorder{TB: t}
	Skip(r, "chromium is not installed")
	if !r.failed || r.skipped {
		t.Fatalf("with %s=1 a tier skip must fail the test: failed=%v skipped=%v", Env, r.failed, r.skipped)
	}
}

func TestSkipSkipsOtherwise(t *testing.T) {
	t.Setenv(Env, "")
	r := &recorder{TB: t}
	Skipf(r, "needs %s", "root")
	if r.failed || !r.skipped {
		t.Fatalf("without %s a tier skip must skip: failed=%v skipped=%v", Env, r.failed, r.skipped)
	}
}
