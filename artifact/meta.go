package artifact

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/bits"
)

// MaxPieceSize bounds the memory a single piece may take: peers allocate a whole piece per request.
const MaxPieceSize = 64 << 20

// Meta describes one artifact: the archive's digest, its size, and how it is cut into pieces. It comes from the
// release record in Raft, so everything a peer sends is checked against it.
type Meta struct {
	Digest    string   `json:"digest"`     // sha256 hex of the whole archive
	Size      int64    `json:"size"`       // archive length in bytes
	PieceSize int64    `json:"piece_size"` // every piece but the last has this length
	Pieces    []string `json:"pieces"`     // sha256 hex of each piece, in order
}

// ValidDigest reports whether s is a lowercase sha256 hex string. Digests name directories, so anything else is
// refused before it reaches the file system.
func ValidDigest(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// NumPieces is the number of pieces an archive of this size has.
func (m Meta) NumPieces() int {
	if m.PieceSize <= 0 || m.Size <= 0 {
		return 0
	}
	return int((m.Size + m.PieceSize - 1) / m.PieceSize)
}

// PieceLen is the length of piece i (the last one may be short).
func (m Meta) PieceLen(i int) int64 {
	off := int64(i) * m.PieceSize
	if rest := m.Size - off; rest < m.PieceSize {
		return rest
	}
	return m.PieceSize
}

// Validate checks that the meta is self-consistent.
func (m Meta) Validate() error {
	if !ValidDigest(m.Digest) {
		return fmt.Errorf("artifact meta: digest %q is not a lowercase sha256 hex string", m.Digest)
	}
	if m.Size < 0 {
		return fmt.Errorf("artifact meta %s: negative size %d", short(m.Digest), m.Size)
	}
	if m.PieceSize <= 0 || m.PieceSize > MaxPieceSize {
		return fmt.Errorf("artifact meta %s: piece size %d is outside 1..%d", short(m.Digest), m.PieceSize, MaxPieceSize)
	}
	if n := m.NumPieces(); len(m.Pieces) != n {
		return fmt.Errorf("artifact meta %s: %d piece digests for %d bytes in pieces of %d (want %d)",
			short(m.Digest), len(m.Pieces), m.Size, m.PieceSize, n)
	}
	for i, p := range m.Pieces {
		if !ValidDigest(p) {
			return fmt.Errorf("artifact meta %s: piece %d digest %q is not a lowercase sha256 hex string", short(m.Digest), i, p)
		}
	}
	return nil
}

func (m Meta) equal(o Meta) bool {
	if m.Digest != o.Digest || m.Size != o.Size || m.PieceSize != o.PieceSize || len(m.Pieces) != len(o.Pieces) {
		return false
	}
	for i := range m.Pieces {
		if m.Pieces[i] != o.Pieces[i] {
			return false
		}
	}
	return true
}

// CheckPiece reports whether data is piece i of the artifact, by length and sha256.
func (m Meta) CheckPiece(i int, data []byte) error {
	if i < 0 || i >= len(m.Pieces) {
		return fmt.Errorf("piece %d of %s: index out of range 0..%d: %w", i, short(m.Digest), len(m.Pieces)-1, ErrBadPiece)
	}
	if int64(len(data)) != m.PieceLen(i) {
		return fmt.Errorf("piece %d of %s: %d bytes, want %d: %w", i, short(m.Digest), len(data), m.PieceLen(i), ErrBadPiece)
	}
	sum := sha256.Sum256(data)
	if hex.EncodeToString(sum[:]) != m.Pieces[i] {
		return fmt.Errorf("piece %d of %s: sha256 mismatch: %w", i, short(m.Digest), ErrBadPiece)
	}
	return nil
}

// Describe reads a whole archive and returns its meta, cut into pieces of pieceSize.
func Describe(r io.Reader, pieceSize int64) (Meta, error) {
	return describe(r, io.Discard, pieceSize)
}

// describe copies r to w while computing the meta, so an archive is hashed in the same pass that stores it.
func describe(r io.Reader, w io.Writer, pieceSize int64) (Meta, error) {
	if pieceSize <= 0 || pieceSize > MaxPieceSize {
		return Meta{}, fmt.Errorf("describe archive: piece size %d is outside 1..%d", pieceSize, MaxPieceSize)
	}
	whole := sha256.New()
	meta := Meta{PieceSize: pieceSize}
	buf := make([]byte, pieceSize)
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			piece := buf[:n]
			whole.Write(piece)
			sum := sha256.Sum256(piece)
			meta.Pieces = append(meta.Pieces, hex.EncodeToString(sum[:]))
			meta.Size += int64(n)
			if _, werr := w.Write(piece); werr != nil {
				return Meta{}, fmt.Errorf("describe archive: write: %w", werr)
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return Meta{}, fmt.Errorf("describe archive: read: %w", err)
		}
	}
	meta.Digest = hex.EncodeToString(whole.Sum(nil))
	if meta.Pieces == nil {
		meta.Pieces = []string{}
	}
	return meta, nil
}

// Bitfield records which pieces are held: bit i is the (i%8)-th most significant bit of byte i/8, as in
// BitTorrent. Bits past the last piece are zero.
type Bitfield []byte

// NewBitfield returns an empty bitfield for n pieces.
func NewBitfield(n int) Bitfield { return make(Bitfield, (n+7)/8) }

// Has reports whether bit i is set; out-of-range bits are unset.
func (b Bitfield) Has(i int) bool {
	if i < 0 || i/8 >= len(b) {
		return false
	}
	return b[i/8]&(0x80>>(i%8)) != 0
}

// Set sets bit i; it panics if i is out of range, as a slice index would.
func (b Bitfield) Set(i int) { b[i/8] |= 0x80 >> (i % 8) }

// Clear clears bit i.
func (b Bitfield) Clear(i int) { b[i/8] &^= 0x80 >> (i % 8) }

// Count is the number of set bits.
func (b Bitfield) Count() int {
	n := 0
	for _, x := range b {
		n += bits.OnesCount8(x)
	}
	return n
}

// Clone returns a copy.
func (b Bitfield) Clone() Bitfield {
	if b == nil {
		return nil
	}
	return append(Bitfield(nil), b...)
}

// Fits reports whether b is a well-formed bitfield for n pieces: the right length and no bits past the end.
// Bitfields from peers are checked with it before use.
func (b Bitfield) Fits(n int) bool {
	if len(b) != (n+7)/8 {
		return false
	}
	if n%8 != 0 && b[len(b)-1]&(0xff>>(n%8)) != 0 {
		return false
	}
	return true
}

func short(digest string) string {
	if len(digest) > 12 {
		return digest[:12]
	}
	return digest
}
