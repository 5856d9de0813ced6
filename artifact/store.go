package artifact

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/shoal-ci/shoal/internal/fsutil"
)

// Errors callers tell apart with errors.Is.
var (
	ErrUnknown      = errors.New("artifact is not in the store")
	ErrMissing      = errors.New("piece is not held")
	ErrBadPiece     = errors.New("piece does not match the artifact's meta")
	ErrCorrupt      = errors.New("stored data failed verification")
	ErrIncomplete   = errors.New("artifact is not complete")
	ErrMetaMismatch = errors.New("meta differs from the one stored for this digest")
)

const (
	tmpSuffix   = ".tmp"
	trashPrefix = ".trash-"
	metaFile    = "meta.json"
	partialFile = "partial"
	haveFile    = "have"
)

// Store keeps artifacts in one directory (a node's blobs/):
//
//	<digest>/meta.json   the artifact's Meta, written (and synced) before anything else
//	<digest>/partial     the archive being downloaded: each piece is written in place at its offset
//	<digest>/have        the bitmap of pieces written into partial, one byte updated per piece
//	<digest>.tar.gz      the complete archive: partial, renamed once its whole digest checks
//
// A piece counts as held only after its bytes are written, and New checks every held piece's sha256 again, so
// a crash at any point costs at most the pieces written since (never a wrong byte). Files that must appear whole
// (meta.json, the archive, imports) appear by rename from a *.tmp sibling that New removes.
type Store struct {
	dir string
	log *slog.Logger

	mu      sync.Mutex
	arts    map[string]*entry
	changed chan struct{} // closed and replaced on every change, so watchers can wait without polling
}

type entry struct {
	meta       Meta
	have       Bitfield
	complete   bool     // data is the verified archive <digest>.tar.gz
	data       *os.File // partial, or the archive once complete; pieces are read and written through it
	haveF      *os.File // the have bitmap; nil once complete
	assembling bool     // an assembly owns the transition to complete; no second one starts
	removed    bool
}

// New opens (creating if needed) the store in dir. It removes temp files left by a crash and drops every held
// piece that fails its sha256, so downloads resume from exactly the pieces that are good.
func New(dir string, logger *slog.Logger) (*Store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("open artifact store: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{dir: dir, log: logger, arts: map[string]*entry{}, changed: make(chan struct{})}
	if err := s.load(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Close releases the store's open files. The store must not be used afterwards.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, e := range s.arts {
		errs = append(errs, e.closeFiles())
	}
	return errors.Join(errs...)
}

func (e *entry) closeFiles() error {
	var errs []error
	if e.data != nil {
		errs = append(errs, e.data.Close())
		e.data = nil
	}
	if e.haveF != nil {
		errs = append(errs, e.haveF.Close())
		e.haveF = nil
	}
	return errors.Join(errs...)
}

// Dir is the directory the store lives in.
func (s *Store) Dir() string { return s.dir }

func (s *Store) artDir(d string) string      { return filepath.Join(s.dir, d) }
func (s *Store) archivePath(d string) string { return filepath.Join(s.dir, d+".tar.gz") }
func (s *Store) partialPath(d string) string { return filepath.Join(s.dir, d, partialFile) }
func (s *Store) havePath(d string) string    { return filepath.Join(s.dir, d, haveFile) }

func (s *Store) load() error {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("open artifact store: %w", err)
	}
	for _, de := range ents {
		name := de.Name()
		if strings.HasSuffix(name, tmpSuffix) || strings.HasPrefix(name, trashPrefix) {
			if err := os.RemoveAll(filepath.Join(s.dir, name)); err != nil {
				return fmt.Errorf("open artifact store: remove leftover %s: %w", name, err)
			}
		}
	}
	for _, de := range ents {
		if de.IsDir() && ValidDigest(de.Name()) {
			if err := s.loadArtifact(de.Name()); err != nil {
				return err
			}
		}
	}
	for _, de := range ents {
		d, ok := strings.CutSuffix(de.Name(), ".tar.gz")
		if ok && ValidDigest(d) && s.arts[d] == nil {
			// An archive without its directory is what a crash in the middle of Remove leaves.
			s.log.Info("removing archive without meta", "digest", short(d))
			if err := os.Remove(filepath.Join(s.dir, de.Name())); err != nil {
				return fmt.Errorf("open artifact store: %w", err)
			}
		}
	}
	for d, e := range s.arts {
		if !e.complete && e.have.Count() == e.meta.NumPieces() {
			// Crashed between the last piece and the archive's rename.
			e.assembling = true
			if err := s.assemble(e); err != nil {
				s.log.Warn("could not assemble complete artifact", "digest", short(d), "err", err)
			}
		}
	}
	return nil
}

