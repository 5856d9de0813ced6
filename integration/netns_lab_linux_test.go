package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/internal/testtier"
)

// Every namespace the swarm benchmark makes is named shoalb-<pid of the test binary>-…, so that a later run can
// tell the leftovers of a killed run (their pid no longer runs a test binary) from those of a run in progress.
const netnsPrefix = "shoalb-"

// netnsSubnet is the private range the labs use. It exists only inside the namespaces a lab creates: the root
// namespace gets no interface, address or route, so no benchmark packet can leave the lab.
const netnsSubnet = "10.213.0.0/16"

// netnsLab is one benchmark case's network: a Linux bridge in a namespace of its own, and one namespace per host
// joined to the bridge by a veth pair. A host's upload is shaped by a tbf qdisc on its own end of the pair, its
// download (if asked) by one on the bridge's end.
type netnsLab struct {
	t      testing.TB
	prefix string // shoalb-<pid>-<seq>-
	bridge string // namespace holding br0 and the bridge ends of the veth pairs
	hosts  []*netnsHost
}

// netnsHost is one namespace on the lab's bridge.
type netnsHost struct {
	name string // seed, h1, h2, …
	ns   string
	ip   string
	port string // the bridge end of its veth pair, in the bridge namespace
	// up and down are the shaped rates in bits per second (0: not shaped).
	up, down int64
}

// netnsDev is the name of every host's end of its veth pair, inside its own namespace.
const netnsDev = "veth0"

var netnsLabSeq atomic.Int64

// netnsRequire skips unless this process may build network namespaces: Linux, root, iproute2, and a kernel and
// container that allow namespaces, veth pairs and tbf.
func netnsRequire(t *testing.T) {
	t.Helper()
	needProcesses(t)
	if os.Geteuid() != 0 {
		testtier.Skip(t, "the swarm benchmark builds network namespaces, veth pairs and tc qdiscs, which needs root: "+
			"run it as root (CI does), for example `sudo -E go test ./integration -run NetnsSwarm -v`")
	}
	for _, tool := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(tool); err != nil {
			testtier.Skipf(t, "the swarm benchmark needs %q from iproute2 (apt-get install iproute2): %v", tool, err)
		}
	}
	netnsRemoveStale(t)
	probe := fmt.Sprintf("%s%d-probe", netnsPrefix, os.Getpid())
	defer exec.Command("ip", "netns", "del", probe).Run()
	for _, args := range [][]string{
		{"netns", "add", probe},
		{"-n", probe, "link", "add", "pa", "type", "veth", "peer", "name", "pb"},
		{"netns", "exec", probe, "tc", "qdisc", "add", "dev", "pa", "root", "tbf", "rate", "1mbit", "burst", "32kb", "latency", "50ms"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			testtier.Skipf(t, "this machine does not let the benchmark build its network (ip %s: %v: %s); "+
				"it needs network namespaces, veth and the tbf qdisc (sch_tbf)", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
}

// netnsRemoveStale deletes the namespaces a killed run left behind: those whose pid does not run a test binary
// now. Processes still inside them (nodes of that run, which should have died with it) are killed first.
func netnsRemoveStale(t testing.TB) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], netnsPrefix) {
			continue
		}
		ns := f[0]
		pidStr, _, _ := strings.Cut(strings.TrimPrefix(ns, netnsPrefix), "-")
		if pid, err := strconv.Atoi(pidStr); err == nil && (pid == os.Getpid() || netnsRunsTestBinary(pid)) {
			continue // this run's, or another run's still going
		}
		if pids, err := exec.Command("ip", "netns", "pids", ns).Output(); err == nil {
			for _, p := range strings.Fields(string(pids)) {
				if n, err := strconv.Atoi(p); err == nil {
					_ = syscall.Kill(n, syscall.SIGKILL)
				}
			}
		}
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Logf("could not remove the stale namespace %s: %v: %s", ns, err, out)
		} else {
			t.Logf("removed the namespace %s, left behind by a killed run", ns)
		}
	}
}

func netnsRunsTestBinary(pid int) bool {
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	return err == nil && strings.HasSuffix(filepath.Base(exe), ".test")
}

// newNetnsLab builds the bridge and one host per name, with addresses 10.213.0.1 (the first) and 10.213.0.(10+i)
// (the others, i from 1). Everything is removed when the test ends, whatever happened; register it before
// anything that runs inside the namespaces, so that those processes are killed before their namespaces go.
func newNetnsLab(t testing.TB, names []string) *netnsLab {
	t.Helper()
	if len(names) > 240 {
		t.Fatalf("a lab has at most 240 hosts, not %d", len(names))
	}
	l := &netnsLab{t: t, prefix: fmt.Sprintf("%s%d-%d-", netnsPrefix, os.Getpid(), netnsLabSeq.Add(1))}
	l.bridge = l.prefix + "br"
	t.Cleanup(l.remove)
	l.ip("netns", "add", l.bridge)
	l.ip("-n", l.bridge, "link", "add", "br0", "type", "bridge")
	l.ip("-n", l.bridge, "link", "set", "br0", "up")
	for i, name := range names {
		h := &netnsHost{name: name, ns: l.prefix + name, port: "p-" + name}
		if i == 0 {
			h.ip = "10.213.0.1"
		} else {
			h.ip = fmt.Sprintf("10.213.0.%d", 10+i)
		}
		l.ip("netns", "add", h.ns)
		l.hosts = append(l.hosts, h)
		// Both ends are created directly in their namespaces: no interface ever appears in the root namespace.
		l.ip("link", "add", netnsDev, "netns", h.ns, "type", "veth", "peer", "name", h.port, "netns", l.bridge)
		l.ip("-n", l.bridge, "link", "set", h.port, "master", "br0")
		l.ip("-n", l.bridge, "link", "set", h.port, "up")
		l.ip("-n", h.ns, "addr", "add", h.ip+"/16", "dev", netnsDev)
		l.ip("-n", h.ns, "link", "set", netnsDev, "up")
		l.ip("-n", h.ns, "link", "set", "lo", "up")
	}
	l.staticNeighbours()
	return l
}

