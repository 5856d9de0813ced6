package deployer

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

type tarEntry struct {
	name string
	typ  byte
	body string
	link string
	mode int64
}

func makeArchive(t *testing.T, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	mtime := time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: e.mode, ModTime: mtime,
			Format: tar.FormatPAX}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if e.typ == tar.TypeChar || e.typ == tar.TypeBlock {
			h.Devmajor, h.Devminor = 1, 3
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("write header %q: %v", e.name, err)
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
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

func file(name, body string) tarEntry { return tarEntry{name: name, typ: tar.TypeReg, body: body} }
func dir(name string) tarEntry        { return tarEntry{name: name, typ: tar.TypeDir, mode: 0o755} }
func symlink(name, target string) tarEntry {
	return tarEntry{name: name, typ: tar.TypeSymlink, link: target, mode: 0o777}
}
func hardlink(name, target string) tarEntry {
	return tarEntry{name: name, typ: tar.TypeLink, link: target}
}

// listTree returns every path below root (relative), without following links.
func listTree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != root {
			rel, _ := filepath.Rel(root, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func TestExtractRefusesMaliciousArchives(t *testing.T) {
	// Absolute targets point into a per-case sentinel directory so that a bug writes somewhere the test
	// can see (and never into the real /etc).
	cases := []struct {
		name    string
		entries func(sentinel string) []tarEntry
		entry   string // the entry the error must name
	}{
		{"dotdot", func(string) []tarEntry { return []tarEntry{file("../x", "pwned")} }, "../x"},
		{"inner dotdot", func(string) []tarEntry {
			return []tarEntry{dir("a/"), file("a/../../x", "pwned")}
		}, "a/../../x"},
		{"absolute", func(s string) []tarEntry { return []tarEntry{file(s+"/x", "pwned")} }, "/x"},
		{"absolute etc", func(string) []tarEntry { return []tarEntry{file("/etc/x", "pwned")} }, "/etc/x"},
		{"symlink to absolute then write through", func(s string) []tarEntry {
			return []tarEntry{symlink("l", s), file("l/passwd", "pwned")}
		}, "l"},
		{"symlink to etc", func(string) []tarEntry {
			return []tarEntry{symlink("l", "/etc"), file("l/passwd", "pwned")}
		}, "l"},
		{"write through an inner symlink", func(string) []tarEntry {
			return []tarEntry{dir("sub/"), symlink("l", "sub"), file("l/x", "pwned")}
		}, "l/x"},
		{"symlink dotdot chain", func(string) []tarEntry {
			return []tarEntry{symlink("l", "../.."), file("l/x", "pwned")}
		}, "l"},
		{"deep symlink dotdot", func(string) []tarEntry {
			return []tarEntry{dir("a/b/"), symlink("a/b/l", "../../../sentinel")}
		}, "a/b/l"},
		{"hardlink to etc passwd", func(string) []tarEntry {
			return []tarEntry{hardlink("pw", "/etc/passwd")}
		}, "pw"},
		{"hardlink dotdot", func(string) []tarEntry {
			return []tarEntry{hardlink("pw", "../../sentinel/x")}
		}, "pw"},
		{"hardlink to a symlink", func(string) []tarEntry {
			return []tarEntry{dir("a/b/"), symlink("a/b/up", "../.."), hardlink("top", "a/b/up")}
		}, "top"},
		{"symlink chain escape", func(string) []tarEntry {
			// up resolves to the root, which is fine; going one further through it is not.
			return []tarEntry{dir("a/b/"), symlink("a/b/up", "../.."), symlink("a/b/esc", "up/..")}
		}, "a/b/esc"},
		{"later link makes an earlier dangling link escape", func(string) []tarEntry {
			// L checks out lexically while p is missing; once p -> ../.. exists, L climbs past the root.
			return []tarEntry{dir("a/b/"), symlink("a/b/L", "p/../../.."), symlink("a/b/p", "../..")}
		}, "a/b/L"},
		{"device node", func(string) []tarEntry {
			return []tarEntry{{name: "null", typ: tar.TypeChar, mode: 0o666}}
		}, "null"},
		{"block device", func(string) []tarEntry {
			return []tarEntry{{name: "disk", typ: tar.TypeBlock, mode: 0o666}}
		}, "disk"},
		{"fifo", func(string) []tarEntry {
			return []tarEntry{{name: "pipe", typ: tar.TypeFifo, mode: 0o666}}
		}, "pipe"},
		{"duplicate replaces a dir with an escaping symlink", func(s string) []tarEntry {
			return []tarEntry{dir("d/"), symlink("d", s), file("d/x", "pwned")}
		}, "d"},
		{"duplicate replaces a dir with an inner symlink", func(string) []tarEntry {
			return []tarEntry{dir("d/"), dir("e/"), symlink("d", "e"), file("d/x", "pwned")}
		}, "d"},
		{"dir over a file", func(string) []tarEntry {
			return []tarEntry{file("f", "x"), dir("f/")}
		}, "f/"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			sentinel := filepath.Join(base, "sentinel")
			if err := os.Mkdir(sentinel, 0o755); err != nil {
				t.Fatal(err)
			}
			dest := filepath.Join(base, "rel", "v1")
			err := Extract(bytes.NewReader(makeArchive(t, tc.entries(sentinel))), dest)
			if err == nil {
				t.Fatalf("Extract accepted a malicious archive")
			}
			t.Log(err)
			var ue *UnsafeEntryError
			if !errors.As(err, &ue) {
				t.Fatalf("error is not an UnsafeEntryError: %v", err)
			}
			want := tc.entry
			if want == "/x" {
				want = sentinel + "/x"
			}
			if ue.Entry != want {
				t.Fatalf("error names entry %q, want %q (%v)", ue.Entry, want, err)
			}
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("error text does not name the entry: %v", err)
			}
			if got := listTree(t, base); strings.Join(got, ",") != "rel,sentinel" {
				t.Fatalf("something was left or written outside: %v", got)
			}
			if _, err := os.Lstat("/etc/x"); err == nil {
				t.Fatalf("/etc/x exists")
			}
		})
	}
}

func TestEntryPathRefusesNUL(t *testing.T) {
	// archive/tar cannot even write such a name, so the check is exercised directly.
	if _, err := entryPath("a\x00b"); err == nil {
		t.Fatal("name with NUL accepted")
	}
	for name, want := range map[string]string{"./a/b/": "a/b", "a//b": "a/b", "a/../b": "b", "./": ""} {
		got, err := entryPath(name)
		if err != nil || got != want {
			t.Errorf("entryPath(%q) = %q, %v; want %q", name, got, err, want)
		}
	}
}

type treeNode struct {
	kind string // dir, file, link
	mode fs.FileMode
	body string
}

func snapshot(t *testing.T, root string) map[string]treeNode {
	t.Helper()
	out := map[string]treeNode{}
	for _, rel := range listTree(t, root) {
		p := filepath.Join(root, rel)
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			out[rel] = treeNode{kind: "link", body: target}
		case fi.IsDir():
			out[rel] = treeNode{kind: "dir", mode: fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)}
		default:
			b, _ := os.ReadFile(p)
			out[rel] = treeNode{kind: "file", mode: fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky), body: string(b)}
		}
	}
	return out
}