func (s *Store) loadArtifact(d string) error {
	dir := s.artDir(d)
	meta, err := readMeta(filepath.Join(dir, metaFile))
	if err == nil && meta.Digest != d {
		err = fmt.Errorf("meta names digest %s", short(meta.Digest))
	}
	if err != nil {
		// meta.json is written before anything else, so a directory without a good one holds nothing usable.
		s.log.Warn("dropping artifact with unreadable meta", "digest", short(d), "err", err)
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("open artifact store: %w", err)
		}
		if err := os.Remove(s.archivePath(d)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("open artifact store: %w", err)
		}
		return nil
	}
	files, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("open artifact store: %w", err)
	}
	for _, f := range files {
		if strings.HasSuffix(f.Name(), tmpSuffix) {
			if err := os.Remove(filepath.Join(dir, f.Name())); err != nil {
				return fmt.Errorf("open artifact store: %w", err)
			}
		}
	}
	e := &entry{meta: meta, have: NewBitfield(meta.NumPieces())}
	if fi, err := os.Stat(s.archivePath(d)); err == nil {
		if fi.Size() == meta.Size {
			// The archive was checked whole when it was assembled and is checked piece by piece on every read;
			// hashing every archive at start-up would cost more than it finds.
			if e.data, err = openArchive(s.archivePath(d)); err != nil {
				return fmt.Errorf("open artifact store: %w", err)
			}
			e.complete = true
			e.setAll()
			s.arts[d] = e
			for _, p := range []string{s.partialPath(d), s.havePath(d)} {
				if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return fmt.Errorf("open artifact store: %w", err)
				}
			}
			return nil
		}
		s.log.Warn("dropping archive of the wrong size", "digest", short(d), "size", fi.Size(), "want", meta.Size)
		if err := os.Remove(s.archivePath(d)); err != nil {
			return fmt.Errorf("open artifact store: %w", err)
		}
	}
	if err := s.openPartial(e); err != nil {
		return fmt.Errorf("open artifact store: %w", err)
	}
	s.arts[d] = e
	recorded := make(Bitfield, len(e.have))
	if _, err := io.ReadFull(e.haveF, recorded); err != nil || !recorded.Fits(meta.NumPieces()) {
		s.log.Warn("artifact's piece bitmap is unreadable; fetching its pieces again", "digest", short(d), "err", err)
		recorded = NewBitfield(meta.NumPieces())
	}
	dropped := 0
	buf := make([]byte, meta.PieceSize)
	for i := range meta.NumPieces() {
		if !recorded.Has(i) {
			continue
		}
		p := buf[:meta.PieceLen(i)]
		_, err := e.data.ReadAt(p, int64(i)*meta.PieceSize)
		if err == nil {
			err = meta.CheckPiece(i, p)
		}
		if err != nil {
			dropped++
			s.log.Warn("dropping stored piece that fails verification", "digest", short(d), "piece", i, "err", err)
			continue
		}
		e.have.Set(i)
	}
	if _, err := e.haveF.WriteAt(e.have, 0); err != nil {
		return fmt.Errorf("open artifact store: %w", err)
	}
	s.log.Debug("loaded artifact", "digest", short(d), "pieces", e.have.Count(), "of", meta.NumPieces(), "dropped", dropped)
	return nil
}

// openPartial opens (creating) the partial archive and the bitmap of an incomplete artifact.
func (s *Store) openPartial(e *entry) error {
	d := e.meta.Digest
	var err error
	if e.data, err = os.OpenFile(s.partialPath(d), os.O_RDWR|os.O_CREATE, 0o644); err != nil {
		return err
	}
	if e.haveF, err = os.OpenFile(s.havePath(d), os.O_RDWR|os.O_CREATE, 0o644); err != nil {
		e.data.Close()
		e.data = nil
		return err
	}
	return nil
}

