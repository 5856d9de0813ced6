package swarm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/shoal-ci/shoal/artifact"
	"github.com/shoal-ci/shoal/transport"
)

// Dialer opens mutually authenticated QUIC connections to peers; *transport.Endpoint is one. Connections are
// shared and cached by the dialer, so the fetcher never closes them.
type Dialer interface {
	Dial(ctx context.Context, addr, alpn string) (*quic.Conn, error)
}

// FetchConfig configures a download. Store and Dialer are required.
type FetchConfig struct {
	Store  *artifact.Store
	Dialer Dialer
	Logger *slog.Logger
	// Metrics are shared with the node's Server (Server.Metrics); nil counts into unexported collectors.
	Metrics *Metrics
	// InFlight is the number of requests in flight per peer (default 4).
	InFlight int
	// MaxPeers caps the peers used at once, chosen at random among those listed (default 0: all of them).
	MaxPeers int
	// DownloadLimit is the node's download rate limit, shared by its downloads (nil: none).
	DownloadLimit *Limiter
	// PeerRefresh is how often the peer list is read again and lost peers are retried (default 1 s).
	PeerRefresh time.Duration
	// PeersChanged, if set, makes the fetcher read the peer list at once.
	PeersChanged <-chan struct{}
	// RequestTimeout bounds one piece request (default 2 min); it only catches peers that hang.
	RequestTimeout time.Duration
	// NoHolderTimeout is how long some missing piece may be held by no connected peer, with no listed peer left
	// to try, before the download fails with ErrNoHolder (default 10 s).
	NoHolderTimeout time.Duration
}

// ErrNoHolder is returned (wrapped, with the details) by a download that needs pieces no live peer holds.
var ErrNoHolder = errors.New("no live peer holds the missing pieces")

const (
	defaultInFlight       = 4
	defaultPeerRefresh    = time.Second
	defaultRequestTimeout = 2 * time.Minute
	defaultNoHolder       = 10 * time.Second
	dialTimeout           = 10 * time.Second
	// maxDials is how many peers one download connects to at a time. Handshakes are the costliest thing a
	// swarm does per peer (mutual TLS, ~2 ms of CPU each); dozens at once on a busy machine run into the
	// handshake timeout and must start again.
	maxDials = 4
	// busyBackoff is how long a peer that answered busy for a piece is not asked for it again.
	busyBackoff = 300 * time.Millisecond
	// A peer that answered full is left alone for chokeBackoff, doubled for each full answer in a row up to
	// maxChokeBackoff, jittered from half to 1.5 times: in a swarm where every upload is saturated, most
	// requesters must stay away from most peers, and backing off is cheaper than asking.
	chokeBackoff    = 100 * time.Millisecond
	maxChokeBackoff = 400 * time.Millisecond
	// maxFullRetry caps the wait a full answer asks for.
	maxFullRetry = 5 * time.Second
	// maxTransferFailures in a row make the fetcher reconnect to a peer.
	maxTransferFailures = 3
	maxPeerBackoff      = 30 * time.Second
	// sentGrace is how long a piece that a whole holder announced sent is not asked of it while no other peer
	// announces the piece (at least twice the usual piece time).
	sentGrace = 2 * time.Second
	// maxCopies is how many peers may be asked for the same piece at once, in the endgame.
	maxCopies = 2
	// assemblyWait is how long a download that finds every piece held waits for the archive to be assembled.
	assemblyWait = 30 * time.Second
	// stallWarning is how long a download may make no progress before it says so.
	stallWarning = 30 * time.Second
)

