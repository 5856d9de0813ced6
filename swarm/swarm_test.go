package swarm

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/shoal-ci/shoal/artifact"
	"github.com/shoal-ci/shoal/internal/testutil"
	"github.com/shoal-ci/shoal/transport"
)

// sendLine opens a piece-exchange stream from one node to another and writes one request line on it.
func sendLine(t *testing.T, ctx context.Context, from, to *node, line string) *quic.Stream {
	t.Helper()
	conn, err := from.ep.Dial(ctx, to.addr(), transport.ALPNBlob)
	if err != nil {
		t.Fatal(err)
	}
	st, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(st, line+"\n"); err != nil {
		t.Fatal(err)
	}
	return st
}

// ask sends one request line on its own stream and returns the response header line and what follows it.
func ask(t *testing.T, ctx context.Context, from, to *node, line string) (string, []byte) {
	t.Helper()
	st := sendLine(t, ctx, from, to, line)
	st.Close()
	br := bufio.NewReader(st)
	header, err := readLine(br)
	if err != nil {
		t.Fatalf("%q: %v", line, err)
	}
	rest, err := io.ReadAll(br)
	if err != nil {
		t.Fatalf("%q: %v", line, err)
	}
	return header, rest
}

// watchFrom opens a WATCH of digest from one node to another, checks that the opening bitfield has n bytes, reads
// it, and returns the reader of the announcements that follow; the stream is cancelled when the test ends.
func watchFrom(t *testing.T, ctx context.Context, from, to *node, digest string, n int64) *bufio.Reader {
	t.Helper()
	st := sendLine(t, ctx, from, to, "WATCH "+digest)
	t.Cleanup(func() { st.CancelWrite(streamCancelled); st.CancelRead(streamCancelled) })
	br := bufio.NewReader(st)
	if got, err := readHeader(br); err != nil || got != n {
		t.Fatalf("watch header: %d, %v; want a bitfield of %d bytes", got, err, n)
	}
	if _, err := io.CopyN(io.Discard, br, n); err != nil {
		t.Fatal(err)
	}
	return br
}

func TestProtocol(t *testing.T) {
	ctx := testContext(t)
	m := newMesh(t)
	srv, cli := m.node("seed", ""), m.node("client", "")
	data, meta := randomArchive(t, 1, 1000, 300)
	seed(t, srv, data, meta)
	_, other := randomArchive(t, 2, 700, 300)

	for _, c := range []struct {
		req, header string
		body        []byte
	}{
		{"HAVE " + meta.Digest, "OK 1", []byte{0xf0}},
		{"HAVE " + other.Digest, "OK 0", nil},
		{"GET " + meta.Digest + " 3", "OK 100", data[900:]},
		{"GET " + meta.Digest + " 0", "OK 300", data[:300]},
		{"GET " + meta.Digest + " 4", "ERR missing piece not held", nil},
		{"GET " + other.Digest + " 0", "ERR missing piece not held", nil},
		{"GET ../../etc/passwd 0", "ERR bad-request", nil},
		{"GET " + meta.Digest + " -1", "ERR bad-request", nil},
		{"FETCH " + meta.Digest, "ERR bad-request", nil},
	} {
		header, body := ask(t, ctx, cli, srv, c.req)
		if !strings.HasPrefix(header, c.header) || string(body) != string(c.body) {
			t.Errorf("%q: got %q + %d bytes, want %q + %d bytes", c.req, header, len(body), c.header, len(c.body))
		}
	}

	// WATCH on an artifact the server does not know yet: an empty bitfield, then each piece as it lands.
	br := watchFrom(t, ctx, cli, srv, other.Digest, 0)
	otherData, _ := randomArchive(t, 2, 700, 300)
	for _, i := range []int{2, 0} {
		if err := srv.store.WritePiece(other, i, otherData[i*300:min(i*300+300, 700)]); err != nil {
			t.Fatal(err)
		}
		line, err := readLine(br)
		if err != nil || line != fmt.Sprint(i) {
			t.Fatalf("announcement %q, %v; want %d", line, err, i)
		}
	}
}

