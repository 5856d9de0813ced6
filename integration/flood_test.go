package integration

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/shoal-ci/shoal/deployer"
	"github.com/shoal-ci/shoal/raftfsm"
	"github.com/shoal-ci/shoal/transport"

	"github.com/shoal-ci/shoal/internal/testtier"
)

// The floods of issue 12, each against a real node process on loopback: memory on the join ALPN, idle HTTP
// keep-alive connections, and long-polls on a follower. Under each, the node keeps its Raft role, answers
// /healthz, and a deployment completes. Every flood is bounded in count and time.
func TestFloodsKeepNodeServing(t *testing.T) {
	needProcesses(t)
	m := startPmesh(t, 2)
	leader := m.waitHealthy(m.nodes...)
	follower := m.nodes[0]
	if follower == leader {
		follower = m.nodes[1]
	}
	cl := m.client(leader)
	cl.RetryNoLeader = 30 * time.Second
	app := newDeployApp(t, cl, "web", "prod", names(m), names(m), raftfsm.Strategy{Kind: "all"}, false, "")
	stopAppsAtEnd(t, m, app)
	version := 0
	// afterFlood checks what must hold under a flood, while the flood's connections are still open.
	afterFlood := func(t *testing.T, target *pnode) {
		t.Helper()
		if name, _, ok := m.agreedLeader(m.nodes); !ok || name != leader.name {
			t.Fatalf("the leader changed under the flood: now %q (was %s)", name, leader.name)
		}
		hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := hc.Get("http://" + target.api() + "/healthz")
		if err != nil {
			t.Fatalf("/healthz of %s under the flood: %v", target.name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("/healthz of %s under the flood: %d", target.name, resp.StatusCode)
		}
		version++
		v := fmt.Sprintf("v%d", version)
		tcl := m.client(target)
		tcl.RetryNoLeader = 30 * time.Second
		app.push(tcl, v, false)
		d := app.deploy(tcl, deployer.CreateRequest{Release: v})
		waitDeployment(t, liveClients(m), d.ID, 90*time.Second, raftfsm.DeploySucceeded)
		app.waitServing(20*time.Second, v, names(m)...)
	}

	t.Run("join ALPN memory", func(t *testing.T) {
		target := follower
		base := procRSS(t, target.proc.Pid())
		peak := floodJoinALPN(t, target, 100)
		grew := peak - base
		t.Logf("100 streams declaring 16 MiB on one join connection: RSS %d MiB before, peak %d MiB (bound: +256 MiB)", base>>20, peak>>20)
		if grew > 256<<20 {
			t.Fatalf("the node's RSS grew by %d MiB under a join-ALPN flood", grew>>20)
		}
		afterFlood(t, target)
	})

	t.Run("20000 idle keep-alive HTTP connections", func(t *testing.T) {
		target := leader
		limitFDs(t, target.proc.Pid(), 8192)
		// This process may not hold 20000 more fds (the hard limit here is 20000 and cannot be raised without
		// CAP_SYS_RESOURCE), so two helper processes hold 10000 each. The node's fds are sampled during the flood.
		var peak atomic.Int64
		stop := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			for {
				if n := int64(countFDs(t, target.proc.Pid())); n > peak.Load() {
					peak.Store(n)
				}
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
			}
		}()
		var served atomic.Int64
		var wg sync.WaitGroup
		for i := range 2 {
			wg.Go(func() {
				n, err := startHTTPFlooder(t, target.api(), 10000, 20, 20*i)
				if err != nil {
					t.Error(err)
				}
				served.Add(int64(n))
			})
		}
		wg.Wait()
		close(stop)
		<-sampled
		t.Logf("20000 keep-alive connections from 40 addresses: %d served; the node held at most %d fds (its limit 8192; bound 4096 + 512)", served.Load(), peak.Load())
		if peak.Load() > 4096+512 {
			t.Fatalf("the node held %d fds under an idle-connection flood", peak.Load())
		}
		afterFlood(t, target)
	})

	t.Run("1000 long-polls on a follower", func(t *testing.T) {
		target := follower
		// A state whose app list is large, as in the report (868 KB there).
		big := strings.Repeat("x", 2000)
		for i := range 200 {
			body := map[string]any{"name": fmt.Sprintf("bulk%03d", i), "repo": "/srv/git/bulk.git",
				"build_vars": map[string]any{"PAD": map[string]any{"value": big}}}
			if _, err := cl.Post(context.Background(), "/v1/apps", body, nil); err != nil {
				t.Fatal(err)
			}
		}
		st, err := m.status(target)
		if err != nil {
			t.Fatal(err)
		}
		tcl := m.client(target)
		index, err := tcl.Get(context.Background(), "/v1/apps?consistent", nil)
		if err != nil {
			t.Fatal(err)
		}
		// The polls wait for the next change; the deployment's writes then wake the ones the node kept.
		limited, stop := floodLongPolls(t, target.api(), m.admin, index, 1000)
		defer stop()
		t.Logf("1000 long-polls on %s: %d answered 429 at once", target.name, limited)
		if limited < 1000-512 {
			t.Fatalf("only %d of 1000 long-polls were refused: the watcher caps are missing", limited)
		}
		afterFlood(t, target)
		after, err := m.status(target)
		if err != nil {
			t.Fatal(err)
		}
		if after.State != "follower" || after.Term != st.Term {
			t.Fatalf("%s is %s in term %d after the flood (was follower in term %d)", target.name, after.State, after.Term, st.Term)
		}
	})
}

