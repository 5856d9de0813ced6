package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/artifact"
	"github.com/shoal-ci/shoal/client"
	"github.com/shoal-ci/shoal/internal/testutil"
	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
	"github.com/shoal-ci/shoal/spread"
)

// TestSwarmPeerLoss is issue 17's scenario with real processes on loopback: 8 servers, each started with
// --upload-limit 40mbit; a 48 MiB release is uploaded to the first (the seed) and the other seven are asked to
// fetch it at once (POST .../fetch); 2 s later two of the downloading servers are killed with -9. Every survivor
// must end with the archive whole; its time is printed beside one seed copy (48 MiB at 40 Mbit/s = 10.07 s) and
// the goal, every survivor within 1.5 × 9.6 s = 14.4 s (the issue counted 48 MB), and never asserted. The killed servers are restarted between runs, so later runs also cover
// a mesh whose servers have crashed before, with half-downloaded releases in their stores.
//
// After the runs, two more cases on the same mesh: the seed itself is killed too, once the downloaders hold
// every piece between them (the survivors must still finish); and the seed, the only whole holder, is killed
// 1 s in, before the pieces are all out (every survivor's fetch must fail, saying that no live peer holds what it
// needs, rather than hang).
//
//	go test ./integration -run SwarmPeerLoss -v -count=1                               # one run of each case
//	SHOAL_SWARM_LOSS_RUNS=10 go test ./integration -run SwarmPeerLoss -v -count=1 -timeout 60m   # the ten runs
//
// Only non-voters are killed: with the mesh's three voters, killing two of them would leave Raft without a
// majority, and a fetch records its node as a holder through Raft (the download itself would still complete).
func TestSwarmPeerLoss(t *testing.T) {
	needProcesses(t)
	runs := 1
	if v := os.Getenv("SHOAL_SWARM_LOSS_RUNS"); v != "" {
		k, err := strconv.Atoi(v)
		if err != nil || k < 1 {
			t.Fatalf("SHOAL_SWARM_LOSS_RUNS=%q: use a number of runs, for example 10", v)
		}
		runs = k
	}
	const size = 48 << 20
	const rate = 40_000_000 // bits per second
	seedCopy := time.Duration(float64(size) * 8 / rate * float64(time.Second))
	goal := 1.5 * 9.6 // seconds: the 1.5× one seed copy, which it counted as 48 MB at 40 Mbit/s
	m := newPmesh(t, 8, "--upload-limit", "40mbit")
	m.start()
	if err := m.createApp(m.nodes[0], "big"); err != nil {
		t.Fatal(err)
	}
	l := &lossMesh{pmesh: m, t: t, size: size}
	var worst float64
	for r := 1; r <= runs; r++ {
		res := l.run(fmt.Sprintf("v%d", r), lossKillTwo)
		ratio := res.last.Seconds() / seedCopy.Seconds()
		worst = max(worst, res.last.Seconds())
		t.Logf("run %d/%d: killed %s at 2 s; survivors whole after %s (last %.1f s = %.2f× one seed copy of %.2f s; goal ≤ %.1f s: %s)",
			r, runs, strings.Join(res.killed, ","), res.times(), res.last.Seconds(), ratio, seedCopy.Seconds(), goal, verdict(res.last.Seconds() <= goal))
		l.restartKilled()
	}
	t.Logf("worst of %d runs: %.1f s = %.2f× one seed copy (goal ≤ %.1f s: %s); load average %s", runs, worst, worst/seedCopy.Seconds(),
		goal, verdict(worst <= goal), loadAvg())

	res := l.run("seedloss", lossKillSeedAfterCopy)
	t.Logf("seed killed once the downloaders held every piece between them (%.1f s in; %s killed at 2 s): survivors whole after %s (last %.2f× one seed copy)",
		res.seedKilledAt.Seconds(), strings.Join(res.killed[:2], ","), res.times(), res.last.Seconds()/seedCopy.Seconds())
	l.restartKilled()

	res = l.run("noholder", lossKillSeedEarly)
	t.Logf("seed killed %.1f s in, %d of %d pieces out: every survivor's fetch failed after %s, e.g. %q",
		res.seedKilledAt.Seconds(), res.distinctAtKill, res.pieces, res.times(), res.failure)
	l.restartKilled()
}