// Fetch downloads the artifact described by meta into cfg.Store from the peers that peers returns (QUIC
// addresses; it is called again every PeerRefresh, so the list may change during the download, and it should not
// contain this node). Pieces already in the store are not fetched again, so calling Fetch after a crash or a
// cancellation resumes the download. It returns once the archive is assembled and verified, or with ctx's error.
func Fetch(ctx context.Context, cfg FetchConfig, meta artifact.Meta, peers func() []string) error {
	if cfg.Store == nil || cfg.Dialer == nil {
		return errors.New("swarm: fetch needs FetchConfig.Store and FetchConfig.Dialer")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics, _ = NewMetrics(nil)
	}
	if cfg.InFlight <= 0 {
		cfg.InFlight = defaultInFlight
	}
	if cfg.PeerRefresh <= 0 {
		cfg.PeerRefresh = defaultPeerRefresh
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = defaultRequestTimeout
	}
	if cfg.NoHolderTimeout <= 0 {
		cfg.NoHolderTimeout = defaultNoHolder
	}
	have, err := cfg.Store.Register(meta)
	if err != nil {
		return fmt.Errorf("fetch artifact %s: %w", shortDigest(meta.Digest), err)
	}
	// Every piece held but not complete: another writer is assembling the archive, or assembly failed because
	// the meta's piece list does not add up to its digest. Give the first case time to end.
	for wait := time.After(assemblyWait); !cfg.Store.Complete(meta.Digest) && have.Count() == meta.NumPieces(); {
		changed := cfg.Store.Changed()
		if have = cfg.Store.Have(meta.Digest); have.Count() != meta.NumPieces() {
			break
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("fetch artifact %s: %w", shortDigest(meta.Digest), ctx.Err())
		case <-wait:
			return fmt.Errorf("fetch artifact %s: every piece is held but they do not make up the archive's digest; "+
				"the release's meta is wrong: %w", shortDigest(meta.Digest), artifact.ErrCorrupt)
		}
	}
	if cfg.Store.Complete(meta.Digest) {
		return nil
	}
	start := time.Now()
	f := &fetcher{
		cfg:          cfg,
		meta:         meta,
		n:            meta.NumPieces(),
		log:          cfg.Logger.With("digest", shortDigest(meta.Digest)),
		m:            cfg.Metrics,
		have:         have,
		avail:        make([]int32, meta.NumPieces()),
		inflight:     make([]int32, meta.NumPieces()),
		started:      make([]time.Time, meta.NumPieces()),
		peers:        map[string]*peer{},
		dials:        make(chan struct{}, maxDials),
		rng:          rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		done:         make(chan struct{}),
		lastProgress: start,
	}
	f.log.Info("download starting", "pieces", f.n, "held", have.Count(), "size", meta.Size)
	if err := f.run(ctx, peers); err != nil {
		return err
	}
	elapsed := time.Since(start)
	cfg.Metrics.fetchDuration.Observe(elapsed.Seconds())
	f.log.Info("download complete", "seconds", elapsed.Seconds(), "resumed_with", have.Count())
	return nil
}

type fetcher struct {
	cfg  FetchConfig
	meta artifact.Meta
	n    int
	log  *slog.Logger
	m    *Metrics

	mu           sync.Mutex
	have         artifact.Bitfield // pieces in the store
	avail        []int32           // per piece, how many connected peers announce it
	inflight     []int32           // per piece, requests outstanding
	started      []time.Time       // per piece, when its oldest outstanding request left
	pieceTime    time.Duration     // moving average of how long a piece request takes
	peers        map[string]*peer  // by address, including dropped ones
	dials        chan struct{}     // one token per connection attempt in progress
	rng          *rand.Rand
	finished     bool
	result       error
	done         chan struct{}
	lastProgress time.Time
	orphanSince  time.Time // since when some missing piece has had no connected holder (zero: none)
}

