package node

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/shoal-ci/shoal/errs"
	"github.com/shoal-ci/shoal/raftfsm"
	"github.com/shoal-ci/shoal/transport"
)

// nextCertFile holds, during a CA rotation, this node's certificate from the next CA; it is presented from the
// rotation's finish on.
const nextCertFile = "node-next.pem"

// DefaultCAGrace is how long the replaced CA stays trusted after a rotation finishes.
const DefaultCAGrace = 10 * time.Minute

// caTrust serialises trust refreshes and holds the timer that ends the old CA's grace.
type caTrust struct {
	mu    sync.Mutex
	timer *time.Timer
}

// refreshTrust makes the endpoint trust exactly the CAs the state trusts now and, once a rotation has finished,
// present the certificate from the new CA. It saves the identity, closes connections of peers whose CA is no
// longer trusted, and comes back when the old CA's grace ends. It runs at start, when a CA rotation is applied or
// a snapshot restored, and on that timer.
func (n *Node) refreshTrust() {
	t := &n.caTrust
	t.mu.Lock()
	defer t.mu.Unlock()
	if n.ep == nil || !n.Ready() {
		return // a state older than what this node saw before it stopped must not narrow its trust (syncKeys)
	}
	var (
		mesh raftfsm.Mesh
		ok   bool
	)
	n.fsm.Read(func(s *raftfsm.State) {
		if s.Mesh != nil {
			mesh, ok = *s.Mesh, true
		}
	})
	if !ok {
		return
	}
	now := time.Now()
	trusted := []byte(strings.Join(mesh.TrustedCAs(now), ""))
	id := n.ep.Identity()
	certPEM := id.CertPEM()
	tlsPath := filepath.Join(n.cfg.DataDir, tlsDir)
	switched := false
	if signing := firstCert([]byte(mesh.CACert)); signing != nil && transport.CertHash(signing.Raw) != id.CAHash {
		// The CA that signed our certificate no longer signs: present the one the rotation gave us, if we have it.
		if next, err := os.ReadFile(filepath.Join(tlsPath, nextCertFile)); err == nil && issuedBy(next, signing) {
			certPEM, switched = next, true
		}
	}
	renewed, err := id.WithCert(trusted, certPEM)
	if err != nil {
		n.log.Error("this node's certificate is not from a CA the mesh trusts: it was off during a whole CA rotation; "+
			"move the data dir aside and `node join` again (docs/operations.md)", "component", "certs", "err", err)
		return
	}
	if !bytes.Equal(renewed.CAPEM, id.CAPEM) || switched {
		if err := renewed.Save(tlsPath); err != nil {
			n.log.Error("save the node identity after a CA change", "component", "certs", "err", err)
			return
		}
		if switched {
			_ = os.Remove(filepath.Join(tlsPath, nextCertFile))
			n.log.Info("presenting the certificate from the new mesh CA", "component", "certs", "ca", renewed.CAHash)
		}
		if err := n.ep.SetIdentity(renewed); err != nil {
			n.log.Error("use the node identity after a CA change", "component", "certs", "err", err)
			return
		}
	}
	if closed := n.ep.Revalidate(); closed > 0 {
		n.log.Info("closed connections of peers whose CA is no longer trusted", "component", "certs", "connections", closed)
	}
	if t.timer != nil {
		t.timer.Stop()
		t.timer = nil
	}
	if mesh.OldCACert != "" && mesh.OldCAUntil.After(now) {
		t.timer = time.AfterFunc(time.Until(mesh.OldCAUntil)+10*time.Millisecond, n.refreshTrust)
	}
}

func (n *Node) stopTrustTimer() {
	n.caTrust.mu.Lock()
	defer n.caTrust.mu.Unlock()
	if n.caTrust.timer != nil {
		n.caTrust.timer.Stop()
	}
}

// caWork says what a CA rotation asks of this node's renewal loop: a certificate from the next CA while a rotation
// is under way (needNext), or a certificate from the signing CA at once when it presents one from another CA and
// has nothing better (needNow: a rotation was finished without it).
func (n *Node) caWork() (needNext, needNow bool) {
	var mesh raftfsm.Mesh
	n.fsm.Read(func(s *raftfsm.State) {
		if s.Mesh != nil {
			mesh = *s.Mesh
		}
	})
	if mesh.CACert == "" {
		return false, false
	}
	next, _ := os.ReadFile(filepath.Join(n.cfg.DataDir, tlsDir, nextCertFile))
	if nextCA := firstCert([]byte(mesh.NextCACert)); nextCA != nil {
		needNext = !issuedBy(next, nextCA)
	}
	if signing := firstCert([]byte(mesh.CACert)); signing != nil && transport.CertHash(signing.Raw) != n.ep.Identity().CAHash {
		needNow = !issuedBy(next, signing)
	}
	return needNext, needNow
}

func firstCert(pemData []byte) *x509.Certificate {
	block, _ := pem.Decode(pemData)
	if block == nil {
		return nil
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil
	}
	return c
}

func issuedBy(certPEM []byte, ca *x509.Certificate) bool {
	leaf := firstCert(certPEM)
	return leaf != nil && leaf.CheckSignatureFrom(ca) == nil
}

// CAStatus is the answer of GET /v1/mesh/ca.
type CAStatus struct {
	CAHash     string    `json:"ca_hash"`
	NextCAHash string    `json:"next_ca_hash,omitempty"`
	Issued     []string  `json:"issued,omitempty"`
	Missing    []string  `json:"missing,omitempty"`
	OldCAHash  string    `json:"old_ca_hash,omitempty"`
	OldCAUntil time.Time `json:"old_ca_until,omitzero"`
}

