package builder

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/shoal-ci/shoal/artifact"
	"github.com/shoal-ci/shoal/manifest"
)

// Artifact is a packaged release archive: where it is, its sha256, its size, and the sha256 of each piece.
type Artifact struct {
	Path      string
	Digest    string // sha256 of the whole archive, lowercase hex
	Size      int64
	PieceSize int64
	Pieces    []string // sha256 of each piece, lowercase hex, in order
	// Unmatched lists the include globs that matched no file, for the build log: usually a typo or a build
	// that put its output elsewhere.
	Unmatched []string
}

// Meta is the artifact as the artifact store and the release record describe it.
func (a *Artifact) Meta() artifact.Meta {
	return artifact.Meta{Digest: a.Digest, Size: a.Size, PieceSize: a.PieceSize, Pieces: a.Pieces}
}

// epoch is every entry's modification time: the archive's bytes must depend on the files' content only.
var epoch = time.Unix(0, 0).UTC()

// pkgEntry is one archive member.
type pkgEntry struct {
	name   string // path in the archive
	src    string // path in the build directory, slash-separated; "" for a directory made to hold others
	typ    byte   // tar.TypeDir, tar.TypeReg or tar.TypeSymlink
	mode   int64
	size   int64
	target string // symlink target
}

// Package archives the files of dir selected by the include and exclude globs into a gzip-compressed tar at
// out, and hashes it whole and in pieces of pieceSize bytes (0 means DefaultPieceSize). The archive is
// deterministic: entries sorted by name, times, owners and modes fixed, so the same files give the same
// digest. Directories matched by an include come whole; an include with Dest puts each match under Dest by
// its base name; excludes win; the checkout's .git is never packaged. Symlinks are kept when they point
// inside the archive; one that points out is an error. The archive appears at out only when complete.
func Package(dir string, inc []manifest.Include, exc []string, out string, pieceSize int64) (*Artifact, error) {
	pieceSize, err := checkPieceSize(pieceSize)
	if err != nil {
		return nil, err
	}
	entries, unmatched, err := collect(dir, inc, exc)
	if err != nil {
		return nil, err
	}
	a, err := writeArchive(dir, entries, out, pieceSize)
	if err != nil {
		return nil, err
	}
	a.Unmatched = unmatched
	return a, nil
}

type include struct {
	glob     glob
	relocate bool   // the manifest gave [glob, dest_dir]
	dest     string // cleaned destination directory; "." is the release root
}

// collect walks dir and returns the archive's entries, sorted by name, parents before children.
func collect(dir string, inc []manifest.Include, exc []string) ([]pkgEntry, []string, error) {
	var incs []include
	for _, i := range inc {
		g, err := parseGlob(i.Glob)
		if err != nil {
			return nil, nil, fmt.Errorf("package include: %w", err)
		}
		in := include{glob: g}
		if i.Dest != "" {
			d := path.Clean(strings.TrimPrefix(i.Dest, "/"))
			if d == ".." || strings.HasPrefix(d, "../") || strings.HasPrefix(i.Dest, "/") {
				return nil, nil, fmt.Errorf("package include %q: destination %q must stay inside the release", i.Glob, i.Dest)
			}
			in.relocate, in.dest = true, d
		}
		incs = append(incs, in)
	}
	var excs []glob
	for _, e := range exc {
		g, err := parseGlob(e)
		if err != nil {
			return nil, nil, fmt.Errorf("package exclude: %w", err)
		}
		excs = append(excs, g)
	}
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("package: the build directory: %w", err)
	}

	byName := map[string]pkgEntry{}
	matched := make([]bool, len(incs))
	walkErr := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("package: read %s: %w", p, err)
		}
		if p == root {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		segs := strings.Split(rel, "/")
		isDir := d.IsDir()
		if rel == ".git" || excluded(excs, segs, isDir) {
			if isDir {
				return filepath.SkipDir
			}
			return nil
		}
		if len(incs) == 0 {
			return filepath.SkipAll
		}
		for i, in := range incs {
			name, ok := archiveName(in, segs, isDir)
			if !ok {
				continue
			}
			matched[i] = true
			e, err := describeEntry(p, rel, name, d)
			if err != nil {
				return err
			}
			if e.typ == 0 {
				continue // a socket, pipe or device: nothing to package
			}
			if prev, dup := byName[name]; dup && prev.src != rel {
				return fmt.Errorf("package: %s and %s would both be packaged as %s: change a PkgInclude destination or exclude one", prev.src, rel, name)
			}
			byName[name] = e
		}
		return nil
	})
	if walkErr != nil {
		return nil, nil, walkErr
	}

	// Every entry's parent directories exist in the archive, so extraction never invents their modes.
	for name := range byName {
		for parent := path.Dir(name); parent != "."; parent = path.Dir(parent) {
			if e, ok := byName[parent]; ok {
				if e.typ != tar.TypeDir {
					return nil, nil, fmt.Errorf("package: %s is packaged as a file and also as the directory holding %s: change a PkgInclude destination", parent, name)
				}
				continue
			}
			byName[parent] = pkgEntry{name: parent, typ: tar.TypeDir, mode: 0o755}
		}
	}
	entries := make([]pkgEntry, 0, len(byName))
	for _, e := range byName {
		entries = append(entries, e)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].name < entries[j].name })

	var unmatched []string
	for i, m := range matched {
		if !m {
			unmatched = append(unmatched, incs[i].glob.text)
		}
	}
	return entries, unmatched, nil
}

