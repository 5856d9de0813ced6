package deployer

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/shoal-ci/shoal/internal/fsutil"
)

// maxLinkHops bounds symlink resolution the way the kernel does (MAXSYMLINKS).
const maxLinkHops = 40

// UnsafeEntryError reports an archive entry that Extract refused. The whole extraction is abandoned: a
// release with one hostile entry is not a release to run.
type UnsafeEntryError struct {
	Entry  string // the entry's name as written in the archive
	Reason string
}

func (e *UnsafeEntryError) Error() string {
	return fmt.Sprintf("refusing archive entry %q: %s", e.Entry, e.Reason)
}

func unsafeEntry(name, format string, args ...any) error {
	return &UnsafeEntryError{Entry: name, Reason: fmt.Sprintf(format, args...)}
}

// Extract unpacks a gzip-compressed tar archive into dest, which must not exist yet. It writes into
// dest+".partial" and renames that to dest only once every entry is in place and flushed, so dest either
// does not exist or holds the complete release.
//
// Entries that could write or point outside dest are refused: absolute names, names whose ".." escapes,
// names with NUL, symlinks whose target resolves outside (absolute targets, ".." chains, chains through
// other links), hard links to anything but a regular file already extracted, devices and fifos, and any
// path that would pass through a symlink. Nothing is ever written through a link: every directory on the
// way is opened with O_NOFOLLOW. Modes keep only the permission bits (no setuid, setgid or sticky);
// ownership is not restored, files belong to the agent's user. Directories keep at least owner rwx so
// that old releases can always be deleted.
func Extract(archive io.Reader, dest string) error {
	if _, err := os.Lstat(dest); err == nil {
		return fmt.Errorf("extract into %s: the release directory already exists; remove it or choose another", dest)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("extract into %s: %w", dest, err)
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return fmt.Errorf("extract into %s: create parent: %w", dest, err)
	}
	partial := dest + ".partial"
	// A .partial left by a crash mid-extraction is garbage by definition.
	if err := os.RemoveAll(partial); err != nil {
		return fmt.Errorf("extract into %s: remove stale %s: %w", dest, partial, err)
	}
	if err := os.Mkdir(partial, 0o755); err != nil {
		return fmt.Errorf("extract into %s: %w", dest, err)
	}
	if err := extractInto(archive, partial); err != nil {
		_ = os.RemoveAll(partial)
		return fmt.Errorf("extract into %s: %w", dest, err)
	}
	if err := os.Rename(partial, dest); err != nil {
		_ = os.RemoveAll(partial)
		return fmt.Errorf("extract into %s: %w", dest, err)
	}
	if err := fsutil.SyncDir(filepath.Dir(dest)); err != nil {
		return fmt.Errorf("extract into %s: %w", dest, err)
	}
	return nil
}

// tree writes entries below a root directory through directory file descriptors, never through a path
// the kernel would resolve on its own.
type tree struct {
	root    string
	rootFD  int
	dirMode map[string]fileMeta // directories named by the archive, applied last (they may be read-only)
}

type fileMeta struct {
	mode  uint32
	mtime unix.Timespec
}

func extractInto(archive io.Reader, root string) error {
	gz, err := gzip.NewReader(archive)
	if err != nil {
		return fmt.Errorf("read archive: %w", err)
	}
	defer gz.Close()
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", root, err)
	}
	t := &tree{root: root, rootFD: fd, dirMode: map[string]fileMeta{}}
	defer unix.Close(fd)

	tr := tar.NewReader(gz)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read archive: %w", err)
		}
		if err := t.add(hdr, tr); err != nil {
			return err
		}
	}
	// Drain gzip's trailer so a truncated or corrupt stream is an error, not a silently short release.
	if _, err := io.Copy(io.Discard, gz); err != nil {
		return fmt.Errorf("read archive: %w", err)
	}
	// Links are checked as they arrive, but a later entry can change what an earlier dangling link
	// resolves through; the finished tree is what will run, so check it as a whole.
	if err := t.checkAllLinks(); err != nil {
		return err
	}
	if err := t.applyDirModes(); err != nil {
		return err
	}
	// One syncfs instead of an fsync per file: the release must be on disk before the rename makes it
	// visible, or a power cut after the flip could leave `current` pointing at empty files.
	if err := unix.Syncfs(t.rootFD); err != nil {
		return fmt.Errorf("sync %s: %w", root, err)
	}
	return nil
}

