package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
	"github.com/quic-go/quic-go"

	"github.com/shoal-ci/shoal/errs"
	"github.com/shoal-ci/shoal/raftfsm"
	"github.com/shoal-ci/shoal/transport"
)

// Error codes beyond raftfsm's kinds, shared by the RPC layer and the HTTP API (see api/errors.go).
const (
	CodeNoLeader    = "no_leader"
	CodeUnavailable = "unavailable"
)

// ErrNoLeader is returned when no leader could be reached before the write's deadline.
var ErrNoLeader = &transport.RemoteError{Code: CodeNoLeader,
	Message: "the mesh has no leader right now (an election is under way, or a majority of voters is down); retry shortly"}

// Applied is the outcome of a write: the Raft index it was committed at and the record it wrote, as JSON.
type Applied struct {
	Index uint64          `json:"index"`
	Value json.RawMessage `json:"value,omitempty"`
}

// applyRequest is a write forwarded to the leader: the encoded command and the id of the API token of the request
// it serves ("" when the node writes on its own). The leader decodes, validates and authorizes it before Raft
// sees it (handleApply).
type applyRequest struct {
	Data  []byte `json:"data"`
	Token string `json:"token,omitempty"`
	// Wait is how long the forwarding node still waits for the answer: the leader gives up before it does.
	Wait time.Duration `json:"wait,omitempty"`
}

// ApplyOption adjusts one write (Apply).
type ApplyOption func(*applyOptions)

type applyOptions struct {
	timeout  time.Duration
	onCommit bool
}

// WithTimeout bounds the write by d as well as by its context (the write of an API request: api.ForRequest).
func WithTimeout(d time.Duration) ApplyOption { return func(o *applyOptions) { o.timeout = d } }

// OnCommit returns as soon as the leader has committed the write, with the record the leader wrote, without
// waiting for this node to apply it: a follower learns of a commit only with the leader's next append (up to
// Raft's CommitTimeout later). For callers that answer from the returned record: the node's plain reads still
// see the write (they wait for every write the node answered), so a client cannot tell the difference.
var OnCommit ApplyOption = func(o *applyOptions) { o.onCommit = true }

// Apply is the one path for every write. On the leader it goes through Raft; on any other node it is forwarded
// to the leader over the mesh, so callers never chase the leader. While there is no leader it waits for one, up to
// the node's LeaderWait. A command that Apply rejects comes back as an *errs.Error. Unless OnCommit is given,
// once it returns this node's own state includes the write. Whatever the options, the rule readers see is one:
// a plain read on a node includes every write that node answered (read-your-writes), and a read that carries a
// write's index (X-Shoal-Min-Index) includes it on any node.
func (n *Node) Apply(ctx context.Context, c raftfsm.Command, opts ...ApplyOption) (*Applied, error) {
	var o applyOptions
	for _, opt := range opts {
		opt(&o)
	}
	if o.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	data, err := raftfsm.Encode(c)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	res, err := n.applyData(ctx, data)
	n.metrics.observeApply(c.Type(), err, time.Since(start))
	if err != nil {
		return nil, err
	}
	for old := n.answered.Load(); res.Index > old && !n.answered.CompareAndSwap(old, res.Index); old = n.answered.Load() {
	}
	if !o.onCommit {
		n.WaitApplied(ctx, res.Index)
	}
	return res, nil
}

// Answered returns the highest index of a write this node answered: a plain read waits until the state includes
// it (read-your-writes on this node).
func (n *Node) Answered() uint64 { return n.answered.Load() }

// WaitApplied waits (up to 5 s, or ctx) until this node's state includes the given index.
func (n *Node) WaitApplied(ctx context.Context, index uint64) {
	if index == 0 || n.fsm.Index() >= index {
		return
	}
	waitCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	n.fsm.Wait(waitCtx, index-1)
}

func (n *Node) applyData(ctx context.Context, data []byte) (*Applied, error) {
	var res *Applied
	var err error
	if n.untilLeaderWait(ctx, func(deadline time.Time) bool {
		var retry bool
		res, retry, err = n.applyOnce(ctx, data, deadline)
		return !retry
	}) {
		return res, err
	}
	if err != nil {
		n.log.Debug("write gave up waiting for a leader", "err", err)
	}
	return nil, ErrNoLeader
}