// CAStatus describes the mesh's CAs and a rotation under way, as GET /v1/mesh/ca shows them.
func (n *Node) CAStatus() CAStatus {
	var mesh raftfsm.Mesh
	n.fsm.Read(func(s *raftfsm.State) {
		if s.Mesh != nil {
			mesh = *s.Mesh
		}
	})
	hash := func(p string) string {
		if c := firstCert([]byte(p)); c != nil {
			return transport.CertHash(c.Raw)
		}
		return ""
	}
	st := CAStatus{CAHash: hash(mesh.CACert), NextCAHash: hash(mesh.NextCACert), Issued: mesh.NextIssued}
	if st.NextCAHash != "" {
		for name := range n.raftServers() {
			if !slices.Contains(mesh.NextIssued, name) {
				st.Missing = append(st.Missing, name)
			}
		}
		slices.Sort(st.Missing)
	}
	if mesh.OldCACert != "" && mesh.OldCAUntil.After(time.Now()) {
		st.OldCAHash, st.OldCAUntil = hash(mesh.OldCACert), mesh.OldCAUntil
	}
	return st
}

// StartCARotation starts a CA rotation (`node ca rotate`): a new CA that every member trusts at once and gets a
// certificate from. It returns the new CA's hash; by names who asked, for the log.
func (n *Node) StartCARotation(ctx context.Context, by string) (string, error) {
	if err := n.ConsistentRead(ctx); err != nil {
		return "", err
	}
	st := n.CAStatus()
	if st.NextCAHash != "" {
		return "", errs.New(raftfsm.KindConflict, "a CA rotation is already under way (next CA %s): finish it with `node ca rotate --finish`", st.NextCAHash)
	}
	ca, err := transport.NewCA(n.stored.Mesh)
	if err != nil {
		return "", err
	}
	if _, err := n.Apply(ctx, &raftfsm.CARotate{Stage: raftfsm.CAStageStart, CACert: string(ca.CertPEM), CAKey: string(ca.KeyPEM), At: time.Now().UTC()}); err != nil {
		return "", err
	}
	n.log.Info("CA rotation started", "component", "certs", "next_ca", ca.Hash(), "by", by)
	return ca.Hash(), nil
}

// FinishCARotation makes the next CA the signing one (`node ca rotate --finish`), refusing while a member of the
// Raft configuration has no certificate from it, unless forced; the old CA stays trusted for grace (0: the
// default). It returns the rotation as it stood when finished (the new CA's hash, the members without a
// certificate from it); by names who asked, for the log.
func (n *Node) FinishCARotation(ctx context.Context, grace time.Duration, force bool, by string) (CAStatus, error) {
	if err := n.ConsistentRead(ctx); err != nil {
		return CAStatus{}, err
	}
	st := n.CAStatus()
	if grace == 0 {
		grace = DefaultCAGrace
	}
	if grace < 0 || grace > 7*24*time.Hour {
		return CAStatus{}, errs.New(errs.BadRequest, "grace %s is out of range: give a duration from 1s to 168h, like 10m", grace)
	}
	if st.NextCAHash == "" {
		return CAStatus{}, errs.New(raftfsm.KindConflict, "no CA rotation is under way: start one with `node ca rotate`")
	}
	if len(st.Missing) > 0 && !force {
		return CAStatus{}, errs.New(raftfsm.KindConflict, "members %s have no certificate from the next CA yet (are they running?): wait and retry, "+
			"or finish with --force and join those members again afterwards", strings.Join(st.Missing, ", "))
	}
	if _, err := n.Apply(ctx, &raftfsm.CARotate{Stage: raftfsm.CAStageFinish, At: time.Now().UTC(), Grace: raftfsm.Duration(grace)}); err != nil {
		return CAStatus{}, err
	}
	n.log.Info("CA rotation finished", "component", "certs", "ca", st.NextCAHash, "grace", grace, "forced_without", st.Missing, "by", by)
	return st, nil
}

// signNext signs a certificate from the next CA for member name and records that it has one (the leader's side
// of a rotation's second stage).
func (n *Node) signNext(name string, req renewRequest, mesh raftfsm.Mesh) (*renewResponse, error) {
	if mesh.NextCACert == "" {
		return nil, &raftfsm.Error{Code: raftfsm.KindConflict, Message: "no CA rotation is under way"}
	}
	ca, err := transport.LoadCA([]byte(mesh.NextCACert), []byte(mesh.NextCAKey))
	if err != nil {
		return nil, fmt.Errorf("load the next mesh CA: %w", err)
	}
	cert, err := ca.SignNode(name, req.PublicKey, n.memberIPs(name), n.cfg.CertLifetime)
	if err != nil {
		return nil, &raftfsm.Error{Code: raftfsm.KindBadRequest, Message: err.Error()}
	}
	ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
	defer cancel()
	if _, err := n.Apply(ctx, &raftfsm.CARotate{Stage: raftfsm.CAStageIssued, Name: name, At: time.Now().UTC()}); err != nil {
		var fe *raftfsm.Error
		if errors.As(err, &fe) {
			return nil, fe
		}
		return nil, &transport.RemoteError{Code: CodeUnavailable, Message: fmt.Sprintf("record the new certificate: %v", err)}
	}
	return &renewResponse{CA: []byte(strings.Join(mesh.TrustedCAs(time.Now()), "")), Cert: cert}, nil
}
