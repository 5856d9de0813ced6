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
	"strconv"
	"strings"
	"sync"
	"time"
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
	pieceSuffix = ".piece"
)

// Store keeps artifacts in one directory (a node's blobs/):
//
//	<digest>/meta.json      the artifact's Meta, written before any piece
//	<digest>/<i>.piece      piece i, present only while the artifact is incomplete
//	<digest>.tar.gz         the assembled archive, once every piece is held
//
// Every file appears by rename from a *.tmp sibling, so a crash leaves either the whole file or a temp file that
// the next New removes. The piece files are the persisted bitmap: New rebuilds the bitmap by checking each one.
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
	complete   bool // the verified archive exists; pieces are read from it
	assembling bool // an assembly or salvage owns the files; no second one starts
	removed    bool
}

// New opens (creating if needed) the store in dir. It removes temp files left by a crash and drops any stored
// piece that fails its sha256, so downloads resume from exactly the pieces that are good.
func New(dir string, logger *slog.Logger) (*Store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("open artifact store: %w", err)
	}
	s := &Store{dir: dir, log: logger, arts: map[string]*entry{}, changed: make(chan struct{})}
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

// Dir is the directory the store lives in.
func (s *Store) Dir() string { return s.dir }

func (s *Store) artDir(d string) string      { return filepath.Join(s.dir, d) }
func (s *Store) archivePath(d string) string { return filepath.Join(s.dir, d+".tar.gz") }
func (s *Store) piecePath(d string, i int) string {
	return filepath.Join(s.dir, d, strconv.Itoa(i)+pieceSuffix)
}

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
		return nil
	}
	e := &entry{meta: meta, have: NewBitfield(meta.NumPieces())}
	s.arts[d] = e

	files, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("open artifact store: %w", err)
	}
	if fi, err := os.Stat(s.archivePath(d)); err == nil {
		if fi.Size() == meta.Size {
			// The archive is verified as a whole when it is assembled and piece by piece on every read; hashing
			// every archive at start-up would cost more than it finds.
			e.complete = true
			for i := range meta.NumPieces() {
				e.have.Set(i)
			}
		} else {
			s.log.Warn("dropping archive of the wrong size", "digest", short(d), "size", fi.Size(), "want", meta.Size)
			if err := os.Remove(s.archivePath(d)); err != nil {
				return fmt.Errorf("open artifact store: %w", err)
			}
		}
	}
	dropped := 0
	for _, f := range files {
		name := f.Name()
		path := filepath.Join(dir, name)
		if strings.HasSuffix(name, tmpSuffix) {
			if err := os.Remove(path); err != nil {
				return fmt.Errorf("open artifact store: %w", err)
			}
			continue
		}
		idx, ok := strings.CutSuffix(name, pieceSuffix)
		if !ok {
			continue
		}
		i, err := strconv.Atoi(idx)
		if e.complete || err != nil || i < 0 || i >= meta.NumPieces() || strconv.Itoa(i) != idx {
			// Leftovers of an assembly that finished, or names we never write.
			if err := os.Remove(path); err != nil {
				return fmt.Errorf("open artifact store: %w", err)
			}
			continue
		}
		data, err := os.ReadFile(path)
		if err == nil {
			err = meta.CheckPiece(i, data)
		}
		if err != nil {
			dropped++
			s.log.Warn("dropping stored piece that fails verification", "digest", short(d), "piece", i, "err", err)
			if err := os.Remove(path); err != nil {
				return fmt.Errorf("open artifact store: %w", err)
			}
			continue
		}
		e.have.Set(i)
	}
	s.log.Debug("loaded artifact", "digest", short(d), "pieces", e.have.Count(), "of", meta.NumPieces(),
		"complete", e.complete, "dropped", dropped)
	return nil
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
	if err := writeFileAtomic(filepath.Join(dir, metaFile), b, true); err != nil {
		return nil, fmt.Errorf("register artifact %s: %w", short(meta.Digest), err)
	}
	e := &entry{meta: meta, have: NewBitfield(meta.NumPieces())}
	s.arts[meta.Digest] = e
	s.notifyLocked()
	return e, nil
}

