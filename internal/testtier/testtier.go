package testtier

import (
	"fmt"
	"os"
	"testing"
)

// Env is the environment variable that .ci/run sets to 1: then a test that would skip a tier (a browser, network
// namespaces, promtool, a Prometheus server, vagrant, shellcheck, git, bash) fails instead, so CI cannot pass by
// skipping what it is meant to run. Skips that are choices (-short, opt-in benchmarks) do not go through here.
const Env = "SHOAL_REQUIRE_ALL_TIERS"

// Required reports whether every tier must run here.
func Required() bool { return os.Getenv(Env) == "1" }

// Skip skips t with reason, or fails it with reason when every tier must run.
func Skip(t testing.TB, reason string) {
	t.Helper()
	if Required() {
		t.Fatalf("%s=1 (CI) requires this tier, but it cannot run here: %s", Env, reason)
		return
	}
	t.Skip(reason)
}

// Skipf is Skip with a format.
func Skipf(t testing.TB, format string, args ...any) {
	t.Helper()
	Skip(t, fmt.Sprintf(format, args...))
}
