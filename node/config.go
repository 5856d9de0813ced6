package node

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-ci/shoal/raftfsm"
)

// Default ports: HTTP API (TCP), gossip (TCP and UDP), QUIC (UDP).
const (
	DefaultHTTPPort   = 7420
	DefaultGossipPort = 7421
	DefaultQUICPort   = 7422
)

// Config is everything one node needs to run. The zero value of a field means its default.
type Config struct {
	// Name is the node's name in the mesh, unique; it is the Raft server id and the certificate's name.
	Name    string
	DataDir string
	// BindIP is the address the three listeners bind; AdvertiseIP the one peers reach (default BindIP).
	BindIP      string
	AdvertiseIP string
	// Ports; -1 asks the kernel for a free port (tests). The node binds the HTTP API's port and advertises it in
	// gossip; package api serves it.
	HTTPPort   int
	GossipPort int
	QUICPort   int
	// Tags select this server into environments; carried by gossip.
	Tags map[string]string
	// AdvertiseCommands, when set, is the command types this node tells the mesh it knows instead of all it
	// does: upgrade tests use it to stand for an older Shoal (node/commands.go).
	AdvertiseCommands []raftfsm.CommandType
	// Voters is how many Raft voters the leader keeps (1, 3 or 5); the rest are non-voters.
	Voters int
	// DeadGrace is how long a member may stay dead before the leader removes it from Raft.
	DeadGrace time.Duration
	// Timing tunes Raft and gossip; the zero value is the LAN profile.
	Timing Timing
	// LeaderWait bounds how long a write waits for a leader before failing with 503.
	LeaderWait time.Duration
	// CertLifetime is how long the node certificates this node signs (as leader, or for a joiner) are valid;
	// members renew theirs at half-life (certs.go).
	CertLifetime time.Duration

	Logger   *slog.Logger
	Registry *prometheus.Registry
}

// Timing holds the timeouts that trade failover speed against false alarms.
type Timing struct {
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	// CommitTimeout is how often, at the most, an idle leader sends each follower an AppendEntries (that is how
	// followers learn what is committed when no new entries come; raft staggers it up to twice this).
	CommitTimeout time.Duration
	// ReconcileInterval is how often the leader re-checks Raft membership against gossip without an event.
	ReconcileInterval time.Duration
	// GossipProbeInterval and GossipPushPull tune memberlist's failure detection and full-state syncs.
	GossipProbeInterval time.Duration
	GossipPushPull      time.Duration
	// GossipProbeTimeout is how long a probe waits for its ack before asking others (0: memberlist's LAN default,
	// 500 ms); GossipSuspicionMult scales how long a suspect has to refute before it is declared dead (0: 4).
	// Larger values suit a CPU-starved host: TestBenchScale's hundreds of nodes in one process on 2 cores.
	GossipProbeTimeout  time.Duration
	GossipSuspicionMult int
	// GossipNoCompression turns off memberlist's LZW compression of gossip packets (each compression allocates a
	// 16 KiB table): more bytes for less CPU and garbage. For many nodes in one process.
	GossipNoCompression bool
	// SnapshotThreshold is how many log entries trigger a Raft snapshot (the node raises it as the state grows:
	// snapshots.go); SnapshotInterval how often Raft checks (it staggers up to twice this). Snapshots are encoded
	// off the state lock, so checking often is cheap, and it bounds the log a kill -9 restart replays.
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	// PruneInterval is how often the leader prunes history by the retention (raftfsm/retention.go).
	PruneInterval time.Duration
}

// LANTiming is the default profile: Raft timeouts tuned for servers on one LAN (hashicorp/raft's defaults are
// 1 s heartbeat and election timeouts and a 500 ms lease, sized for WANs).
func LANTiming() Timing {
	return Timing{
		HeartbeatTimeout: 400 * time.Millisecond,
		ElectionTimeout:  400 * time.Millisecond,
		// The lease decides only how long a leader cut off from the voters keeps acting as one; failover speed
		// comes from the followers' heartbeat timeout. A lease as long as that timeout keeps a leader on a
		// briefly starved machine from stepping down needlessly.
		LeaderLeaseTimeout: 400 * time.Millisecond,
		// Twice hashicorp/raft's 50 ms: an idle leader's packets to each follower are most of what an idle mesh
		// costs (CPU, and upload on the leader, which seeds every build's release). A follower learns a commit
		// 100–200 ms after it, instead of 50–100 ms; writes through the API never wait for that.
		CommitTimeout:       100 * time.Millisecond,
		ReconcileInterval:   5 * time.Second,
		GossipProbeInterval: 500 * time.Millisecond,
		GossipPushPull:      15 * time.Second,
		SnapshotThreshold:   8192,
		SnapshotInterval:    5 * time.Second,
		PruneInterval:       time.Minute,
	}
}