// WritePiece verifies data against piece i of meta and stores it. A piece already held is not written again.
// The write that completes the artifact assembles and verifies the archive before it returns.
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
	held := e.have.Has(i)
	s.mu.Unlock()
	if held {
		return nil
	}
	// No fsync: a piece torn by a power cut fails its check when the store is next opened and is fetched again.
	if err := writeFileAtomic(s.piecePath(e.meta.Digest, i), data, false); err != nil {
		return fmt.Errorf("store piece %d of %s: %w", i, short(meta.Digest), err)
	}
	s.mu.Lock()
	if e.removed {
		s.mu.Unlock()
		return fmt.Errorf("store piece %d of %s: removed meanwhile: %w", i, short(meta.Digest), ErrUnknown)
	}
	e.have.Set(i)
	s.notifyLocked()
	start := !e.complete && !e.assembling && e.have.Count() == e.meta.NumPieces()
	if start {
		e.assembling = true
	}
	s.mu.Unlock()
	if start {
		return s.assemble(e)
	}
	return nil
}

// assemble joins the pieces into the archive, checks the whole digest, and then drops the piece files: pieces
// are served from the archive from then on, so the artifact takes its size on disk only once.
func (s *Store) assemble(e *entry) error {
	err := s.writeArchive(e)
	s.mu.Lock()
	e.assembling = false
	if err == nil && !e.removed {
		e.complete = true
		s.notifyLocked()
	}
	s.mu.Unlock()
	if err != nil {
		return err
	}
	for i := range e.meta.NumPieces() {
		if err := os.Remove(s.piecePath(e.meta.Digest, i)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("could not remove assembled piece", "digest", short(e.meta.Digest), "piece", i, "err", err)
		}
	}
	s.log.Debug("assembled artifact", "digest", short(e.meta.Digest), "size", e.meta.Size)
	return nil
}

