package node

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/shoal-ci/shoal/raftfsm"
	"github.com/shoal-ci/shoal/transport"
)

// DefaultCertLifetime is how long a node certificate is valid. A member renews its certificate at half-life, so a
// node that was off for up to half a lifetime (3.5 days) always comes back by itself; one that was off longer than
// its certificate's remaining life must join again (docs/operations.md). A lost node that never returns stops
// being accepted when its certificate expires, a week at most; `node members remove` revokes it at once.
const DefaultCertLifetime = 7 * 24 * time.Hour

// revalidateDelay lets the answer to the write that removed a node (its own `node leave` is one) reach it before
// its connections are closed; the removal still takes effect well within a second.
var revalidateDelay = 200 * time.Millisecond

// checkPeerCert is the endpoint's membership check (transport.PeerCheck): a certificate from the mesh CA is
// refused once its node left or was removed, or when it predates the node's latest admission. It reads this
// node's own state, so every node enforces a removal as soon as it has applied it.
func (n *Node) checkPeerCert(leaf *x509.Certificate) error {
	var err error
	n.fsm.Read(func(s *raftfsm.State) { err = s.MemberCertError(leaf.Subject.CommonName, transport.IssuedAt(leaf)) })
	return err
}

// membershipChanged closes the connections of peers that the latest state no longer admits.
func (n *Node) membershipChanged() {
	time.AfterFunc(revalidateDelay, func() {
		if closed := n.ep.Revalidate(); closed > 0 {
			n.log.Info("closed the connections of removed nodes", "component", "transport", "connections", closed)
		}
	})
}