func TestExtractGoodArchive(t *testing.T) {
	entries := []tarEntry{
		{name: "./", typ: tar.TypeDir, mode: 0o755},
		dir("bin/"),
		{name: "bin/server", typ: tar.TypeReg, body: "#!/bin/sh\necho hi\n", mode: 0o755},
		{name: "bin/suid", typ: tar.TypeReg, body: "x", mode: 0o4755},
		{name: "conf/app.conf", typ: tar.TypeReg, body: "port=1\n", mode: 0o640}, // implicit parent
		{name: "secret", typ: tar.TypeReg, body: "s", mode: 0o600},
		{name: "ro/", typ: tar.TypeDir, mode: 0o555},
		{name: "ro/inside", typ: tar.TypeReg, body: "written before ro/ got its mode", mode: 0o444},
		{name: "sticky/", typ: tar.TypeDir, mode: 0o1777},
		symlink("run", "bin/server"),
		symlink("conf/up", "../bin"),
		symlink("dangling", "not/yet/there"),
		symlink("self", "."),
		hardlink("bin/server-copy", "bin/server"),
		{name: "replaced", typ: tar.TypeReg, body: "old", mode: 0o644},
		{name: "replaced", typ: tar.TypeReg, body: "new", mode: 0o600},
		symlink("relinked", "bin"),
		{name: "relinked", typ: tar.TypeReg, body: "file now", mode: 0o644},
	}
	base := t.TempDir()
	dest := filepath.Join(base, "releases", "v1")
	if err := Extract(bytes.NewReader(makeArchive(t, entries)), dest); err != nil {
		t.Fatal(err)
	}
	got := snapshot(t, dest)
	want := map[string]treeNode{
		"bin":             {kind: "dir", mode: 0o755},
		"bin/server":      {kind: "file", mode: 0o755, body: "#!/bin/sh\necho hi\n"},
		"bin/server-copy": {kind: "file", mode: 0o755, body: "#!/bin/sh\necho hi\n"},
		"bin/suid":        {kind: "file", mode: 0o755, body: "x"},
		"conf":            {kind: "dir", mode: 0o755},
		"conf/app.conf":   {kind: "file", mode: 0o640, body: "port=1\n"},
		"conf/up":         {kind: "link", body: "../bin"},
		"secret":          {kind: "file", mode: 0o600, body: "s"},
		"ro":              {kind: "dir", mode: 0o755}, // owner rwx kept so the release can be deleted
		"ro/inside":       {kind: "file", mode: 0o444, body: "written before ro/ got its mode"},
		"sticky":          {kind: "dir", mode: 0o777},
		"run":             {kind: "link", body: "bin/server"},
		"dangling":        {kind: "link", body: "not/yet/there"},
		"self":            {kind: "link", body: "."},
		"replaced":        {kind: "file", mode: 0o600, body: "new"},
		"relinked":        {kind: "file", mode: 0o644, body: "file now"},
	}
	for k, w := range want {
		if g, ok := got[k]; !ok || g != w {
			t.Errorf("%s: got %+v (present %v), want %+v", k, g, ok, w)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected entry %s", k)
		}
	}
	fi, err := os.Stat(filepath.Join(dest, "bin/server"))
	if err != nil {
		t.Fatal(err)
	}
	if !fi.ModTime().Equal(time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)) {
		t.Errorf("mtime %v not restored", fi.ModTime())
	}
	if _, err := os.Lstat(dest + ".partial"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf(".partial left behind: %v", err)
	}
}

