package swarm

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-ci/shoal/artifact"
	"github.com/shoal-ci/shoal/transport"
)

func testLogger(t *testing.T, name string) *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", name)
}

// mesh issues node identities from one CA, as a real mesh does.
type mesh struct {
	t  *testing.T
	ca *transport.CA
}

func newMesh(t *testing.T) *mesh {
	ca, err := transport.NewCA("swarm-test")
	if err != nil {
		t.Fatal(err)
	}
	return &mesh{t: t, ca: ca}
}

// node is one in-process member: a store, a server and a QUIC endpoint on 127.0.0.1.
type node struct {
	name  string
	dir   string
	store *artifact.Store
	reg   *prometheus.Registry
	srv   *Server
	ep    *transport.Endpoint
	log   *slog.Logger
}

// node starts a member whose store lives in dir ("" for a fresh one); a node restarted on the same dir picks up
// its store.
func (m *mesh) node(name, dir string, opts ...ServerOption) *node {
	t := m.t
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	log := testLogger(t, name)
	store, err := artifact.New(dir, log)
	if err != nil {
		t.Fatal(err)
	}
	key, keyPEM, err := transport.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := transport.PublicKeyPEM(key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := m.ca.SignNode(name, pub, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id, err := transport.NewIdentity(name, m.ca.CertPEM, cert, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	srv := NewServer(store, log, reg, opts...)
	ep, err := transport.Listen(transport.Config{Bind: "127.0.0.1:0", Identity: id, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ep.Handle(transport.ALPNBlob, srv.HandleConn)
	t.Cleanup(func() { ep.Close() })
	return &node{name: name, dir: dir, store: store, reg: reg, srv: srv, ep: ep, log: log}
}

func (n *node) addr() string { return n.ep.Addr().String() }

func (n *node) config() FetchConfig {
	return FetchConfig{Store: n.store, Dialer: n.ep, Logger: n.log, Metrics: n.srv.Metrics(), PeerRefresh: 100 * time.Millisecond}
}

// metric sums the samples of a counter or gauge family whose labels include want.
func (n *node) metric(t *testing.T, name string, want map[string]string) float64 {
	t.Helper()
	fams, err := n.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			for k, v := range want {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == k && l.GetValue() == v {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			case m.Histogram != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}

func addrs(nodes ...*node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.addr())
	}
	return out
}

// others returns the addresses of every node but self.
func others(self *node, nodes []*node) func() []string {
	var list []string
	for _, n := range nodes {
		if n != self {
			list = append(list, n.addr())
		}
	}
	return func() []string { return list }
}

func randomArchive(t *testing.T, seed uint64, size int, pieceSize int64) ([]byte, artifact.Meta) {
	t.Helper()
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(seed, 1))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	meta, err := artifact.Describe(bytes.NewReader(data), pieceSize)
	if err != nil {
		t.Fatal(err)
	}
	return data, meta
}

func seed(t *testing.T, n *node, data []byte, meta artifact.Meta) {
	t.Helper()
	if err := n.store.Put(meta, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
}

// checkArchive asserts that the node holds the archive whole with exactly data's bytes.
func checkArchive(t *testing.T, n *node, meta artifact.Meta, data []byte) {
	t.Helper()
	rc, err := n.store.Open(meta.Digest)
	if err != nil {
		t.Fatalf("%s: %v", n.name, err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("%s: %v", n.name, err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("%s: archive differs from the seed's", n.name)
	}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (s *Server) setAllow(f func(peer string, index int) bool) { s.allow.Store(&f) }
func (s *Server) setTamper(f func(index int, data []byte))     { s.tamper.Store(&f) }
