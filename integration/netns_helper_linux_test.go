package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The benchmark's HTTP clients and its baseline file server run inside the lab's namespaces, so that their
// traffic crosses the shaped links and nothing is routed to the root namespace. Each is this test binary run
// again under `ip netns exec`, in TestNetnsHelper, taking one JSON request per line on stdin and answering one
// line on stdout; pipes cross namespaces where sockets do not.

const (
	netnsHelperEnv   = "SHOAL_NETNS_HELPER"
	netnsReplyPrefix = "netns-reply "
)

// netnsRequest is one thing for a helper to do.
type netnsRequest struct {
	// Op is "http" (one request; the reply carries the body), "get" (download and hash the body without keeping
	// it) or "serve" (serve File at Addr over plain HTTP until the helper exits).
	Op       string          `json:"op"`
	Method   string          `json:"method,omitempty"`
	URL      string          `json:"url,omitempty"`
	Token    string          `json:"token,omitempty"`
	Body     json.RawMessage `json:"body,omitempty"`
	BodyFile string          `json:"body_file,omitempty"`
	Timeout  time.Duration   `json:"timeout,omitempty"`
	Addr     string          `json:"addr,omitempty"`
	File     string          `json:"file,omitempty"`
}

// netnsReply is a helper's answer. EndNs is the wall clock (Unix ns) when the response was read whole: the
// helpers and the test share the machine's clock, so the test measures each host from one common start.
type netnsReply struct {
	Status int    `json:"status"`
	Body   string `json:"body,omitempty"`
	Err    string `json:"err,omitempty"`
	EndNs  int64  `json:"end_ns"`
	Bytes  int64  `json:"bytes"`
	Digest string `json:"digest,omitempty"`
	// Resumed counts the times a "get" picked a cut-off download up where it stopped.
	Resumed int `json:"resumed,omitempty"`
}

// TestNetnsHelper is not a test: it is the helper process's main when the benchmark starts it.
func TestNetnsHelper(t *testing.T) {
	if os.Getenv(netnsHelperEnv) != "1" {
		t.Skip("not a test by itself: TestNetnsSwarm runs this as its client and file server inside network namespaces")
	}
	if err := netnsHelperMain(os.Stdin, os.Stdout); err != nil {
		t.Fatal(err)
	}
}

func netnsHelperMain(in io.Reader, out io.Writer) error {
	hc := &http.Client{Transport: &http.Transport{Proxy: nil, DisableCompression: true, MaxIdleConnsPerHost: 4}}
	var servers []*http.Server
	var wg sync.WaitGroup
	defer func() {
		for _, s := range servers {
			s.Close()
		}
		wg.Wait()
	}()
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var req netnsRequest
		var rep netnsReply
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			rep.Err = "bad request: " + err.Error()
		} else if req.Op == "serve" {
			srv, err := netnsServe(req, &wg)
			if err != nil {
				rep.Err = err.Error()
			} else {
				servers = append(servers, srv)
				rep.Status = http.StatusOK
			}
		} else {
			rep = netnsDo(hc, req)
		}
		b, _ := json.Marshal(rep)
		if _, err := fmt.Fprintf(out, "%s%s\n", netnsReplyPrefix, b); err != nil {
			return err
		}
	}
	return sc.Err()
}

// netnsServe serves one file at every path, as a plain web server would serve a release archive.
func netnsServe(req netnsRequest, wg *sync.WaitGroup) (*http.Server, error) {
	ln, err := net.Listen("tcp", req.Addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, req.File)
	})}
	wg.Go(func() { _ = srv.Serve(ln) })
	return srv, nil
}