type peer struct {
	addr string
	name string            // verified node name, once connected
	bits artifact.Bitfield // what it announced; nil while not connected
	// sentAt holds, per piece, when a peer holding the whole artifact announced it has sent it in full to
	// someone (zero: not yet); while it has pieces it has not sent, those are the only ones asked of it (see
	// "sent" in DESIGN.md). sentCount counts the non-zero entries.
	sentAt    []time.Time
	sentCount int
	active    bool
	running   bool
	listed    bool // in the latest peer list
	dropped   bool // sent a bad piece or broke the protocol: not used again by this download
	cancel    context.CancelFunc

	fails         int // connection attempts failed in a row
	transferFails int // piece transfers failed in a row
	retryAt       time.Time
	chokedUntil   time.Time         // after a full answer, the peer is not asked before this
	fulls         int               // full answers in a row
	busy          map[int]time.Time // piece -> not before, after a busy answer
	reqs          map[int]*pieceReq // pieces in flight from this peer
	// wake is closed and replaced when this peer's idle workers may find work. Waking per peer rather than all
	// workers on every event keeps a large swarm from spending its CPU rescanning pieces.
	wake chan struct{}
}

func (p *peer) wakeLocked() {
	close(p.wake)
	p.wake = make(chan struct{})
}

func (f *fetcher) wakeHoldersLocked(i int) {
	for _, p := range f.peers {
		if p.bits.Has(i) {
			p.wakeLocked()
		}
	}
}

func (f *fetcher) wakeAllLocked() {
	for _, p := range f.peers {
		p.wakeLocked()
	}
}

func (f *fetcher) stop(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stopLocked(err)
}

func (f *fetcher) stopLocked(err error) {
	if f.finished {
		return
	}
	f.finished = true
	f.result = err
	close(f.done)
	f.wakeAllLocked()
}

// run owns every peer goroutine: it starts them as peers appear and waits for all of them before it returns.
func (f *fetcher) run(ctx context.Context, peers func() []string) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	tick := time.NewTicker(f.cfg.PeerRefresh)
	defer tick.Stop()
	stalls := time.NewTicker(stallCheck)
	defer stalls.Stop()
	for {
		f.syncPeers(ctx, &wg, peers())
		for again := true; again; {
			again = false
			select {
			case <-f.done:
				return f.result
			case <-ctx.Done():
				return fmt.Errorf("fetch artifact %s: %w", shortDigest(f.meta.Digest), ctx.Err())
			case <-tick.C:
				f.resync()
			case <-f.cfg.PeersChanged:
			case now := <-stalls.C:
				f.checkStalls(now)
				again = true // no need to read the peer list again
			}
		}
	}
}