// untilLeaderWait calls try until it reports done, backing off from 10 ms to 200 ms between calls, for at most
// the node's LeaderWait or until ctx ends, whichever comes first; try gets that deadline. It reports whether try
// finished (false: time ran out first). Writes and consistent reads wait out an election this way.
func (n *Node) untilLeaderWait(ctx context.Context, try func(deadline time.Time) (done bool)) bool {
	deadline := time.Now().Add(n.cfg.LeaderWait)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	backoff := 10 * time.Millisecond
	for {
		leader, _ := n.Leader()
		term := n.raft.CurrentTerm()
		if try(deadline) {
			return true
		}
		if time.Now().Add(backoff).After(deadline) || ctx.Err() != nil {
			return false
		}
		if !n.waitLeaderChange(ctx, leader, term, backoff) {
			return false
		}
		backoff = min(backoff*2, 200*time.Millisecond)
	}
}

// waitLeaderChange pauses up to d between two tries, but returns at once when Raft names a leader other than the
// one the last try used, or enters a new term with a leader known: the next try goes to the new leader then,
// not after the rest of the back-off (an election ends with one heartbeat from the winner). It reports false
// when ctx ended.
func (n *Node) waitLeaderChange(ctx context.Context, leader string, term uint64, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		changed := n.leaderW.changed()
		if now, _ := n.Leader(); now != "" && (now != leader || n.raft.CurrentTerm() != term) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
			return true
		case <-changed:
		}
	}
}

// applyOnce tries the write once. retry is true only when the write certainly was not applied (no leader known,
// the leader could not be reached, or it was no longer leader), so retrying cannot apply it twice.
func (n *Node) applyOnce(ctx context.Context, data []byte, deadline time.Time) (*Applied, bool, error) {
	if n.raft.State() == raft.Leader {
		if err := n.awaitKnown(ctx, raftfsm.CommandType(data[1]), deadline); err != nil {
			return nil, false, err
		}
		start := time.Now()
		f := n.raft.Apply(data, time.Until(deadline))
		err := f.Error()
		n.metrics.commit.Observe(time.Since(start).Seconds())
		if err != nil {
			if errors.Is(err, raft.ErrNotLeader) {
				return nil, true, err
			}
			if errors.Is(err, raft.ErrEnqueueTimeout) {
				return nil, false, ErrNoLeader
			}
			return nil, false, &transport.RemoteError{Code: CodeUnavailable,
				Message: fmt.Sprintf("the write may or may not have been applied (%v): read the state before retrying", err)}
		}
		return resultOf(f.Index(), f.Response())
	}
	leader, addr := n.Leader()
	if addr == "" {
		return nil, true, nil
	}
	dialCtx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	// A cached connection to a leader that just died looks alive to QUIC for a while, and a dial to a stopped
	// one waits for the handshake timeout; Raft notices the loss within a heartbeat timeout: give up then.
	stop := n.watchLeader(dialCtx, cancel, leader)
	defer stop()
	if _, err := n.ep.Dial(dialCtx, addr, transport.ALPNRPC); err != nil {
		return nil, true, fmt.Errorf("reach leader %s: %w", leader, err)
	}
	var out Applied
	err := n.ep.Call(dialCtx, addr, "apply", applyRequest{Data: data, Token: tokenIDFrom(ctx), Wait: time.Until(deadline)}, &out)
	var re *transport.RemoteError
	var reset *quic.StatelessResetError
	switch {
	case err == nil:
		return &out, false, nil
	case errors.As(err, &reset):
		// The leader's process has no state for our (cached) connection: it restarted, and never saw the request.
		return nil, true, err
	case errors.As(err, &re) && (re.Code == CodeNoLeader || re.Code == "not_leader"):
		return nil, true, err
	case errors.As(err, &re):
		return nil, false, re // the leader's refusal, code and message as it gave them
	case transport.IsNotMember(err):
		// The leader closed our connection because the mesh no longer lists this node: it left or was removed,
		// possibly by this very write (its own departure), whose answer the closing overtook.
		return nil, false, fmt.Errorf("%w (%w)", errs.New(errs.Forbidden,
			"the mesh no longer accepts this node: it left or was removed; run commands through a member"), err)
	default:
		return nil, false, &transport.RemoteError{Code: CodeUnavailable,
			Message: fmt.Sprintf("lost contact with leader %s during the write, which may or may not have been applied: read the state before retrying (%v)", leader, err)}
	}
}

