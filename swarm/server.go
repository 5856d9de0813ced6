package swarm

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"

	"github.com/shoal-ci/shoal/artifact"
)

const (
	// requestReadTimeout bounds how long a peer may take to send its request line.
	requestReadTimeout = 30 * time.Second
	// writeTimeout bounds one response write; generous, because a rate-limited peer with many requests in
	// flight legitimately takes long per piece.
	writeTimeout = 5 * time.Minute
	// DefaultUploadSlots pieces are sent at once; DefaultUploadQueue more wait for a slot, and requests beyond
	// those are answered full. Sending few pieces at a time at full speed, rather than every request at a
	// fraction of it, gets each piece to its requester early so that it can pass it on; a short queue keeps
	// requests from waiting at a busy peer while another has upload to spare. Two slots rather than one: each
	// piece goes to a different peer over its own QUIC connection, whose congestion window has not grown while
	// it waited, and one connection alone left a 50 Mbit/s link 10–25 % idle (N=4: 1.30× the bound with one
	// slot, 1.23× with two).
	DefaultUploadSlots = 2
	DefaultUploadQueue = 3
	// maxUploadedKept bounds how many artifacts' upload records a server keeps.
	maxUploadedKept = 64
	// sendStall bounds how long one chunk of a piece may take to leave: a requester that is dead or cut off
	// takes no more bytes, and without this its upload slot (and, on a seed, the piece under the busy rule)
	// would stay taken until the connection's idle timeout, which quic-go holds at 5 s or more on the
	// accepting end. A chunk is 64 KiB: 2 s is below 0.27 Mbit/s for one slot; on a slower uplink the bound is
	// four times the usual time of a chunk (stallWindow).
	sendStall = 2 * time.Second
	// A full answer tells the requester to come back in retryAfter, within these bounds.
	minRetryAfter = 50 * time.Millisecond
	maxRetryAfter = 2 * time.Second
)

// Server answers piece-exchange requests from peers out of the node's store: it serves any piece the store
// holds, including those of downloads still in progress.
type Server struct {
	store   *artifact.Store
	log     *slog.Logger
	metrics *Metrics
	upload  *Limiter
	pacer   *pacer // delay-based pacing of upload, if on (then upload is its limiter)

	slots chan struct{} // one token per piece being sent

	mu       sync.Mutex
	sending  map[pieceKey]int // pieces admitted, waiting or being sent (see the busy rule in DESIGN.md)
	admitted int
	maxAdmit int
	// uploaded holds, per artifact this node holds whole, the pieces it has sent in full at least once; WATCH
	// announces them (see "sent" in DESIGN.md). uploadedCh is closed and replaced when it grows.
	uploaded   map[string]artifact.Bitfield
	uploadedCh chan struct{}
	sendTime   time.Duration // moving average of one piece's send time

	// Test hooks: allow refuses a GET as if the piece were missing; tamper changes bytes before they are sent.
	// Atomic because tests set them while the server runs, and the race detector sees no order through the
	// UDP socket between the test's store and the handler's load.
	allow  atomic.Pointer[func(peer string, index int) bool]
	tamper atomic.Pointer[func(index int, data []byte)]
}

type pieceKey struct {
	digest string
	index  int
}

// ServerOption configures a Server.
type ServerOption func(*Server)

// WithUploadLimit caps the bytes per second this node sends to all peers together.
func WithUploadLimit(l *Limiter) ServerOption { return func(s *Server) { s.upload = l } }

// WithDelayPacing paces the node's upload by the queueing delay it causes instead of a fixed rate (see pacer.go):
// `node agent --upload-limit auto`. It replaces WithUploadLimit.
func WithDelayPacing() ServerOption {
	return func(s *Server) {
		s.pacer = newPacer()
		s.upload = s.pacer.lim
	}
}

