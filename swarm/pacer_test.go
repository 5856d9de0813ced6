package swarm

import (
	"testing"
)

// TestDelayPacedSeedServes: a seed whose upload is paced by delay (no fixed limit) serves a download whole, and
// its pacing gauge shows the rate it settled on.
func TestDelayPacedSeedServes(t *testing.T) {
	ctx := testContext(t)
	m := newMesh(t)
	s, d := m.node("seed", "", WithDelayPacing()), m.node("d", "")
	data, meta := randomArchive(t, 9, 8<<20, 256<<10)
	seed(t, s, data, meta)
	if err := Fetch(ctx, d.config(), meta, func() []string { return addrs(s) }); err != nil {
		t.Fatal(err)
	}
	checkArchive(t, d, meta, data)
	rate := s.metric(t, "shoal_blob_upload_pacing_rate_bytes", nil)
	t.Logf("pacing rate at the end: %.1f Mbit/s", rate*8/1e6)
	if rate < pacingMinRate {
		t.Fatalf("pacing gauge %v: want the rate the pacer allows (at least %d bytes/s)", rate, pacingMinRate)
	}
}