// openArchive opens a complete archive for reading and writing: should a piece of it fail verification, the
// archive becomes a partial download again, and the piece is written back into the same file.
func openArchive(path string) (*os.File, error) { return os.OpenFile(path, os.O_RDWR, 0) }

func (e *entry) setAll() {
	for i := range e.meta.NumPieces() {
		e.have.Set(i)
	}
}

func readMeta(path string) (Meta, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Meta{}, err
	}
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return Meta{}, err
	}
	return m, m.Validate()
}

// Register records an artifact (creating its directory and meta) so that its pieces can be stored and its
// bitfield served, and returns the pieces already held. Registering the same meta again is harmless.
func (s *Store) Register(meta Meta) (Bitfield, error) {
	e, err := s.entryFor(meta)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return e.have.Clone(), nil
}

// entryFor returns the entry for meta, registering it on first use. Later calls compare only the cheap fields:
// comparing every piece digest on each WritePiece would cost O(pieces²) over a download.
func (s *Store) entryFor(meta Meta) (*entry, error) {
	s.mu.Lock()
	if e := s.arts[meta.Digest]; e != nil {
		s.mu.Unlock()
		if e.meta.Size != meta.Size || e.meta.PieceSize != meta.PieceSize || len(e.meta.Pieces) != len(meta.Pieces) {
			return nil, fmt.Errorf("artifact %s: %w", short(meta.Digest), ErrMetaMismatch)
		}
		return e, nil
	}
	s.mu.Unlock()
	if err := meta.Validate(); err != nil {
		return nil, err
	}
	meta.Pieces = append([]string(nil), meta.Pieces...)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.arts[meta.Digest]; e != nil { // registered while we validated
		if !e.meta.equal(meta) {
			return nil, fmt.Errorf("artifact %s: %w", short(meta.Digest), ErrMetaMismatch)
		}
		return e, nil
	}
	dir := s.artDir(meta.Digest)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("register artifact %s: %w", short(meta.Digest), err)
	}
	b, err := json.Marshal(meta)
	if err != nil {
		return nil, fmt.Errorf("register artifact %s: %w", short(meta.Digest), err)
	}
	if err := fsutil.WriteAtomic(filepath.Join(dir, metaFile), b, 0o600); err != nil {
		return nil, fmt.Errorf("register artifact %s: %w", short(meta.Digest), err)
	}
	e := &entry{meta: meta, have: NewBitfield(meta.NumPieces())}
	if err := s.openPartial(e); err != nil {
		return nil, fmt.Errorf("register artifact %s: %w", short(meta.Digest), err)
	}
	if _, err := e.haveF.WriteAt(e.have, 0); err != nil {
		e.closeFiles()
		return nil, fmt.Errorf("register artifact %s: %w", short(meta.Digest), err)
	}
	s.arts[meta.Digest] = e
	s.notifyLocked()
	return e, nil
}

// WritePiece verifies data against piece i of meta and stores it (keeping no reference to data). A piece already
// held is not written again.
// The write that completes the artifact checks the whole archive's digest before it returns.
func (s *Store) WritePiece(meta Meta, i int, data []byte) error {
	e, err := s.entryFor(meta)
	if err != nil {
		return err
	}
	if i >= 0 && i < len(meta.Pieces) && meta.Pieces[i] != e.meta.Pieces[i] {
		return fmt.Errorf("piece %d of %s: %w", i, short(meta.Digest), ErrMetaMismatch)
	}
	if err := e.meta.CheckPiece(i, data); err != nil {
		return err
	}
	s.mu.Lock()
	if e.have.Has(i) || e.removed {
		s.mu.Unlock()
		return nil
	}
	f := e.data
	s.mu.Unlock()
	// In place and without fsync: the bit is set only after the bytes are written, and New checks every piece
	// the bitmap names, so a torn write costs that piece, never a wrong byte.
	_, werr := f.WriteAt(data, int64(i)*e.meta.PieceSize)

	s.mu.Lock()
	if e.have.Has(i) || e.removed || e.complete {
		s.mu.Unlock()
		return nil // completed (Put) or removed meanwhile: nothing left to do
	}
	if werr != nil {
		s.mu.Unlock()
		return fmt.Errorf("store piece %d of %s: %w", i, short(meta.Digest), werr)
	}
	e.have.Set(i)
	if _, err := e.haveF.WriteAt(e.have[i/8:i/8+1], int64(i/8)); err != nil {
		// The piece is held for this run; the next New will not know it and fetches it again.
		s.log.Warn("could not record stored piece", "digest", short(meta.Digest), "piece", i, "err", err)
	}
	s.notifyLocked()
	start := !e.assembling && e.have.Count() == e.meta.NumPieces()
	if start {
		e.assembling = true
	}
	s.mu.Unlock()
	if start {
		return s.assemble(e)
	}
	return nil
}