func TestExtractDestMustNotExist(t *testing.T) {
	base := t.TempDir()
	dest := filepath.Join(base, "v1")
	if err := os.Mkdir(dest, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Extract(bytes.NewReader(makeArchive(t, []tarEntry{file("a", "b")})), dest); err == nil {
		t.Fatal("Extract wrote into an existing directory")
	}
}

func TestExtractReplacesStalePartialAndRejectsTruncated(t *testing.T) {
	base := t.TempDir()
	dest := filepath.Join(base, "v1")
	if err := os.MkdirAll(dest+".partial/junk", 0o755); err != nil {
		t.Fatal(err)
	}
	archive := makeArchive(t, []tarEntry{file("a", strings.Repeat("x", 100000))})
	if err := Extract(bytes.NewReader(archive[:len(archive)/2]), dest); err == nil {
		t.Fatal("truncated archive accepted")
	}
	if got := listTree(t, base); len(got) != 0 {
		t.Fatalf("a failed extraction left %v", got)
	}
	if err := os.MkdirAll(dest+".partial/junk", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Extract(bytes.NewReader(archive), dest); err != nil {
		t.Fatal(err)
	}
	if got := listTree(t, dest); strings.Join(got, ",") != "a" {
		t.Fatalf("release holds %v, want just a (the stale .partial must not leak in)", got)
	}
}
