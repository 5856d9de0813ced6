// Package client is the Go client of Shoal's HTTP API, used by the CLI and the tests.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Client talks to one node's API. Any node will do: writes are forwarded to the leader by the node.
type Client struct {
	Addr  string // host:port or a URL
	Token string
	HTTP  *http.Client
	// RetryNoLeader retries requests answered 503 "no_leader" while the mesh elects a leader, up to this long.
	// (A 503 "unavailable" write may have been applied, so it is not retried blindly.)
	RetryNoLeader time.Duration
	// OnRetry, when set, is told about each retry (the CLI prints it).
	OnRetry func(err *Error)

	// seen is the highest state index any answer reported; sent back as X-Shoal-Min-Index, it makes every read
	// include this client's own earlier writes, whichever node serves it.
	seen atomic.Uint64
}

// New returns a client for addr with token.
func New(addr, token string) *Client {
	return &Client{Addr: addr, Token: token, HTTP: &http.Client{Timeout: 0}, RetryNoLeader: 15 * time.Second}
}

// Error is an error answered by the API.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"error"`
}

func (e *Error) Error() string { return e.Message }

// IsStatus reports whether err is an API error with the given status.
func IsStatus(err error, status int) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == status
}

func (c *Client) url(path string) string {
	base := c.Addr
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	return strings.TrimRight(base, "/") + path
}

// Do sends a request with an optional JSON body and decodes a JSON answer into out (if not nil). It returns the
// state index the node reported.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) (uint64, error) {
	return c.do(ctx, method, path, in, out, nil)
}

// GetPage is Get for a paged list (GET /v1/apps?limit=N&cursor=C): it returns the cursor of the next page from
// the X-Shoal-Next-Cursor header, "" when this page is the last.
func (c *Client) GetPage(ctx context.Context, path string, out any) (next string, err error) {
	var h http.Header
	_, err = c.do(ctx, http.MethodGet, path, nil, out, &h)
	if h != nil {
		next = h.Get("X-Shoal-Next-Cursor")
	}
	return next, err
}

func (c *Client) do(ctx context.Context, method, path string, in, out any, hdr *http.Header) (uint64, error) {
	var body []byte
	if in != nil {
		var err error
		if body, err = json.Marshal(in); err != nil {
			return 0, err
		}
	}
	deadline := time.Now().Add(c.RetryNoLeader)
	for {
		idx, err := c.once(ctx, method, path, body, out, hdr)
		var ae *Error
		if errors.As(err, &ae) && ae.Status == http.StatusServiceUnavailable && ae.Code == "no_leader" && time.Now().Before(deadline) && ctx.Err() == nil {
			if c.OnRetry != nil {
				c.OnRetry(ae)
			}
			select {
			case <-ctx.Done():
				return 0, ctx.Err()
			case <-time.After(500 * time.Millisecond):
			}
			continue
		}
		return idx, err
	}
}

func (c *Client) once(ctx context.Context, method, path string, body []byte, out any, hdr *http.Header) (uint64, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url(path), rd)
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	if seen := c.seen.Load(); seen > 0 {
		req.Header.Set("X-Shoal-Min-Index", strconv.FormatUint(seen, 10))
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, fmt.Errorf("cannot reach the Shoal API at %s: %w (is a node running there? set --addr or SHOAL_ADDR)", c.Addr, err)
	}
	defer resp.Body.Close()
	if hdr != nil {
		*hdr = resp.Header
	}
	var idx uint64
	fmt.Sscan(resp.Header.Get("X-Shoal-Index"), &idx)
	for {
		old := c.seen.Load()
		if idx <= old || c.seen.CompareAndSwap(old, idx) {
			break
		}
	}
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return idx, err
	}
	if resp.StatusCode >= 400 {
		e := &Error{Status: resp.StatusCode}
		if json.Unmarshal(data, e) != nil || e.Message == "" {
			e.Message = fmt.Sprintf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(data)))
		}
		return idx, e
	}
	if out != nil && len(data) > 0 {
		if raw, ok := out.(*json.RawMessage); ok {
			*raw = append((*raw)[:0], data...)
			return idx, nil
		}
		if err := json.Unmarshal(data, out); err != nil {
			return idx, fmt.Errorf("decode answer of %s %s: %w", method, path, err)
		}
	}
	return idx, nil
}

// Upload POSTs a raw body (a release archive) and decodes the JSON answer into out. It is not retried.
func (c *Client) Upload(ctx context.Context, path string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url(path), body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/gzip")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the Shoal API at %s: %w", c.Addr, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 400 {
		e := &Error{Status: resp.StatusCode}
		if json.Unmarshal(data, e) != nil || e.Message == "" {
			e.Message = fmt.Sprintf("POST %s: %s", path, resp.Status)
		}
		return e
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// Get is Do with GET.
func (c *Client) Get(ctx context.Context, path string, out any) (uint64, error) {
	return c.Do(ctx, http.MethodGet, path, nil, out)
}

// Post is Do with POST.
func (c *Client) Post(ctx context.Context, path string, in, out any) (uint64, error) {
	return c.Do(ctx, http.MethodPost, path, in, out)
}
