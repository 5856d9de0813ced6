package node

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
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

func (n *Node) caStatus() CAStatus {
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

func (n *Node) getCA(w http.ResponseWriter, r *http.Request) error {
	if err := n.BeginRead(r); err != nil {
		return err
	}
	n.WriteJSON(w, http.StatusOK, n.caStatus())
	return nil
}

// postRotateCA serves `node ca rotate`: without finish it starts a rotation (a new CA that every member trusts at
// once and gets a certificate from); with finish it makes the new CA the signing one, refusing while a member of
// the Raft configuration has no certificate from it, unless forced.
func (n *Node) postRotateCA(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Finish bool             `json:"finish"`
		Force  bool             `json:"force"`
		Grace  raftfsm.Duration `json:"grace"`
	}
	if r.ContentLength != 0 {
		if err := decode(r, &in); err != nil {
			return err
		}
	}
	ctx, cancel := contextWithTimeout(r, 15*time.Second)
	defer cancel()
	if err := n.ConsistentRead(ctx); err != nil {
		return err
	}
	st := n.caStatus()
	if !in.Finish {
		if st.NextCAHash != "" {
			return errs.New(raftfsm.KindConflict, "a CA rotation is already under way (next CA %s): finish it with `node ca rotate --finish`", st.NextCAHash)
		}
		ca, err := transport.NewCA(n.stored.Mesh)
		if err != nil {
			return err
		}
		if _, err := n.Apply(ctx, &raftfsm.CARotate{Stage: raftfsm.CAStageStart, CACert: string(ca.CertPEM), CAKey: string(ca.KeyPEM), At: time.Now().UTC()}); err != nil {
			return err
		}
		n.log.Info("CA rotation started", "component", "certs", "next_ca", ca.Hash(), "by", TokenOf(r).Name)
		writeJSON(w, http.StatusOK, map[string]any{"stage": raftfsm.CAStageStart, "next_ca_hash": ca.Hash()})
		return nil
	}
	grace := time.Duration(in.Grace)
	if grace == 0 {
		grace = DefaultCAGrace
	}
	if grace < 0 || grace > 7*24*time.Hour {
		return errs.New(errs.BadRequest, "grace %s is out of range: give a duration from 1s to 168h, like 10m", grace)
	}
	if st.NextCAHash == "" {
		return errs.New(raftfsm.KindConflict, "no CA rotation is under way: start one with `node ca rotate`")
	}
	if len(st.Missing) > 0 && !in.Force {
		return errs.New(raftfsm.KindConflict, "members %s have no certificate from the next CA yet (are they running?): wait and retry, "+
			"or finish with --force and join those members again afterwards", strings.Join(st.Missing, ", "))
	}
	if _, err := n.Apply(ctx, &raftfsm.CARotate{Stage: raftfsm.CAStageFinish, At: time.Now().UTC(), Grace: raftfsm.Duration(grace)}); err != nil {
		return err
	}
	n.log.Info("CA rotation finished", "component", "certs", "ca", st.NextCAHash, "grace", grace, "forced_without", st.Missing, "by", TokenOf(r).Name)
	writeJSON(w, http.StatusOK, map[string]any{"stage": raftfsm.CAStageFinish, "ca_hash": st.NextCAHash, "old_ca_trusted_until": time.Now().Add(grace).UTC(),
		"without": st.Missing})
	return nil
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