type lossMode int

const (
	lossKillTwo           lossMode = iota // two downloaders killed at 2 s
	lossKillSeedAfterCopy                 // and the seed, once the downloaders hold every piece between them
	lossKillSeedEarly                     // only the seed, 1 s in: the survivors must fail with a reason
)

type lossMesh struct {
	*pmesh
	t      *testing.T
	size   int64
	killed []*pnode
}

type lossResult struct {
	killed         []string
	survivors      []string
	took           []time.Duration // by survivor
	last           time.Duration
	seedKilledAt   time.Duration
	distinctAtKill int
	pieces         int
	failure        string
}

func (r lossResult) times() string {
	var parts []string
	for i, s := range r.survivors {
		parts = append(parts, fmt.Sprintf("%s %.1f s", s, r.took[i].Seconds()))
	}
	return strings.Join(parts, ", ")
}

// run uploads a fresh random archive as release version to the seed (n1), asks every other server to fetch it at
// once, kills servers as mode says, and waits for every survivor's answer, checking it.
func (l *lossMesh) run(version string, mode lossMode) lossResult {
	t, m := l.t, l.pmesh
	t.Helper()
	seed := m.nodes[0]
	data := make([]byte, l.size)
	rng := rand.NewChaCha8(sha256.Sum256([]byte(version + t.Name())))
	rng.Read(data)
	var rel raftfsm.Release
	up := client.New(seed.api(), m.admin)
	if err := up.Upload(context.Background(), "/v1/apps/big/releases?version="+version, bytes.NewReader(data), &rel); err != nil {
		t.Fatalf("upload release %s: %v", version, err)
	}
	downloaders := m.nodes[1:]
	var victims []*pnode
	if mode != lossKillSeedEarly {
		victims = l.nonVoters(downloaders, 2)
	}
	type answer struct {
		took time.Duration
		err  error
		res  spread.FetchResult
	}
	answers := make([]answer, len(downloaders))
	start := time.Now()
	var wg sync.WaitGroup
	for i, n := range downloaders {
		wg.Go(func() {
			c := client.New(n.api(), m.admin)
			c.RetryNoLeader = 0
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute) // "never hangs", generously
			defer cancel()
			_, err := c.Post(ctx, "/v1/apps/big/releases/"+version+"/fetch", map[string]any{}, &answers[i].res)
			answers[i].took, answers[i].err = time.Since(start), err
		})
	}
	res := lossResult{pieces: len(rel.Pieces)}
	kill := func(n *pnode) {
		n.proc.Kill()
		l.killed = append(l.killed, n)
		res.killed = append(res.killed, n.name)
	}
	switch mode {
	case lossKillTwo, lossKillSeedAfterCopy:
		time.Sleep(time.Until(start.Add(2 * time.Second))) // the scenario's moment, not a wait for a condition
		for _, v := range victims {
			kill(v)
		}
		if mode == lossKillSeedAfterCopy {
			testutil.Eventually(t, 2*time.Minute, "the downloaders to hold every piece between them", func() (bool, string) {
				d := l.distinct(rel, downloaders)
				return d == len(rel.Pieces), fmt.Sprintf("%d of %d pieces", d, len(rel.Pieces))
			})
			res.seedKilledAt = time.Since(start)
			kill(seed)
		}
	case lossKillSeedEarly:
		time.Sleep(time.Until(start.Add(time.Second))) // the scenario's moment
		res.distinctAtKill = l.distinct(rel, downloaders)
		res.seedKilledAt = time.Since(start)
		kill(seed)
		if res.distinctAtKill == len(rel.Pieces) {
			t.Fatalf("every piece had left the seed within %v: the no-holder case cannot be set up on this machine", res.seedKilledAt)
		}
	}
	wg.Wait()
	for i, n := range downloaders {
		if slices.Contains(l.killed, n) {
			continue
		}
		a := answers[i]
		res.survivors = append(res.survivors, n.name)
		res.took = append(res.took, a.took)
		res.last = max(res.last, a.took)
		if mode == lossKillSeedEarly {
			if a.err == nil {
				t.Errorf("%s: the fetch succeeded although the only whole holder died with pieces nobody else had", n.name)
			} else if !client.IsStatus(a.err, http.StatusServiceUnavailable) || !(strings.Contains(a.err.Error(), "no holder among the live peers") || strings.Contains(a.err.Error(), "no live server holds")) {
				t.Errorf("%s: the fetch failed, but not with a 503 saying that no live peer holds the pieces: %v", n.name, a.err)
			} else {
				res.failure = a.err.Error()
			}
			continue
		}
		if a.err != nil {
			t.Errorf("%s: fetch %s after %v: %v", n.name, version, a.took, a.err)
			continue
		}
		if a.res.Digest != rel.Digest || a.res.Bytes != l.size {
			t.Errorf("%s: fetch answered %+v; the release is %s, %d bytes", n.name, a.res, rel.Digest, l.size)
		}
		if got, err := fileDigest(filepath.Join(n.dir, "blobs", rel.Digest+".tar.gz")); err != nil || got != rel.Digest {
			t.Errorf("%s: stored archive has digest %s (%v), want %s", n.name, got, err, rel.Digest)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return res
}

// nonVoters picks k of among at random that the leader lists as non-voters.
func (l *lossMesh) nonVoters(among []*pnode, k int) []*pnode {
	l.t.Helper()
	ms, err := l.members(l.waitLeader(l.live()...))
	if err != nil {
		l.t.Fatal(err)
	}
	var out []*pnode
	for _, i := range rand.Perm(len(among)) {
		n := among[i]
		if len(out) < k && slices.ContainsFunc(ms, func(x node.Member) bool { return x.Name == n.name && x.Role == "nonvoter" }) {
			out = append(out, n)
		}
	}
	if len(out) < k {
		l.t.Fatalf("only %d non-voters among the downloaders; members %s", len(out), memberSummary(ms))
	}
	return out
}

// restartKilled restarts every server killed so far and waits for a healthy mesh.
func (l *lossMesh) restartKilled() {
	l.t.Helper()
	for _, n := range l.killed {
		l.restart(n)
	}
	l.killed = nil
	l.waitHealthy(l.nodes...)
}

// distinct counts the pieces of rel that at least one of nodes holds, from their stores on disk.
func (l *lossMesh) distinct(rel raftfsm.Release, nodes []*pnode) int {
	union := artifact.NewBitfield(len(rel.Pieces))
	for _, n := range nodes {
		for j, b := range storeHeld(filepath.Join(n.dir, "blobs"), rel) {
			union[j] |= b
		}
	}
	return union.Count()
}

// storeHeld reads which pieces of rel a node's artifact store holds: all of them once the archive is assembled
// (blobs/<digest>.tar.gz), else the bitmap of the download in progress (blobs/<digest>/have, one bit per piece,
// most significant first); none if neither exists.
func storeHeld(blobs string, rel raftfsm.Release) artifact.Bitfield {
	n := len(rel.Pieces)
	bf := artifact.NewBitfield(n)
	if _, err := os.Stat(filepath.Join(blobs, rel.Digest+".tar.gz")); err == nil {
		for k := range n {
			bf.Set(k)
		}
		return bf
	}
	b, _ := os.ReadFile(filepath.Join(blobs, rel.Digest, "have"))
	copy(bf, b)
	return bf
}

func fileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// loadAvg is the machine's load average, for the figures' context (other work on a shared machine).
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}