// watchLeader cancels the call's context when Raft stops naming leader as the leader, or enters a new term: a
// call to a leader that died or was deposed is abandoned as soon as Raft knows, not when the call times out.
func (n *Node) watchLeader(ctx context.Context, cancel context.CancelFunc, leader string) (stop func()) {
	done := make(chan struct{})
	term := n.raft.CurrentTerm()
	go func() {
		// A new leader or a new Raft state arrives through leaderW at once; a new term under the same leader,
		// which this node may see without either, within the tick.
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			changed := n.leaderW.changed()
			if now, _ := n.Leader(); now != leader || n.raft.CurrentTerm() != term {
				cancel()
				return
			}
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-changed:
			case <-t.C:
			}
		}
	}()
	return func() { close(done) }
}

func resultOf(index uint64, resp any) (*Applied, bool, error) {
	r, ok := resp.(*raftfsm.Result)
	if !ok {
		return nil, false, fmt.Errorf("raft returned %T, not a command result", resp)
	}
	if r.Err != nil {
		return nil, false, r.Err
	}
	return &Applied{Index: index, Value: r.Value}, false, nil
}

// handleApply serves a write forwarded by another node. Only the leader applies; a node that is no longer leader
// says so, and the caller retries against the new one. The leader decides what is committed: the command must
// decode strictly (a malformed or unknown one is refused), and the caller's token, or the forwarding node itself,
// must be allowed to write it by the leader's own state (authorizeForwarded). A refusal commits nothing.
func (n *Node) handleApply(ctx context.Context, peer string, body json.RawMessage) (any, error) {
	var req applyRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, &raftfsm.Error{Code: raftfsm.KindBadRequest, Message: "malformed forwarded write: " + err.Error()}
	}
	if !n.raftUp.Load() || n.raft.State() != raft.Leader {
		return nil, &transport.RemoteError{Code: "not_leader", Message: "this node is not the leader"}
	}
	cmd, err := raftfsm.DecodeStrict(req.Data)
	if err != nil {
		n.log.Warn("refused a forwarded write that does not decode", "component", "apply", "peer", peer, "err", err)
		return nil, err
	}
	ae := n.authorizeForwarded(peer, req.Token, cmd)
	if ae != nil && ae.Code == errs.Unauthorized {
		// A leader fresh from an election may not have applied every committed entry yet, the token's creation
		// among them: apply them all (a barrier), then decide. Only a refusal pays for this.
		if n.raft.Barrier(n.cfg.LeaderWait).Error() == nil {
			ae = n.authorizeForwarded(peer, req.Token, cmd)
		}
	}
	if ae != nil {
		n.log.Warn("refused a forwarded write", "component", "apply", "peer", peer, "command", fmt.Sprintf("%T", cmd), "reason", ae.Message)
		return nil, ae
	}
	deadline := time.Now().Add(n.cfg.LeaderWait)
	if req.Wait > 0 {
		deadline = time.Now().Add(min(n.cfg.LeaderWait, req.Wait-req.Wait/10))
	}
	if err := n.awaitKnown(ctx, cmd.Type(), deadline); err != nil {
		return nil, err
	}
	start := time.Now()
	f := n.raft.Apply(req.Data, n.cfg.LeaderWait)
	err = f.Error()
	n.metrics.commit.Observe(time.Since(start).Seconds())
	if err != nil {
		if errors.Is(err, raft.ErrNotLeader) {
			return nil, &transport.RemoteError{Code: "not_leader", Message: "this node is not the leader"}
		}
		return nil, &transport.RemoteError{Code: CodeUnavailable, Message: err.Error()}
	}
	res, _, err := resultOf(f.Index(), f.Response())
	return res, err
}

// ConsistentRead waits until this node has applied everything the leader had committed when the read began,
// after the leader confirmed it still leads (the ReadIndex protocol), so the read that follows is linearizable.
func (n *Node) ConsistentRead(ctx context.Context) error {
	index, err := n.consistentIndex(ctx)
	if err != nil {
		return err
	}
	for !n.applied.through(index) {
		select {
		case <-ctx.Done():
			return &transport.RemoteError{Code: CodeUnavailable, Message: "timed out catching up with the leader for a consistent read"}
		case <-n.fsm.Changed():
		case <-time.After(2 * time.Millisecond):
		}
	}
	return nil
}

