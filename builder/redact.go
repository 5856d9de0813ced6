package builder

import (
	"bytes"
	"io"
	"sort"
	"strings"
	"sync"
)

// Redacted replaces every secret value in logs.
const Redacted = "[redacted]"

// maxPending bounds how much of an unterminated line a Redactor holds back; past it, the safe part is
// written out so that a script printing without newlines still shows progress and memory stays bounded.
const maxPending = 64 << 10

// Redactor is an io.Writer that replaces secret values with [redacted] before passing output on. It works on
// whole lines (ended by \n or \r) so that a secret split across two writes is still caught; Flush writes a
// final unterminated line. It is safe for concurrent use.
type Redactor struct {
	mu      sync.Mutex
	w       io.Writer
	secrets [][]byte // longest first, so a secret holding another is replaced whole
	maxLen  int
	pending []byte
	err     error
}

// NewRedactor writes to w with the given secret values hidden. Empty values are ignored; a value spanning
// several lines is hidden line by line.
func NewRedactor(w io.Writer, secrets []string) *Redactor {
	seen := map[string]bool{}
	r := &Redactor{w: w}
	for _, s := range secrets {
		for _, part := range strings.FieldsFunc(s, func(c rune) bool { return c == '\n' || c == '\r' }) {
			if part == "" || seen[part] {
				continue
			}
			seen[part] = true
			r.secrets = append(r.secrets, []byte(part))
			r.maxLen = max(r.maxLen, len(part))
		}
	}
	sort.Slice(r.secrets, func(i, j int) bool { return len(r.secrets[i]) > len(r.secrets[j]) })
	return r
}

// Write takes any chunk of output; it always reports len(p) unless the underlying writer failed.
func (r *Redactor) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return 0, r.err
	}
	r.pending = append(r.pending, p...)
	if i := bytes.LastIndexAny(r.pending, "\r\n"); i >= 0 {
		r.emit(i + 1)
	}
	if len(r.pending) > maxPending {
		r.emit(r.safeCut())
	}
	return len(p), r.err
}

// Flush writes out whatever unterminated line is held back.
func (r *Redactor) Flush() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == nil && len(r.pending) > 0 {
		r.emit(len(r.pending))
	}
	return r.err
}

// emit redacts and writes pending[:n], keeping the rest.
func (r *Redactor) emit(n int) {
	out := r.redact(r.pending[:n])
	rest := copy(r.pending, r.pending[n:])
	r.pending = r.pending[:rest]
	if _, err := r.w.Write(out); err != nil {
		r.err = err
	}
}

func (r *Redactor) redact(b []byte) []byte {
	out := bytes.Clone(b)
	for _, s := range r.secrets {
		out = bytes.ReplaceAll(out, s, []byte(Redacted))
	}
	return out
}

// safeCut returns how much of a long unterminated pending line can be written now: all but the last
// maxLen-1 bytes (which may be the start of a secret still arriving), moved earlier past the start of any
// secret that straddles the cut.
func (r *Redactor) safeCut() int {
	cut := len(r.pending) - max(r.maxLen-1, 0)
	for moved := true; moved; {
		moved = false
		for _, s := range r.secrets {
			from := max(cut-len(s)+1, 0)
			if i := bytes.Index(r.pending[from:min(cut+len(s)-1, len(r.pending))], s); i >= 0 && from+i < cut {
				cut, moved = from+i, true
			}
		}
	}
	return cut
}
