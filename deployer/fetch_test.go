package deployer

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/shoal-ci/shoal/artifact"
	"github.com/shoal-ci/shoal/manifest"
	"github.com/shoal-ci/shoal/raftfsm"
)

// tarGz builds a tar.gz of name → content.
func tarGz(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, name := range sortedKeys(files) {
		body := files[name]
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func releaseFor(t *testing.T, data []byte) *raftfsm.Release {
	t.Helper()
	meta, err := artifact.Describe(bytes.NewReader(data), 1024)
	if err != nil {
		t.Fatal(err)
	}
	return &raftfsm.Release{App: "web", Version: "v1", Digest: meta.Digest, Size: meta.Size, PieceSize: meta.PieceSize, Pieces: meta.Pieces}
}

func TestStoreFetcher(t *testing.T) {
	data := tarGz(t, map[string]string{"shoal.yml": "deploy:\n  start: [true]\n", "big.txt": string(bytes.Repeat([]byte("x"), 5000))})
	rel := releaseFor(t, data)
	open := func(dir string) *artifact.Store {
		s, err := artifact.New(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}

	// From another store.
	src := open(t.TempDir())
	if err := src.Put(MetaOf(rel), bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	f := &StoreFetcher{Store: open(t.TempDir()), Sources: []*artifact.Store{src}}
	var last [2]int64
	if err := f.Fetch(t.Context(), rel, func(done, total int64) { last = [2]int64{done, total} }); err != nil {
		t.Fatal(err)
	}
	if last != [2]int64{rel.Size, rel.Size} {
		t.Fatalf("last progress %v, want %d of %d", last, rel.Size, rel.Size)
	}
	rc, err := f.Open(rel.Digest)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("fetched archive differs (%v)", err)
	}

	// From a shared directory; a file there that does not match the release is refused.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, rel.Digest+".tar.gz"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	g := &StoreFetcher{Store: open(t.TempDir()), Dirs: []string{dir}}
	if err := g.Fetch(t.Context(), rel, nil); err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), data...)
	bad[len(bad)/2] ^= 1
	if err := os.WriteFile(filepath.Join(dir, rel.Digest+".tar.gz"), bad, 0o644); err != nil {
		t.Fatal(err)
	}
	h := &StoreFetcher{Store: open(t.TempDir()), Dirs: []string{dir}}
	if err := h.Fetch(t.Context(), rel, nil); err == nil {
		t.Fatal("a corrupt archive from the shared directory was accepted")
	}
	// Nowhere to be found.
	k := &StoreFetcher{Store: open(t.TempDir())}
	if err := k.Fetch(t.Context(), rel, nil); err == nil {
		t.Fatal("a release no source holds was fetched")
	}
}

func TestReadManifest(t *testing.T) {
	both := tarGz(t, map[string]string{"./distelli-manifest.yml": "u/web:\n  Start: [true]\n", "shoal.yml": "deploy:\n  start: [x]\n", "app.js": "x"})
	name, data, err := ReadManifest(bytes.NewReader(both), "")
	if err != nil || name != manifest.ShoalFile || string(data) != "deploy:\n  start: [x]\n" {
		t.Fatalf("shoal.yml first: %q %q %v", name, data, err)
	}
	name, _, err = ReadManifest(bytes.NewReader(both), "distelli-manifest.yml")
	if err != nil || name != manifest.DistelliFile {
		t.Fatalf("the app's manifest path: %q %v", name, err)
	}
	_, _, err = ReadManifest(bytes.NewReader(tarGz(t, map[string]string{"app.js": "x"})), "")
	if !errors.Is(err, ErrNoManifest) {
		t.Fatalf("no manifest: %v", err)
	}
	m, err := manifest.Parse("shoal.yml", []byte("deploy:\n  env:\n    PORT: 8080\n  exec: [exec app]\n  process_count: 2\n  timeouts:\n    post_install: 10s\n  health_check:\n    http: http://127.0.0.1:8080/health\n"))
	if err != nil {
		t.Fatal(err)
	}
	h := HooksOf(m)
	if h.ProcessCount != 2 || len(h.Sections[PhaseExec]) != 1 || h.Timeouts[PhasePostInstall].Seconds() != 10 || h.Env[0].Key != "PORT" {
		t.Fatalf("hooks %+v", h)
	}
	spec := HealthOf(m)
	if spec == nil || spec.URL != "http://127.0.0.1:8080/health" || spec.Command != "" {
		t.Fatalf("health %+v", spec)
	}
}
