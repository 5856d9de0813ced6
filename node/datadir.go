package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/shoal-ci/shoal/internal/fsutil"
)

// The data dir's layout (see docs/operations.md).
const (
	stateFile     = "node.json"  // the node's own settings, written at init/join
	peersFile     = "peers.json" // gossip addresses of members last seen alive, for rejoin at start
	tlsDir        = "tls"
	gossipKeyFile = "gossip.key"
	raftDir       = "raft"
)

// Stored is what a data dir remembers about its node, so that `node agent --data-dir DIR` needs nothing else.
type Stored struct {
	Name        string            `json:"name"`
	Mesh        string            `json:"mesh"`
	BindIP      string            `json:"bind_ip"`
	AdvertiseIP string            `json:"advertise_ip"`
	HTTPPort    int               `json:"http_port"`
	GossipPort  int               `json:"gossip_port"`
	QUICPort    int               `json:"quic_port"`
	Tags        map[string]string `json:"tags,omitempty"`
	Voters      int               `json:"voters,omitempty"`
	// Bootstrap is set by `node init` until the first start has bootstrapped Raft.
	Bootstrap bool `json:"bootstrap,omitempty"`
	// Left is set once the node has left the mesh; it will not start again from this data dir.
	Left bool `json:"left,omitempty"`
}

// LoadStored reads the data dir's node.json. It returns os.ErrNotExist (wrapped) for a data dir that was never
// initialised or joined.
func LoadStored(dataDir string) (*Stored, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, stateFile))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("data dir %s holds no node: run `node init` or `node join` first: %w", dataDir, err)
		}
		return nil, err
	}
	var s Stored
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("read %s: %w", filepath.Join(dataDir, stateFile), err)
	}
	return &s, nil
}

// Joined reports whether the data dir already holds a node identity.
func Joined(dataDir string) bool {
	_, err := os.Stat(filepath.Join(dataDir, stateFile))
	return err == nil
}

func saveStored(dataDir string, s *Stored) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(filepath.Join(dataDir, stateFile), b, 0o600)
}

// ApplyStored fills the config from the data dir; fields the caller already set win.
func (c *Config) ApplyStored(s *Stored) {
	if c.Name == "" {
		c.Name = s.Name
	}
	if c.BindIP == "" {
		c.BindIP = s.BindIP
	}
	if c.AdvertiseIP == "" {
		c.AdvertiseIP = s.AdvertiseIP
	}
	if c.HTTPPort == 0 {
		c.HTTPPort = s.HTTPPort
	}
	if c.GossipPort == 0 {
		c.GossipPort = s.GossipPort
	}
	if c.QUICPort == 0 {
		c.QUICPort = s.QUICPort
	}
	if c.Tags == nil {
		c.Tags = s.Tags
	}
	if c.Voters == 0 {
		c.Voters = s.Voters
	}
}

func (c *Config) stored(mesh string, bootstrap bool) *Stored {
	return &Stored{
		Name: c.Name, Mesh: mesh, BindIP: c.BindIP, AdvertiseIP: c.AdvertiseIP, HTTPPort: c.HTTPPort,
		GossipPort: c.GossipPort, QUICPort: c.QUICPort, Tags: c.Tags, Voters: c.Voters, Bootstrap: bootstrap,
	}
}

func loadPeers(dataDir string) []string {
	b, err := os.ReadFile(filepath.Join(dataDir, peersFile))
	if err != nil {
		return nil
	}
	var p []string
	_ = json.Unmarshal(b, &p)
	return p
}

func savePeers(dataDir string, peers []string) error {
	b, err := json.Marshal(peers)
	if err != nil {
		return err
	}
	return writeAtomic(filepath.Join(dataDir, peersFile), b, 0o600)
}

// writeAtomic writes a file of the data dir (creating its directory, private) with fsutil.WriteAtomic.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return fsutil.WriteAtomic(path, data, mode)
}