// TestFiveNodesFromOneSeed: five nodes download a 32-piece archive at once from one seed and from each other.
func TestFiveNodesFromOneSeed(t *testing.T) {
	ctx := testContext(t)
	m := newMesh(t)
	s := m.node("seed", "")
	data, meta := randomArchive(t, 3, 8<<20, 256<<10)
	seed(t, s, data, meta)
	all := []*node{s}
	for i := range 5 {
		all = append(all, m.node(fmt.Sprintf("n%d", i+1), ""))
	}
	var wg sync.WaitGroup
	errs := make([]error, len(all))
	for k, n := range all[1:] {
		wg.Go(func() { errs[k] = Fetch(ctx, n.config(), meta, others(n, all)) })
	}
	wg.Wait()
	var received float64
	for k, n := range all[1:] {
		if errs[k] != nil {
			t.Fatalf("%s: %v", n.name, errs[k])
		}
		checkArchive(t, n, meta, data)
		if got := n.metric(t, "shoal_blob_fetch_duration_seconds", nil); got != 1 {
			t.Errorf("%s: %v fetch durations observed, want 1", n.name, got)
		}
		if got := n.metric(t, "shoal_blob_peers_in_use", nil); got != 0 {
			t.Errorf("%s: %v peers still in use after the download", n.name, got)
		}
		received += n.metric(t, "shoal_blob_received_bytes_total", nil)
	}
	f := float64(meta.Size)
	t.Logf("seed sent %.2f F; the five received %.2f F in all", s.metric(t, "shoal_blob_sent_bytes_total", nil)/f, received/f)
}

// TestCorruptPeerIsDropped: the only peer at first serves flipped bytes; the downloader drops it, and once the
// peer list gains the seed, ends with the right archive.
func TestCorruptPeerIsDropped(t *testing.T) {
	ctx := testContext(t)
	m := newMesh(t)
	s, bad, d := m.node("seed", ""), m.node("bad", ""), m.node("d", "")
	data, meta := randomArchive(t, 4, 8<<20, 256<<10)
	seed(t, s, data, meta)
	seed(t, bad, data, meta) // its store is right; its server lies
	bad.srv.setTamper(func(i int, b []byte) { b[len(b)/2] ^= 0x01 })
	var badGets atomic.Int32
	bad.srv.setAllow(func(string, int) bool { badGets.Add(1); return true })

	var withSeed atomic.Bool
	peers := func() []string {
		if withSeed.Load() {
			return addrs(bad, s)
		}
		return addrs(bad)
	}
	errc := make(chan error, 1)
	cfg := d.config()
	go func() { errc <- Fetch(ctx, cfg, meta, peers) }()
	testutil.Until(t, 45*time.Second, "a bad piece to be detected", func() bool {
		return d.metric(t, "shoal_blob_piece_failures_total", map[string]string{"reason": reasonBadHash}) > 0
	})
	withSeed.Store(true)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	checkArchive(t, d, meta, data)
	// Every worker stops at its first bad piece, so the liar got at most one request per slot.
	if n := badGets.Load(); n > defaultInFlight {
		t.Errorf("the corrupt peer served %d requests; it should have been dropped after at most %d", n, defaultInFlight)
	}
}

