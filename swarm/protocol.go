package swarm

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/quic-go/quic-go"

	"github.com/shoal-ci/shoal/artifact"
)

// Verbs of the piece-exchange protocol; see DESIGN.md.
const (
	verbHave  = "HAVE"
	verbWatch = "WATCH"
	verbGet   = "GET"
)

// Error codes a server answers with instead of OK.
const (
	codeMissing    = "missing"     // the piece is not held (any more)
	codeBusy       = "busy"        // the piece is being sent to another peer: get it from that peer; the message lists the pieces taken
	codeFull       = "full"        // the server's upload queue is full: ask other peers for a while
	codeCorrupt    = "corrupt"     // the server's own copy failed verification and was dropped
	codeBadRequest = "bad-request" // malformed request line
)

// Stream error codes for CancelRead/CancelWrite.
const (
	streamDone      quic.StreamErrorCode = 0 // the reader has what it wanted
	streamCancelled quic.StreamErrorCode = 1 // the request was abandoned
)

const maxLineLen = 256 // request and response header lines

// sentPrefix marks a WATCH announcement that a node holding the whole artifact has sent that piece in full to some
// peer ("sent 12"); a bare number announces a piece the server holds.
const sentPrefix = "sent "

type request struct {
	verb   string
	digest string
	index  int
}

func (r request) String() string {
	if r.verb == verbGet {
		return fmt.Sprintf("%s %s %d\n", r.verb, r.digest, r.index)
	}
	return fmt.Sprintf("%s %s\n", r.verb, r.digest)
}

func parseRequest(line string) (request, error) {
	f := strings.Fields(line)
	if len(f) < 2 || !artifact.ValidDigest(f[1]) {
		return request{}, fmt.Errorf("malformed request %q", line)
	}
	r := request{verb: f[0], digest: f[1]}
	switch {
	case (r.verb == verbHave || r.verb == verbWatch) && len(f) == 2:
		return r, nil
	case r.verb == verbGet && len(f) == 3:
		i, err := strconv.Atoi(f[2])
		if err != nil || i < 0 {
			return request{}, fmt.Errorf("malformed piece index in %q", line)
		}
		r.index = i
		return r, nil
	}
	return request{}, fmt.Errorf("unknown request %q", line)
}

// readLine reads one '\n'-terminated line of at most maxLineLen bytes, without the newline.
func readLine(br *bufio.Reader) (string, error) {
	var b []byte
	for {
		frag, err := br.ReadSlice('\n')
		b = append(b, frag...)
		if len(b) > maxLineLen {
			return "", errors.New("line too long")
		}
		if err == nil {
			return strings.TrimSuffix(string(b), "\n"), nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			if errors.Is(err, io.EOF) && len(b) > 0 {
				return "", io.ErrUnexpectedEOF
			}
			return "", err
		}
	}
}

// peerError is a well-formed refusal from the server.
type peerError struct {
	code string
	msg  string
}

func (e *peerError) Error() string { return "peer answered " + e.code + ": " + e.msg }

// errProtocol marks a response that breaks the protocol: the peer is not trusted any further.
var errProtocol = errors.New("protocol violation")

// readHeader reads "OK <n>" and returns n, or returns a *peerError for "ERR <code> <message>".
func readHeader(br *bufio.Reader) (int64, error) {
	line, err := readLine(br)
	if err != nil {
		return 0, fmt.Errorf("read response header: %w", err)
	}
	if rest, ok := strings.CutPrefix(line, "OK "); ok {
		n, err := strconv.ParseInt(rest, 10, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("response header %q: %w", line, errProtocol)
		}
		return n, nil
	}
	if rest, ok := strings.CutPrefix(line, "ERR "); ok {
		code, msg, _ := strings.Cut(rest, " ")
		return 0, &peerError{code: code, msg: msg}
	}
	return 0, fmt.Errorf("response header %q: %w", line, errProtocol)
}

func okHeader(n int) []byte { return []byte("OK " + strconv.Itoa(n) + "\n") }

func errHeader(code, msg string) []byte {
	return []byte("ERR " + code + " " + strings.ReplaceAll(msg, "\n", " ") + "\n")
}

func appendInt(b []byte, i int) []byte { return strconv.AppendInt(b, int64(i), 10) }

// parseTaken reads the comma-separated piece indexes of a busy answer, ignoring anything malformed.
func parseTaken(msg string, n int) []int {
	var out []int
	for _, f := range strings.Split(msg, ",") {
		if i, err := strconv.Atoi(f); err == nil && i >= 0 && i < n {
			out = append(out, i)
		}
	}
	return out
}
