package builder

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/artifact"
	"github.com/shoal-ci/shoal/manifest"
)

// writeTree creates files (name → content; a name ending in "/" is an empty directory; content starting
// with "->" makes a symlink to the rest).
func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if strings.HasSuffix(name, "/") {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(body, "->"); ok {
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, ".sh") {
			mode = 0o755
		}
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
	}
}

type tarEntry struct {
	Type byte
	Mode int64
	Body string // file content or symlink target
}

// readArchive lists an archive's entries, checking the fixed metadata on the way.
func readArchive(t *testing.T, file string) (names []string, entries map[string]tarEntry) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	entries = map[string]tarEntry{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !h.ModTime.Equal(time.Unix(0, 0)) || h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: metadata not fixed: %v uid %d gid %d %q %q", h.Name, h.ModTime, h.Uid, h.Gid, h.Uname, h.Gname)
		}
		body, _ := io.ReadAll(tr)
		if h.Typeflag == tar.TypeSymlink {
			body = []byte(h.Linkname)
		}
		names = append(names, h.Name)
		entries[h.Name] = tarEntry{Type: h.Typeflag, Mode: h.Mode, Body: string(body)}
	}
	return names, entries
}

func pack(t *testing.T, dir string, inc []manifest.Include, exc []string) (*Artifact, []string, map[string]tarEntry) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "release.tar.gz")
	a, err := Package(dir, inc, exc, out, 0)
	if err != nil {
		t.Fatalf("Package: %v", err)
	}
	names, entries := readArchive(t, out)
	return a, names, entries
}

func sampleTree(t *testing.T) string {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"app.js":                         "console.log(1)\n",
		"app.test.js":                    "test\n",
		"package.json":                   "{}\n",
		"run.sh":                         "#!/bin/sh\n",
		"lib/util.js":                    "u\n",
		"lib/deep/x.js":                  "x\n",
		"lib/deep/x.test.js":             "xt\n",
		"node_modules/left-pad/index.js": "pad\n",
		"lib/node_modules/dep/i.js":      "dep\n",
		"target/app-1.0.jar":             "jar\n",
		"target/classes/A.class":         "class\n",
		"logs/build.log":                 "log\n",
		".git/HEAD":                      "ref: refs/heads/main\n",
		"empty/":                         "",
		"current.js":                     "->app.js",
		"lib/up.js":                      "->../app.js",
	})
	return dir
}

func TestPackageSelection(t *testing.T) {
	dir := sampleTree(t)
	inc := []manifest.Include{{Glob: "*"}, {Glob: "target/*.jar", Dest: "lib/"}}
	exc := []string{"node_modules/", "**/*.test.js", "target/classes", "*.log"}
	a, names, entries := pack(t, dir, inc, exc)
	want := []string{
		"app.js", "current.js", "empty/", "lib/", "lib/app-1.0.jar", "lib/deep/", "lib/deep/x.js", "lib/up.js",
		"lib/util.js", "logs/", "package.json", "run.sh", "target/", "target/app-1.0.jar",
	}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("entries\n%q\nwant\n%q", names, want)
	}
	if e := entries["lib/app-1.0.jar"]; e.Body != "jar\n" || e.Mode != 0o644 {
		t.Errorf("relocated jar: %+v", e)
	}
	if e := entries["run.sh"]; e.Mode != 0o755 {
		t.Errorf("executable mode lost: %o", e.Mode)
	}
	if e := entries["current.js"]; e.Type != tar.TypeSymlink || e.Body != "app.js" {
		t.Errorf("symlink: %+v", e)
	}
	if e := entries["lib/"]; e.Type != tar.TypeDir || e.Mode != 0o755 {
		t.Errorf("dir: %+v", e)
	}
	if len(a.Unmatched) != 0 {
		t.Errorf("unmatched %q", a.Unmatched)
	}
}

func TestPackageRelocationAndDoubleStar(t *testing.T) {
	dir := sampleTree(t)
	inc := []manifest.Include{
		{Glob: "lib/**/*.js"},
		{Glob: "target/classes", Dest: "public/static/"},
		{Glob: "package.json", Dest: "."},
		{Glob: "missing/*.txt"},
	}
	a, names, _ := pack(t, dir, inc, []string{"*.test.js", "node_modules"})
	want := []string{
		"lib/", "lib/deep/", "lib/deep/x.js", "lib/up.js", "lib/util.js", "package.json",
		"public/", "public/static/", "public/static/classes/", "public/static/classes/A.class",
	}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("entries\n%q\nwant\n%q", names, want)
	}
	if !reflect.DeepEqual(a.Unmatched, []string{"missing/*.txt"}) {
		t.Errorf("unmatched %q", a.Unmatched)
	}
}

func TestPackageExcludeWins(t *testing.T) {
	dir := sampleTree(t)
	_, names, _ := pack(t, dir, []manifest.Include{{Glob: "app.js"}, {Glob: "lib"}}, []string{"app.js", "lib/deep/"})
	want := []string{"lib/", "lib/node_modules/", "lib/node_modules/dep/", "lib/node_modules/dep/i.js", "lib/up.js", "lib/util.js"}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("entries\n%q\nwant\n%q", names, want)
	}
}

