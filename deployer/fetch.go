package deployer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/shoal-ci/shoal/artifact"
	"github.com/shoal-ci/shoal/raftfsm"
)

// Fetcher makes a release's archive present and verified in this node's artifact store, then opens it.
// The mesh's fetcher (package spread) downloads pieces from peers and records this node as a holder of the
// release; StoreFetcher copies from local stores and records nothing.
type Fetcher interface {
	Fetch(ctx context.Context, rel *raftfsm.Release, progress func(done, total int64)) error
	Open(digest string) (io.ReadCloser, error)
}

// MetaOf is the artifact meta a release record describes: what every byte fetched is checked against.
func MetaOf(rel *raftfsm.Release) artifact.Meta {
	return artifact.Meta{Digest: rel.Digest, Size: rel.Size, PieceSize: rel.PieceSize, Pieces: rel.Pieces}
}

// StoreFetcher fills Store from archives that are already on this machine: other stores (a node's own
// builder, or the stores of in-process test nodes) or a directory of <digest>.tar.gz files (a shared
// mount). Every byte is checked against the release's digests by Store.Put, so a source is trusted for
// nothing. It is the fetcher of single-node meshes and of tests; a mesh of servers uses the swarm.
type StoreFetcher struct {
	Store   *artifact.Store
	Sources []*artifact.Store
	Dirs    []string
}

// Fetch copies the release's archive into Store from the first source that has it whole.
func (f *StoreFetcher) Fetch(ctx context.Context, rel *raftfsm.Release, progress func(done, total int64)) error {
	meta := MetaOf(rel)
	if f.Store.Complete(meta.Digest) {
		report(progress, meta.Size, meta.Size)
		return nil
	}
	open := func() (io.ReadCloser, error) {
		for _, src := range f.Sources {
			if src != nil && src.Complete(meta.Digest) {
				return src.Open(meta.Digest)
			}
		}
		if artifact.ValidDigest(meta.Digest) {
			for _, dir := range f.Dirs {
				rc, err := os.Open(filepath.Join(dir, meta.Digest+".tar.gz"))
				if err == nil {
					return rc, nil
				}
				if !errors.Is(err, os.ErrNotExist) {
					return nil, err
				}
			}
		}
		return nil, fmt.Errorf("release %s of app %s (archive %.12s): %w: it is in none of this node's sources; build it or copy it here first",
			rel.Version, rel.App, meta.Digest, raftfsm.ErrNoLiveHolder)
	}
	rc, err := open()
	if err != nil {
		return err
	}
	defer rc.Close()
	src := &progressReader{ctx: ctx, r: rc, total: meta.Size, progress: progress}
	if err := f.Store.Put(meta, src); err != nil {
		return fmt.Errorf("fetch release %s of %s: %w", rel.Version, rel.App, err)
	}
	report(progress, meta.Size, meta.Size)
	return nil
}

// Open opens a complete archive of Store; the reader reports corruption at its end.
func (f *StoreFetcher) Open(digest string) (io.ReadCloser, error) { return f.Store.Open(digest) }

func report(progress func(done, total int64), done, total int64) {
	if progress != nil {
		progress(done, total)
	}
}

// progressReader counts bytes for the progress callback and stops at ctx's end.
type progressReader struct {
	ctx      context.Context
	r        io.Reader
	done     int64
	total    int64
	progress func(done, total int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	if err := p.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := p.r.Read(b)
	p.done += int64(n)
	report(p.progress, p.done, p.total)
	return n, err
}
