package deployer

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fuzzSentinel is the one absolute place a fuzzed archive may name: a bug would write there, where the check
// sees it, and not into the machine's own files.
const fuzzSentinel = "/tmp/shoal-fuzz-sentinel"

// fuzzSafe reports whether an archive names only paths that stay inside the fuzz's own directories even if the
// extractor had a bug: absolute names only under fuzzSentinel, at most two ".." (the test's temp dir).
func fuzzSafe(data []byte) bool {
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if err != nil {
			return true
		}
		for _, p := range []string{h.Name, h.Linkname} {
			if strings.HasPrefix(p, "/") && !strings.HasPrefix(filepath.Clean(p), fuzzSentinel) {
				return false
			}
			if strings.Count(p, "..") > 2 || strings.ContainsRune(p, '\\') {
				return false
			}
		}
	}
}

// fuzzDir is a fresh directory for one input, on /dev/shm when there is one: Extract syncs the file system it
// writes to, which on a disk costs a second an input, and nothing on a tmpfs.
func fuzzDir(t *testing.T) string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if d, err := os.MkdirTemp("/dev/shm", "shoal-fuzz-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return t.TempDir()
}

// FuzzExtract extracts arbitrary tar archives (gzipped here, so that the fuzzer works on the tar layer): no
// panic, nothing written outside the release directory, and nothing left behind when it refuses.
func FuzzExtract(f *testing.F) {
	t := &testing.T{}
	gunzip := func(b []byte) []byte {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			panic(err)
		}
		out, _ := io.ReadAll(zr)
		return out
	}
	for _, entries := range [][]tarEntry{
		{file("app.js", "x"), dir("lib/"), file("lib/a", "y"), symlink("cur", "lib"), hardlink("b", "lib/a")},
		{file("../x", "pwned")},
		{dir("a/"), file("a/../../x", "pwned")},
		{file(fuzzSentinel+"/x", "pwned")},
		{symlink("l", fuzzSentinel), file("l/passwd", "pwned")},
		{dir("sub/"), symlink("l", "sub"), file("l/x", "pwned")},
		{symlink("l", ".."), file("l/x", "pwned")},
		{dir("a/b/"), symlink("a/b/up", "../.."), hardlink("top", "a/b/up")},
		{dir("a/b/"), symlink("a/b/L", "p/../.."), symlink("a/b/p", "..")},
		{{name: "null", typ: tar.TypeChar, mode: 0o666}},
		{dir("d/"), symlink("d", fuzzSentinel), file("d/x", "pwned")},
		{file("f", "x"), dir("f/")},
	} {
		f.Add(gunzip(makeArchive(t, entries)))
	}
	if err := os.MkdirAll(fuzzSentinel, 0o755); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !fuzzSafe(data) {
			return
		}
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		zw.Write(data)
		zw.Close()
		base := fuzzDir(t)
		dest := filepath.Join(base, "rel", "v1")
		err := Extract(&gz, dest)
		var outside []string
		filepath.WalkDir(base, func(p string, d os.DirEntry, werr error) error {
			rel, _ := filepath.Rel(base, p)
			if rel != "." && rel != "rel" && !strings.HasPrefix(rel, filepath.Join("rel", "v1")) {
				outside = append(outside, rel)
			}
			return nil
		})
		if len(outside) > 0 {
			t.Fatalf("extract wrote outside the release directory: %v (err %v)", outside, err)
		}
		if ents, _ := os.ReadDir(fuzzSentinel); len(ents) > 0 {
			t.Fatalf("extract wrote into %s (err %v)", fuzzSentinel, err)
		}
		if err != nil {
			if _, serr := os.Lstat(dest); serr == nil {
				t.Fatalf("a refused archive left %s behind: %v", dest, err)
			}
			if _, serr := os.Lstat(dest + ".partial"); serr == nil {
				t.Fatalf("a refused archive left %s.partial behind: %v", dest, err)
			}
		}
	})
}