func TestPackageDeterministic(t *testing.T) {
	dir := sampleTree(t)
	inc := []manifest.Include{{Glob: "*"}}
	a1, _, _ := pack(t, dir, inc, nil)
	// Same content, different times: the digest must not move.
	later := time.Now().Add(time.Hour)
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if d.Type()&os.ModeSymlink == 0 {
			os.Chtimes(p, later, later)
		}
		return nil
	})
	a2, _, _ := pack(t, dir, inc, nil)
	if a1.Digest != a2.Digest || a1.Size != a2.Size || !reflect.DeepEqual(a1.Pieces, a2.Pieces) {
		t.Errorf("two runs differ: %s/%d vs %s/%d", a1.Digest, a1.Size, a2.Digest, a2.Size)
	}
	if err := os.WriteFile(filepath.Join(dir, "app.js"), []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if a3, _, _ := pack(t, dir, inc, nil); a3.Digest == a1.Digest {
		t.Error("changed content kept the digest")
	}
}

func TestPackagePieces(t *testing.T) {
	dir := t.TempDir()
	// Incompressible content so the archive spans several pieces.
	var big []byte
	for h := sha256.Sum256([]byte("seed")); len(big) < 300<<10; h = sha256.Sum256(h[:]) {
		big = append(big, h[:]...)
	}
	writeTree(t, dir, map[string]string{"blob.bin": string(big), "small.txt": "s\n"})
	out := filepath.Join(t.TempDir(), "a.tar.gz")
	const pieceSize = 64 << 10
	a, err := Package(dir, []manifest.Include{{Glob: "*"}}, nil, out, pieceSize)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if a.Digest != hex.EncodeToString(sum[:]) || a.Size != int64(len(data)) || a.Path != out || a.PieceSize != pieceSize {
		t.Fatalf("artifact %+v does not describe the file (%d bytes)", a, len(data))
	}
	if want := (len(data) + pieceSize - 1) / pieceSize; len(a.Pieces) != want || want < 2 {
		t.Fatalf("%d pieces, want %d (at least 2)", len(a.Pieces), want)
	}
	for i, d := range a.Pieces {
		piece := data[i*pieceSize : min((i+1)*pieceSize, len(data))]
		if s := sha256.Sum256(piece); hex.EncodeToString(s[:]) != d {
			t.Errorf("piece %d digest mismatch", i)
		}
	}
	again, err := PieceDigests(out, pieceSize)
	if err != nil || !reflect.DeepEqual(again, a.Pieces) {
		t.Errorf("PieceDigests = %v, %v", again, err)
	}
	// The artifact store agrees on the description.
	meta, err := artifact.Describe(bytes.NewReader(data), pieceSize)
	if err != nil || !reflect.DeepEqual(meta, a.Meta()) {
		t.Errorf("artifact.Describe = %+v, %v\nwant %+v", meta, err, a.Meta())
	}
	if err := a.Meta().Validate(); err != nil {
		t.Error(err)
	}
}

func TestPackageEmptyInclude(t *testing.T) {
	dir := sampleTree(t)
	a, names, _ := pack(t, dir, nil, nil)
	if len(names) != 0 {
		t.Errorf("entries %q, want none", names)
	}
	if a.Size == 0 || len(a.Pieces) != 1 || a.PieceSize != DefaultPieceSize {
		t.Errorf("empty archive: %+v", a)
	}
}

func TestPackageRefusals(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		inc   []manifest.Include
		want  string
	}{
		{"absolute symlink", map[string]string{"a": "->/etc/passwd"}, []manifest.Include{{Glob: "*"}}, "absolute path"},
		{"escaping symlink", map[string]string{"d/a": "->../../x"}, []manifest.Include{{Glob: "*"}}, "outside the release"},
		{"relocated symlink escapes", map[string]string{"d/a": "->../b", "b": "b"}, []manifest.Include{{Glob: "d/a", Dest: "."}}, "outside the release"},
		{"collision", map[string]string{"a/x.jar": "1", "b/x.jar": "2"}, []manifest.Include{{Glob: "*/x.jar", Dest: "lib"}}, "would both be packaged as lib/x.jar"},
		{"file and dir", map[string]string{"lib": "file", "x/y": "y"}, []manifest.Include{{Glob: "lib"}, {Glob: "x/y", Dest: "lib"}}, "packaged as a file and also as the directory"},
		{"bad glob", map[string]string{"a": "a"}, []manifest.Include{{Glob: "a["}}, "not valid"},
		{"dotdot glob", map[string]string{"a": "a"}, []manifest.Include{{Glob: "../a"}}, "climbs out"},
		{"dotdot dest", map[string]string{"a": "a"}, []manifest.Include{{Glob: "a", Dest: "../x"}}, "must stay inside"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writeTree(t, dir, tt.files)
			outDir := t.TempDir()
			_, err := Package(dir, tt.inc, nil, filepath.Join(outDir, "a.tar.gz"), 0)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
			if left, _ := os.ReadDir(outDir); len(left) != 0 {
				t.Errorf("a failed packaging left %d files behind", len(left))
			}
		})
	}
}

func TestGlobMatch(t *testing.T) {
	tests := []struct {
		pat, name string
		want      bool
	}{
		{"*", "a", true}, {"*", "a/b", false}, {"**", "a/b/c", true}, {"**/*.js", "a.js", true},
		{"**/*.js", "x/y/a.js", true}, {"src/**/*.js", "src/a.js", true}, {"src/**/*.js", "lib/a.js", false},
		{"a/**/b/**/c", "a/x/b/y/z/c", true}, {"a/**/**/c", "a/c", true}, {"target/*.jar", "target/x/y.jar", false},
		{"./app.js", "app.js", true}, {"[ab].txt", "b.txt", true},
	}
	for _, tt := range tests {
		g, err := parseGlob(tt.pat)
		if err != nil {
			t.Fatal(err)
		}
		if got := g.match(strings.Split(tt.name, "/"), false); got != tt.want {
			t.Errorf("%q matches %q = %v, want %v", tt.pat, tt.name, got, tt.want)
		}
	}
}