// entryPath turns an archive name into a clean relative path with no component that leaves the root.
// It returns "" for the root itself.
func entryPath(name string) (string, error) {
	if name == "" {
		return "", unsafeEntry(name, "empty name")
	}
	if strings.ContainsRune(name, 0) {
		return "", unsafeEntry(name, "name contains a NUL byte")
	}
	if path.IsAbs(name) {
		return "", unsafeEntry(name, "absolute path")
	}
	clean := path.Clean(name)
	if clean == ".." || strings.HasPrefix(clean, "../") {
		return "", unsafeEntry(name, "path escapes the release directory")
	}
	if clean == "." {
		return "", nil
	}
	return clean, nil
}

func (t *tree) add(hdr *tar.Header, r io.Reader) error {
	rel, err := entryPath(hdr.Name)
	if err != nil {
		return err
	}
	if strings.ContainsRune(hdr.Linkname, 0) {
		return unsafeEntry(hdr.Name, "link target contains a NUL byte")
	}
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil // metadata only; archive/tar already applied what matters
	case tar.TypeChar, tar.TypeBlock:
		return unsafeEntry(hdr.Name, "device nodes are not allowed in a release")
	case tar.TypeFifo:
		return unsafeEntry(hdr.Name, "fifos are not allowed in a release")
	case tar.TypeDir, tar.TypeReg, tar.TypeSymlink, tar.TypeLink:
	default:
		return unsafeEntry(hdr.Name, "unsupported entry type %q", hdr.Typeflag)
	}
	meta := fileMeta{mode: uint32(hdr.Mode) & 0o777, mtime: unix.NsecToTimespec(hdr.ModTime.UnixNano())}

	if rel == "" {
		if hdr.Typeflag != tar.TypeDir {
			return unsafeEntry(hdr.Name, "the archive root must be a directory")
		}
		t.dirMode[""] = meta
		return nil
	}

	dirfd, base, err := t.openParent(hdr.Name, rel, true)
	if err != nil {
		return err
	}
	defer unix.Close(dirfd)

	var st unix.Stat_t
	exists := unix.Fstatat(dirfd, base, &st, unix.AT_SYMLINK_NOFOLLOW) == nil
	existingDir := exists && st.Mode&unix.S_IFMT == unix.S_IFDIR

	if hdr.Typeflag == tar.TypeDir {
		switch {
		case existingDir:
		case exists:
			return unsafeEntry(hdr.Name, "a directory would replace an earlier entry of another type")
		default:
			if err := unix.Mkdirat(dirfd, base, 0o700); err != nil {
				return fmt.Errorf("create directory %q: %w", hdr.Name, err)
			}
		}
		t.dirMode[rel] = meta
		return nil
	}

	if existingDir {
		return unsafeEntry(hdr.Name, "would replace a directory")
	}
	if exists {
		// A later entry replaces an earlier file, as tar does; unlinkat removes a symlink itself, never
		// its target.
		if err := unix.Unlinkat(dirfd, base, 0); err != nil {
			return fmt.Errorf("replace %q: %w", hdr.Name, err)
		}
	}

	switch hdr.Typeflag {
	case tar.TypeReg:
		return t.writeFile(hdr.Name, dirfd, base, meta, r)
	case tar.TypeSymlink:
		if hdr.Linkname == "" {
			return unsafeEntry(hdr.Name, "symlink with an empty target")
		}
		if err := t.checkLink(hdr.Name, path.Dir(rel), hdr.Linkname); err != nil {
			return err
		}
		if err := unix.Symlinkat(hdr.Linkname, dirfd, base); err != nil {
			return fmt.Errorf("create symlink %q: %w", hdr.Name, err)
		}
		return nil
	default: // tar.TypeLink
		return t.hardLink(hdr, dirfd, base)
	}
}