// WANTiming keeps hashicorp/raft's default timeouts (1 s heartbeat and election, 500 ms lease), for servers
// far apart or heavily loaded.
func WANTiming() Timing {
	t := LANTiming()
	t.HeartbeatTimeout, t.ElectionTimeout, t.LeaderLeaseTimeout = time.Second, time.Second, 500*time.Millisecond
	t.CommitTimeout = 50 * time.Millisecond
	return t
}

// TimingProfile returns the named profile: "lan" (default) or "wan".
func TimingProfile(name string) (Timing, error) {
	switch name {
	case "", "lan":
		return LANTiming(), nil
	case "wan":
		return WANTiming(), nil
	}
	return Timing{}, fmt.Errorf("raft profile %q: use lan or wan", name)
}

// TestTiming is the profile of in-process tests: faster gossip and reconciliation, and Raft timeouts a little
// longer than the LAN profile's, because a 2-core CI machine running several test packages at once starves
// heartbeats and would otherwise see spurious elections.
func TestTiming() Timing {
	t := LANTiming()
	t.HeartbeatTimeout, t.ElectionTimeout, t.LeaderLeaseTimeout = 800*time.Millisecond, 800*time.Millisecond, 800*time.Millisecond
	t.ReconcileInterval = 500 * time.Millisecond
	t.GossipProbeInterval = 200 * time.Millisecond
	t.GossipPushPull = 2 * time.Second
	t.PruneInterval = 300 * time.Millisecond
	return t
}

func (c *Config) setDefaults() error {
	if c.Name == "" {
		return fmt.Errorf("a node needs a name (--name)")
	}
	if err := raftfsm.ValidName("node", c.Name); err != nil {
		return fmt.Errorf("--name: %w", err)
	}
	if c.DataDir == "" {
		return fmt.Errorf("a node needs a data dir (--data-dir)")
	}
	if c.BindIP == "" {
		c.BindIP = "127.0.0.1"
	}
	if net.ParseIP(c.BindIP) == nil {
		return fmt.Errorf("bind address %q is not an IP address", c.BindIP)
	}
	if c.AdvertiseIP == "" {
		c.AdvertiseIP = c.BindIP
		if ip := net.ParseIP(c.BindIP); ip.IsUnspecified() {
			return fmt.Errorf("binding %s needs --advertise with the address other servers reach this one at", c.BindIP)
		}
	}
	if c.HTTPPort == 0 {
		c.HTTPPort = DefaultHTTPPort
	}
	if c.GossipPort == 0 {
		c.GossipPort = DefaultGossipPort
	}
	if c.QUICPort == 0 {
		c.QUICPort = DefaultQUICPort
	}
	switch c.Voters {
	case 0:
		c.Voters = 3
	case 1, 3, 5:
	default:
		return fmt.Errorf("voters must be 1, 3 or 5, not %d", c.Voters)
	}
	if c.DeadGrace == 0 {
		c.DeadGrace = 30 * time.Minute
	}
	if c.Timing == (Timing{}) {
		c.Timing = LANTiming()
	}
	if c.LeaderWait == 0 {
		c.LeaderWait = 7 * time.Second
	}
	if c.CertLifetime == 0 {
		c.CertLifetime = DefaultCertLifetime
	}
	if c.CertLifetime < 0 {
		return fmt.Errorf("certificate lifetime must be positive, not %s", c.CertLifetime)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	return nil
}

// port turns the -1 "any port" convention into 0 for a listener.
func port(p int) int {
	if p < 0 {
		return 0
	}
	return p
}

func hostPort(ip string, p int) string { return net.JoinHostPort(ip, strconv.Itoa(port(p))) }
