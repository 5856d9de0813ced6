package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/api"
	"github.com/shoal-ci/shoal/internal/meshtest"
	"github.com/shoal-ci/shoal/node"
)

// dialFrom opens a TCP connection to addr from the loopback address src.
func dialFrom(src, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return d.Dial("tcp", addr)
}

// healthzFrom asks GET /healthz over a fresh connection from src and returns the status.
func healthzFrom(src, addr string) (int, error) {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, a string) (net.Conn, error) { return dialFrom(src, a) }}}
	resp, err := hc.Get("http://" + addr + "/healthz")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// keepAlive opens a connection from src, makes one request on it and leaves it idle, as a keep-alive client does.
// It returns the connection and the status (0 when the node closed it without an meshtest.Answer).
func keepAlive(src, addr string) (net.Conn, int, error) {
	c, err := dialFrom(src, addr)
	if err != nil {
		return nil, 0, err
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return c, 0, nil
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	c.SetDeadline(time.Time{})
	return c, resp.StatusCode, nil
}

// One address cannot hold more than its share of the node's HTTP connections, and the node keeps answering
// others. The connections from that address past the cap are answered 429 and closed.
func TestHTTPConnectionsPerSourceCapped(t *testing.T) {
	c := meshtest.New(t, 1, nil)
	n := c.Nodes[0]
	addr := n.HTTPAddr()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var ok, refused int
	for range api.HTTPMaxConnsPerSource + 50 {
		c, status, err := keepAlive("127.0.0.1", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		switch status {
		case http.StatusOK:
			ok++
		case http.StatusTooManyRequests, 0:
			refused++
		default:
			t.Fatalf("status %d", status)
		}
	}
	t.Logf("%d connections from one address: %d served, %d refused; the node holds %d", api.HTTPMaxConnsPerSource+50, ok, refused, c.APIs[0].OpenConns())
	if ok > api.HTTPMaxConnsPerSource || refused == 0 {
		t.Fatalf("%d served, %d refused: want at most %d served", ok, refused, api.HTTPMaxConnsPerSource)
	}
	if status, err := healthzFrom("127.0.0.2", addr); err != nil || status != http.StatusOK {
		t.Fatalf("healthz from another address while one holds its cap: %d %v", status, err)
	}
	if got := gauge(t, n, "shoal_http_connections_refused_total"); got < float64(refused) {
		t.Fatalf("shoal_http_connections_refused_total = %v, want at least %d", got, refused)
	}
}

// gauge reads the value of an unlabelled metric from the node's registry.
func gauge(t *testing.T, n *node.Node, name string) float64 {
	t.Helper()
	mfs, err := n.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			m := mf.GetMetric()[0]
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// At the total cap, the node makes room by closing the connection idle the longest: idle keep-alive connections
// cannot lock everyone else out.
func TestHTTPConnectionCapEvictsIdle(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lim := api.NewConnLimiter(ln, 8, 8, slog.New(slog.DiscardHandler))
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }),
		ConnState: lim.ConnState}
	go srv.Serve(lim)
	defer srv.Close()
	addr := ln.Addr().String()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range 20 {
		c, status, err := keepAlive(fmt.Sprintf("127.0.0.%d", 1+i%3), addr)
		if err != nil || status != http.StatusOK {
			t.Fatalf("connection %d: %d %v", i, status, err)
		}
		conns = append(conns, c)
	}
	if open := lim.OpenConns(); open > 8 {
		t.Fatalf("%d connections open, cap 8", open)
	}
	if lim.Evicted() < 12 {
		t.Fatalf("%d idle connections evicted, want 12", lim.Evicted())
	}
	// The first connections were the ones closed.
	conns[0].SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conns[0].Read(make([]byte, 1)); err == nil {
		t.Fatal("the oldest idle connection is still open")
	}
}

// Blocking reads and event streams are capped per token: past the cap, the node answers 429 at once instead of
// holding one more request.
func TestWatchersCappedPerToken(t *testing.T) {
	c := meshtest.New(t, 1, nil)
	n := c.Nodes[0]
	base := "http://" + n.HTTPAddr()
	idx := n.FSM().Index()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 0}}
	var wg sync.WaitGroup
	statuses := make(chan int, api.MaxWatchersPerToken+20)
	for i := range api.MaxWatchersPerToken + 20 {
		path := fmt.Sprintf("/v1/members?index=%d&wait=1m", idx+10)
		if i%2 == 0 {
			path = "/v1/events"
		}
		wg.Go(func() {
			req, _ := http.NewRequestWithContext(ctx, "GET", base+path, nil)
			req.Header.Set("Authorization", "Bearer "+c.AdminToken)
			resp, err := hc.Do(req)
			if err != nil {
				statuses <- 0
				return
			}
			statuses <- resp.StatusCode
			if resp.StatusCode == http.StatusOK && path == "/v1/events" {
				resp.Body.Read(make([]byte, 64)) // the first event: the stream is open
			}
			if resp.StatusCode != http.StatusOK {
				resp.Body.Close()
			}
		})
	}
	var limited int
	deadline := time.After(30 * time.Second)
	for limited < 20 {
		select {
		case s := <-statuses:
			if s == http.StatusTooManyRequests {
				limited++
			}
		case <-deadline:
			t.Fatalf("%d requests answered 429, want 20 (the cap is %d per token)", limited, api.MaxWatchersPerToken)
		}
	}
	// A read that does not wait is never limited.
	if status, _ := httpGet(base+"/v1/members", c.AdminToken); status != http.StatusOK {
		t.Fatalf("a plain read with the capped token: %d", status)
	}
	cancel()
	wg.Wait()
}

// An open event stream ends when its token is revoked.
func TestEventStreamEndsWhenTokenRevoked(t *testing.T) {
	c := meshtest.New(t, 1, nil)
	n := c.Nodes[0]
	base := "http://" + n.HTTPAddr()
	tok, id := createToken(t, base, c.AdminToken, "watcher", "reader")
	req, _ := http.NewRequest("GET", base+"/v1/events", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("events: %v %v", resp, err)
	}
	defer resp.Body.Close()
	ended := make(chan error, 1)
	go func() { _, err := io.Copy(io.Discard, resp.Body); ended <- err }()
	if status, body := httpDo("DELETE", base+"/v1/tokens/"+id, c.AdminToken); status != http.StatusNoContent && status != http.StatusOK {
		t.Fatalf("revoke: %d %s", status, body)
	}
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the event stream still streams 10 s after its token was revoked")
	}
}

func httpGet(url, token string) (int, string) { return httpDo("GET", url, token) }

func httpDo(method, url, token string) (int, string) {
	return httpBody(method, url, token, "")
}

func httpBody(method, url, token, body string) (int, string) {
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func createToken(t *testing.T, base, admin, name, role string) (text, id string) {
	t.Helper()
	status, body := httpBody("POST", base+"/v1/tokens", admin, fmt.Sprintf(`{"name":%q,"role":%q}`, name, role))
	if status != http.StatusCreated {
		t.Fatalf("create token: %d %s", status, body)
	}
	var v api.TokenView
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatal(err)
	}
	return v.Token, v.ID
}