func (t *tree) writeFile(name string, dirfd int, base string, meta fileMeta, r io.Reader) error {
	fd, err := unix.Openat(dirfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("create %q: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	if _, err := io.Copy(f, r); err != nil {
		return fmt.Errorf("write %q: %w", name, err)
	}
	// Fchmod after writing: the file is created 0600 so a half-written executable is never runnable.
	if err := unix.Fchmod(fd, meta.mode); err != nil {
		return fmt.Errorf("chmod %q: %w", name, err)
	}
	if err := unix.UtimesNanoAt(dirfd, base, []unix.Timespec{meta.mtime, meta.mtime}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times on %q: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %q: %w", name, err)
	}
	return nil
}

func (t *tree) hardLink(hdr *tar.Header, dirfd int, base string) error {
	if hdr.Linkname == "" {
		return unsafeEntry(hdr.Name, "hard link with an empty target")
	}
	if path.IsAbs(hdr.Linkname) {
		return unsafeEntry(hdr.Name, "hard link to an absolute path %q", hdr.Linkname)
	}
	target, err := entryPath(hdr.Linkname)
	if err != nil || target == "" {
		return unsafeEntry(hdr.Name, "hard link target %q escapes the release directory", hdr.Linkname)
	}
	tdir, tbase, err := t.openParent(hdr.Name, target, false)
	if err != nil {
		return err
	}
	defer unix.Close(tdir)
	var st unix.Stat_t
	if err := unix.Fstatat(tdir, tbase, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return unsafeEntry(hdr.Name, "hard link target %q is not an earlier entry of the archive", hdr.Linkname)
	}
	// A hard link to a symlink would copy a relative target to a new place where it means something else.
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return unsafeEntry(hdr.Name, "hard link target %q is not a regular file", hdr.Linkname)
	}
	if err := unix.Linkat(tdir, tbase, dirfd, base, 0); err != nil {
		return fmt.Errorf("create hard link %q: %w", hdr.Name, err)
	}
	return nil
}

// openParent opens the directory that holds rel, one component at a time with O_NOFOLLOW, creating the
// missing ones when create is set. A component that is a symlink (or not a directory) refuses the entry.
func (t *tree) openParent(entry, rel string, create bool) (int, string, error) {
	dir, base := path.Split(rel)
	fd, err := unix.Dup(t.rootFD)
	if err != nil {
		return -1, "", fmt.Errorf("open %s: %w", t.root, err)
	}
	walked := ""
	for _, c := range strings.Split(strings.TrimSuffix(dir, "/"), "/") {
		if c == "" {
			continue
		}
		walked = path.Join(walked, c)
		next, err := unix.Openat(fd, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) && create {
			if err = unix.Mkdirat(fd, c, 0o700); err == nil {
				// Implicit parents get the usual mode unless the archive names them later.
				if _, named := t.dirMode[walked]; !named {
					t.dirMode[walked] = fileMeta{mode: 0o755, mtime: unix.Timespec{Nsec: unix.UTIME_OMIT}}
				}
				next, err = unix.Openat(fd, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			}
		}
		if errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
			// Linux reports a symlink opened with O_NOFOLLOW|O_DIRECTORY as ENOTDIR; say which it was.
			var st unix.Stat_t
			if unix.Fstatat(fd, c, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
				err = unix.ELOOP
			}
		}
		unix.Close(fd)
		switch {
		case errors.Is(err, unix.ELOOP):
			return -1, "", unsafeEntry(entry, "path goes through the symlink %q", walked)
		case errors.Is(err, unix.ENOTDIR):
			return -1, "", unsafeEntry(entry, "path goes through %q, which is not a directory", walked)
		case errors.Is(err, unix.ENOENT):
			return -1, "", unsafeEntry(entry, "path goes through %q, which does not exist", walked)
		case err != nil:
			return -1, "", fmt.Errorf("open %q: %w", walked, err)
		}
		fd = next
	}
	return fd, base, nil
}

