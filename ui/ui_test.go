package ui

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/shoal-ci/shoal/internal/meshtest"
)

func TestUIServesDashboardWithoutToken(t *testing.T) {
	c := meshtest.New(t, 1, nil)
	n := c.Nodes[0]
	Attach(c.API(n))
	base := "http://" + n.HTTPAddr()
	// Redirects are checked by hand: /ui must lead to /ui/.
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	get := func(path string, hdr map[string]string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}

	resp, body := get("/ui/", nil)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(body, `src="app.js"`) {
		t.Fatalf("GET /ui/: %d %s\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "connect-src 'self'") {
		t.Fatalf("the page must be locked to its own scripts and node: CSP %q", csp)
	}
	etag := resp.Header.Get("ETag")
	if resp, _ := get("/ui/", map[string]string{"If-None-Match": etag}); etag == "" || resp.StatusCode != http.StatusNotModified {
		t.Fatalf("revalidation with ETag %q: %d", etag, resp.StatusCode)
	}

	resp, _ = get("/ui/app.js", nil)
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || !strings.Contains(ct, "javascript") {
		t.Fatalf("GET /ui/app.js: %d %q (a module script needs a JavaScript type)", resp.StatusCode, ct)
	}
	if resp, _ := get("/ui", nil); resp.StatusCode/100 != 3 || resp.Header.Get("Location") != "/ui/" {
		t.Fatalf("GET /ui: %d to %q, want a redirect to /ui/", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, body := get("/ui/nothing.js", nil); resp.StatusCode != http.StatusNotFound || !strings.Contains(body, `"error"`) {
		t.Fatalf("GET /ui/nothing.js: %d %s", resp.StatusCode, body)
	}
	// The page is public; the API it calls is not.
	if resp, _ := get("/v1/status", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET /v1/status without a token: %d", resp.StatusCode)
	}
}

// TestUIEmbeddedFilesReferToEachOther checks that every file the page and its modules load is embedded.
func TestUIEmbeddedFilesReferToEachOther(t *testing.T) {
	files := load()
	refs := regexp.MustCompile(`(?:from '\./|import '\./|src="|href=")([a-z]+\.(?:js|css))`)
	for name, f := range files {
		for _, m := range refs.FindAllStringSubmatch(string(f.body), -1) {
			if _, ok := files[m[1]]; !ok {
				t.Errorf("%s loads %s, which is not embedded", name, m[1])
			}
		}
	}
	for _, want := range []string{"index.html", "app.js", "api.js", "views.js", "overview.js", "list.js", "admin.js", "applog.js", "page.js", "dom.js", "style.css"} {
		if _, ok := files[want]; !ok {
			t.Errorf("%s is not embedded", want)
		}
	}
}
