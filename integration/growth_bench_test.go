package integration

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestBenchGrowth measures whether a write costs the same in a big state as in an empty one, and how long a node
// holding that state takes to serve again after a restart (issue 13, item 4). One node process, 64 clients
// creating apps over the HTTP API:
//
//	SHOAL_BENCH=smoke go test -count=1 -run BenchGrowth -v ./integration                # 10,000 records, for CI
//	SHOAL_BENCH=full  go test -count=1 -run BenchGrowth -v -timeout 30m ./integration   # 100,000 records, docs/benchmarks.md
//
// SHOAL_BENCH_RECORDS overrides the number of records. Goals: writes/s with the records in the state ≥ 0.9 × writes/s
// with an empty state, in this one run; restart (SIGTERM and kill -9) to the first acknowledged write ≤ 2 s.
func TestBenchGrowth(t *testing.T) {
	plan := benchPlanFor(t)
	needProcesses(t)
	// The empty state is measured over a short window: at ~5,000 writes/s it is no longer empty after a few seconds.
	records, emptyWindow, window := 20_000, 2*time.Second, 3*time.Second
	if plan.mode == "full" {
		records, window = 100_000, 10*time.Second
	}
	if v := os.Getenv("SHOAL_BENCH_RECORDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("SHOAL_BENCH_RECORDS=%q: give a positive number", v)
		}
		records = n
	}
	const clients = 64
	t.Logf("machine: %s; one node, %d clients, %v (empty) and %v (full) windows, %d records (%s form); the node and the load generator share the machine",
		benchMachine(), clients, emptyWindow, window, records, plan.mode)
	hc := benchHTTP(20 * time.Second)
	m := startPmesh(t, 1)
	n := m.nodes[0]
	m.waitHealthy(n)
	url := "http://" + n.api() + "/v1/apps"

	empty, took := createApps(t, hc, m.admin, url, "empty", clients, emptyWindow, 0)
	emptyRate := float64(empty) / took.Seconds()
	t.Logf("writes/s, empty state: %.0f (%d apps in %s)", emptyRate, empty, secs(took))

	start := time.Now()
	var filled int64
	if need := records - int(empty); need > 0 {
		filled, _ = createApps(t, hc, m.admin, url, "fill", clients, time.Hour, need)
	}
	t.Logf("filled to %d apps in %s (%.0f writes/s while growing)", int(empty)+int(filled), secs(time.Since(start)),
		float64(filled)/time.Since(start).Seconds())

	full, took := createApps(t, hc, m.admin, url, "full", clients, window, 0)
	fullRate := float64(full) / took.Seconds()
	total := int(empty + filled + full)
	t.Logf("writes/s, %d records in the state: %.0f; goal ≥ 0.9 × %.0f = %.0f (ratio %.2f): %s", records, fullRate, emptyRate,
		0.9*emptyRate, fullRate/emptyRate, verdict(fullRate >= 0.9*emptyRate))

	for _, q := range []string{"?limit=100", "?limit=100&cursor=fill-0-5"} {
		lstart := time.Now()
		code, msg, err := get(hc, url+q, m.admin)
		if code != http.StatusOK {
			t.Fatalf("GET /v1/apps%s: %d %s %v", q, code, msg, err)
		}
		t.Logf("GET /v1/apps%s with %d apps: %s", q, total, ms(time.Since(lstart)))
	}

	// kill -9 first, right after the load: the restart replays the log written since the last snapshot (up to the
	// snapshot threshold). A SIGTERM stop snapshots first (node/snapshots.go), so it follows a second load window.
	for _, how := range []string{"kill -9", "SIGTERM"} {
		if how == "SIGTERM" {
			more, _ := createApps(t, hc, m.admin, url, "more", clients, window, 0)
			total += int(more)
			n.proc.Stop()
		} else {
			n.proc.Kill()
		}
		rstart := time.Now()
		m.restart(n)
		var first time.Duration
		for seq := 0; ; seq++ {
			code, _, _ := post(hc, "POST", url, m.admin, map[string]string{"name": fmt.Sprintf("restart-%d-%d", len(how), seq)})
			if code == http.StatusCreated {
				first = time.Since(rstart)
				break
			}
			if time.Since(rstart) > 60*time.Second {
				t.Fatalf("no write acknowledged within 60 s of restarting after %s", how)
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Logf("restart after %s with %d records to the first acknowledged write: %s; goal ≤ 2 s: %s", how, total,
			secs(first), verdict(first <= 2*time.Second))
		if os.Getenv("SHOAL_BENCH_LOG") != "" {
			t.Logf("the node's log after the restart:\n%s", n.proc.Stderr())
		}
	}
}

// createApps runs clients workers creating apps <prefix>-<worker>-<seq> until d has passed or, when count > 0,
// count apps were acknowledged. Failures fail the test: this load has no faults.
func createApps(t *testing.T, hc *http.Client, token, url, prefix string, clients int, d time.Duration, count int) (ok int64, elapsed time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var okN, claimed atomic.Int64
	var failed sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; ctx.Err() == nil; seq++ {
				if count > 0 && claimed.Add(1) > int64(count) {
					return
				}
				code, msg, err := post(hc, "POST", url, token, map[string]string{"name": fmt.Sprintf("%s-%d-%d", prefix, i, seq)})
				if code == http.StatusCreated {
					okN.Add(1)
					continue
				}
				if ctx.Err() == nil {
					failed.Do(func() { t.Errorf("create app: %d %s %v", code, msg, err) })
				}
			}
		}()
	}
	wg.Wait()
	return okN.Load(), time.Since(start)
}

// get reads url and returns the status and, for an error, its text.
func get(hc *http.Client, url, token string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var buf [4096]byte
	k, _ := resp.Body.Read(buf[:])
	for {
		if _, err := resp.Body.Read(buf[:]); err != nil {
			break
		}
	}
	if resp.StatusCode >= 400 {
		return resp.StatusCode, string(buf[:k]), nil
	}
	return resp.StatusCode, "", nil
}