// checkOwnCert refuses to start on an expired certificate: every peer would refuse it.
func checkOwnCert(id *transport.Identity, dataDir string) error {
	leaf := id.Cert.Leaf
	if time.Now().After(leaf.NotAfter) {
		return fmt.Errorf("the node certificate in %s expired at %s: this node was off longer than its certificate's life, "+
			"and the mesh no longer accepts it. Rejoin: move the data dir aside, then `node join` with a join token "+
			"from `node token join` and the same --name (docs/operations.md, \"A node that was off too long\")",
			filepath.Join(dataDir, tlsDir), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

// renewalDue is when a certificate should be renewed: at half of its life.
func renewalDue(leaf *x509.Certificate) time.Time {
	issued := transport.IssuedAt(leaf)
	return issued.Add(leaf.NotAfter.Sub(issued) / 2)
}

// renewLoop renews this node's certificate from the leader at half-life, and retries until it succeeds: across
// leader changes (each try asks whoever leads then) and restarts (the loop starts with the node and renews at once
// if the certificate is past half-life). During a CA rotation it also fetches the certificate from the next CA.
func (n *Node) renewLoop() {
	defer n.wg.Done()
	for {
		wait := n.renewStep()
		select {
		case <-n.ctx.Done():
			return
		case <-n.renewWake:
		case <-time.After(wait):
		}
	}
}

// renewStep does what is due and returns how long to wait before the next look.
func (n *Node) renewStep() time.Duration {
	if !n.keysSynced {
		if n.keysSynced = n.syncKeys(); !n.keysSynced {
			return 100 * time.Millisecond
		}
	}
	leaf := n.ep.Identity().Cert.Leaf
	life := leaf.NotAfter.Sub(transport.IssuedAt(leaf))
	retry := min(max(life/20, 100*time.Millisecond), time.Minute)
	needNext, needNow := n.caWork()
	for _, next := range []bool{true, false} {
		due := needNext
		if !next {
			// A certificate that outlives the lifetime now in force (one from before short-lived certificates,
			// a 5-year one) is renewed at once, so an upgraded mesh converges to short-lived certificates.
			due = needNow || time.Until(renewalDue(leaf)) <= 0 || time.Until(leaf.NotAfter) > n.cfg.CertLifetime+time.Minute
		}
		if !due {
			continue
		}
		ctx, cancel := context.WithTimeout(n.ctx, n.cfg.LeaderWait+5*time.Second)
		err := n.renewCert(ctx, next)
		cancel()
		if err != nil {
			if n.ctx.Err() == nil {
				n.log.Warn("certificate renewal failed; retrying", "component", "certs", "err", err, "next_ca", next,
					"expires", leaf.NotAfter.UTC().Format(time.RFC3339), "retry_in", retry)
			}
			return retry
		}
		leaf = n.ep.Identity().Cert.Leaf
	}
	return max(min(time.Until(renewalDue(leaf)), time.Hour), 10*time.Millisecond)
}

// wakeRenewal makes the renewal loop look again now (a CA rotation moved).
func (n *Node) wakeRenewal() {
	select {
	case n.renewWake <- struct{}{}:
	default:
	}
}

type renewRequest struct {
	PublicKey []byte `json:"public_key"`
	// Next asks for a certificate from the next CA of a rotation under way.
	Next bool `json:"next,omitempty"`
}

type renewResponse struct {
	CA   []byte `json:"ca"`
	Cert []byte `json:"cert"`
}

// renewCert has the leader sign a new certificate for this node's key, stores it, and serves it from the next
// handshake on. With next, the certificate comes from the next CA of a rotation and is kept aside until it ends.
func (n *Node) renewCert(ctx context.Context, next bool) error {
	id := n.ep.Identity()
	pub, err := transport.PublicKeyPEM(id.Cert.PrivateKey.(crypto.Signer))
	if err != nil {
		return err
	}
	req := renewRequest{PublicKey: pub, Next: next}
	var resp *renewResponse
	if !n.untilLeaderWait(ctx, func(deadline time.Time) bool {
		cctx, cancel := context.WithDeadline(ctx, deadline)
		defer cancel()
		resp, err = n.renewOnce(cctx, req)
		var re *transport.RemoteError
		return err == nil || errors.As(err, &re) && re.Code != "not_leader" && re.Code != CodeNoLeader
	}) && err == nil {
		err = ErrNoLeader
	}
	if err != nil {
		return err
	}
	renewed, err := id.WithCert(resp.CA, resp.Cert)
	if err != nil {
		return fmt.Errorf("the renewed certificate is not usable: %w", err)
	}
	if next {
		if err := writeAtomic(filepath.Join(n.cfg.DataDir, tlsDir, nextCertFile), resp.Cert, 0o644); err != nil {
			return err
		}
		n.log.Info("holding a certificate from the next mesh CA", "component", "certs", "next_ca", renewed.CAHash)
		n.refreshTrust() // the rotation may have finished while this was on its way
		return nil
	}
	if err := renewed.Save(filepath.Join(n.cfg.DataDir, tlsDir)); err != nil {
		return err
	}
	if err := n.ep.SetIdentity(renewed); err != nil {
		return err
	}
	n.log.Info("renewed the node certificate", "component", "certs",
		"expires", renewed.Cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

func (n *Node) renewOnce(ctx context.Context, req renewRequest) (*renewResponse, error) {
	if n.raft.State() == raft.Leader {
		return n.signRenewal(n.cfg.Name, req)
	}
	_, addr := n.Leader()
	if addr == "" {
		return nil, ErrNoLeader
	}
	var out renewResponse
	if err := n.ep.Call(ctx, addr, "renew_cert", req, &out); err != nil {
		var re *transport.RemoteError
		if errors.As(err, &re) {
			return nil, re
		}
		return nil, &transport.RemoteError{Code: CodeNoLeader, Message: fmt.Sprintf("could not reach the leader: %v", err)}
	}
	return &out, nil
}

// handleRenew signs a renewed certificate for the calling member. The transport has already checked that the
// caller's current certificate is from the mesh CA, unexpired, and that its node is still a member.
func (n *Node) handleRenew(_ context.Context, peer string, body json.RawMessage) (any, error) {
	if !n.raftUp.Load() || n.raft.State() != raft.Leader {
		return nil, &transport.RemoteError{Code: "not_leader", Message: "this node is not the leader"}
	}
	var req renewRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, &raftfsm.Error{Code: raftfsm.KindBadRequest, Message: "malformed renewal request: " + err.Error()}
	}
	return n.signRenewal(peer, req)
}

// signRenewal signs a certificate for member name, with the addresses gossip knows it by.
func (n *Node) signRenewal(name string, req renewRequest) (*renewResponse, error) {
	var (
		mesh raftfsm.Mesh
		err  error
	)
	n.fsm.Read(func(s *raftfsm.State) {
		if s.Mesh != nil {
			mesh = *s.Mesh
		}
		err = s.MemberCertError(name, time.Now())
	})
	if err != nil {
		return nil, &transport.RemoteError{Code: CodeForbidden, Message: fmt.Sprintf("node %q is not a member: %v", name, err)}
	}
	if mesh.CACert == "" {
		return nil, &transport.RemoteError{Code: CodeNoLeader, Message: "the leader has not loaded the mesh state yet"}
	}
	if req.Next {
		return n.signNext(name, req, mesh)
	}
	ca, err := transport.LoadCA([]byte(mesh.CACert), []byte(mesh.CAKey))
	if err != nil {
		return nil, fmt.Errorf("load mesh CA: %w", err)
	}
	cert, err := ca.SignNode(name, req.PublicKey, n.memberIPs(name), n.cfg.CertLifetime)
	if err != nil {
		return nil, &raftfsm.Error{Code: raftfsm.KindBadRequest, Message: err.Error()}
	}
	n.log.Info("signed a renewed certificate", "component", "certs", "node", name)
	return &renewResponse{CA: []byte(strings.Join(mesh.TrustedCAs(time.Now()), "")), Cert: cert}, nil
}

// memberIPs is the IP a member's QUIC address advertises, as gossip knows it (certificates carry it; peers are
// not checked against it).
func (n *Node) memberIPs(name string) []net.IP {
	addr := ""
	if name == n.cfg.Name {
		addr = n.raftAddr
	}
	for _, m := range n.members.snapshot() {
		if m.Name == name && m.Addr != "" {
			addr = m.Addr
		}
	}
	if host, _, err := net.SplitHostPort(addr); err == nil {
		if ip := net.ParseIP(host); ip != nil {
			return []net.IP{ip}
		}
	}
	return nil
}

// admitViaLeader runs admit on the leader: here if this node leads, else over the mesh RPC, waiting out an
// election up to LeaderWait.
func (n *Node) admitViaLeader(ctx context.Context, req joinRequest) (*joinResponse, error) {
	if !n.raftUp.Load() {
		return nil, &JoinRefused{"this node is still starting: retry in a moment, or join through another server"}
	}
	var (
		resp *joinResponse
		err  error
	)
	if !n.untilLeaderWait(ctx, func(deadline time.Time) bool {
		if n.raft.State() == raft.Leader {
			resp, err = n.admit(req)
			return true
		}
		_, addr := n.Leader()
		if addr == "" {
			err = ErrNoLeader
			return false
		}
		cctx, cancel := context.WithDeadline(ctx, deadline)
		defer cancel()
		var out joinResponse
		if err = n.ep.Call(cctx, addr, "join_admit", req, &out); err == nil {
			resp = &out
			return true
		}
		var re *transport.RemoteError
		return errors.As(err, &re) && re.Code != "not_leader" && re.Code != CodeNoLeader
	}) {
		return nil, &JoinRefused{"the mesh has no reachable leader to admit this server right now: retry in a moment"}
	}
	return resp, err
}

// handleJoinAdmit is the leader's side of admitViaLeader: a member forwards the join request it received.
func (n *Node) handleJoinAdmit(_ context.Context, peer string, body json.RawMessage) (any, error) {
	if !n.raftUp.Load() || n.raft.State() != raft.Leader {
		return nil, &transport.RemoteError{Code: "not_leader", Message: "this node is not the leader"}
	}
	var req joinRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, &JoinRefused{"malformed join request"}
	}
	resp, err := n.admit(req)
	if err != nil {
		n.log.Warn("join refused", "component", "join", "name", req.Name, "via", peer, "reason", err)
		return nil, err
	}
	n.log.Info("join admitted", "component", "join", "name", req.Name, "via", peer)
	return resp, nil
}
