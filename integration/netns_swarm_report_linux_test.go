package integration

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/spread"
)

// netnsBound is the bound of Kumar and Ross on the time for N hosts to get F bytes from one seed:
// max(F/u_s, F/d_min, N·F/(u_s+Σu_i)). Downloads are not shaped, so F/d_min does not bind.
func netnsBound(c netnsCase) time.Duration {
	f := float64(c.size) * 8 // bits
	sum := float64(c.seedUp)
	for i := range c.n {
		sum += float64(c.hostUp(i))
	}
	secs := math.Max(f/float64(c.seedUp), float64(c.n)*f/sum)
	return time.Duration(secs * float64(time.Second))
}

// netnsSaturated is the machine CPU above which a phase's times are refused: they would measure the CPU rather
// than the links.
const netnsSaturated = 0.85

// netnsReport prints a case's figures; base is nil when the baseline was not run, for the reason noBase.
func netnsReport(t *testing.T, c netnsCase, bound time.Duration, idle netnsCPU, swarm netnsPhase, base *netnsPhase, bench bool, noBase string) {
	f := float64(c.size)
	nf := float64(c.n) * f
	rates := map[int64]int{}
	for i := range c.n {
		rates[c.hostUp(i)]++
	}
	var rs []string
	for r, k := range rates {
		rs = append(rs, fmt.Sprintf("%d at %s", k, netnsRate(r)))
	}
	slices.Sort(rs)
	t.Logf("case %s: N=%d hosts, F=%.0f MiB in %d KiB pieces, seed upload %s, host uploads %s, downloads unshaped",
		c.name, c.n, f/(1<<20), spread.DefaultPieceSize>>10, netnsRate(c.seedUp), strings.Join(rs, ", "))
	t.Logf("  bound (Kumar-Ross): %.2f s", bound.Seconds())
	t.Logf("  idle mesh: nodes %.2f cores (seed %.2f), machine %.0f%% of %d cores; upload: seed %.0f kbit/s (%.1f%% of its rate), hosts %.0f kbit/s each",
		idle.nodes, idle.seed, 100*idle.machine, runtime.NumCPU(), idle.seedBits/1000, 100*idle.seedBits/float64(c.seedUp), idle.hostBits/1000)

	phases := []struct {
		what string
		p    netnsPhase
	}{{"swarm   ", swarm}}
	if base != nil {
		phases = append(phases, struct {
			what string
			p    netnsPhase
		}{"baseline", *base})
	}
	saturated := ""
	for _, x := range phases {
		if x.p.cpu.machine > netnsSaturated {
			saturated += fmt.Sprintf("%s: machine CPU %.0f%% of %d cores on average; ", strings.TrimSpace(x.what), 100*x.p.cpu.machine, runtime.NumCPU())
		}
	}
	label := ""
	if saturated != "" {
		label = " [NOT VALID: CPU saturated]"
	}
	for _, x := range phases {
		p := x.p
		t.Logf("  %s median %7.2f s (%5.2f× bound)  last %7.2f s (%5.2f× bound)  seed egress %5.2f F  total %5.2f N·F  CPU: nodes %.2f (seed %.2f), helpers %.2f, machine %.0f%% of %d cores%s",
			x.what, p.median().Seconds(), netnsRatio(p.median(), bound), p.last().Seconds(), netnsRatio(p.last(), bound),
			float64(p.seedTx)/f, float64(p.totalTx)/nf, p.cpu.nodes, p.cpu.seed, p.cpu.helpers, 100*p.cpu.machine, runtime.NumCPU(), label)
	}
	var hosts []string
	for name, d := range swarm.byHost {
		hosts = append(hosts, fmt.Sprintf("%s %.1f", name, d.Seconds()))
	}
	slices.SortFunc(hosts, func(a, b string) int { return netnsHostNum(a) - netnsHostNum(b) })
	t.Logf("  swarm per host (s): %s", strings.Join(hosts, ", "))
	t.Logf("  swarm: the seed's upload as a share of its rate, %s", swarm.uploadTimeline(map[string]int64{"seed": c.seedUp}))
	hostRates := map[string]int64{}
	for i := range c.n {
		hostRates[fmt.Sprintf("h%d", i+1)] = c.hostUp(i)
	}
	t.Logf("  swarm: the hosts' uploads together as a share of their rates, %s", swarm.uploadTimeline(hostRates))
	t.Logf("  swarm: seed sent on the wire / its piece payload / distinct pieces the hosts hold / what a host holds on average, in F: %s",
		swarm.seedCopies("seed", c.size, int(c.size/spread.DefaultPieceSize), c.n))
	if base == nil {
		t.Logf("  baseline: %s", noBase)
	} else {
		if c.targets {
			t.Logf("  targets (N=16, equal links): last ≤ 1.3× bound: %s; median ≤ 1.15× bound: %s; baseline last ≈ N× bound: %.1f× = %.2f N",
				netnsVerdict(netnsRatio(swarm.last(), bound) <= 1.3), netnsVerdict(netnsRatio(swarm.median(), bound) <= 1.15),
				netnsRatio(base.last(), bound), netnsRatio(base.last(), bound)/float64(c.n))
		}
		t.Logf("  | %s | %d | %.0f MiB | %s | %.1f s | %.2f× | %.2f× | %.2f | %.2f | %.2f× | %.2f× | %.2f | %.2f | %.2f / %.2f / %.0f%% |",
			c.name, c.n, f/(1<<20), netnsRate(c.seedUp), bound.Seconds(),
			netnsRatio(swarm.median(), bound), netnsRatio(swarm.last(), bound), float64(swarm.seedTx)/f, float64(swarm.totalTx)/nf,
			netnsRatio(base.median(), bound), netnsRatio(base.last(), bound), float64(base.seedTx)/f, float64(base.totalTx)/nf,
			idle.nodes, swarm.cpu.nodes, 100*swarm.cpu.machine)
	}
	if saturated != "" {
		msg := "refusing to report this run: " + saturated + "its times measure the CPU, not the links. " +
			"Rerun when the machine is quieter (load average now " + loadAvg() + ")"
		if bench {
			t.Error(msg)
		} else {
			t.Log("smoke run: " + msg)
		}
	}
}