// floodJoinALPN opens one join connection to n without a certificate and, on streams of it, declares 16 MiB
// frames and sends their bytes as fast as the node takes them, for at most 20 s. It returns the node's peak RSS.
func floodJoinALPN(t *testing.T, n *pnode, streams int) int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS13, NextProtos: []string{transport.ALPNJoin}, InsecureSkipVerify: true}
	conn, err := quic.DialAddr(ctx, n.quic(), tlsConf, &quic.Config{MaxIncomingStreams: 10})
	if err != nil {
		t.Fatalf("dial the join ALPN: %v", err)
	}
	defer conn.CloseWithError(0, "")
	var peak atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if rss := procRSS(t, n.proc.Pid()); rss > peak.Load() {
				peak.Store(rss)
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	var wg sync.WaitGroup
	chunk := make([]byte, 256<<10)
	for range streams {
		st, err := conn.OpenStreamSync(ctx)
		if err != nil {
			break
		}
		wg.Go(func() {
			var hdr [4]byte
			binary.BigEndian.PutUint32(hdr[:], transport.MaxFrame)
			if _, err := st.Write(hdr[:]); err != nil {
				return
			}
			for sent := 0; sent < transport.MaxFrame-len(chunk); sent += len(chunk) {
				if _, err := st.Write(chunk); err != nil {
					return // the node refused the frame or reset the stream
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	<-sampled
	return peak.Load()
}

// httpFlooderEnv makes this test binary a flood helper: "addr,total,sources,first" (see runHTTPFlooder).
const httpFlooderEnv = "SHOAL_TEST_HTTP_FLOODER"

func init() {
	if v := os.Getenv(httpFlooderEnv); v != "" {
		os.Exit(runHTTPFlooder(v))
	}
}

// runHTTPFlooder holds an idle-connection flood (floodIdleHTTP) from a process of its own: it prints how many
// connections were served, then keeps them open until its stdin closes.
func runHTTPFlooder(spec string) int {
	var addr string
	var total, sources, first int
	if _, err := fmt.Sscanf(strings.ReplaceAll(spec, ",", " "), "%s %d %d %d", &addr, &total, &sources, &first); err != nil {
		fmt.Fprintln(os.Stderr, "flooder:", err)
		return 2
	}
	conns, served := floodIdleHTTP(addr, total, sources, first)
	fmt.Printf("served %d of %d\n", served, len(conns))
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// startHTTPFlooder runs a flood helper process and returns how many of its connections the node served; the
// helper and its connections go away when the test ends. It may run outside the test's goroutine.
func startHTTPFlooder(t *testing.T, addr string, total, sources, first int) (int, error) {
	bin, err := os.Executable()
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%d,%d,%d", httpFlooderEnv, addr, total, sources, first))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 0, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	var served, held int
	if _, serr := fmt.Sscanf(line, "served %d of %d", &served, &held); err != nil || serr != nil {
		return 0, fmt.Errorf("flood helper: %q %v %v", line, err, serr)
	}
	return served, nil
}

// floodIdleHTTP opens total connections to addr from `sources` loopback addresses (127.0.9.first+1 on), makes one GET /healthz on
// each and leaves it open and idle, as a keep-alive client does. It returns the connections and how many were
// answered 200.
func floodIdleHTTP(addr string, total, sources, first int) ([]net.Conn, int) {
	var mu sync.Mutex
	var conns []net.Conn
	var served atomic.Int64
	work := make(chan int)
	var wg sync.WaitGroup
	deadline := time.Now().Add(2 * time.Minute)
	for range 64 {
		wg.Go(func() {
			for i := range work {
				if time.Now().After(deadline) {
					continue
				}
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 9, byte(1+first+i%sources))}, Timeout: 5 * time.Second}
				c, err := d.Dial("tcp", addr)
				if err != nil {
					continue
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
				if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						served.Add(1)
					}
				}
				c.SetDeadline(time.Time{})
			}
		})
	}
	for i := range total {
		work <- i
	}
	close(work)
	wg.Wait()
	return conns, int(served.Load())
}

// floodLongPolls sends count blocking reads of the app list past index to addr at once, from several loopback
// addresses, and counts the ones answered 429 (it waits until at most 64 are left unanswered, or 30 s). stop
// cancels the reads still waiting.
func floodLongPolls(t *testing.T, addr, token string, index uint64, count int) (limited int, stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	statuses := make(chan int, count)
	var wg sync.WaitGroup
	stop = func() { cancel(); wg.Wait() }
	for i := range count {
		src := net.IPv4(127, 0, 10, byte(1+i%8))
		hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true,
			DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: src}}).DialContext}}
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://%s/v1/apps?index=%d&wait=10m", addr, index), nil)
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := hc.Do(req)
			if err != nil {
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			statuses <- resp.StatusCode
		})
	}
	timeout := time.After(30 * time.Second)
	for answered := 0; answered < count-64; answered++ {
		select {
		case s := <-statuses:
			if s == http.StatusTooManyRequests {
				limited++
			}
		case <-timeout:
			return limited, stop
		}
	}
	return limited, stop
}

// limitFDs lowers the fd limit (soft and hard) of process pid to n, restoring the old one when the test ends.
func limitFDs(t *testing.T, pid, n int) {
	t.Helper()
	if _, err := exec.LookPath("prlimit"); err != nil {
		testtier.Skip(t, "needs prlimit (util-linux) to set fd limits")
	}
	out, err := exec.Command("prlimit", "--pid", fmt.Sprint(pid), "--nofile", "--raw", "--noheadings", "--output", "SOFT,HARD").Output()
	if err != nil {
		t.Fatalf("prlimit: %v", err)
	}
	old := strings.Fields(string(out))
	if err := exec.Command("prlimit", "--pid", fmt.Sprint(pid), fmt.Sprintf("--nofile=%d:%d", n, n)).Run(); err != nil {
		t.Fatalf("set the fd limit of %d: %v", pid, err)
	}
	if len(old) == 2 {
		t.Cleanup(func() {
			_ = exec.Command("prlimit", "--pid", fmt.Sprint(pid), fmt.Sprintf("--nofile=%s:%s", old[0], old[1])).Run()
		})
	}
}

func countFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