// WithUploadSlots sets how many pieces are sent at once and how many more requests may wait for a slot
// (defaults DefaultUploadSlots and DefaultUploadQueue).
func WithUploadSlots(slots, queue int) ServerOption {
	return func(s *Server) {
		s.slots = make(chan struct{}, max(slots, 1))
		s.maxAdmit = max(slots, 1) + max(queue, 0)
	}
}

// NewServer returns a server for store. Its metrics are registered on reg; pass Server.Metrics to FetchConfig so
// that downloads count into the same collectors.
func NewServer(store *artifact.Store, logger *slog.Logger, reg prometheus.Registerer, opts ...ServerOption) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m, err := NewMetrics(reg)
	if err != nil {
		logger.Error("swarm metrics are not exported", "err", err)
	}
	s := &Server{store: store, log: logger, metrics: m, sending: map[pieceKey]int{},
		uploaded: map[string]artifact.Bitfield{}, uploadedCh: make(chan struct{})}
	WithUploadSlots(DefaultUploadSlots, DefaultUploadQueue)(s)
	for _, o := range opts {
		o(s)
	}
	return s
}

// Metrics returns the collectors the server counts into.
func (s *Server) Metrics() *Metrics { return s.metrics }

// HandleConn serves the streams of one peer connection until it closes; register it with
// ep.Handle(transport.ALPNBlob, s.HandleConn). Each stream carries one request.
func (s *Server) HandleConn(conn *quic.Conn, peer string) {
	ctx := conn.Context()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		st, err := conn.AcceptStream(ctx)
		if err != nil {
			return
		}
		wg.Go(func() { s.serveStream(ctx, conn, st, peer) })
	}
}

func (s *Server) serveStream(ctx context.Context, conn *quic.Conn, st *quic.Stream, peer string) {
	// Whatever the peer still sends after its request is not read.
	defer st.CancelRead(streamDone)
	br := bufio.NewReaderSize(st, maxLineLen+16)
	st.SetReadDeadline(time.Now().Add(requestReadTimeout))
	line, err := readLine(br)
	if err != nil {
		s.log.Debug("blob request unreadable", "peer", peer, "err", err)
		st.CancelWrite(streamCancelled)
		return
	}
	st.SetReadDeadline(time.Time{})
	req, err := parseRequest(line)
	if err != nil {
		s.reply(st, errHeader(codeBadRequest, err.Error()))
		return
	}
	switch req.verb {
	case verbHave:
		bf := s.store.Have(req.digest)
		s.reply(st, append(okHeader(len(bf)), bf...))
	case verbGet:
		s.serveGet(ctx, conn, st, peer, req)
	case verbWatch:
		s.serveWatch(ctx, st, req)
	}
}

func (s *Server) reply(st *quic.Stream, b []byte) {
	st.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := st.Write(b); err != nil {
		st.CancelWrite(streamCancelled)
		return
	}
	st.Close()
}

