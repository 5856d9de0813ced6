// Package testutil is what Shoal's tests share: imported by tests only.
package testutil

import (
	"testing"
	"time"
)

// Eventually checks cond until it holds, every 1/200 of timeout (5 ms to 50 ms: a poll interval, not a wait
// for an event; a condition that asks a process over HTTP is not asked a hundred times a second). When timeout
// passes first, the test fails, naming what it waited for and the last detail cond gave.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	every := min(max(timeout/200, 5*time.Millisecond), 50*time.Millisecond)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			if detail != "" {
				t.Fatalf("timed out after %s waiting for %s: %s", timeout, what, detail)
			}
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(every)
	}
}

// Until is Eventually for a condition with nothing to say when it does not hold.
func Until(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	Eventually(t, timeout, what, func() (bool, string) { return cond(), "" })
}