// consistentIndex gets a read index, from this node if it leads or else from the leader. Asking has no effect on
// the state, so any failure is tried again (no leader known yet, the leader unreachable or no longer leader, its
// leadership not confirmed in time on a busy mesh) until the node's LeaderWait or ctx runs out, as a write does: a
// read waits out an election or a slow moment rather than failing in the middle of one. Measured: on a 33-node
// mesh whose links were full, a follower's fetch answered 503 because one read-index round took longer than a
// heartbeat timeout to hear from the voters.
func (n *Node) consistentIndex(ctx context.Context) (uint64, error) {
	var index uint64
	var err error
	if !n.untilLeaderWait(ctx, func(deadline time.Time) bool {
		actx, cancel := context.WithDeadline(ctx, deadline)
		defer cancel()
		index, err = n.readIndexOnce(actx)
		return err == nil
	}) {
		n.log.Debug("consistent read gave up", "err", err)
		var re *transport.RemoteError
		if errors.As(err, &re) && (re.Code == CodeNoLeader || re.Code == CodeUnavailable) {
			return 0, err
		}
		// Whatever the last try met (a leader that stepped down, a cancelled call), no leader answered in time.
		return 0, ErrNoLeader
	}
	return index, nil
}

// readIndexOnce asks for a read index once: from raft here if this node leads, else from the leader over RPC.
func (n *Node) readIndexOnce(ctx context.Context) (uint64, error) {
	if n.raft.State() == raft.Leader {
		return n.readIndex()
	}
	leader, addr := n.Leader()
	if addr == "" {
		return 0, ErrNoLeader
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// As for a forwarded write: a call to a leader that just died would wait for the call's whole deadline;
	// Raft notices the loss within a heartbeat timeout, and then this try ends and the next goes to the new one.
	stop := n.watchLeader(ctx, cancel, leader)
	defer stop()
	var out struct{ Index uint64 }
	if err := n.ep.Call(ctx, addr, "read_index", struct{}{}, &out); err != nil {
		var re *transport.RemoteError
		if errors.As(err, &re) && re.Code != "not_leader" {
			return 0, re
		}
		return 0, &transport.RemoteError{Code: CodeNoLeader, Message: fmt.Sprintf("could not reach the leader for a consistent read: %v", err)}
	}
	return out.Index, nil
}

func (n *Node) readIndex() (uint64, error) {
	index := n.raft.CommitIndex()
	start := time.Now()
	if err := n.heartbeats.verify(func() error { return n.raft.VerifyLeader().Error() }); err != nil {
		return 0, ErrNoLeader
	}
	// VerifyLeader counts non-voters' answers (see votersAckedSince); insist on the voters'. Their answers to the
	// heartbeats VerifyLeader sent are on their way, so this waits at most about a round trip on a healthy mesh.
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return 0, ErrNoLeader
	}
	servers := f.Configuration().Servers
	deadline := time.Now().Add(n.cfg.Timing.HeartbeatTimeout)
	for !n.heartbeats.votersAckedSince(servers, raft.ServerID(n.cfg.Name), start) {
		if time.Now().After(deadline) || n.raft.State() != raft.Leader {
			return 0, ErrNoLeader
		}
		time.Sleep(2 * time.Millisecond)
	}
	return index, nil
}

func (n *Node) handleReadIndex(ctx context.Context, _ string, _ json.RawMessage) (any, error) {
	if n.raft.State() != raft.Leader {
		return nil, &transport.RemoteError{Code: "not_leader", Message: "this node is not the leader"}
	}
	index, err := n.readIndex()
	if err != nil {
		return nil, err
	}
	return struct{ Index uint64 }{index}, nil
}

func (n *Node) registerRPCs() {
	n.ep.HandleRPCLimit("apply", transport.MaxFrame, n.handleApply)
	n.ep.HandleRPC("read_index", n.handleReadIndex)
	n.ep.HandleRPC("join_admit", n.handleJoinAdmit)
	n.ep.HandleRPC("renew_cert", n.handleRenew)
	n.ep.HandleJoinRPC("join", n.handleJoin)
}
