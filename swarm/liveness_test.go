package swarm

import (
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestStalledPeerIsBypassed: one of two whole holders accepts requests and then sends nothing (alive, but stuck);
// the downloader gives up on each such request once it has made no progress for a few piece times, takes the
// piece from the other holder, and finishes. The good holder's upload is limited (8 MiB at 4 MiB/s) so that the
// download outlasts the stall limit and the endgame's copies of late pieces do not do the work.
func TestStalledPeerIsBypassed(t *testing.T) {
	ctx := testContext(t)
	m := newMesh(t)
	good, stuck, d := m.node("good", "", WithUploadLimit(NewLimiter(4<<20))), m.node("stuck", ""), m.node("d", "")
	data, meta := randomArchive(t, 7, 8<<20, 256<<10)
	seed(t, good, data, meta)
	seed(t, stuck, data, meta)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	var stalls atomic.Int32
	stuck.srv.setTamper(func(int, []byte) { stalls.Add(1); <-release })

	start := time.Now()
	if err := Fetch(ctx, d.config(), meta, func() []string { return addrs(stuck, good) }); err != nil {
		t.Fatal(err)
	}
	checkArchive(t, d, meta, data)
	given := d.metric(t, "shoal_blob_piece_failures_total", map[string]string{"reason": reasonStalled})
	t.Logf("good sent %v, stuck sent %v", good.metric(t, "shoal_blob_sent_bytes_total", nil), stuck.metric(t, "shoal_blob_sent_bytes_total", nil))
	t.Logf("done in %v; the stuck peer held %d requests, %v given up as stalled", time.Since(start).Round(time.Millisecond), stalls.Load(), given)
	if stalls.Load() > 0 && given == 0 {
		t.Fatalf("%d requests went to the stuck peer and none was given up as stalled", stalls.Load())
	}
}

// TestFetchFailsWhenNoLiveHolder: the only live peer holds part of the archive and the other listed peer is
// gone; the download takes what there is and then fails, saying which pieces nobody holds, instead of waiting
// forever. Pieces already fetched stay, so a later fetch resumes.
func TestFetchFailsWhenNoLiveHolder(t *testing.T) {
	ctx := testContext(t)
	m := newMesh(t)
	part, d := m.node("part", ""), m.node("d", "")
	data, meta := randomArchive(t, 8, 2<<20, 256<<10)
	if _, err := part.store.Register(meta); err != nil {
		t.Fatal(err)
	}
	for i := range meta.NumPieces() - 2 {
		off := int64(i) * meta.PieceSize
		if err := part.store.WritePiece(meta, i, data[off:off+meta.PieceLen(i)]); err != nil {
			t.Fatal(err)
		}
	}
	// An address nobody answers on, as a peer killed a moment ago whose death gossip has not noticed yet.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := pc.LocalAddr().String()
	pc.Close()

	cfg := d.config()
	cfg.NoHolderTimeout = time.Second
	start := time.Now()
	err = Fetch(ctx, cfg, meta, func() []string { return []string{addrs(part)[0], dead} })
	t.Logf("after %v: %v", time.Since(start).Round(time.Millisecond), err)
	if !errors.Is(err, ErrNoHolder) {
		t.Fatalf("fetch ended with %v, want ErrNoHolder", err)
	}
	for _, want := range []string{"2 of the 2 pieces still missing", "bring one of them back"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q", want)
		}
	}
	if got, want := d.store.Have(meta.Digest).Count(), meta.NumPieces()-2; got != want {
		t.Errorf("%d pieces kept after the failure, want %d", got, want)
	}
	// The missing pieces come back with a whole holder: the next fetch resumes and completes.
	s := m.node("seed", "")
	seed(t, s, data, meta)
	if err := Fetch(ctx, cfg, meta, func() []string { return addrs(part, s) }); err != nil {
		t.Fatal(err)
	}
	checkArchive(t, d, meta, data)
}