// checkLink resolves a symlink target placed in linkDir against the tree as it stands, following links
// already extracted as the kernel would, and refuses it if the resolution ever leaves the root.
func (t *tree) checkLink(entry, linkDir, target string) error {
	if path.IsAbs(target) {
		return unsafeEntry(entry, "symlink to an absolute path %q", target)
	}
	var stack []string
	if linkDir != "." {
		stack = strings.Split(linkDir, "/")
	}
	rest := strings.Split(target, "/")
	hops := 0
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(stack) == 0 {
				return unsafeEntry(entry, "symlink target %q resolves outside the release directory", target)
			}
			stack = stack[:len(stack)-1]
			continue
		}
		// Every component of stack is a real directory (links were expanded on the way), so this Lstat
		// resolves nothing but the last component, which it does not follow.
		p := filepath.Join(append([]string{t.root}, append(stack, c)...)...)
		fi, err := os.Lstat(p)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			// Missing (dangling so far) or a plain entry: the rest is taken as written. checkAllLinks looks
			// again once the tree is complete.
			stack = append(stack, c)
			continue
		}
		hops++
		if hops > maxLinkHops {
			return unsafeEntry(entry, "symlink target %q goes through too many links", target)
		}
		next, err := os.Readlink(p)
		if err != nil {
			return fmt.Errorf("read link %q: %w", path.Join(append(stack, c)...), err)
		}
		if path.IsAbs(next) {
			return unsafeEntry(entry, "symlink target %q goes through a link to the absolute path %q", target, next)
		}
		rest = append(strings.Split(next, "/"), rest...)
	}
	return nil
}

func (t *tree) checkAllLinks() error {
	return filepath.WalkDir(t.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink == 0 {
			return nil
		}
		rel, err := filepath.Rel(t.root, p)
		if err != nil {
			return err
		}
		target, err := os.Readlink(p)
		if err != nil {
			return fmt.Errorf("read link %q: %w", rel, err)
		}
		return t.checkLink(filepath.ToSlash(rel), path.Dir(filepath.ToSlash(rel)), target)
	})
}

// applyDirModes sets directory modes and times last, deepest first, so a read-only directory in the
// archive does not stop its own contents from being written and a parent's mtime is not bumped again.
func (t *tree) applyDirModes() error {
	dirs := make([]string, 0, len(t.dirMode))
	for d := range t.dirMode {
		dirs = append(dirs, d)
	}
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	for _, d := range dirs {
		meta := t.dirMode[d]
		var fd int
		var err error
		if d == "" {
			fd, err = unix.Dup(t.rootFD)
		} else {
			var parent int
			var base string
			parent, base, err = t.openParent(d, d, false)
			if err == nil {
				fd, err = unix.Openat(parent, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
				unix.Close(parent)
			}
		}
		if err != nil {
			return fmt.Errorf("set mode of directory %q: %w", d, err)
		}
		err = unix.Fchmod(fd, meta.mode|0o700)
		if err == nil {
			err = futimens(fd, meta.mtime)
		}
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("set mode of directory %q: %w", d, err)
		}
	}
	return nil
}

// futimens sets both times of an open file through its /proc/self/fd entry (the kernel resolves that to
// the open file itself, never to a path); UTIME_OMIT leaves them alone.
func futimens(fd int, ts unix.Timespec) error {
	return unix.UtimesNanoAt(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), []unix.Timespec{ts, ts}, 0)
}
