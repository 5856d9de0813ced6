package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/internal/testutil"
	"github.com/shoal-ci/shoal/raftfsm"
)

// TestSpreadUploadLimit runs a two-process mesh whose first node was started with --upload-limit 8mbit (1 MB/s).
// A 3 MiB release pushed to it reaches the second node (which fetches it on its own: a release needs two
// holders) no faster than that: the flag reaches the piece server, and its limiter holds on a real QUIC link.
func TestSpreadUploadLimit(t *testing.T) {
	needProcesses(t)
	const rate = 1_000_000 // bytes per second: 8mbit
	m := newPmesh(t, 2)
	m.initFlags = []string{"--upload-limit", "8mbit"}
	m.start()
	seed, other := m.nodes[0], m.nodes[1]
	if err := m.createApp(seed, "big"); err != nil {
		t.Fatal(err)
	}
	files := releaseFiles("v1", false)
	noise := make([]byte, 3<<20) // incompressible, so the archive is about as large
	rand.Read(noise)
	files["noise.bin"] = string(noise)
	data := tarGzFiles(t, files)

	type sample struct {
		at   time.Time
		sent float64
	}
	var samples []sample
	sent := func() float64 {
		body, err := scrape(m, seed)
		if err != nil {
			t.Fatalf("scrape %s: %v", seed.name, err)
		}
		return parseMetrics(body)["shoal_blob_sent_bytes_total"]
	}
	var rel raftfsm.Release
	if err := m.client(seed).Upload(context.Background(), "/v1/apps/big/releases?version=v1", bytes.NewReader(data), &rel); err != nil {
		t.Fatalf("push the release: %v", err)
	}
	testutil.Eventually(t, 60*time.Second, other.name+" to hold the release whole", func() (bool, string) {
		samples = append(samples, sample{time.Now(), sent()})
		var r raftfsm.Release
		if _, err := m.client(seed).Get(context.Background(), "/v1/apps/big/releases/v1?consistent", &r); err != nil {
			return false, err.Error()
		}
		return slices.Contains(r.Holders, other.name), "holders " + strings.Join(r.Holders, ",")
	})
	samples = append(samples, sample{time.Now(), sent()})

	size := float64(rel.Size)
	if last := samples[len(samples)-1].sent; last < size {
		t.Fatalf("the seed sent %.0f bytes of pieces for a %.0f-byte archive", last, size)
	}
	first := slices.IndexFunc(samples, func(s sample) bool { return s.sent > 0 })
	done := slices.IndexFunc(samples, func(s sample) bool { return s.sent >= size })
	took := samples[done].at.Sub(samples[first].at)
	// The limiter lets a tenth of a second's worth through at once; allow that, and a fifth for scheduling.
	least := time.Duration(0.8 * (size - rate/10) / rate * float64(time.Second))
	t.Logf("%.0f bytes sent in %v after the first piece bytes (%.2f MB/s; limit 1 MB/s)", size, took.Round(time.Millisecond), size/took.Seconds()/1e6)
	if took < least {
		t.Fatalf("the seed sent %.0f bytes in %v: faster than --upload-limit 8mbit allows (at least %v)", size, took, least)
	}
}