// assemble checks the whole digest of a partial archive whose pieces are all written, makes it durable and
// renames it into place: no copy, the archive is the file the pieces were written into.
func (s *Store) assemble(e *entry) error {
	err := s.finishArchive(e)
	s.mu.Lock()
	defer s.mu.Unlock()
	e.assembling = false
	if e.complete || e.removed {
		return nil // a Put installed the archive meanwhile, or the artifact was removed
	}
	if err != nil {
		return err
	}
	e.complete = true
	if e.haveF != nil {
		e.haveF.Close()
		e.haveF = nil
	}
	if err := os.Remove(s.havePath(e.meta.Digest)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("could not remove the bitmap of an assembled artifact", "digest", short(e.meta.Digest), "err", err)
	}
	s.notifyLocked()
	s.log.Debug("assembled artifact", "digest", short(e.meta.Digest), "size", e.meta.Size)
	return nil
}

func (s *Store) finishArchive(e *entry) error {
	d := e.meta.Digest
	s.mu.Lock()
	f := e.data
	s.mu.Unlock()
	if err := f.Truncate(e.meta.Size); err != nil {
		return fmt.Errorf("assemble %s: %w", short(d), err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, e.meta.Size)); err != nil {
		return fmt.Errorf("assemble %s: %w", short(d), err)
	}
	if hex.EncodeToString(h.Sum(nil)) != d {
		if bad := s.dropBadPieces(e); bad > 0 {
			return fmt.Errorf("assemble %s: %d stored pieces changed on disk and were dropped; fetch them again: %w",
				short(d), bad, ErrCorrupt)
		}
		return fmt.Errorf("assemble %s: every piece matches its digest but the archive does not match the artifact digest; "+
			"the release's meta is wrong and must be recorded again: %w", short(d), ErrCorrupt)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("assemble %s: %w", short(d), err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.removed || e.complete {
		return nil
	}
	if err := os.Rename(s.partialPath(d), s.archivePath(d)); err != nil {
		return fmt.Errorf("assemble %s: %w", short(d), err)
	}
	return fsutil.SyncDir(s.dir)
}

// dropBadPieces rechecks every held piece and drops those that fail.
func (s *Store) dropBadPieces(e *entry) int {
	bad := 0
	var buf []byte
	for i := range e.meta.NumPieces() {
		data, err := s.readAt(e, i, buf)
		buf = data
		if err == nil {
			err = e.meta.CheckPiece(i, data)
		}
		if err != nil {
			bad++
			s.dropPiece(e, i, err)
		}
	}
	return bad
}

// dropPiece forgets a piece that failed verification. A complete archive goes back to being partial (renamed,
// not copied), so one bad sector costs one piece to fetch again rather than the whole archive.
func (s *Store) dropPiece(e *entry, i int, why error) {
	s.log.Warn("dropping stored piece that fails verification; it will be fetched again",
		"digest", short(e.meta.Digest), "piece", i, "err", why)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.removed || !e.have.Has(i) {
		return
	}
	d := e.meta.Digest
	if e.complete {
		haveF, err := os.OpenFile(s.havePath(d), os.O_RDWR|os.O_CREATE, 0o644)
		if err == nil {
			err = os.Rename(s.archivePath(d), s.partialPath(d))
		}
		if err != nil {
			s.log.Error("could not turn a corrupt archive back into a partial one", "digest", short(d), "err", err)
			if haveF != nil {
				haveF.Close()
			}
			return
		}
		e.haveF = haveF
		e.complete = false
	}
	e.have.Clear(i)
	if _, err := e.haveF.WriteAt(e.have, 0); err != nil {
		s.log.Warn("could not record dropped piece", "digest", short(d), "piece", i, "err", err)
	}
	s.notifyLocked()
}

func (s *Store) readAt(e *entry, i int, buf []byte) ([]byte, error) {
	s.mu.Lock()
	f := e.data
	s.mu.Unlock()
	if f == nil {
		return nil, fs.ErrClosed
	}
	if n := int(e.meta.PieceLen(i)); cap(buf) >= n {
		buf = buf[:n]
	} else {
		buf = make([]byte, n)
	}
	n, err := f.ReadAt(buf, int64(i)*e.meta.PieceSize)
	if errors.Is(err, io.EOF) {
		return buf[:n], nil // a short file: the check that follows reports it
	}
	return buf, err
}

// ReadPiece returns piece i of the artifact, verified against its sha256. A piece that fails is dropped from the
// store (the artifact becomes incomplete and must be fetched again) and ErrCorrupt is returned.
func (s *Store) ReadPiece(digest string, i int) ([]byte, error) {
	return s.ReadPieceInto(digest, i, nil)
}

// ReadPieceInto is ReadPiece reading into buf when it has the capacity (a server reuses its buffers instead of
// allocating one per piece sent). The piece returned shares buf's memory then.
func (s *Store) ReadPieceInto(digest string, i int, buf []byte) ([]byte, error) {
	s.mu.Lock()
	e := s.arts[digest]
	if e == nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("read piece %d of %s: %w", i, short(digest), ErrUnknown)
	}
	if !e.have.Has(i) {
		s.mu.Unlock()
		return nil, fmt.Errorf("read piece %d of %s: %w", i, short(digest), ErrMissing)
	}
	s.mu.Unlock()
	data, err := s.readAt(e, i, buf)
	if errors.Is(err, fs.ErrClosed) {
		// The file was replaced (a Put) or closed (a Remove) under us: ask again.
		s.mu.Lock()
		held := s.arts[digest] == e && e.have.Has(i)
		s.mu.Unlock()
		if !held {
			return nil, fmt.Errorf("read piece %d of %s: %w", i, short(digest), ErrMissing)
		}
		data, err = s.readAt(e, i, buf)
	}
	if err == nil {
		err = e.meta.CheckPiece(i, data)
	}
	if err != nil {
		s.dropPiece(e, i, err)
		return nil, fmt.Errorf("read piece %d of %s: dropped; fetch it again: %v: %w", i, short(digest), err, ErrCorrupt)
	}
	return data, nil
}

// Have returns a copy of the artifact's bitfield, or nil if the store does not know the artifact.
func (s *Store) Have(digest string) Bitfield {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.arts[digest]; e != nil {
		return e.have.Clone()
	}
	return nil
}

// Complete reports whether the artifact's archive is assembled and verified.
func (s *Store) Complete(digest string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.arts[digest]
	return e != nil && e.complete
}

// Meta returns the stored meta of an artifact.
func (s *Store) Meta(digest string) (Meta, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.arts[digest]; e != nil {
		return e.meta, true
	}
	return Meta{}, false
}

// List returns the metas of every artifact in the store, complete or not, ordered by digest.
func (s *Store) List() []Meta {
	s.mu.Lock()
	out := make([]Meta, 0, len(s.arts))
	for _, e := range s.arts {
		out = append(out, e.meta)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Digest < out[j].Digest })
	return out
}

