package artifact

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// archive returns random bytes of the given size and their meta.
func archive(t *testing.T, seed uint64, size int, pieceSize int64) ([]byte, Meta) {
	t.Helper()
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	meta, err := Describe(bytes.NewReader(data), pieceSize)
	if err != nil {
		t.Fatal(err)
	}
	return data, meta
}

func piece(data []byte, meta Meta, i int) []byte {
	off := int64(i) * meta.PieceSize
	return data[off : off+meta.PieceLen(i)]
}

func open(t *testing.T, dir string) *Store {
	t.Helper()
	s, err := New(dir, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func readAll(t *testing.T, s *Store, digest string) []byte {
	t.Helper()
	rc, err := s.Open(digest)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// leftovers lists every temp or trash file under dir.
func leftovers(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(path, tmpSuffix) || strings.HasPrefix(d.Name(), trashPrefix) {
			out = append(out, path)
		}
		return nil
	})
	return out
}

func TestDescribe(t *testing.T) {
	data, meta := archive(t, 1, 1000, 300)
	if meta.Size != 1000 || meta.NumPieces() != 4 || meta.PieceLen(3) != 100 || len(meta.Pieces) != 4 {
		t.Fatalf("meta = %+v", meta)
	}
	if err := meta.Validate(); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if err := meta.CheckPiece(i, piece(data, meta, i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := meta.CheckPiece(0, piece(data, meta, 1)); !errors.Is(err, ErrBadPiece) {
		t.Fatalf("wrong piece accepted: %v", err)
	}
	bad := meta
	bad.Digest = "../../etc"
	if bad.Validate() == nil {
		t.Fatal("a digest that is a path was accepted")
	}
	bad = meta
	bad.Pieces = bad.Pieces[:3]
	if bad.Validate() == nil {
		t.Fatal("a short piece list was accepted")
	}
}

func TestBitfield(t *testing.T) {
	b := NewBitfield(10)
	if len(b) != 2 || !b.Fits(10) || b.Fits(9+8) || b.Fits(16+1) {
		t.Fatalf("len %d", len(b))
	}
	b.Set(0)
	b.Set(9)
	if !b.Has(0) || !b.Has(9) || b.Has(1) || b.Has(10) || b.Has(-1) || b.Count() != 2 {
		t.Fatalf("bits %08b", b)
	}
	if b[0] != 0x80 || b[1] != 0x40 {
		t.Fatalf("bit order %08b", b)
	}
	b.Clear(9)
	if b.Has(9) || b.Count() != 1 {
		t.Fatal("clear")
	}
	if (Bitfield{0, 0x20}).Fits(10) {
		t.Fatal("a bit past the last piece was accepted")
	}
}

func TestPutAndRead(t *testing.T) {
	s := open(t, t.TempDir())
	data, meta := archive(t, 2, 1<<20+123, 64<<10)
	if err := s.Put(meta, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if !s.Complete(meta.Digest) || s.Have(meta.Digest).Count() != meta.NumPieces() {
		t.Fatal("not complete after Put")
	}
	if !bytes.Equal(readAll(t, s, meta.Digest), data) {
		t.Fatal("Open returned other bytes")
	}
	for i := range meta.NumPieces() {
		p, err := s.ReadPiece(meta.Digest, i)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p, piece(data, meta, i)) {
			t.Fatalf("piece %d differs", i)
		}
	}
	// ReadPieceInto reads into a buffer large enough (the last, short piece included) and allocates otherwise.
	buf := make([]byte, 0, meta.PieceSize)
	for i := range meta.NumPieces() {
		p, err := s.ReadPieceInto(meta.Digest, i, buf)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p, piece(data, meta, i)) || &p[0] != &buf[:1][0] {
			t.Fatalf("piece %d: other bytes, or not read into the buffer given", i)
		}
	}
	if p, err := s.ReadPieceInto(meta.Digest, 0, make([]byte, 0, 10)); err != nil || !bytes.Equal(p, piece(data, meta, 0)) {
		t.Fatalf("a buffer too small: %v", err)
	}
	// A second Put of a complete artifact does not read its input.
	if err := s.Put(meta, iotestErrReader{}); err != nil {
		t.Fatal(err)
	}
	if got, ok := s.Meta(meta.Digest); !ok || !got.equal(meta) {
		t.Fatal("Meta")
	}
	if l := s.List(); len(l) != 1 || l[0].Digest != meta.Digest {
		t.Fatalf("List = %v", l)
	}
}

type iotestErrReader struct{}

func (iotestErrReader) Read([]byte) (int, error) { return 0, errors.New("must not be read") }

func TestPutRejectsOtherBytes(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	data, meta := archive(t, 3, 5000, 1000)
	data[4000] ^= 1
	if err := s.Put(meta, bytes.NewReader(data)); !errors.Is(err, ErrBadPiece) {
		t.Fatalf("Put of tampered bytes: %v", err)
	}
	if s.Complete(meta.Digest) {
		t.Fatal("complete after a failed Put")
	}
	if l := leftovers(t, dir); len(l) > 0 {
		t.Fatalf("leftovers %v", l)
	}
}

func TestImport(t *testing.T) {
	s := open(t, t.TempDir())
	data, want := archive(t, 4, 3000, 1024)
	meta, err := s.Import(bytes.NewReader(data), 1024)
	if err != nil {
		t.Fatal(err)
	}
	if !meta.equal(want) || !s.Complete(meta.Digest) {
		t.Fatalf("Import meta %+v, want %+v", meta, want)
	}
}

func TestEmptyArchive(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	_, meta := archive(t, 5, 0, 1024)
	if _, err := s.Register(meta); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir) // the assembly of a zero-piece artifact happens at load
	if !s.Complete(meta.Digest) || len(readAll(t, s, meta.Digest)) != 0 {
		t.Fatal("empty archive not complete")
	}
}

func TestWritePieceVerifies(t *testing.T) {
	s := open(t, t.TempDir())
	data, meta := archive(t, 6, 4000, 1000)
	bad := append([]byte(nil), piece(data, meta, 1)...)
	bad[10] ^= 0xff
	for name, err := range map[string]error{
		"flipped byte": s.WritePiece(meta, 1, bad),
		"wrong index":  s.WritePiece(meta, 2, piece(data, meta, 1)),
		"short":        s.WritePiece(meta, 1, piece(data, meta, 1)[:999]),
		"out of range": s.WritePiece(meta, 4, piece(data, meta, 1)),
		"negative":     s.WritePiece(meta, -1, piece(data, meta, 1)),
	} {
		if !errors.Is(err, ErrBadPiece) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if s.Have(meta.Digest).Count() != 0 {
		t.Fatal("a bad piece was stored")
	}
	other := meta
	other.Size++
	if err := s.WritePiece(other, 0, piece(data, meta, 0)); !errors.Is(err, ErrMetaMismatch) {
		t.Fatalf("other meta for the same digest: %v", err)
	}
}

func TestPiecesAssembleInAnyOrder(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	data, meta := archive(t, 7, 10_000, 999)
	changed := s.Changed()
	order := rand.Perm(meta.NumPieces())
	for k, i := range order {
		if err := s.WritePiece(meta, i, piece(data, meta, i)); err != nil {
			t.Fatal(err)
		}
		if k == 0 {
			select {
			case <-changed:
			default:
				t.Fatal("Changed not closed by WritePiece")
			}
		}
		if k < len(order)-1 && s.Complete(meta.Digest) {
			t.Fatal("complete too early")
		}
		if !s.Have(meta.Digest).Has(i) {
			t.Fatalf("piece %d not held after WritePiece", i)
		}
	}
	if !s.Complete(meta.Digest) {
		t.Fatal("not complete after the last piece")
	}
	if err := s.WritePiece(meta, 0, piece(data, meta, 0)); err != nil {
		t.Fatalf("rewriting a held piece: %v", err)
	}
	if !bytes.Equal(readAll(t, s, meta.Digest), data) {
		t.Fatal("assembled archive differs")
	}
	// The partial file became the archive.
	for _, f := range []string{partialFile, haveFile} {
		if _, err := os.Stat(filepath.Join(dir, meta.Digest, f)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after assembly: %v", f, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, meta.Digest+".tar.gz")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Open(strings.Repeat("0", 64)); !errors.Is(err, ErrUnknown) {
		t.Fatalf("Open of an unknown digest: %v", err)
	}
}

func TestResumeAfterRestart(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	data, meta := archive(t, 8, 20_000, 1000)
	for i := 0; i < meta.NumPieces(); i += 2 {
		if err := s.WritePiece(meta, i, piece(data, meta, i)); err != nil {
			t.Fatal(err)
		}
	}
	before := s.Have(meta.Digest)

	s = open(t, dir)
	if !bytes.Equal(s.Have(meta.Digest), before) {
		t.Fatalf("bitfield after restart %08b, before %08b", s.Have(meta.Digest), before)
	}
	have, err := s.Register(meta)
	if err != nil || !bytes.Equal(have, before) {
		t.Fatalf("Register after restart: %08b %v", have, err)
	}
	if _, err := s.Open(meta.Digest); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("Open of a partial artifact: %v", err)
	}
	if _, err := s.ReadPiece(meta.Digest, 1); !errors.Is(err, ErrMissing) {
		t.Fatalf("ReadPiece of a missing piece: %v", err)
	}
	for i := 1; i < meta.NumPieces(); i += 2 {
		if err := s.WritePiece(meta, i, piece(data, meta, i)); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(readAll(t, s, meta.Digest), data) {
		t.Fatal("archive differs")
	}
	s = open(t, dir)
	if !s.Complete(meta.Digest) || !bytes.Equal(readAll(t, s, meta.Digest), data) {
		t.Fatal("complete archive lost on restart")
	}
}

func TestOpenDropsCorruptPieceFiles(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	data, meta := archive(t, 9, 5000, 1000)
	for i := range 4 {
		if err := s.WritePiece(meta, i, piece(data, meta, i)); err != nil {
			t.Fatal(err)
		}
	}
	partial := filepath.Join(dir, meta.Digest, partialFile)
	flipByte(t, partial, 2*1000+500)
	// A torn write: piece 3 only half on disk.
	f, err := os.OpenFile(partial, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 500), 3*1000+500); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// The bitmap claims piece 4, whose bytes never reached the disk.
	setHaveBit(t, dir, meta, 4)

	s = open(t, dir)
	have := s.Have(meta.Digest)
	if !have.Has(0) || !have.Has(1) || have.Has(2) || have.Has(3) || have.Has(4) {
		t.Fatalf("bitfield after restart %08b", have)
	}
	// The bitmap on disk was corrected too.
	s = open(t, dir)
	if got := s.Have(meta.Digest); !bytes.Equal(got, have) {
		t.Fatalf("bitfield after a second restart %08b, want %08b", got, have)
	}
	for _, i := range []int{2, 3, 4} {
		if err := s.WritePiece(meta, i, piece(data, meta, i)); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(readAll(t, s, meta.Digest), data) {
		t.Fatal("archive differs after refetching the dropped pieces")
	}
}

func TestCrashLeftoversAreCleaned(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	data, meta := archive(t, 10, 5000, 1000)
	if err := s.WritePiece(meta, 0, piece(data, meta, 0)); err != nil {
		t.Fatal(err)
	}
	_, gone := archive(t, 11, 100, 10)
	_, orphan := archive(t, 12, 100, 10)
	write := func(rel, content string) {
		t.Helper()
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// What a crash can leave: temp files of a piece, an archive and an import; a directory whose meta never
	// landed; a half-removed artifact; an archive whose directory was already removed.
	write(filepath.Join(meta.Digest, "meta.json.123"+tmpSuffix), "half a meta")
	write("import.789"+tmpSuffix, "half an import")
	write(filepath.Join(gone.Digest, partialFile), "no meta")
	write(filepath.Join(trashPrefix+orphan.Digest+"-x", "meta.json"), "{}")
	write(orphan.Digest+".tar.gz", "orphan")

	s = open(t, dir)
	if l := leftovers(t, dir); len(l) > 0 {
		t.Fatalf("leftovers after restart: %v", l)
	}
	for _, p := range []string{gone.Digest, orphan.Digest + ".tar.gz"} {
		if _, err := os.Stat(filepath.Join(dir, p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s survived: %v", p, err)
		}
	}
	if l := s.List(); len(l) != 1 || s.Have(meta.Digest).Count() != 1 {
		t.Fatalf("store after restart: %v, have %08b", l, s.Have(meta.Digest))
	}
}

func TestCrashBeforeAssembly(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	data, meta := archive(t, 13, 5000, 1000)
	for i := range 4 {
		if err := s.WritePiece(meta, i, piece(data, meta, i)); err != nil {
			t.Fatal(err)
		}
	}
	// The last piece landed but the process died before assembling.
	f, err := os.OpenFile(filepath.Join(dir, meta.Digest, partialFile), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(piece(data, meta, 4), 4*1000); err != nil {
		t.Fatal(err)
	}
	f.Close()
	setHaveBit(t, dir, meta, 4)
	s = open(t, dir)
	if !s.Complete(meta.Digest) || !bytes.Equal(readAll(t, s, meta.Digest), data) {
		t.Fatal("not assembled at load")
	}
}

// setHaveBit marks piece i held in the bitmap on disk, as a crash right after recording it would leave it.
func setHaveBit(t *testing.T, dir string, meta Meta, i int) {
	t.Helper()
	path := filepath.Join(dir, meta.Digest, haveFile)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	Bitfield(b).Set(i)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := []byte{0}
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x55
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestReadPieceDropsCorruptPiece(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	data, meta := archive(t, 14, 5000, 1000)
	for i := range 3 {
		if err := s.WritePiece(meta, i, piece(data, meta, i)); err != nil {
			t.Fatal(err)
		}
	}
	flipByte(t, filepath.Join(dir, meta.Digest, partialFile), 1000)
	if _, err := s.ReadPiece(meta.Digest, 1); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("ReadPiece of a corrupt piece: %v", err)
	}
	if s.Have(meta.Digest).Has(1) {
		t.Fatal("corrupt piece still held")
	}
	if _, err := s.ReadPiece(meta.Digest, 1); !errors.Is(err, ErrMissing) {
		t.Fatalf("second read: %v", err)
	}
	for i := range meta.NumPieces() {
		if err := s.WritePiece(meta, i, piece(data, meta, i)); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(readAll(t, s, meta.Digest), data) {
		t.Fatal("archive differs")
	}
}

func TestReadPieceSalvagesCorruptArchive(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	data, meta := archive(t, 15, 5000, 1000)
	if err := s.Put(meta, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	flipByte(t, filepath.Join(dir, meta.Digest+".tar.gz"), 3*1000+7)
	if _, err := s.ReadPiece(meta.Digest, 3); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("ReadPiece of a corrupt archive piece: %v", err)
	}
	if s.Complete(meta.Digest) {
		t.Fatal("still complete")
	}
	have := s.Have(meta.Digest)
	if have.Count() != meta.NumPieces()-1 || have.Has(3) {
		t.Fatalf("after salvage %08b", have)
	}
	if _, err := os.Stat(filepath.Join(dir, meta.Digest+".tar.gz")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("corrupt archive still in place: %v", err)
	}
	if got := open(t, dir).Have(meta.Digest); !bytes.Equal(got, have) {
		t.Fatalf("after salvage and restart %08b, want %08b", got, have)
	}
	for _, i := range []int{0, 4} {
		p, err := s.ReadPiece(meta.Digest, i)
		if err != nil || !bytes.Equal(p, piece(data, meta, i)) {
			t.Fatalf("salvaged piece %d: %v", i, err)
		}
	}
	if err := s.WritePiece(meta, 3, piece(data, meta, 3)); err != nil {
		t.Fatal(err)
	}
	if !s.Complete(meta.Digest) || !bytes.Equal(readAll(t, s, meta.Digest), data) {
		t.Fatal("not whole again")
	}
}

func TestOpenReportsCorruptArchive(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	data, meta := archive(t, 16, 5000, 1000)
	if err := s.Put(meta, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	flipByte(t, filepath.Join(dir, meta.Digest+".tar.gz"), 10)
	rc, err := s.Open(meta.Digest)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(rc)
	rc.Close()
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("reading a corrupt archive: %v", err)
	}
	if s.Complete(meta.Digest) || s.Have(meta.Digest).Has(0) || s.Have(meta.Digest).Count() != 4 {
		t.Fatalf("after a corrupt Open: complete %v have %08b", s.Complete(meta.Digest), s.Have(meta.Digest))
	}
}

func TestGC(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	var metas []Meta
	for seed := range uint64(3) {
		data, meta := archive(t, 20+seed, 3000, 1000)
		if seed == 2 { // a partial download is collected as well
			if err := s.WritePiece(meta, 0, piece(data, meta, 0)); err != nil {
				t.Fatal(err)
			}
		} else if err := s.Put(meta, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		metas = append(metas, meta)
	}
	keep := metas[1].Digest
	removed, err := s.GC(func(d string) bool { return d == keep })
	if err != nil || len(removed) != 2 {
		t.Fatalf("GC removed %v: %v", removed, err)
	}
	check := func(s *Store) {
		t.Helper()
		if l := s.List(); len(l) != 1 || l[0].Digest != keep || !s.Complete(keep) {
			t.Fatalf("after GC: %v", l)
		}
		ents, _ := os.ReadDir(dir)
		if len(ents) != 2 { // the kept artifact's directory and archive
			t.Fatalf("files after GC: %v", ents)
		}
	}
	check(s)
	check(open(t, dir))
	if _, err := s.ReadPiece(metas[0].Digest, 0); !errors.Is(err, ErrUnknown) {
		t.Fatalf("read of a collected artifact: %v", err)
	}
}

func TestConcurrentWritersAndReaders(t *testing.T) {
	s := open(t, t.TempDir())
	data, meta := archive(t, 30, 200_000, 1000)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for _, i := range rand.Perm(meta.NumPieces()) {
				if err := s.WritePiece(meta, i, piece(data, meta, i)); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		})
		wg.Go(func() {
			for range 2000 {
				i := rand.IntN(meta.NumPieces())
				p, err := s.ReadPiece(meta.Digest, i)
				if errors.Is(err, ErrMissing) || errors.Is(err, ErrUnknown) {
					continue
				}
				if err != nil || !bytes.Equal(p, piece(data, meta, i)) {
					t.Errorf("reader: piece %d: %v", i, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if !s.Complete(meta.Digest) || !bytes.Equal(readAll(t, s, meta.Digest), data) {
		t.Fatal("archive differs")
	}
}

// TestPutWhileDownloading: the builder's Put lands while pieces are being written and read.
func TestPutWhileDownloading(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	defer s.Close()
	data, meta := archive(t, 31, 200_000, 1000)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for _, i := range rand.Perm(meta.NumPieces()) {
				if err := s.WritePiece(meta, i, piece(data, meta, i)); err != nil {
					t.Errorf("writer: %v", err)
					return
				}
				if p, err := s.ReadPiece(meta.Digest, i); err != nil && !errors.Is(err, ErrMissing) || err == nil && !bytes.Equal(p, piece(data, meta, i)) {
					t.Errorf("reader: piece %d: %v", i, err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		if err := s.Put(meta, bytes.NewReader(data)); err != nil {
			t.Errorf("put: %v", err)
		}
	})
	wg.Wait()
	if !s.Complete(meta.Digest) || !bytes.Equal(readAll(t, s, meta.Digest), data) {
		t.Fatal("archive differs")
	}
	if l := leftovers(t, dir); len(l) > 0 {
		t.Fatalf("leftovers %v", l)
	}
	if _, err := os.Stat(filepath.Join(dir, meta.Digest, partialFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("partial file left: %v", err)
	}
}