func netnsDo(hc *http.Client, req netnsRequest) (rep netnsReply) {
	timeout := req.Timeout
	if timeout <= 0 {
		timeout = time.Hour
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var body io.Reader
	var size int64 = -1
	switch {
	case req.BodyFile != "":
		f, err := os.Open(req.BodyFile)
		if err != nil {
			return netnsReply{Err: err.Error()}
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return netnsReply{Err: err.Error()}
		}
		body, size = f, st.Size()
	case req.Body != nil:
		body, size = bytes.NewReader(req.Body), int64(len(req.Body))
	}
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	hr, err := http.NewRequestWithContext(ctx, method, req.URL, body)
	if err != nil {
		return netnsReply{Err: err.Error()}
	}
	if size >= 0 {
		hr.ContentLength = size
	}
	if req.Token != "" {
		hr.Header.Set("Authorization", "Bearer "+req.Token)
	}
	if req.Body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(hr)
	if err != nil {
		return netnsReply{Err: err.Error(), EndNs: time.Now().UnixNano()}
	}
	defer resp.Body.Close()
	rep.Status = resp.StatusCode
	if req.Op == "get" {
		rep.Bytes, rep.Digest, rep.Resumed, err = netnsDownload(ctx, hc, req.URL, resp)
		rep.EndNs = time.Now().UnixNano()
		if err != nil {
			rep.Err = err.Error()
		}
		return rep
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<19))
	rep.EndNs, rep.Body = time.Now().UnixNano(), string(b)
	if err != nil {
		rep.Err = err.Error()
	}
	return rep
}

// netnsDownload reads a download whole into a sha256, and, as `wget -c` does, picks it up where it stopped when
// the connection is cut (up to 20 times): with 32 TCP flows on one shaped uplink, the seed's kernel gives up on a
// flow starved through all its retransmissions and resets it, which no real client would take as the end.
func netnsDownload(ctx context.Context, hc *http.Client, url string, resp *http.Response) (int64, string, int, error) {
	h := sha256.New()
	buf := make([]byte, 256<<10)
	var n int64
	resumed := 0
	var err error
	for {
		if resp != nil {
			var k int64
			k, err = io.CopyBuffer(h, resp.Body, buf)
			resp.Body.Close()
			n += k
			if err == nil {
				return n, hex.EncodeToString(h.Sum(nil)), resumed, nil
			}
		}
		if resumed == 20 || ctx.Err() != nil {
			return n, "", resumed, err
		}
		resumed++
		hr, rerr := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if rerr != nil {
			return n, "", resumed, rerr
		}
		hr.Header.Set("Range", fmt.Sprintf("bytes=%d-", n))
		if resp, rerr = hc.Do(hr); rerr != nil {
			resp, err = nil, rerr // the resume itself was cut: try again shortly
			time.Sleep(time.Second)
			continue
		}
		if resp.StatusCode != http.StatusPartialContent {
			resp.Body.Close()
			return n, "", resumed, fmt.Errorf("resume after %v: status %d", err, resp.StatusCode)
		}
	}
}

// netnsHelper is the test's end of one helper process.
type netnsHelper struct {
	t       testing.TB
	host    *netnsHost
	cmd     *exec.Cmd
	in      io.WriteCloser
	out     *bufio.Scanner
	errPath string
}

// startNetnsHelper runs a helper inside h's namespace. It is stopped when the test ends.
func startNetnsHelper(t testing.TB, h *netnsHost) *netnsHelper {
	t.Helper()
	x := &netnsHelper{t: t, host: h, errPath: filepath.Join(t.TempDir(), "helper-"+h.name+".stderr")}
	errf, err := os.Create(x.errPath)
	if err != nil {
		t.Fatal(err)
	}
	defer errf.Close()
	x.cmd = exec.Command("ip", "netns", "exec", h.ns, os.Args[0], "-test.run=^TestNetnsHelper$", "-test.timeout=0", "-test.count=1")
	x.cmd.Env = append(cleanEnv(), netnsHelperEnv+"=1")
	x.cmd.Stderr = errf
	x.cmd.SysProcAttr = sysProcAttr()
	if x.in, err = x.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := x.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	x.out = bufio.NewScanner(stdout)
	x.out.Buffer(make([]byte, 1<<20), 1<<20)
	if err := x.cmd.Start(); err != nil {
		t.Fatalf("start the helper in %s: %v", h.ns, err)
	}
	t.Cleanup(x.stop)
	return x
}

