package transport

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/quic-go/quic-go"
)

// PeerCheck decides whether a certificate that chains to the mesh CA still belongs to a member: the CA proves
// that the mesh once issued it, the check says whether the mesh still stands behind it (the node has not left or
// been removed). It must be fast and must not block: it runs inside handshakes and before every stream.
type PeerCheck func(leaf *x509.Certificate) error

// RevokedError is why a peer's certificate was refused although it chains to the mesh CA.
type RevokedError struct {
	Node   string
	Reason error
	// Departed is set when the mesh's membership check refused the certificate (the node left, was removed, or
	// was admitted again with a newer certificate), as opposed to an expired certificate or an untrusted CA. The
	// peer is then told so with its own close code, which IsNotMember recognises.
	Departed bool
}

func (e *RevokedError) Error() string {
	return fmt.Sprintf("node %q is no longer a member of this mesh: %v", e.Node, e.Reason)
}

func (e *RevokedError) Unwrap() error { return e.Reason }

// SetPeerCheck installs the membership check applied, on every ALPN but join, to the peer's certificate during
// the handshake (both as server and as client) and again before each stream an RPC or Raft connection serves.
// Call Revalidate after the answer may have changed for a connected peer.
func (e *Endpoint) SetPeerCheck(check PeerCheck) {
	if check == nil {
		e.check.Store(nil)
		return
	}
	e.check.Store(&check)
}

