package transport

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/quic-go/quic-go"
)

// serverTLS picks the client-auth mode per ClientHello: a hello that offers only ALPNJoin is the one case served
// without a client certificate; every other hello must present a certificate from the mesh CA, checked by
// crypto/tls during the handshake, so a peer without one never gets to send an application byte.
// Only ALPNs that have a handler are offered, so an unserved ALPN fails the handshake too.
func (e *Endpoint) serverTLS() *tls.Config {
	base := &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Read per handshake: a renewed certificate (SetIdentity) is served from the next handshake on.
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &e.id.Load().Cert, nil },
		// Resumption would let a session bound to one client-auth mode be resumed under another ALPN; full
		// handshakes between long-lived peers cost nothing worth that doubt.
		SessionTicketsDisabled: true,
	}
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		SessionTicketsDisabled: true,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			protos := e.servedALPNs()
			if len(protos) == 0 {
				return nil, errors.New("this node serves no protocol yet")
			}
			cfg := base.Clone()
			cfg.NextProtos = protos
			if len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == ALPNJoin {
				cfg.ClientAuth = tls.NoClientCert
				return cfg, nil
			}
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
			cfg.ClientCAs = e.id.Load().CAPool
			cfg.VerifyConnection = func(cs tls.ConnectionState) error {
				// crypto/tls has verified the chain; a node certificate without a name is still not a peer.
				if len(cs.PeerCertificates) == 0 || cs.PeerCertificates[0].Subject.CommonName == "" {
					return errors.New("client certificate names no node")
				}
				// A certificate is worth what its node's membership is: a removed node is refused here.
				return e.checkPeer(cs.PeerCertificates[0])
			}
			return cfg, nil
		},
	}
}

// clientTLS authenticates this node to a peer and requires the peer's certificate to chain to the mesh CA.
// Peers are addressed by IP, and which node answers at an address is not known in advance, so the host name is
// not checked: membership in the mesh is what the certificate proves.
func (e *Endpoint) clientTLS(alpn string) *tls.Config {
	id := e.id.Load()
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{id.Cert},
		NextProtos:         []string{alpn},
		ServerName:         "shoal",
		InsecureSkipVerify: true, // replaced by VerifyConnection below: chain to the CA, no host name
		VerifyConnection: func(cs tls.ConnectionState) error {
			if err := verifyChain(cs.PeerCertificates, id.CAPool, x509.ExtKeyUsageServerAuth); err != nil {
				return fmt.Errorf("peer is not a member of this mesh: %w", err)
			}
			return e.checkPeer(cs.PeerCertificates[0])
		},
	}
}

// verifyChain checks that the first certificate verifies against roots for usage, using the rest as intermediates.
func verifyChain(certs []*x509.Certificate, roots *x509.CertPool, usage x509.ExtKeyUsage) error {
	_, err := verifyChainUntil(certs, roots, usage)
	return err
}

// verifyChainUntil is verifyChain, and returns when the first certificate of the verified chain expires.
func verifyChainUntil(certs []*x509.Certificate, roots *x509.CertPool, usage x509.ExtKeyUsage) (time.Time, error) {
	if len(certs) == 0 {
		return time.Time{}, errors.New("no certificate presented")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	chains, err := certs[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	})
	if err != nil {
		return time.Time{}, err
	}
	if certs[0].Subject.CommonName == "" {
		return time.Time{}, errors.New("certificate names no node")
	}
	until := certs[0].NotAfter
	for _, c := range chains[0] {
		if c.NotAfter.Before(until) {
			until = c.NotAfter
		}
	}
	return until, nil
}

// PeerName is the node name (certificate CommonName) the other side of conn authenticated with, or "" when it
// presented no certificate (a join connection).
func PeerName(conn *quic.Conn) string {
	certs := conn.ConnectionState().TLS.PeerCertificates
	if len(certs) == 0 {
		return ""
	}
	return certs[0].Subject.CommonName
}

// statelessResetKey derives the QUIC stateless-reset key from the node's private key, so it is the same after a
// restart: peers still holding a connection to the previous process get a reset on their next packet and redial
// at once instead of waiting for the idle timeout.
func statelessResetKey(id *Identity) (*quic.StatelessResetKey, error) {
	der, err := x509.MarshalPKCS8PrivateKey(id.Cert.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("derive QUIC stateless reset key: %w", err)
	}
	h := sha256.New()
	h.Write([]byte("shoal quic stateless reset key v1\x00"))
	h.Write(der)
	var key quic.StatelessResetKey
	copy(key[:], h.Sum(nil))
	return &key, nil
}