func (s *Store) writeArchive(e *entry) error {
	d := e.meta.Digest
	f, err := os.CreateTemp(s.dir, d+".tar.gz.*"+tmpSuffix)
	if err != nil {
		return fmt.Errorf("assemble %s: %w", short(d), err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op once renamed
	defer f.Close()
	h := sha256.New()
	w := io.MultiWriter(f, h)
	for i := range e.meta.NumPieces() {
		if err := copyFile(w, s.piecePath(d, i)); err != nil {
			return fmt.Errorf("assemble %s: piece %d: %w", short(d), i, err)
		}
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
	if err := f.Close(); err != nil {
		return fmt.Errorf("assemble %s: %w", short(d), err)
	}
	if err := os.Rename(tmp, s.archivePath(d)); err != nil {
		return fmt.Errorf("assemble %s: %w", short(d), err)
	}
	return syncDir(s.dir)
}

func copyFile(w io.Writer, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return err
}

// dropBadPieces rechecks every piece file and drops those that fail.
func (s *Store) dropBadPieces(e *entry) int {
	bad := 0
	for i := range e.meta.NumPieces() {
		data, err := os.ReadFile(s.piecePath(e.meta.Digest, i))
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

func (s *Store) dropPiece(e *entry, i int, why error) {
	s.log.Warn("dropping stored piece that fails verification", "digest", short(e.meta.Digest), "piece", i, "err", why)
	s.mu.Lock()
	defer s.mu.Unlock()
	// Removed under the lock so that a WritePiece of the same piece cannot land between the unlink and the clear.
	if err := os.Remove(s.piecePath(e.meta.Digest, i)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("could not remove corrupt piece", "digest", short(e.meta.Digest), "piece", i, "err", err)
	}
	e.have.Clear(i)
	s.notifyLocked()
}

// ReadPiece returns piece i of the artifact, verified against its sha256. A piece that fails is dropped from the
// store (the artifact becomes incomplete and must be fetched again) and ErrCorrupt is returned.
func (s *Store) ReadPiece(digest string, i int) ([]byte, error) {
	for attempt := 0; ; attempt++ {
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
		complete := e.complete
		s.mu.Unlock()

		data, err := s.readRaw(e.meta, i, complete)
		if errors.Is(err, fs.ErrNotExist) && attempt == 0 {
			continue // assembled, salvaged or removed since we looked: look again
		}
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("read piece %d of %s: %w", i, short(digest), ErrMissing)
		}
		if err == nil {
			err = e.meta.CheckPiece(i, data)
		}
		if err != nil {
			if complete {
				s.salvage(e, err)
			} else {
				s.dropPiece(e, i, err)
			}
			return nil, fmt.Errorf("read piece %d of %s: dropped; fetch it again: %v: %w", i, short(digest), err, ErrCorrupt)
		}
		return data, nil
	}
}

func (s *Store) readRaw(meta Meta, i int, fromArchive bool) ([]byte, error) {
	if !fromArchive {
		return os.ReadFile(s.piecePath(meta.Digest, i))
	}
	f, err := os.Open(s.archivePath(meta.Digest))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, meta.PieceLen(i))
	n, err := f.ReadAt(buf, int64(i)*meta.PieceSize)
	if errors.Is(err, io.EOF) {
		return buf[:n], nil // a truncated archive: the check that follows reports it
	}
	return buf, err
}

// salvage turns a corrupt archive back into piece files, keeping every piece that still verifies, so one bad
// sector costs one piece to fetch again rather than the whole archive.
func (s *Store) salvage(e *entry, why error) {
	d := e.meta.Digest
	s.mu.Lock()
	if !e.complete || e.assembling || e.removed {
		s.mu.Unlock()
		return
	}
	e.complete = false
	e.assembling = true
	clear(e.have)
	s.notifyLocked()
	s.mu.Unlock()

	kept := 0
	for i := range e.meta.NumPieces() {
		data, err := s.readRaw(e.meta, i, true)
		if errors.Is(err, fs.ErrNotExist) {
			break
		}
		if err != nil || e.meta.CheckPiece(i, data) != nil {
			continue
		}
		if err := writeFileAtomic(s.piecePath(d, i), data, false); err != nil {
			s.log.Warn("salvage: could not write piece", "digest", short(d), "piece", i, "err", err)
			continue
		}
		kept++
		s.mu.Lock()
		e.have.Set(i)
		s.notifyLocked()
		s.mu.Unlock()
	}
	if err := os.Remove(s.archivePath(d)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("salvage: could not remove corrupt archive", "digest", short(d), "err", err)
	}
	s.log.Warn("stored archive failed verification; kept the pieces that still verify",
		"digest", short(d), "kept", kept, "of", e.meta.NumPieces(), "err", why)
	s.mu.Lock()
	e.assembling = false
	s.mu.Unlock()
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
// end returns ErrCorrupt if the bytes were not the artifact's, and the store then keeps only the pieces that
// still verify.
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
			why := fmt.Errorf("archive of %d bytes does not match digest", r.n)
			r.s.salvage(r.e, why)
			err = fmt.Errorf("read artifact %s: %v; fetch it again: %w", short(r.e.meta.Digest), why, ErrCorrupt)
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
	if e.complete {
		return nil
	}
	if err := os.Rename(tmp, s.archivePath(meta.Digest)); err != nil {
		return fmt.Errorf("store archive %s: %w", short(meta.Digest), err)
	}
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("store archive %s: %w", short(meta.Digest), err)
	}
	e.complete = true
	for i := range meta.NumPieces() {
		e.have.Set(i)
		if err := os.Remove(s.piecePath(meta.Digest, i)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("could not remove piece made redundant by the archive", "digest", short(meta.Digest), "piece", i, "err", err)
		}
	}
	s.notifyLocked()
	return nil
}

// Remove deletes an artifact and everything stored for it.
func (s *Store) Remove(digest string) error {
	s.mu.Lock()
	e := s.arts[digest]
	if e == nil {
		s.mu.Unlock()
		return nil
	}
	// Rename first: a crash after it leaves trash and an orphan archive, both removed by the next New, and
	// never an artifact that looks partly present.
	trash := filepath.Join(s.dir, trashPrefix+digest+"-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	if err := os.Rename(s.artDir(digest), trash); err != nil {
		s.mu.Unlock()
		return fmt.Errorf("remove artifact %s: %w", short(digest), err)
	}
	delete(s.arts, digest)
	e.removed = true
	err := os.Remove(s.archivePath(digest))
	s.notifyLocked()
	s.mu.Unlock()
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove artifact %s: %w", short(digest), err)
	}
	if err := os.RemoveAll(trash); err != nil {
		return fmt.Errorf("remove artifact %s: %w", short(digest), err)
	}
	return nil
}

// GC removes every artifact for which keep returns false (complete or not) and returns their digests. The
// caller's keep must include downloads in progress.
func (s *Store) GC(keep func(digest string) bool) ([]string, error) {
	var removed []string
	var errs []error
	for _, m := range s.List() {
		if keep(m.Digest) {
			continue
		}
		if err := s.Remove(m.Digest); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, m.Digest)
	}
	return removed, errors.Join(errs...)
}

func writeFileAtomic(path string, data []byte, durable bool) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*"+tmpSuffix)
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil && durable {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if durable {
		return syncDir(filepath.Dir(path))
	}
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
