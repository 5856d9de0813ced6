package builder

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"

	"github.com/shoal-ci/shoal/artifact"
)

// DefaultPieceSize is the size of the pieces an archive is cut into for the spread between nodes.
const DefaultPieceSize = 256 << 10

// pieceHasher is an io.Writer that hashes what passes through it in consecutive pieces of a fixed size.
type pieceHasher struct {
	size   int64
	cur    hash.Hash
	n      int64 // bytes in the current piece
	pieces []string
}

func newPieceHasher(size int64) *pieceHasher {
	return &pieceHasher{size: size, cur: sha256.New()}
}

func (p *pieceHasher) Write(b []byte) (int, error) {
	total := len(b)
	for len(b) > 0 {
		k := min(int64(len(b)), p.size-p.n)
		p.cur.Write(b[:k])
		p.n += k
		b = b[k:]
		if p.n == p.size {
			p.finish()
		}
	}
	return total, nil
}

func (p *pieceHasher) finish() {
	p.pieces = append(p.pieces, hex.EncodeToString(p.cur.Sum(nil)))
	p.cur.Reset()
	p.n = 0
}

// digests ends the last, possibly short, piece and returns every piece's sha256 in hex.
func (p *pieceHasher) digests() []string {
	if p.n > 0 {
		p.finish()
	}
	return p.pieces
}

func checkPieceSize(pieceSize int64) (int64, error) {
	if pieceSize <= 0 {
		return DefaultPieceSize, nil
	}
	if pieceSize > artifact.MaxPieceSize {
		return 0, fmt.Errorf("piece size %d is over the %d-byte limit peers accept", pieceSize, artifact.MaxPieceSize)
	}
	return pieceSize, nil
}

// PieceDigests returns the sha256 (hex) of each consecutive pieceSize-byte piece of the file at path, the
// last one possibly shorter; pieceSize <= 0 means DefaultPieceSize. An empty file has no pieces.
func PieceDigests(path string, pieceSize int64) ([]string, error) {
	size, err := checkPieceSize(pieceSize)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("hash pieces: %w", err)
	}
	defer f.Close()
	h := newPieceHasher(size)
	if _, err := io.Copy(h, f); err != nil {
		return nil, fmt.Errorf("hash pieces of %s: %w", path, err)
	}
	return h.digests(), nil
}