// checkPeer applies expiry and the membership check to a verified leaf. Expiry is checked here as well as by
// crypto/tls, because a connection outlives its handshake: a certificate that expires on a live connection
// stops being accepted at the next stream.
func (e *Endpoint) checkPeer(leaf *x509.Certificate) error {
	if now := time.Now(); now.After(leaf.NotAfter) {
		return &RevokedError{Node: leaf.Subject.CommonName,
			Reason: fmt.Errorf("its certificate expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339))}
	}
	check := e.check.Load()
	if check == nil {
		return nil
	}
	if err := (*check)(leaf); err != nil {
		var re *RevokedError
		if errors.As(err, &re) {
			return err
		}
		return &RevokedError{Node: leaf.Subject.CommonName, Reason: err, Departed: true}
	}
	return nil
}

// connAllowed applies checkPeer to the certificate a connection was authenticated with. Join connections carry
// no certificate and are not mesh connections: they pass.
func (e *Endpoint) connAllowed(conn *quic.Conn) error {
	cs := conn.ConnectionState().TLS
	if cs.NegotiatedProtocol == ALPNJoin || len(cs.PeerCertificates) == 0 {
		return nil
	}
	return e.checkPeer(cs.PeerCertificates[0])
}

// refuseStream closes conn if its peer no longer passes the check, and reports whether it did.
func (e *Endpoint) refuseStream(conn *quic.Conn) bool {
	return e.refuse(conn, e.connAllowed(conn))
}

// chainTrusted checks a connection's peer chain against the CAs trusted now (they change when the mesh rotates
// its CA). Join connections carry no certificate: they pass.
func (e *Endpoint) chainTrusted(conn *quic.Conn) error {
	cs := conn.ConnectionState().TLS
	if cs.NegotiatedProtocol == ALPNJoin || len(cs.PeerCertificates) == 0 {
		return nil
	}
	if err := verifyChain(cs.PeerCertificates, e.id.Load().CAPool, x509.ExtKeyUsageAny); err != nil {
		return &RevokedError{Node: cs.PeerCertificates[0].Subject.CommonName, Reason: fmt.Errorf("its CA is no longer trusted: %w", err)}
	}
	return nil
}

func (e *Endpoint) refuse(conn *quic.Conn, err error) bool {
	if err == nil {
		return false
	}
	e.log.Warn("closed the connection of a peer that is no longer a member", "remote", conn.RemoteAddr().String(),
		"alpn", conn.ConnectionState().TLS.NegotiatedProtocol, "reason", err)
	code := codeRevoked
	if re := (*RevokedError)(nil); errors.As(err, &re) && re.Departed {
		code = codeNotMember
	}
	conn.CloseWithError(code, "certificate revoked: "+err.Error())
	return true
}

// IsNotMember reports whether err is a connection closed by a peer because the mesh no longer lists this node as
// a member (it left or was removed). A node that sees it while recording its own departure knows the departure
// is committed: the peer refused it because it applied the departure.
func IsNotMember(err error) bool {
	var ae *quic.ApplicationError
	return errors.As(err, &ae) && ae.Remote && ae.ErrorCode == codeNotMember
}

// Revalidate applies the peer check and the CA trust again to every open connection, accepted or dialed, and
// closes those whose peer no longer passes them. The node calls it when the mesh's membership changes, so a removed node loses its
// existing connections at once, not only its next handshake. It returns how many connections it closed.
func (e *Endpoint) Revalidate() int {
	e.mu.Lock()
	var conns []*quic.Conn
	for c := range e.accepted {
		conns = append(conns, c)
	}
	for _, ent := range e.dials {
		select {
		case <-ent.done:
			if ent.conn != nil {
				conns = append(conns, ent.conn)
			}
		default:
		}
	}
	e.mu.Unlock()
	e.trustMu.Lock()
	defer e.trustMu.Unlock()
	pool, now := e.id.Load().CAPool, time.Now()
	marks := make(map[*quic.Conn]trustMark, len(conns))
	closed := 0
	for _, c := range conns {
		if c.Context().Err() != nil {
			continue
		}
		err := e.connAllowed(c)
		if err == nil {
			if m, ok := e.trusted[c]; ok && m.pool == pool && now.Before(m.until) {
				marks[c] = m // verified against these CAs already, and no certificate of its chain expired since
				continue
			}
			var until time.Time
			if until, err = e.chainTrustedUntil(c); err == nil {
				marks[c] = trustMark{pool: pool, until: until}
			}
		}
		if e.refuse(c, err) {
			closed++
		}
	}
	e.trusted = marks
	return closed
}

// trustMark remembers that a connection's peer chain verified against a CA pool, until the first certificate
// of the chain expires. Revalidate runs every few seconds on every connection; verifying each chain again each
// time (ECDSA signatures) cost a node O(connections) of CPU per round, O(N²) for a mesh whose nodes all
// exchange pieces, which alone took more than the 2 cores of the test machine at 200 in-process nodes
// (docs/scale.md). A chain only changes its answer when the trusted CAs change (a new pool) or a certificate
// expires.
type trustMark struct {
	pool  *x509.CertPool
	until time.Time
}

// chainTrustedUntil is chainTrusted, and also returns when the first certificate of the verified chain (the root
// included) expires; a connection with no certificate passes for a day.
func (e *Endpoint) chainTrustedUntil(conn *quic.Conn) (time.Time, error) {
	cs := conn.ConnectionState().TLS
	if cs.NegotiatedProtocol == ALPNJoin || len(cs.PeerCertificates) == 0 {
		return time.Now().Add(24 * time.Hour), nil
	}
	until, err := verifyChainUntil(cs.PeerCertificates, e.id.Load().CAPool, x509.ExtKeyUsageAny)
	if err != nil {
		return time.Time{}, &RevokedError{Node: cs.PeerCertificates[0].Subject.CommonName, Reason: fmt.Errorf("its CA is no longer trusted: %w", err)}
	}
	return until, nil
}

// SetIdentity replaces the endpoint's certificate, as after a renewal: new handshakes, as server and as client,
// present it; connections already open keep the one they were authenticated with until they close. The name
// must stay the same (the stateless-reset key stays derived from the key the endpoint started with).
func (e *Endpoint) SetIdentity(id *Identity) error {
	if id == nil {
		return errors.New("set identity: nil identity")
	}
	if cur := e.id.Load(); cur.Name != id.Name {
		return fmt.Errorf("set identity: the endpoint belongs to node %q, the certificate names %q", cur.Name, id.Name)
	}
	e.id.Store(id)
	return nil
}

// IssuedAt is when the mesh CA signed a node certificate: SignNode back-dates NotBefore by the clock skew
// allowance, so this undoes that.
func IssuedAt(leaf *x509.Certificate) time.Time { return leaf.NotBefore.Add(clockSkew) }

// WithCert is the identity with a renewed certificate for the same key, signed by the CA in caPEM.
func (id *Identity) WithCert(caPEM, certPEM []byte) (*Identity, error) {
	return NewIdentity(id.Name, caPEM, certPEM, id.keyPEM)
}