// TestResumeFetchesOnlyMissing: a download cancelled with half the pieces resumes, after a restart on the same
// data dir, by fetching exactly the other half.
func TestResumeFetchesOnlyMissing(t *testing.T) {
	ctx := testContext(t)
	m := newMesh(t)
	s, d := m.node("seed", ""), m.node("d", "")
	data, meta := randomArchive(t, 5, 8<<20, 256<<10)
	seed(t, s, data, meta)

	var mu sync.Mutex
	resumed := false
	var asked []int
	s.srv.setAllow(func(peer string, i int) bool {
		mu.Lock()
		defer mu.Unlock()
		if resumed {
			asked = append(asked, i)
			return true
		}
		return i%2 == 0 // the first run can get only the even pieces
	})
	ctx1, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- Fetch(ctx1, d.config(), meta, func() []string { return addrs(s) }) }()
	testutil.Until(t, 45*time.Second, "half the pieces", func() bool { return d.store.Have(meta.Digest).Count() == meta.NumPieces()/2 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled fetch returned %v", err)
	}
	held := d.store.Have(meta.Digest)
	d.ep.Close()

	d = m.node("d", d.dir) // restart on the same store
	if got := d.store.Have(meta.Digest); string(got) != string(held) {
		t.Fatalf("after restart the store holds %08b, before %08b", got, held)
	}
	mu.Lock()
	resumed = true
	mu.Unlock()
	if err := Fetch(ctx, d.config(), meta, func() []string { return addrs(s) }); err != nil {
		t.Fatal(err)
	}
	checkArchive(t, d, meta, data)
	mu.Lock()
	defer mu.Unlock()
	var missing int64
	for i := range meta.NumPieces() {
		if !held.Has(i) {
			missing += meta.PieceLen(i)
		}
	}
	for _, i := range asked {
		if held.Has(i) {
			t.Errorf("piece %d was held before the restart and fetched again", i)
		}
	}
	if got := d.metric(t, "shoal_blob_received_bytes_total", nil); got != float64(missing) {
		t.Errorf("resumed download received %v bytes, want the %d missing", got, missing)
	}
}

// TestSeedLeavesOnceTwoHoldIt: the seed goes away as soon as two nodes hold the archive whole; the two slower
// nodes still finish, from those two.
func TestSeedLeavesOnceTwoHoldIt(t *testing.T) {
	ctx := testContext(t)
	m := newMesh(t)
	s := m.node("seed", "")
	data, meta := randomArchive(t, 6, 8<<20, 256<<10)
	seed(t, s, data, meta)
	a, b, c, d := m.node("a", ""), m.node("b", ""), m.node("c", ""), m.node("d", "")
	all := []*node{s, a, b, c, d}
	slow := NewLimiter(4 << 20) // c and d, sharing one limiter, are still downloading when the seed leaves

	var wg sync.WaitGroup
	errs := make(map[*node]error)
	var mu sync.Mutex
	fetch := func(n *node, limit *Limiter) {
		cfg := n.config()
		cfg.DownloadLimit = limit
		err := Fetch(ctx, cfg, meta, others(n, all))
		mu.Lock()
		errs[n] = err
		mu.Unlock()
	}
	var fast sync.WaitGroup
	fast.Go(func() { fetch(a, nil) })
	fast.Go(func() { fetch(b, nil) })
	wg.Go(func() { fetch(c, slow) })
	wg.Go(func() { fetch(d, slow) })
	fast.Wait()
	if errs[a] != nil || errs[b] != nil {
		t.Fatalf("a: %v, b: %v", errs[a], errs[b])
	}
	t.Logf("seed leaves with c holding %d and d %d of %d pieces", c.store.Have(meta.Digest).Count(),
		d.store.Have(meta.Digest).Count(), meta.NumPieces())
	s.ep.Close()
	wg.Wait()
	for _, n := range []*node{a, b, c, d} {
		if errs[n] != nil {
			t.Fatalf("%s: %v", n.name, errs[n])
		}
		checkArchive(t, n, meta, data)
	}
}

func TestMetricsShareARegistry(t *testing.T) {
	m := newMesh(t)
	n := m.node("n", "")
	again, err := NewMetrics(n.reg)
	if err != nil {
		t.Fatal(err)
	}
	again.sent.Add(7)
	if got := n.metric(t, "shoal_blob_sent_bytes_total", nil); got != 7 {
		t.Fatalf("second NewMetrics on the same registry counted elsewhere: %v", got)
	}
	_ = artifact.ErrUnknown
}