// Changed returns a channel that is closed at the next change to any artifact's pieces.
func (s *Store) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

func (s *Store) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// Open returns the assembled archive. The reader checks the whole digest as it goes: the Read that reaches the
// end returns ErrCorrupt if the bytes were not the artifact's (the caller must then discard what it read), and
// the store keeps only the pieces that still verify.
func (s *Store) Open(digest string) (io.ReadCloser, error) {
	s.mu.Lock()
	e := s.arts[digest]
	complete := e != nil && e.complete
	s.mu.Unlock()
	if e == nil {
		return nil, fmt.Errorf("open artifact %s: %w", short(digest), ErrUnknown)
	}
	if !complete {
		return nil, fmt.Errorf("open artifact %s: %w", short(digest), ErrIncomplete)
	}
	f, err := os.Open(s.archivePath(digest))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("open artifact %s: %w", short(digest), ErrIncomplete)
	}
	if err != nil {
		return nil, fmt.Errorf("open artifact %s: %w", short(digest), err)
	}
	return &verifyingReader{f: f, h: sha256.New(), e: e, s: s}, nil
}

type verifyingReader struct {
	f    *os.File
	h    hash.Hash
	n    int64
	e    *entry
	s    *Store
	done error
}

func (r *verifyingReader) Read(p []byte) (int, error) {
	if r.done != nil {
		return 0, r.done
	}
	n, err := r.f.Read(p)
	r.h.Write(p[:n])
	r.n += int64(n)
	if err == io.EOF {
		if r.n != r.e.meta.Size || hex.EncodeToString(r.h.Sum(nil)) != r.e.meta.Digest {
			bad := r.s.dropBadPieces(r.e)
			err = fmt.Errorf("read artifact %s: the archive (%d bytes) does not match its digest; %d pieces dropped, fetch them again: %w",
				short(r.e.meta.Digest), r.n, bad, ErrCorrupt)
		}
		r.done = err
	}
	return n, err
}