// resync notices what the store knows and the fetcher does not: completion by another writer, or a piece the
// store dropped because it failed verification when served.
func (f *fetcher) resync() {
	if f.cfg.Store.Complete(f.meta.Digest) {
		f.stop(nil)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	// Read under f.mu: a worker stores a piece before it marks it in f.have under f.mu, so the store's bitfield
	// read here holds every piece f.have does, unless the store dropped it.
	have := f.cfg.Store.Have(f.meta.Digest)
	if have == nil {
		f.stopLocked(fmt.Errorf("fetch artifact %s: removed from the store during the download (is GC keeping downloads in progress?): %w",
			shortDigest(f.meta.Digest), artifact.ErrUnknown))
		return
	}
	if !bytes.Equal(have, f.have) {
		f.have = have
		f.wakeAllLocked()
	}
	f.rotateLocked()
	f.checkHoldersLocked(time.Now())
	if time.Since(f.lastProgress) > stallWarning {
		active := 0
		for _, p := range f.peers {
			if p.active {
				active++
			}
		}
		f.log.Warn("download is making no progress; check that peers holding the release are reachable",
			"held", f.have.Count(), "pieces", f.n, "peers_listed", len(f.peers), "peers_connected", active)
		f.lastProgress = time.Now()
	}
}

// rotateLocked makes room, when MaxPeers are in use and other listed peers wait, by disconnecting one peer that
// has nothing we lack. Without it, a node whose chosen peers all started empty could wait forever while the only
// holder (say, the builder) sits among the peers it did not choose.
func (f *fetcher) rotateLocked() {
	if f.cfg.MaxPeers <= 0 {
		return
	}
	running, waiting := 0, 0
	var useless *peer
	for _, p := range f.peers {
		switch {
		case p.running:
			running++
			if p.active && len(p.reqs) == 0 && !f.hasWantedLocked(p) {
				useless = p
			}
		case !p.dropped:
			waiting++
		}
	}
	if running >= f.cfg.MaxPeers && waiting > 0 && useless != nil {
		f.log.Debug("disconnecting a peer with nothing we lack, to try another", "addr", useless.addr, "peer", useless.name)
		useless.cancel()
	}
}

func (f *fetcher) hasWantedLocked(p *peer) bool {
	for j, b := range p.bits {
		if b&^f.have[j] != 0 {
			return true
		}
	}
	return false
}

func (f *fetcher) syncPeers(ctx context.Context, wg *sync.WaitGroup, addrs []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.finished {
		return
	}
	listed := make(map[string]bool, len(addrs))
	for _, a := range addrs {
		listed[a] = true
		if f.peers[a] == nil {
			f.peers[a] = &peer{addr: a, busy: map[int]time.Time{}, reqs: map[int]*pieceReq{}, wake: make(chan struct{})}
		}
	}
	running := 0
	var candidates []*peer
	now := time.Now()
	for a, p := range f.peers {
		p.listed = listed[a]
		if p.running && !listed[a] {
			p.cancel() // no longer a source for this release
		}
		if p.running {
			running++
		} else if listed[a] && !p.dropped && !now.Before(p.retryAt) {
			candidates = append(candidates, p)
		}
	}
	f.rng.Shuffle(len(candidates), func(i, j int) { candidates[i], candidates[j] = candidates[j], candidates[i] })
	for _, p := range candidates {
		if f.cfg.MaxPeers > 0 && running >= f.cfg.MaxPeers {
			break
		}
		pctx, cancel := context.WithCancel(ctx)
		p.cancel = cancel
		p.running = true
		running++
		wg.Go(func() { f.runPeer(pctx, p) })
	}
}

func (f *fetcher) runPeer(ctx context.Context, p *peer) {
	err := f.servePeer(ctx, p)
	p.cancel()
	f.mu.Lock()
	defer f.mu.Unlock()
	p.running = false
	if f.finished || p.dropped {
		return
	}
	p.fails++
	p.retryAt = time.Now().Add(min(f.cfg.PeerRefresh<<min(p.fails-1, 6), maxPeerBackoff))
	f.log.Debug("peer connection ended", "addr", p.addr, "peer", p.name, "err", err, "retry_in", time.Until(p.retryAt))
}

// servePeer connects to one peer, follows its announcements and runs InFlight request workers against it until
// the connection fails or ctx ends.
func (f *fetcher) servePeer(ctx context.Context, p *peer) error {
	select {
	case f.dials <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	dctx, dcancel := context.WithTimeout(ctx, dialTimeout)
	conn, err := f.cfg.Dialer.Dial(dctx, p.addr, transport.ALPNBlob)
	dcancel()
	var st *quic.Stream
	var br *bufio.Reader
	var bits artifact.Bitfield
	if err == nil {
		st, br, bits, err = f.openWatch(ctx, conn)
	}
	<-f.dials
	if err != nil {
		if errors.Is(err, errProtocol) {
			f.dropPeer(p, reasonProtocol, err)
		}
		return err
	}
	stopWatch := func() {
		st.CancelRead(streamCancelled)
		st.CancelWrite(streamCancelled)
	}
	unhook := context.AfterFunc(ctx, stopWatch)
	f.activate(p, transport.PeerName(conn), bits)

	var wg sync.WaitGroup
	for range f.cfg.InFlight {
		wg.Go(func() { f.worker(ctx, conn, p) })
	}
	err = f.readWatch(br, p)
	if errors.Is(err, errProtocol) {
		f.dropPeer(p, reasonProtocol, err)
	}
	// Without its announcements our view of this peer goes stale: stop using it until we reconnect.
	p.cancel()
	wg.Wait()
	unhook()
	stopWatch()
	f.deactivate(p)
	return err
}

func (f *fetcher) openWatch(ctx context.Context, conn *quic.Conn) (*quic.Stream, *bufio.Reader, artifact.Bitfield, error) {
	st, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("open watch stream: %w", err)
	}
	fail := func(err error) (*quic.Stream, *bufio.Reader, artifact.Bitfield, error) {
		st.CancelRead(streamCancelled)
		st.CancelWrite(streamCancelled)
		return nil, nil, nil, err
	}
	st.SetDeadline(time.Now().Add(f.cfg.RequestTimeout))
	// The send side stays open: cancelling it is how the server learns the watch is over.
	if _, err := st.Write([]byte(request{verb: verbWatch, digest: f.meta.Digest}.String())); err != nil {
		return fail(fmt.Errorf("send watch: %w", err))
	}
	br := bufio.NewReaderSize(st, 4096)
	n, err := readHeader(br)
	if err != nil {
		return fail(fmt.Errorf("watch: %w", err))
	}
	want := (f.n + 7) / 8
	if n != 0 && n != int64(want) {
		return fail(fmt.Errorf("watch: bitfield of %d bytes, want %d: %w", n, want, errProtocol))
	}
	bits := artifact.NewBitfield(f.n)
	if n > 0 {
		if _, err := io.ReadFull(br, bits); err != nil {
			return fail(fmt.Errorf("watch: read bitfield: %w", err))
		}
		if !bits.Fits(f.n) {
			return fail(fmt.Errorf("watch: bitfield has bits past the last piece: %w", errProtocol))
		}
	}
	st.SetDeadline(time.Time{})
	return st, br, bits, nil
}

func (f *fetcher) readWatch(br *bufio.Reader, p *peer) error {
	for {
		line, err := readLine(br)
		if err != nil {
			return fmt.Errorf("watch: %w", err)
		}
		num, sent := strings.CutPrefix(line, sentPrefix)
		if !sent && line != "" && line[0] >= 'a' && line[0] <= 'z' {
			continue // an announcement of a later version of the protocol
		}
		i, err := strconv.Atoi(num)
		if err != nil || i < 0 || i >= f.n {
			return fmt.Errorf("watch: announcement %q: %w", line, errProtocol)
		}
		f.mu.Lock()
		if sent {
			if p.active && p.sentAt[i].IsZero() {
				p.sentAt[i] = time.Now()
				if p.sentCount++; p.sentCount == f.n {
					p.wakeLocked() // every piece has left it once: it serves copies now
				}
			}
		} else if p.active && !p.bits.Has(i) {
			p.bits.Set(i)
			f.avail[i]++
			if !f.have.Has(i) {
				p.wakeLocked()
			}
		}
		f.mu.Unlock()
	}
}

func (f *fetcher) activate(p *peer, name string, bits artifact.Bitfield) {
	f.mu.Lock()
	p.name = name
	p.bits = bits
	p.sentAt, p.sentCount = make([]time.Time, f.n), 0
	p.active = true
	p.fails = 0
	p.transferFails = 0
	for i := range f.n {
		if bits.Has(i) {
			f.avail[i]++
		}
	}
	p.wakeLocked()
	f.mu.Unlock()
	f.m.peersInUse.Inc()
	f.log.Debug("peer in use", "addr", p.addr, "peer", name, "pieces", bits.Count())
}

func (f *fetcher) deactivate(p *peer) {
	f.mu.Lock()
	for i := range f.n {
		if p.bits.Has(i) {
			f.avail[i]--
		}
	}
	p.bits = nil
	p.sentAt, p.sentCount = nil, 0
	p.active = false
	clear(p.busy)
	f.mu.Unlock()
	f.m.peersInUse.Dec()
}

// dropPeer stops using a peer for the rest of this download; its pieces are fetched from the others.
func (f *fetcher) dropPeer(p *peer, reason string, err error) {
	f.m.failures.WithLabelValues(reason).Inc()
	f.mu.Lock()
	already := p.dropped
	p.dropped = true
	cancel := p.cancel
	f.mu.Unlock()
	if already {
		return
	}
	f.log.Warn("dropping peer for this download", "addr", p.addr, "peer", p.name, "reason", reason, "err", err)
	cancel()
}

func (f *fetcher) worker(ctx context.Context, conn *quic.Conn, p *peer) {
	for {
		i, rctx, req, ok := f.next(ctx, p)
		if !ok {
			return
		}
		began := time.Now()
		data, err := f.get(rctx, conn, i, req)
		abandoned := rctx.Err() != nil
		req.cancel()
		f.finishRequest(ctx, p, i, req, began, data, err, abandoned)
	}
}

// next waits until there is a piece to request from p, and marks it in flight.
func (f *fetcher) next(ctx context.Context, p *peer) (int, context.Context, *pieceReq, bool) {
	for {
		f.mu.Lock()
		// dropped is checked under the lock, so no request leaves for a peer once dropPeer has marked it.
		if f.finished || p.dropped || ctx.Err() != nil {
			f.mu.Unlock()
			return 0, nil, nil, false
		}
		now := time.Now()
		i, retry := -1, p.chokedUntil.Sub(now)
		last := false
		if retry <= 0 {
			i, retry, last = f.pickLocked(p, now)
		}
		if i >= 0 {
			if f.inflight[i]++; f.inflight[i] == 1 {
				f.started[i] = now
			}
			rctx, rcancel := context.WithCancel(ctx)
			req := &pieceReq{cancel: rcancel}
			req.progress(now)
			p.reqs[i] = req
			if last {
				f.wakeAllLocked() // the endgame begins: idle workers may soon ask for copies
			}
			f.mu.Unlock()
			return i, rctx, req, true
		}
		wake := p.wake
		f.mu.Unlock()
		var timer *time.Timer
		var expired <-chan time.Time
		if retry > 0 {
			timer = time.NewTimer(retry)
			expired = timer.C
		}
		select {
		case <-wake:
		case <-expired:
		case <-ctx.Done():
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// get requests piece i on its own stream and reads it whole.
func (f *fetcher) get(ctx context.Context, conn *quic.Conn, i int, req *pieceReq) ([]byte, error) {
	st, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("open stream: %w", err)
	}
	unhook := context.AfterFunc(ctx, func() {
		st.CancelRead(streamCancelled)
		st.CancelWrite(streamCancelled)
	})
	defer unhook()
	st.SetDeadline(time.Now().Add(f.cfg.RequestTimeout))
	if _, err := st.Write([]byte(request{verb: verbGet, digest: f.meta.Digest, index: i}.String())); err != nil {
		return nil, fmt.Errorf("send request for piece %d: %w", i, err)
	}
	st.Close()
	br := bufio.NewReaderSize(st, 4096)
	n, err := readHeader(br)
	if err != nil {
		st.CancelRead(streamCancelled)
		return nil, err
	}
	if want := f.meta.PieceLen(i); n != want {
		st.CancelRead(streamCancelled)
		return nil, fmt.Errorf("piece %d: peer announced %d bytes, want %d: %w", i, n, want, errProtocol)
	}
	req.progress(time.Now())
	buf := getBuf(int(n)) // back to the pool in finishRequest, once stored
	for off := 0; off < len(buf); {
		// In chunks, so that the stall check sees bytes arriving.
		end := min(off+ioChunk, len(buf))
		if f.cfg.DownloadLimit != nil {
			if err := f.cfg.DownloadLimit.WaitN(ctx, end-off); err != nil {
				putBuf(buf)
				return nil, err
			}
			req.progress(time.Now()) // waiting for our own limit is not the peer's stall
		}
		k, err := io.ReadFull(br, buf[off:end])
		req.progress(time.Now())
		f.m.received.Add(float64(k))
		if err != nil {
			putBuf(buf)
			st.CancelRead(streamCancelled)
			return nil, fmt.Errorf("read piece %d: %w", i, err)
		}
		off = end
	}
	st.CancelRead(streamDone)
	return buf, nil
}

func (f *fetcher) finishRequest(ctx context.Context, p *peer, i int, req *pieceReq, began time.Time, data []byte, err error, abandoned bool) {
	// A piece that arrived stays in flight until it is stored and marked held, so no other worker asks for it
	// in between.
	var werr error
	if err == nil {
		werr = f.cfg.Store.WritePiece(f.meta, i, data)
		putBuf(data) // WritePiece keeps no reference
	}
	var perr *peerError
	f.mu.Lock()
	f.inflight[i]--
	delete(p.reqs, i)
	if !errors.As(err, &perr) || perr.code != codeFull {
		p.fulls = 0
	}
	if err != nil || werr != nil {
		f.wakeHoldersLocked(i) // the piece is up for grabs again
	} else {
		f.have.Set(i)
	}
	f.mu.Unlock()

	switch {
	case err == nil:
		if errors.Is(werr, artifact.ErrBadPiece) {
			f.dropPeer(p, reasonBadHash, werr)
			return
		}
		if werr != nil {
			f.stop(fmt.Errorf("fetch artifact %s: %w", shortDigest(f.meta.Digest), werr))
			return
		}
		now := time.Now()
		f.mu.Lock()
		f.lastProgress = now
		if d := now.Sub(began); f.pieceTime == 0 {
			f.pieceTime = d
		} else {
			f.pieceTime = (7*f.pieceTime + d) / 8
		}
		p.transferFails = 0
		p.wakeLocked() // its idle workers may have waited for this piece (see pickLocked)
		for _, q := range f.peers {
			if r := q.reqs[i]; r != nil {
				r.cancel() // an endgame copy still on its way
			}
		}
		f.mu.Unlock()
		if f.cfg.Store.Complete(f.meta.Digest) {
			f.stop(nil)
		}
	case req.stalled.Load() && ctx.Err() == nil:
		f.noteStalled(p, i)
	case abandoned || ctx.Err() != nil:
		// A copy landed first, or this peer or the whole download is done: nobody's fault.
	case errors.As(err, &perr) && perr.code == codeBusy:
		until := time.Now().Add(busyBackoff)
		f.mu.Lock()
		p.busy[i] = until
		for _, j := range parseTaken(perr.msg, f.n) {
			p.busy[j] = until
		}
		f.mu.Unlock()
	case errors.As(err, &perr) && perr.code == codeFull:
		// The peer is sending all it can; its workers pause so that requests go to peers with spare upload, for
		// as long as the peer said its queue takes to drain, else for a short backoff doubling with each full.
		f.mu.Lock()
		backoff := min(chokeBackoff<<min(p.fulls, 8), maxChokeBackoff)
		if ms, _, _ := strings.Cut(perr.msg, " "); ms != "" {
			if v, err := strconv.Atoi(ms); err == nil && v > 0 {
				backoff = min(time.Duration(v)*time.Millisecond, maxFullRetry)
			}
		}
		p.fulls++
		p.chokedUntil = time.Now().Add(backoff/2 + time.Duration(f.rng.Int64N(int64(backoff))))
		f.mu.Unlock()
	case errors.As(err, &perr) && (perr.code == codeMissing || perr.code == codeCorrupt):
		f.m.failures.WithLabelValues(reasonMissing).Inc()
		f.mu.Lock()
		if p.active && p.bits.Has(i) {
			p.bits.Clear(i)
			f.avail[i]--
		}
		f.mu.Unlock()
	case errors.As(err, &perr) || errors.Is(err, errProtocol):
		f.dropPeer(p, reasonProtocol, err)
	default:
		f.m.failures.WithLabelValues(reasonTransfer).Inc()
		f.mu.Lock()
		p.transferFails++
		reconnect := p.transferFails >= maxTransferFailures
		f.mu.Unlock()
		f.log.Debug("piece transfer failed", "addr", p.addr, "peer", p.name, "piece", i, "err", err)
		if reconnect {
			p.cancel()
		}
	}
}

func shortDigest(d string) string {
	if len(d) > 12 {
		return d[:12]
	}
	return d
}