// excluded reports whether a path is excluded. Its ancestors need no check: an excluded directory is not
// walked into.
func excluded(excs []glob, segs []string, isDir bool) bool {
	for _, g := range excs {
		if g.matchAnyDepth() {
			if g.match(segs[len(segs)-1:], isDir) {
				return true
			}
		} else if g.match(segs, isDir) {
			return true
		}
	}
	return false
}

// archiveName finds where an include puts a path: the shortest ancestor-or-self that the glob matches
// decides (a matched directory brings its whole content), relocated under dest when the include has one.
func archiveName(in include, segs []string, isDir bool) (string, bool) {
	for k := 1; k <= len(segs); k++ {
		if !in.glob.match(segs[:k], k < len(segs) || isDir) {
			continue
		}
		if !in.relocate {
			return strings.Join(segs, "/"), true
		}
		return path.Join(append([]string{in.dest}, segs[k-1:]...)...), true
	}
	return "", false
}

// describeEntry builds the archive entry for one walked path.
func describeEntry(p, rel, name string, d fs.DirEntry) (pkgEntry, error) {
	e := pkgEntry{name: name, src: rel}
	info, err := d.Info()
	if err != nil {
		return e, fmt.Errorf("package: %s: %w", rel, err)
	}
	switch {
	case info.IsDir():
		e.typ, e.mode = tar.TypeDir, 0o755
	case info.Mode().IsRegular():
		e.typ, e.mode, e.size = tar.TypeReg, 0o644, info.Size()
		if info.Mode()&0o111 != 0 {
			e.mode = 0o755
		}
	case info.Mode()&fs.ModeSymlink != 0:
		target, err := os.Readlink(p)
		if err != nil {
			return e, fmt.Errorf("package: %s: %w", rel, err)
		}
		if path.IsAbs(target) || filepath.IsAbs(target) {
			return e, fmt.Errorf("package: %s is a symlink to the absolute path %s, which would point outside the release: exclude it or copy the file", rel, target)
		}
		if to := path.Join(path.Dir(name), filepath.ToSlash(target)); to == ".." || strings.HasPrefix(to, "../") {
			return e, fmt.Errorf("package: %s is a symlink to %s, outside the release: exclude it or copy the file", rel, target)
		}
		e.typ, e.mode, e.target = tar.TypeSymlink, 0o777, filepath.ToSlash(target)
	}
	return e, nil
}

// writeArchive writes the entries to a temporary file beside out, hashing as it goes, and renames it into
// place once it is complete and synced.
func writeArchive(dir string, entries []pkgEntry, out string, pieceSize int64) (a *Artifact, err error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("package: open the build directory: %w", err)
	}
	defer root.Close()
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("package: create the archive: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()

	whole := sha256.New()
	pieces := newPieceHasher(pieceSize)
	counter := &countWriter{}
	gz := gzip.NewWriter(io.MultiWriter(tmp, whole, pieces, counter))
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		if err := writeEntry(tw, root, e); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("package: finish the tar stream: %w", err)
	}
	if err := gz.Close(); err != nil {
		return nil, fmt.Errorf("package: finish the gzip stream: %w", err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return nil, fmt.Errorf("package: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return nil, fmt.Errorf("package: sync the archive: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("package: close the archive: %w", err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return nil, fmt.Errorf("package: move the archive into place: %w", err)
	}
	return &Artifact{
		Path:      out,
		Digest:    hex.EncodeToString(whole.Sum(nil)),
		Size:      counter.n,
		PieceSize: pieceSize,
		Pieces:    pieces.digests(),
	}, nil
}

func writeEntry(tw *tar.Writer, root *os.Root, e pkgEntry) error {
	hdr := &tar.Header{
		Typeflag: e.typ,
		Name:     e.name,
		Mode:     e.mode,
		ModTime:  epoch,
		Format:   tar.FormatPAX,
	}
	switch e.typ {
	case tar.TypeDir:
		hdr.Name += "/"
	case tar.TypeSymlink:
		hdr.Linkname = e.target
	case tar.TypeReg:
		hdr.Size = e.size
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("package: %s: %w", e.name, err)
	}
	if e.typ != tar.TypeReg {
		return nil
	}
	// Opened through the root, so a file swapped for a symlink since the walk cannot pull in outside data.
	f, err := root.Open(filepath.FromSlash(e.src))
	if err != nil {
		return fmt.Errorf("package: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return fmt.Errorf("package: %s: %w", e.src, err)
	}
	if !info.Mode().IsRegular() || info.Size() != e.size {
		return fmt.Errorf("package: %s changed while it was being packaged: make sure no build process is still writing it", e.src)
	}
	if _, err := io.CopyN(tw, f, e.size); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("package: %s shrank while it was being packaged", e.src)
		}
		return fmt.Errorf("package: %s: %w", e.src, err)
	}
	return nil
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}