func (r *verifyingReader) Close() error { return r.f.Close() }

// Put stores a whole archive (the builder's) under meta, checking that the bytes match it. If the archive is
// already complete, r is not read.
func (s *Store) Put(meta Meta, r io.Reader) error {
	if err := meta.Validate(); err != nil {
		return err
	}
	if s.Complete(meta.Digest) {
		return nil
	}
	tmp, got, err := s.ingest(r, meta.PieceSize)
	if err != nil {
		return err
	}
	if !got.equal(meta) {
		os.Remove(tmp)
		return fmt.Errorf("put artifact %s: the archive read (%d bytes, sha256 %s) does not match its meta: %w",
			short(meta.Digest), got.Size, short(got.Digest), ErrBadPiece)
	}
	return s.install(meta, tmp)
}

// Import stores a whole archive, computing its meta with pieces of pieceSize; it is how a builder adds the
// archive it has just packaged.
func (s *Store) Import(r io.Reader, pieceSize int64) (Meta, error) {
	tmp, meta, err := s.ingest(r, pieceSize)
	if err != nil {
		return Meta{}, err
	}
	return meta, s.install(meta, tmp)
}

func (s *Store) ingest(r io.Reader, pieceSize int64) (string, Meta, error) {
	f, err := os.CreateTemp(s.dir, "import.*"+tmpSuffix)
	if err != nil {
		return "", Meta{}, fmt.Errorf("store archive: %w", err)
	}
	meta, err := describe(r, f, pieceSize)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", Meta{}, fmt.Errorf("store archive: %w", err)
	}
	return f.Name(), meta, nil
}

func (s *Store) install(meta Meta, tmp string) error {
	defer os.Remove(tmp) // no-op once renamed
	e, err := s.entryFor(meta)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.complete || e.removed {
		return nil
	}
	d := meta.Digest
	if err := os.Rename(tmp, s.archivePath(d)); err != nil {
		return fmt.Errorf("store archive %s: %w", short(d), err)
	}
	if err := fsutil.SyncDir(s.dir); err != nil {
		return fmt.Errorf("store archive %s: %w", short(d), err)
	}
	f, err := openArchive(s.archivePath(d))
	if err != nil {
		return fmt.Errorf("store archive %s: %w", short(d), err)
	}
	// Writers still holding the partial file write into an unlinked file: harmless, their pieces are here.
	e.closeFiles()
	e.data = f
	e.complete = true
	e.setAll()
	for _, p := range []string{s.partialPath(d), s.havePath(d)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("could not remove partial download made redundant by the archive", "digest", short(d), "err", err)
		}
	}
	s.notifyLocked()
	return nil
}