// Pid is the helper's process id (`ip netns exec` execs the helper in place).
func (x *netnsHelper) Pid() int { return x.cmd.Process.Pid }

func (x *netnsHelper) send(req netnsRequest) error {
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	_, err = x.in.Write(append(b, '\n'))
	return err
}

// recv reads the next reply; everything else the test binary prints is skipped.
func (x *netnsHelper) recv() (netnsReply, error) {
	for x.out.Scan() {
		line, ok := strings.CutPrefix(x.out.Text(), netnsReplyPrefix)
		if !ok {
			continue
		}
		var rep netnsReply
		if err := json.Unmarshal([]byte(line), &rep); err != nil {
			return rep, fmt.Errorf("helper in %s: %w", x.host.ns, err)
		}
		return rep, nil
	}
	b, _ := os.ReadFile(x.errPath)
	return netnsReply{}, fmt.Errorf("helper in %s ended (%v); its stderr:\n%s", x.host.ns, x.out.Err(), b)
}

func (x *netnsHelper) call(req netnsRequest) (netnsReply, error) {
	if err := x.send(req); err != nil {
		return netnsReply{}, fmt.Errorf("helper in %s: %w", x.host.ns, err)
	}
	return x.recv()
}

// api makes one JSON request to a node's API and decodes a 2xx answer into out.
func (x *netnsHelper) api(method, url, token string, body, out any) (int, error) {
	req := netnsRequest{Op: "http", Method: method, URL: url, Token: token, Timeout: 10 * time.Second}
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		req.Body = b
	}
	rep, err := x.call(req)
	if err != nil {
		return 0, err
	}
	if rep.Err != "" {
		return rep.Status, errors.New(rep.Err)
	}
	if rep.Status/100 != 2 {
		return rep.Status, fmt.Errorf("%s %s: %d %s", method, url, rep.Status, strings.TrimSpace(rep.Body))
	}
	if out != nil {
		if err := json.Unmarshal([]byte(rep.Body), out); err != nil {
			return rep.Status, fmt.Errorf("%s %s: %w", method, url, err)
		}
	}
	return rep.Status, nil
}

// stop closes the helper's stdin, which ends it, and kills it if it does not end at once.
func (x *netnsHelper) stop() {
	x.in.Close()
	exited := make(chan struct{})
	go func() {
		_ = x.cmd.Wait()
		close(exited)
	}()
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		_ = killGroup(x.cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	}
}

// The baseline's client picks a cut-off download up where it stopped and ends with the right bytes.
func TestNetnsDownloadResumes(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	cuts := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Range") == "" || cuts < 2 {
			// Send a part, then cut the connection as a kernel that gave up on the flow would.
			cuts++
			from := 0
			if rg := r.Header.Get("Range"); rg != "" {
				fmt.Sscanf(rg, "bytes=%d-", &from)
				w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", from, len(data)-1, len(data)))
				w.Header().Set("Content-Length", strconv.Itoa(len(data)-from))
				w.WriteHeader(http.StatusPartialContent)
			} else {
				w.Header().Set("Content-Length", strconv.Itoa(len(data)))
			}
			w.Write(data[from : from+100_000])
			w.(http.Flusher).Flush()
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
			return
		}
		http.ServeContent(w, r, "archive", time.Time{}, bytes.NewReader(data))
	}))
	defer srv.Close()
	rep := netnsDo(srv.Client(), netnsRequest{Op: "get", URL: srv.URL, Timeout: 30 * time.Second})
	sum := sha256.Sum256(data)
	if rep.Err != "" || rep.Bytes != int64(len(data)) || rep.Digest != hex.EncodeToString(sum[:]) || rep.Resumed != 2 {
		t.Fatalf("download: %+v; want %d bytes, digest %x, resumed twice", rep, len(data), sum)
	}
}