// staticNeighbours gives every host a permanent neighbour entry for every other host. The kernel keeps one ARP
// table for all namespaces, whose limit (gc_thresh3, 1024 entries by default) only the root namespace sets: 33
// hosts that all talk to each other need 1,056 entries, and past the limit new entries fail ("neighbor table
// overflow" in the kernel log), so that some pairs cannot reach each other at all for minutes (N=32 lost its
// Raft leader that way). Permanent entries do not count toward the limit, and they take ARP out of the
// measurement. Nothing outside the lab's namespaces changes.
func (l *netnsLab) staticNeighbours() {
	l.t.Helper()
	macs := make(map[*netnsHost]string, len(l.hosts))
	for _, h := range l.hosts {
		f := strings.Fields(l.ip("-n", h.ns, "-br", "link", "show", "dev", netnsDev)) // veth0@if4 UP 4a:61:… <…>
		if len(f) < 3 || strings.Count(f[2], ":") != 5 {
			l.t.Fatalf("no MAC address for %s in %q", h.name, f)
		}
		macs[h] = f[2]
	}
	for _, h := range l.hosts {
		var batch strings.Builder
		for _, o := range l.hosts {
			if o != h {
				fmt.Fprintf(&batch, "neigh replace %s lladdr %s dev %s nud permanent\n", o.ip, macs[o], netnsDev)
			}
		}
		cmd := exec.Command("ip", "-n", h.ns, "-batch", "-")
		cmd.Stdin = strings.NewReader(batch.String())
		if out, err := cmd.CombinedOutput(); err != nil {
			l.t.Fatalf("static neighbours of %s: %v\n%s", h.name, err, out)
		}
	}
}

// shape limits h's upload (and, if down > 0, its download) with tbf. The burst of 64 KiB lets a 15 Mbit/s link
// pass a full-sized GSO packet without splitting it; 50 ms of queue keeps TCP and QUIC at the rate without a
// standing queue much longer than a real access link's.
func (l *netnsLab) shape(h *netnsHost, up, down int64) {
	l.t.Helper()
	tbf := func(rate int64) []string {
		return []string{"root", "tbf", "rate", strconv.FormatInt(rate, 10) + "bit", "burst", "64kb", "latency", "50ms"}
	}
	if up > 0 {
		l.ip(append([]string{"netns", "exec", h.ns, "tc", "qdisc", "add", "dev", netnsDev}, tbf(up)...)...)
	}
	if down > 0 {
		l.ip(append([]string{"netns", "exec", l.bridge, "tc", "qdisc", "add", "dev", h.port}, tbf(down)...)...)
	}
	h.up, h.down = up, down
}

// netnsCounters are the bytes each host has sent into the bridge (its upload), read on the bridge's ends of
// the veth pairs: what arrives there has passed the host's shaper.
type netnsCounters map[string]uint64

func (l *netnsLab) counters() netnsCounters {
	l.t.Helper()
	c, err := l.readCounters()
	if err != nil {
		l.t.Fatal(err)
	}
	return c
}

// readCounters is counters for goroutines other than the test's, which must not call Fatal.
func (l *netnsLab) readCounters() (netnsCounters, error) {
	out, err := exec.Command("ip", "-n", l.bridge, "-j", "-s", "link", "show").Output()
	if err != nil {
		return nil, fmt.Errorf("read the bridge's counters: %w", err)
	}
	var links []struct {
		IfName  string `json:"ifname"`
		Stats64 struct {
			Rx struct {
				Bytes uint64 `json:"bytes"`
			} `json:"rx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal(out, &links); err != nil {
		return nil, fmt.Errorf("read the bridge's counters: %w\n%s", err, out)
	}
	c := netnsCounters{}
	for _, h := range l.hosts {
		for _, x := range links {
			if x.IfName == h.port {
				c[h.name] = x.Stats64.Rx.Bytes
			}
		}
	}
	return c, nil
}

// rates returns the upload of host seed and the mean upload of the others, in bits per second, from an earlier
// reading to this one.
func (c netnsCounters) rates(from netnsCounters, d time.Duration, seed string) (seedBits, hostBits float64) {
	hosts := 0
	for name, v := range c {
		bits := float64(v-from[name]) * 8 / d.Seconds()
		if name == seed {
			seedBits = bits
		} else {
			hostBits += bits
			hosts++
		}
	}
	return seedBits, hostBits / float64(max(hosts, 1))
}

// ip runs the ip command and fails the test with its output if it fails.
func (l *netnsLab) ip(args ...string) string {
	l.t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		l.t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// remove deletes the lab's namespaces; their veth pairs and qdiscs go with them.
func (l *netnsLab) remove() {
	for _, ns := range append([]string{l.bridge}, l.names()...) {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil && !strings.Contains(string(out), "No such file") {
			l.t.Errorf("remove the namespace %s: %v: %s", ns, err, out)
		}
	}
}

func (l *netnsLab) names() []string {
	var out []string
	for _, h := range l.hosts {
		out = append(out, h.ns)
	}
	return out
}
