package transport

import (
	"bytes"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestCARoundTrip(t *testing.T) {
	ca := newTestCA(t, "test")
	if !ca.Cert.IsCA || ca.Cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Fatalf("CA certificate lacks CA flag or cert-sign usage")
	}
	if got := ca.Cert.NotAfter.Sub(ca.Cert.NotBefore); got < 9*365*24*time.Hour {
		t.Fatalf("CA validity %s, want about 10 years", got)
	}
	loaded, err := LoadCA(ca.CertPEM, ca.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Hash() != ca.Hash() || len(ca.Hash()) != 64 || strings.ToLower(ca.Hash()) != ca.Hash() {
		t.Fatalf("hash after load %q, before %q", loaded.Hash(), ca.Hash())
	}
	if CertHash(ca.Cert.Raw) != ca.Hash() {
		t.Fatal("CertHash and CA.Hash differ")
	}

	// A loaded CA signs certificates that verify against the original.
	other := newTestCA(t, "other")
	if _, err := LoadCA(ca.CertPEM, other.KeyPEM); err == nil {
		t.Fatal("LoadCA accepted a key that does not belong to the certificate")
	}
	id := newTestIdentity(t, loaded, "n1")
	if id.CAHash != ca.Hash() {
		t.Fatalf("identity CA hash %q, want %q", id.CAHash, ca.Hash())
	}
}

func TestSignNode(t *testing.T) {
	ca := newTestCA(t, "test")
	key, _, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := PublicKeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	ips := []net.IP{net.ParseIP("10.0.0.7"), net.ParseIP("::1")}
	certPEM, err := ca.SignNode("node-7", pub, ips, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := parseCertsPEM(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	c := certs[0]
	if c.Subject.CommonName != "node-7" || !slices.Equal(c.DNSNames, []string{"node-7"}) {
		t.Fatalf("CN %q DNS %v", c.Subject.CommonName, c.DNSNames)
	}
	if len(c.IPAddresses) != 2 || !c.IPAddresses[0].Equal(ips[0]) || !c.IPAddresses[1].Equal(ips[1]) {
		t.Fatalf("IPs %v", c.IPAddresses)
	}
	if !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageServerAuth) || !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		t.Fatalf("EKU %v, want server and client auth", c.ExtKeyUsage)
	}
	if c.IsCA {
		t.Fatal("node certificate is a CA")
	}
	if !publicKeysEqual(c.PublicKey, key.Public()) {
		t.Fatal("certificate is not for the given public key")
	}
	for _, bad := range []string{"", "has space", "tab\tname"} {
		if _, err := ca.SignNode(bad, pub, nil, time.Hour); err == nil {
			t.Errorf("SignNode accepted name %q", bad)
		}
	}
	if _, err := ca.SignNode("n", pub, nil, 0); err == nil {
		t.Error("SignNode accepted zero validity")
	}
	if _, err := ca.SignNode("n", []byte("junk"), nil, time.Hour); err == nil {
		t.Error("SignNode accepted a non-PEM public key")
	}
}

func TestIdentitySaveLoad(t *testing.T) {
	ca := newTestCA(t, "test")
	id := newTestIdentity(t, ca, "n1")
	dir := filepath.Join(t.TempDir(), "tls")
	if err := id.Save(dir); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm != 0o600 {
		t.Fatalf("key file mode %o, want 600", perm)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 3 {
		t.Fatalf("tls dir holds %d entries, want exactly the 3 identity files (no temp files left)", len(entries))
	}
	loaded, err := LoadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Name != "n1" || loaded.CAHash != ca.Hash() || !bytes.Equal(loaded.CAPEM, id.CAPEM) {
		t.Fatalf("loaded %q %q, want n1 %q", loaded.Name, loaded.CAHash, ca.Hash())
	}
	if !bytes.Equal(loaded.Cert.Certificate[0], id.Cert.Certificate[0]) {
		t.Fatal("loaded certificate differs")
	}
	if len(loaded.Cert.Certificate) != 2 || CertHash(loaded.Cert.Certificate[1]) != ca.Hash() {
		t.Fatal("the TLS chain must carry the CA certificate after the leaf (joiners check it)")
	}
	// Saving over an existing identity replaces it.
	id2 := newTestIdentity(t, ca, "n1")
	if err := id2.Save(dir); err != nil {
		t.Fatal(err)
	}
	again, err := LoadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Cert.Certificate[0], id2.Cert.Certificate[0]) {
		t.Fatal("second Save did not replace the certificate")
	}
	if _, err := LoadIdentity(t.TempDir()); err == nil {
		t.Fatal("LoadIdentity of an empty directory succeeded")
	}
}

func TestNewIdentityRejects(t *testing.T) {
	ca := newTestCA(t, "test")
	other := newTestCA(t, "other")
	key, keyPEM, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := PublicKeyPEM(key)
	foreign, err := other.SignNode("n1", pub, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewIdentity("n1", ca.CertPEM, foreign, keyPEM); err == nil {
		t.Fatal("NewIdentity accepted a certificate from another CA")
	}
	mine, err := ca.SignNode("n1", pub, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewIdentity("n2", ca.CertPEM, mine, keyPEM); err == nil {
		t.Fatal("NewIdentity accepted a certificate issued to another name")
	}
	_, otherKeyPEM, _ := NewKey()
	if _, err := NewIdentity("n1", ca.CertPEM, mine, otherKeyPEM); err == nil {
		t.Fatal("NewIdentity accepted a key that does not match the certificate")
	}
	if _, err := NewIdentity("n1", ca.CertPEM, mine, keyPEM); err != nil {
		t.Fatalf("the matching identity was refused: %v", err)
	}
}
