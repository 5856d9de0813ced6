package swarm

import "sync"

// pieceBufs holds piece-sized buffers between requests. A node that serves and fetches a 64 MiB release moves
// 256 pieces of 256 KiB each way; allocating each one fresh made the garbage collector and the zeroing of new
// memory a visible part of a busy node's CPU (docs/benchmarks.md, "Release spread").
var pieceBufs sync.Pool // of *[]byte

// getBuf returns a buffer of length n, reused when one large enough is free.
func getBuf(n int) []byte {
	if p, ok := pieceBufs.Get().(*[]byte); ok && cap(*p) >= n {
		return (*p)[:n]
	}
	return make([]byte, n)
}

// putBuf gives a buffer back once nothing refers to it any more.
func putBuf(b []byte) {
	if cap(b) == 0 {
		return
	}
	b = b[:0]
	pieceBufs.Put(&b)
}
