package transport

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"

	"github.com/shoal-ci/shoal/internal/fsutil"
)

// File names of an identity inside the data dir's tls/ folder.
const (
	CAFile      = "ca.pem"
	CertFile    = "node.pem"
	KeyFile     = "node-key.pem"
	keyFileMode = 0o600
)

// Identity is a node's TLS identity, stored in the data dir's tls/ folder as ca.pem, node.pem, node-key.pem (0600).
// Cert's chain holds the node certificate followed by the CA certificate, so that a joiner, which has no CA yet,
// receives the CA certificate it has to check against its token.
type Identity struct {
	Name   string
	Cert   tls.Certificate
	CAPEM  []byte
	CAPool *x509.CertPool
	CAHash string

	certPEM []byte // the node certificate alone, as Save writes it
	keyPEM  []byte
}

// NewIdentity checks that certPEM is a node certificate named name, signed by one of the CAs in caPEM for both
// server and client use, and that keyPEM is its private key. caPEM holds every CA the node trusts: one, or two
// while the mesh rotates its CA; the one that signed the certificate is sent after it in handshakes.
func NewIdentity(name string, caPEM, certPEM, keyPEM []byte) (*Identity, error) {
	if err := checkNodeName(name); err != nil {
		return nil, fmt.Errorf("node identity: %w", err)
	}
	cas, err := parseCertsPEM(caPEM)
	if err != nil {
		return nil, fmt.Errorf("node identity %q: CA certificate: %w", name, err)
	}
	pool := x509.NewCertPool()
	for _, ca := range cas {
		if !ca.IsCA {
			return nil, fmt.Errorf("node identity %q: the CA certificate %q is not a CA", name, ca.Subject.CommonName)
		}
		pool.AddCert(ca)
	}
	certs, err := parseCertsPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("node identity %q: node certificate: %w", name, err)
	}
	leaf := certs[0]
	if leaf.Subject.CommonName != name {
		return nil, fmt.Errorf("node identity: the certificate is for node %q, not %q", leaf.Subject.CommonName, name)
	}
	// The chain is checked as of the certificate's issue: an identity whose certificate has since expired still
	// loads, so that the node can say what to do about it (handshakes refuse it either way).
	at := leaf.NotBefore.Add(min(clockSkew, leaf.NotAfter.Sub(leaf.NotBefore)/2))
	var ca *x509.Certificate
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		chains, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{usage}, CurrentTime: at})
		if err != nil {
			return nil, fmt.Errorf("node identity %q: the certificate does not verify against the mesh CA %s: %w",
				name, CertHash(cas[0].Raw), err)
		}
		ca = chains[0][len(chains[0])-1]
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("node identity %q: %w", name, err)
	}
	if !publicKeysEqual(leaf.PublicKey, key.Public()) {
		return nil, fmt.Errorf("node identity %q: the private key does not match the node certificate", name)
	}
	leafPEM := encodePEM("CERTIFICATE", leaf.Raw)
	return &Identity{
		Name: name,
		Cert: tls.Certificate{
			Certificate: [][]byte{leaf.Raw, ca.Raw},
			PrivateKey:  key,
			Leaf:        leaf,
		},
		CAPEM:   caPEMOf(cas),
		CAPool:  pool,
		CAHash:  CertHash(ca.Raw),
		certPEM: leafPEM,
		keyPEM:  keyPEM,
	}, nil
}

// LoadIdentity reads the identity Save wrote to dir; the node name is the certificate's CommonName.
func LoadIdentity(dir string) (*Identity, error) {
	read := func(name string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("load node identity: %w (is %s a joined node's tls directory?)", err, dir)
		}
		return b, nil
	}
	caPEM, err := read(CAFile)
	if err != nil {
		return nil, err
	}
	certPEM, err := read(CertFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := read(KeyFile)
	if err != nil {
		return nil, err
	}
	certs, err := parseCertsPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("load node identity from %s: %w", filepath.Join(dir, CertFile), err)
	}
	return NewIdentity(certs[0].Subject.CommonName, caPEM, certPEM, keyPEM)
}

// Save writes the identity to dir atomically, file by file: a crash leaves each file either old or new, never torn.
// The key is written last so that a directory holding a key always holds its certificate too.
func (id *Identity) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("save node identity: %w", err)
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{CAFile, id.CAPEM, 0o644},
		{CertFile, id.certPEM, 0o644},
		{KeyFile, id.keyPEM, keyFileMode},
	}
	for _, f := range files {
		if len(f.data) == 0 {
			return fmt.Errorf("save node identity: %s is empty; build the identity with NewIdentity or LoadIdentity", f.name)
		}
		if err := fsutil.WriteAtomic(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return fmt.Errorf("save node identity: %w", err)
		}
	}
	return nil
}

// CertPEM is the node certificate alone, PEM-encoded.
func (id *Identity) CertPEM() []byte { return id.certPEM }

func caPEMOf(cas []*x509.Certificate) []byte {
	var out []byte
	for _, c := range cas {
		out = append(out, encodePEM("CERTIFICATE", c.Raw)...)
	}
	return out
}