func (s *Server) serveGet(ctx context.Context, conn *quic.Conn, st *quic.Stream, peer string, req request) {
	if allow := s.allow.Load(); allow != nil && !(*allow)(peer, req.index) {
		s.reply(st, errHeader(codeMissing, "refused by test hook"))
		return
	}
	// The busy rule: a node holding the whole artifact (a seed) sends a piece to one peer at a time; the others
	// fetch it from that peer once it has it, so an upload-limited seed spends its bandwidth on pieces nobody has
	// yet instead of on copies. Nodes still downloading send copies freely: refusing there only multiplied
	// refusals (measured: ~6 per piece fetched in a 16-node swarm) without making the swarm faster.
	key := pieceKey{req.digest, req.index}
	s.mu.Lock()
	busy := s.sending[key] > 0 && s.store.Complete(req.digest)
	full := s.admitted >= s.maxAdmit
	var taken []byte
	if busy {
		// Name every piece of this artifact that is taken, so the requester skips them all at once instead of
		// discovering them one refusal at a time.
		for k := range s.sending {
			if k.digest == req.digest {
				taken = append(appendInt(taken, k.index), ',')
			}
		}
		taken = taken[:len(taken)-1]
	}
	if !busy && !full {
		s.sending[key]++
		s.admitted++
	}
	s.mu.Unlock()
	switch {
	case busy:
		s.metrics.refused.WithLabelValues(codeBusy).Inc()
		s.reply(st, errHeader(codeBusy, string(taken)))
		return
	case full:
		s.metrics.refused.WithLabelValues(codeFull).Inc()
		s.reply(st, errHeader(codeFull, strconv.FormatInt(s.retryAfter().Milliseconds(), 10)+" upload queue is full"))
		return
	}
	defer func() {
		s.mu.Lock()
		if s.sending[key]--; s.sending[key] == 0 {
			delete(s.sending, key)
		}
		s.admitted--
		s.mu.Unlock()
	}()
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	case <-st.Context().Done(): // the requester gave up while waiting
		return
	case <-ctx.Done():
		return
	}
	sendStart := time.Now()

	data, err := s.store.ReadPieceInto(req.digest, req.index, getBuf(0))
	if data != nil {
		defer putBuf(data) // quic-go's Write keeps no reference once it returns
	}
	switch {
	case errors.Is(err, artifact.ErrCorrupt):
		s.metrics.failures.WithLabelValues(reasonLocalCorr).Inc()
		s.log.Warn("stored piece failed verification and was dropped; it will be fetched again",
			"digest", req.digest, "piece", req.index, "err", err)
		s.reply(st, errHeader(codeCorrupt, "stored copy failed verification"))
		return
	case errors.Is(err, artifact.ErrMissing), errors.Is(err, artifact.ErrUnknown):
		s.reply(st, errHeader(codeMissing, "piece not held"))
		return
	case err != nil:
		s.log.Error("cannot read stored piece", "digest", req.digest, "piece", req.index, "err", err)
		s.reply(st, errHeader(codeMissing, "piece unreadable"))
		return
	}
	if tamper := s.tamper.Load(); tamper != nil {
		(*tamper)(req.index, data)
	}

	st.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := st.Write(okHeader(len(data))); err != nil {
		st.CancelWrite(streamCancelled)
		return
	}
	if s.pacer != nil {
		s.pacer.begin(conn)
		defer s.pacer.end(conn)
	}
	if err := s.writePiece(ctx, st, data); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			s.metrics.failures.WithLabelValues(reasonStalled).Inc()
			s.log.Info("peer took no piece bytes for a while; gave up sending to it", "peer", peer, "piece", req.index, "after", s.stallWindow(len(data)))
		}
		s.log.Debug("piece not sent", "peer", peer, "piece", req.index, "err", err)
		st.CancelWrite(streamCancelled)
		return
	}
	st.Close()
	s.noteSendTime(time.Since(sendStart))
	if s.store.Complete(req.digest) {
		s.markUploaded(req.digest, req.index)
	}
}

// noteSendTime keeps a moving average of how long one piece takes to send.
func (s *Server) noteSendTime(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sendTime == 0 {
		s.sendTime = d
	} else {
		s.sendTime = (7*s.sendTime + d) / 8
	}
}

// stallWindow is how long one chunk of a piece of n bytes may take to leave: sendStall, or four times a chunk's
// share of the usual piece send time on an uplink too slow for that.
func (s *Server) stallWindow(n int) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n <= 0 {
		return sendStall
	}
	return max(sendStall, 4*s.sendTime*time.Duration(min(ioChunk, n))/time.Duration(n))
}

// retryAfter is when a refused requester should ask again: half the time the queue now admitted takes to drain
// (queue length times the usual piece time, per slot), within [minRetryAfter, maxRetryAfter]. Coming back then,
// rather than at a fixed short interval, keeps a swarm of requesters from spending more packets on refusals than
// on pieces when every upload is busy; half, so that requests (jittered by the requesters) refill the queue
// before it runs dry (N=4 at 50 Mbit/s: 1.20–1.22× the bound, against 1.23–1.32× with the whole drain time).
func (s *Server) retryAfter() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := time.Duration(s.admitted) * s.sendTime / time.Duration(cap(s.slots)) / 2
	return min(max(d, minRetryAfter), maxRetryAfter)
}

