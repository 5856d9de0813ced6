package transport

import (
	"log/slog"
	"net"
	"os"
	"testing"
	"time"
)

// testLogger prints endpoint logs only with -v, where they help reading a failure.
func testLogger(t *testing.T) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("test", t.Name())
}

func newTestCA(t *testing.T, mesh string) *CA {
	t.Helper()
	ca, err := NewCA(mesh)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// newTestIdentity issues a node identity the way a join does: the node makes its key, the CA signs its public key.
func newTestIdentity(t *testing.T, ca *CA, name string) *Identity {
	t.Helper()
	key, keyPEM, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := PublicKeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.SignNode(name, pub, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id, err := NewIdentity(name, ca.CertPEM, certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func listenTest(t *testing.T, id *Identity, bind string) *Endpoint {
	t.Helper()
	if bind == "" {
		bind = "127.0.0.1:0"
	}
	e, err := Listen(Config{Bind: bind, Identity: id, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}
