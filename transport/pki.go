package transport

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strings"
	"time"
)

// caValidity is long because rotating a mesh CA means re-issuing every node certificate; the CA key never leaves
// the mesh, so its lifetime is not what bounds the damage of a leak.
const caValidity = 10 * 365 * 24 * time.Hour

// clockSkew back-dates certificates so that a node whose clock is a little behind the signer's accepts them.
const clockSkew = 5 * time.Minute

// CA is the mesh certificate authority: it signs every node certificate, and its certificate's hash is what a
// join token pins.
type CA struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
	KeyPEM  []byte
}

// NewCA creates a self-signed ECDSA P-256 CA for the mesh called meshName, valid for 10 years.
func NewCA(meshName string) (*CA, error) {
	if strings.TrimSpace(meshName) == "" {
		return nil, errors.New("create mesh CA: the mesh name is empty")
	}
	key, keyPEM, err := NewKey()
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: meshName + " mesh CA", Organization: []string{"shoal"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(caValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true, // the CA signs node certificates only, never another CA
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create mesh CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse new mesh CA certificate: %w", err)
	}
	return &CA{Cert: cert, Key: key, CertPEM: encodePEM("CERTIFICATE", der), KeyPEM: keyPEM}, nil
}

// LoadCA reads a CA from its PEM certificate and PEM private key and checks that they belong together.
func LoadCA(certPEM, keyPEM []byte) (*CA, error) {
	certs, err := parseCertsPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("load mesh CA certificate: %w", err)
	}
	cert := certs[0]
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("load mesh CA: the certificate is not a CA certificate (no CA flag or no cert-sign usage)")
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load mesh CA key: %w", err)
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, errors.New("load mesh CA: the private key does not match the CA certificate")
	}
	return &CA{Cert: cert, Key: key, CertPEM: encodePEM("CERTIFICATE", cert.Raw), KeyPEM: keyPEM}, nil
}

// Hash is the CA certificate's fingerprint, the value a join token pins.
func (ca *CA) Hash() string { return CertHash(ca.Cert.Raw) }

// CertHash is the lowercase hex sha256 of a DER certificate.
func CertHash(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// NewKey creates an ECDSA P-256 private key and returns it with its PKCS#8 PEM encoding.
func NewKey() (key crypto.Signer, keyPEM []byte, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate ECDSA key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, nil, fmt.Errorf("encode private key: %w", err)
	}
	return k, encodePEM("PRIVATE KEY", der), nil
}

// PublicKeyPEM encodes key's public half as a PKIX PEM block: what a joiner sends to be signed.
func PublicKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	return encodePEM("PUBLIC KEY", der), nil
}

// SignNode issues a node certificate (server AND client auth EKU) for name (CommonName and a DNS SAN = name),
// for the given IPs, valid `validity`, for the public key in pubPEM (PKIX PEM).
func (ca *CA) SignNode(name string, pubPEM []byte, ips []net.IP, validity time.Duration) (certPEM []byte, err error) {
	if err := checkNodeName(name); err != nil {
		return nil, err
	}
	if validity <= 0 {
		return nil, fmt.Errorf("sign node certificate for %q: validity must be positive, got %s", name, validity)
	}
	block, _ := pem.Decode(pubPEM)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("sign node certificate for %q: the public key is not a PEM \"PUBLIC KEY\" block", name)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("sign node certificate for %q: parse public key: %w", name, err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	notAfter := now.Add(validity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter // a leaf outliving its CA would fail verification anyway
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"shoal"}},
		DNSNames:              []string{name},
		IPAddresses:           ips,
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign node certificate for %q: %w", name, err)
	}
	return encodePEM("CERTIFICATE", der), nil
}

// checkNodeName keeps names usable as a certificate CN and DNS SAN and as a log field.
func checkNodeName(name string) error {
	if name == "" {
		return errors.New("node name is empty")
	}
	if len(name) > 253 {
		return fmt.Errorf("node name %.20q... is longer than 253 characters", name)
	}
	for _, r := range name {
		if r <= ' ' || r >= 0x7f {
			return fmt.Errorf("node name %q has a space, control or non-ASCII character; use letters, digits, '-', '.' or '_'", name)
		}
	}
	return nil
}

func randomSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generate certificate serial: %w", err)
	}
	return serial, nil
}

func encodePEM(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// parseCertsPEM returns every CERTIFICATE block in data, in order; it fails if there is none.
func parseCertsPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM \"CERTIFICATE\" block found")
	}
	return certs, nil
}

// parseKeyPEM accepts PKCS#8 (what we write) and SEC 1 "EC PRIVATE KEY" (what openssl writes by default).
func parseKeyPEM(data []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no PEM private key block found")
		}
		var (
			key any
			err error
		)
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parse private key: %w", err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("private key of type %T cannot sign", key)
		}
		return signer, nil
	}
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ka, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ka.Equal(b)
}