// markUploaded records that piece i of an artifact this node holds whole has left it once.
func (s *Server) markUploaded(digest string, i int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	bf := s.uploaded[digest]
	if bf == nil {
		have := s.store.Have(digest) // the same length as the bitfield WATCH sends
		if i >= len(have)*8 {
			return
		}
		if len(s.uploaded) >= maxUploadedKept {
			clear(s.uploaded) // a node serves a handful of releases at a time; the record only tunes the swarm
		}
		bf = make(artifact.Bitfield, len(have))
		s.uploaded[digest] = bf
	}
	if !bf.Has(i) {
		bf.Set(i)
		close(s.uploadedCh)
		s.uploadedCh = make(chan struct{})
	}
}

// uploadedOf returns a copy of the pieces of digest sent at least once, and a channel closed when that grows.
func (s *Server) uploadedOf(digest string) (artifact.Bitfield, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.uploaded[digest].Clone(), s.uploadedCh
}

// writePiece sends data in chunks of ioChunk, each within stallWindow (a requester that takes nothing for that
// long is given up), and within the upload limit if there is one.
func (s *Server) writePiece(ctx context.Context, st *quic.Stream, data []byte) error {
	for off := 0; off < len(data); {
		end := min(off+ioChunk, len(data))
		if err := s.upload.WaitN(ctx, end-off); err != nil {
			return err
		}
		st.SetWriteDeadline(time.Now().Add(s.stallWindow(len(data))))
		n, err := st.Write(data[off:end])
		s.metrics.sent.Add(float64(n))
		if s.pacer != nil {
			s.pacer.wrote(n, time.Now())
			s.metrics.paceRate.Set(s.pacer.currentRate())
		}
		if err != nil {
			return err
		}
		off = end
	}
	return nil
}

// serveWatch sends the bitfield and then the index of every piece the store gains, until the peer cancels the
// stream or the connection closes.
func (s *Server) serveWatch(ctx context.Context, st *quic.Stream, req request) {
	defer st.CancelWrite(streamDone)
	sent := s.store.Have(req.digest)
	st.SetWriteDeadline(time.Now().Add(writeTimeout))
	if _, err := st.Write(append(okHeader(len(sent)), sent...)); err != nil {
		return
	}
	var buf []byte
	var uploaded artifact.Bitfield
	for {
		changed := s.store.Changed() // taken before Have, so no change between the two is missed
		cur := s.store.Have(req.digest)
		buf = appendNewPieces(buf[:0], "", sent, cur)
		up, upChanged := s.uploadedOf(req.digest)
		buf = appendNewPieces(buf, sentPrefix, uploaded, up)
		if len(buf) > 0 {
			st.SetWriteDeadline(time.Now().Add(writeTimeout))
			if _, err := st.Write(buf); err != nil {
				return
			}
		}
		sent, uploaded = cur, up
		select {
		case <-changed:
		case <-upChanged:
		case <-st.Context().Done(): // the peer cancelled the watch
			return
		case <-ctx.Done():
			return
		}
	}
}

// appendNewPieces appends "<prefix><index>\n" for every bit set in cur and not in old, comparing byte by byte so
// that an unchanged bitfield of a large artifact costs a compare, not a bit-by-bit walk.
func appendNewPieces(buf []byte, prefix string, old, cur artifact.Bitfield) []byte {
	for j, b := range cur {
		var o byte
		if j < len(old) {
			o = old[j]
		}
		if added := b &^ o; added != 0 {
			for k := range 8 {
				if added&(0x80>>k) != 0 {
					buf = append(buf, prefix...)
					buf = appendInt(buf, j*8+k)
					buf = append(buf, '\n')
				}
			}
		}
	}
	return buf
}
