package swarm

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestSwarmShape measures, in process, how close the swarm comes to the bound of Kumar and Ross when every node's
// upload is limited by the swarm's own token bucket (the real benchmark, with tc-shaped links between network
// namespaces, lives in integration/). Opt in with SHOAL_SWARM_SHAPE=N (nodes besides the seed); it prints figures
// and asserts nothing about time. Knobs: SHOAL_SWARM_RATE (upload bytes/s per node, default 2 MiB/s),
// SHOAL_SWARM_SIZE (archive bytes, default 16 MiB), SHOAL_SWARM_SLOTS ("slots,queue"), SHOAL_SWARM_INFLIGHT.
func TestSwarmShape(t *testing.T) {
	nodes, _ := strconv.Atoi(os.Getenv("SHOAL_SWARM_SHAPE"))
	if nodes <= 0 {
		t.Skip("opt-in measurement: set SHOAL_SWARM_SHAPE=16 (nodes besides the seed) to run it")
	}
	rate := int64(2 << 20) // bytes/s of upload per node, seed included
	if v, err := strconv.ParseInt(os.Getenv("SHOAL_SWARM_RATE"), 10, 64); err == nil && v > 0 {
		rate = v
	}
	size := 16 << 20
	if v, err := strconv.Atoi(os.Getenv("SHOAL_SWARM_SIZE")); err == nil && v > 0 {
		size = v
	}
	slots, queue := DefaultUploadSlots, DefaultUploadQueue
	fmt.Sscanf(os.Getenv("SHOAL_SWARM_SLOTS"), "%d,%d", &slots, &queue)
	inflight, _ := strconv.Atoi(os.Getenv("SHOAL_SWARM_INFLIGHT"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	m := newMesh(t)
	s := m.node("seed", "", WithUploadLimit(NewLimiter(rate)), WithUploadSlots(slots, queue))
	data, meta := randomArchive(t, 7, size, 256<<10)
	seed(t, s, data, meta)
	all := []*node{s}
	for i := range nodes {
		all = append(all, m.node(fmt.Sprintf("n%02d", i+1), "", WithUploadLimit(NewLimiter(rate)), WithUploadSlots(slots, queue)))
	}
	f := float64(meta.Size)
	u := float64(rate)
	bound := max(f/u, float64(nodes)*f/(u+float64(nodes)*u))

	start := time.Now()
	var firstGet sync.Once
	s.srv.setAllow(func(peer string, i int) bool {
		firstGet.Do(func() { t.Logf("%.3fs first GET at the seed from %s", time.Since(start).Seconds(), peer) })
		return true
	})
	stopSampler := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		tick := time.NewTicker(2 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stopSampler:
				return
			case <-tick.C:
			}
			held := 0
			for _, n := range all[1:] {
				held += n.store.Have(meta.Digest).Count()
			}
			t.Logf("%5.1fs seed sent %5.2f F, nodes hold %5.1f%%", time.Since(start).Seconds(),
				s.metric(t, "shoal_blob_sent_bytes_total", nil)/float64(meta.Size), 100*float64(held)/float64(nodes*meta.NumPieces()))
		}
	})
	defer func() { close(stopSampler); sampler.Wait() }()
	var wg sync.WaitGroup
	times := make([]float64, nodes)
	errs := make([]error, nodes)
	for k, n := range all[1:] {
		wg.Go(func() {
			cfg := n.config()
			cfg.InFlight = inflight
			errs[k] = Fetch(ctx, cfg, meta, others(n, all))
			times[k] = time.Since(start).Seconds()
		})
	}
	wg.Wait()
	var received, busy, full, gets float64
	for k, n := range all {
		if k > 0 && errs[k-1] != nil {
			t.Fatalf("%s: %v", n.name, errs[k-1])
		}
		received += n.metric(t, "shoal_blob_received_bytes_total", nil)
		busy += n.metric(t, "shoal_blob_requests_refused_total", map[string]string{"reason": "busy"})
		full += n.metric(t, "shoal_blob_requests_refused_total", map[string]string{"reason": "full"})
	}
	gets = float64(nodes * meta.NumPieces())
	t.Logf("seed refused %v busy, %v full", s.metric(t, "shoal_blob_requests_refused_total", map[string]string{"reason": "busy"}), s.metric(t, "shoal_blob_requests_refused_total", map[string]string{"reason": "full"}))
	t.Logf("refused per piece fetched: %.2f busy, %.2f full", busy/gets, full/gets)
	slices.Sort(times)
	t.Logf("slots %d queue %d inflight %d", slots, queue, inflight)
	t.Logf("N=%d F=%d MiB u=%.1f Mbit/s bound %.2fs: median %.2fs (%.2f×) last %.2fs (%.2f×); seed egress %.2f F; received %.3f N·F",
		nodes, size>>20, u*8/1e6, bound, times[nodes/2], times[nodes/2]/bound, times[nodes-1], times[nodes-1]/bound,
		s.metric(t, "shoal_blob_sent_bytes_total", nil)/f, received/(f*float64(nodes)))
}
