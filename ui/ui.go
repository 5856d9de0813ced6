package ui

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"

	"github.com/shoal-ci/shoal/api"
	"github.com/shoal-ci/shoal/errs"
)

//go:embed static
var static embed.FS

// csp lets the page load only its own files and talk only to its own node: the API token lives in the page's
// session storage, so no script from anywhere else may run beside it.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

type file struct {
	body        []byte
	contentType string
	etag        string
}

// Attach serves the dashboard on a node's HTTP API at GET /ui/. The files are public (they hold no data and no
// secret); every API call the page makes carries the user's token. Call it once per node.
func Attach(srv *api.Server) {
	files := load()
	srv.Handle("GET /ui/", "", func(w http.ResponseWriter, r *http.Request) error {
		name := strings.TrimPrefix(r.URL.Path, "/ui/")
		if name == "" {
			name = "index.html"
		}
		f, ok := files[name]
		if !ok {
			return errs.New(errs.NotFound, "the dashboard has no file %q: open /ui/", name)
		}
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		// Revalidate every time: a node upgraded in place must not leave old scripts in browsers.
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", f.etag)
		if r.Header.Get("If-None-Match") == f.etag {
			w.WriteHeader(http.StatusNotModified)
			return nil
		}
		h.Set("Content-Type", f.contentType)
		_, err := w.Write(f.body)
		return err
	})
}

// load reads the embedded files once, with their types and ETags.
func load() map[string]file {
	out := map[string]file{}
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		ct := mime.TypeByExtension(path.Ext(p))
		if ct == "" {
			ct = "application/octet-stream"
		}
		out[strings.TrimPrefix(p, "static/")] = file{body: body, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	if err != nil {
		// The files are compiled in: failing to read them is a broken build, not a runtime condition.
		panic(fmt.Sprintf("ui: read the embedded dashboard: %v", err))
	}
	return out
}