// TestBusyAndFull: a seed sends a piece to one peer at a time and admits no more requests than its slots and
// queue; the refusals name the pieces taken.
func TestBusyAndFull(t *testing.T) {
	ctx := testContext(t)
	m := newMesh(t)
	srv, cli := m.node("seed", "", WithUploadSlots(1, 0)), m.node("client", "")
	data, meta := randomArchive(t, 8, 1000, 300)
	seed(t, srv, data, meta)
	release := make(chan struct{})
	srv.srv.setTamper(func(int, []byte) { <-release }) // holds the only slot
	first := make(chan string, 1)
	go func() {
		header, _ := ask(t, ctx, cli, srv, "GET "+meta.Digest+" 2")
		first <- header
	}()
	testutil.Until(t, 45*time.Second, "the first request to take the slot", func() bool {
		srv.srv.mu.Lock()
		defer srv.srv.mu.Unlock()
		return srv.srv.admitted == 1
	})
	if header, _ := ask(t, ctx, cli, srv, "GET "+meta.Digest+" 2"); header != "ERR busy 2" {
		t.Errorf("second request for the piece being sent: %q", header)
	}
	// The refusal says when to come back: the queue's drain time, at least minRetryAfter (no piece sent yet).
	if header, _ := ask(t, ctx, cli, srv, "GET "+meta.Digest+" 1"); header != fmt.Sprintf("ERR full %d upload queue is full", minRetryAfter.Milliseconds()) {
		t.Errorf("request beyond the queue: %q", header)
	}
	close(release)
	if header := <-first; header != "OK 300" {
		t.Errorf("first request: %q", header)
	}
	if got := srv.metric(t, "shoal_blob_requests_refused_total", nil); got != 2 {
		t.Errorf("%v refusals counted, want 2", got)
	}
}

// TestWatchAnnouncesSentPieces: a node holding the whole artifact announces on WATCH each piece it has sent in full
// once ("sent <i>"), to watchers already connected and, in the opening burst, to new ones.
func TestWatchAnnouncesSentPieces(t *testing.T) {
	ctx := testContext(t)
	m := newMesh(t)
	srv, cli := m.node("seed", ""), m.node("client", "")
	data, meta := randomArchive(t, 3, 1000, 300)
	seed(t, srv, data, meta)
	first := watchFrom(t, ctx, cli, srv, meta.Digest, 1)
	for _, i := range []int{2, 0, 2} {
		if header, _ := ask(t, ctx, cli, srv, fmt.Sprintf("GET %s %d", meta.Digest, i)); !strings.HasPrefix(header, "OK ") {
			t.Fatalf("GET piece %d: %q", i, header)
		}
	}
	for _, want := range []string{"sent 2", "sent 0"} { // piece 2 twice, announced once
		if line, err := readLine(first); err != nil || line != want {
			t.Fatalf("announcement %q, %v; want %q", line, err, want)
		}
	}
	second := watchFrom(t, ctx, cli, srv, meta.Digest, 1)
	got := map[string]bool{}
	for range 2 {
		line, err := readLine(second)
		if err != nil {
			t.Fatal(err)
		}
		got[line] = true
	}
	if !got["sent 0"] || !got["sent 2"] {
		t.Fatalf("a new watcher was told %v; want sent 0 and sent 2", got)
	}
}

// TestMaxPeersReachesTheOnlyHolder: with room for two peers and five listed, four of them empty, the download
// still finds the one that holds the archive.
func TestMaxPeersReachesTheOnlyHolder(t *testing.T) {
	ctx := testContext(t)
	m := newMesh(t)
	s, d := m.node("seed", ""), m.node("d", "")
	data, meta := randomArchive(t, 9, 1<<20, 256<<10)
	seed(t, s, data, meta)
	list := []*node{d}
	for i := range 4 {
		list = append(list, m.node(fmt.Sprintf("empty%d", i), ""))
	}
	list = append(list, s)
	cfg := d.config()
	cfg.MaxPeers = 2
	if err := Fetch(ctx, cfg, meta, others(d, list)); err != nil {
		t.Fatal(err)
	}
	checkArchive(t, d, meta, data)
}