func netnsRatio(d, bound time.Duration) float64 { return d.Seconds() / bound.Seconds() }

func netnsRate(bits int64) string {
	return strconv.FormatFloat(float64(bits)/netnsMbit, 'f', -1, 64) + " Mbit/s"
}

func netnsVerdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

func netnsHostNum(s string) int {
	n, _ := strconv.Atoi(strings.TrimPrefix(strings.Fields(s)[0], "h"))
	return n
}

// netnsArchive writes size random bytes: incompressible, like a release of built binaries. The spread service
// stores uploads as they are, so the archive need not be a real tar.gz.
func netnsArchive(t *testing.T, size int64) string {
	path := filepath.Join(t.TempDir(), "archive.tar.gz")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rng := rand.NewChaCha8(sha256.Sum256([]byte(path)))
	w := bufio.NewWriterSize(f, 1<<20)
	if _, err := io.CopyN(w, rng, size); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return path
}

// netnsCPU is the CPU a phase used, in cores (CPU seconds per second): the nodes (seed and hosts; a node's
// system time includes much of the kernel's work on the packets it sends through veth, bridge and tbf), the
// helpers, and the whole machine as a fraction of all its cores (other work on the machine included).
type netnsCPU struct {
	nodes, seed, helpers, machine float64
	// seedBits and hostBits are the idle mesh's upload in bits per second: the seed's, and the hosts' mean
	// (Raft heartbeats and empty appends, gossip). The seed is the Raft leader, so its share grows with N.
	seedBits, hostBits float64
}

type netnsCPUMeter struct {
	t             testing.TB
	kinds         map[int]string // pid → seed, host or helper
	start         time.Time
	ticks         map[int]int64
	busy0, total0 int64
}

func startNetnsCPU(t testing.TB, kinds map[int]string) *netnsCPUMeter {
	m := &netnsCPUMeter{t: t, kinds: kinds, ticks: map[int]int64{}}
	for pid := range kinds {
		m.ticks[pid] = netnsProcTicks(t, pid)
	}
	m.busy0, m.total0 = netnsMachineTicks(t)
	m.start = time.Now()
	return m
}

func (m *netnsCPUMeter) stop() netnsCPU {
	wall := time.Since(m.start).Seconds()
	busy, total := netnsMachineTicks(m.t)
	hz := float64(netnsClockTicks())
	var c netnsCPU
	for pid, kind := range m.kinds {
		cores := float64(netnsProcTicks(m.t, pid)-m.ticks[pid]) / hz / wall
		switch kind {
		case "helper":
			c.helpers += cores
		case "seed":
			c.seed += cores
			c.nodes += cores
		default:
			c.nodes += cores
		}
	}
	if total > m.total0 {
		c.machine = float64(busy-m.busy0) / float64(total-m.total0)
	}
	return c
}

// netnsProcTicks returns utime+stime of pid in clock ticks.
func netnsProcTicks(t testing.TB, pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("read /proc/%d/stat (did a node die?): %v", pid, err)
	}
	// The command name may hold spaces; state is the first field after it, utime and stime the 12th and 13th.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return ut + st
}

// netnsMachineTicks returns the busy and total ticks of all CPUs from /proc/stat.
func netnsMachineTicks(t testing.TB) (busy, total int64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatalf("read /proc/stat: %v", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal guest guest_nice
	for i, s := range f[1:min(len(f), 9)] {
		v, _ := strconv.ParseInt(s, 10, 64)
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total
}

// netnsClockTicks is the kernel's USER_HZ, the unit of /proc/<pid>/stat times.
var netnsClockTicks = sync.OnceValue(func() int64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if hz, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil && hz > 0 {
			return hz
		}
	}
	return 100
})
