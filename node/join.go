package node

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-ci/shoal/raftfsm"
	"github.com/shoal-ci/shoal/transport"
)

// DefaultJoinTTL is how long a join token printed by `node init` stays valid.
const DefaultJoinTTL = 24 * time.Hour

// MaxJoinTTL is the longest a join token may stay valid: it admits anyone who holds it.
const MaxJoinTTL = 30 * 24 * time.Hour

// InitResult is what `node init` prints once: the admin API token and a join token.
type InitResult struct {
	Mesh       string `json:"mesh"`
	Node       string `json:"node"`
	API        string `json:"api"`
	AdminToken string `json:"admin_token"`
	JoinToken  string `json:"join_token"`
	CAHash     string `json:"ca_hash"`
}

// Init creates a new mesh in an empty data dir: the CA, this node's identity, the gossip key, a single-voter Raft,
// the mesh record, an admin API token and a join token. It returns the running node.
func Init(cfg Config, meshName string, joinTTL time.Duration) (*Node, *InitResult, error) {
	if Joined(cfg.DataDir) {
		return nil, nil, fmt.Errorf("data dir %s already holds node data: start it with `node agent --data-dir %s`", cfg.DataDir, cfg.DataDir)
	}
	if err := cfg.setDefaults(); err != nil {
		return nil, nil, err
	}
	if meshName == "" {
		meshName = "shoal"
	}
	if err := raftfsm.ValidTTL("join token ttl (--join-ttl)", joinTTL, MaxJoinTTL); err != nil {
		return nil, nil, err
	}
	ca, err := transport.NewCA(meshName)
	if err != nil {
		return nil, nil, err
	}
	if err := writeIdentity(cfg, func(pub []byte) ([]byte, []byte, error) {
		cert, err := ca.SignNode(cfg.Name, pub, []net.IP{net.ParseIP(cfg.AdvertiseIP)}, cfg.CertLifetime)
		return cert, ca.CertPEM, err
	}); err != nil {
		return nil, nil, err
	}
	gossipKey := make([]byte, 32)
	if _, err := rand.Read(gossipKey); err != nil {
		return nil, nil, err
	}
	if err := writeAtomic(filepath.Join(cfg.DataDir, tlsDir, gossipKeyFile), gossipKey, 0o600); err != nil {
		return nil, nil, err
	}
	if err := saveStored(cfg.DataDir, cfg.stored(meshName, true)); err != nil {
		return nil, nil, err
	}
	n, err := Open(cfg)
	if err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fail := func(err error) (*Node, *InitResult, error) {
		n.Close()
		return nil, nil, err
	}
	if err := n.WaitLeader(ctx); err != nil {
		return fail(err)
	}
	now := time.Now().UTC()
	if _, err := n.Apply(ctx, &raftfsm.MeshInit{Mesh: raftfsm.Mesh{
		Name: meshName, CACert: string(ca.CertPEM), CAKey: string(ca.KeyPEM), GossipKey: gossipKey, CreatedAt: now,
		Voters: cfg.Voters,
	}}); err != nil {
		return fail(fmt.Errorf("record the mesh: %w", err))
	}
	admin, rec := NewAPIToken("admin", raftfsm.RoleAdmin)
	rec.CreatedAt = now
	if _, err := n.Apply(ctx, &raftfsm.TokenCreate{Token: rec}); err != nil {
		return fail(fmt.Errorf("create the admin token: %w", err))
	}
	jt, err := n.CreateJoinToken(ctx, joinTTL)
	if err != nil {
		return fail(err)
	}
	return n, &InitResult{Mesh: meshName, Node: cfg.Name, API: n.AdvertisedHTTPAddr(), AdminToken: admin, JoinToken: jt, CAHash: ca.Hash()}, nil
}

// writeIdentity creates this node's key, has sign turn its public key into a certificate (and name the CA), and
// stores the identity.
func writeIdentity(cfg Config, sign func(pubPEM []byte) (certPEM, caPEM []byte, err error)) error {
	key, keyPEM, err := transport.NewKey()
	if err != nil {
		return err
	}
	pub, err := transport.PublicKeyPEM(key)
	if err != nil {
		return err
	}
	certPEM, caPEM, err := sign(pub)
	if err != nil {
		return err
	}
	id, err := transport.NewIdentity(cfg.Name, caPEM, certPEM, keyPEM)
	if err != nil {
		return err
	}
	return id.Save(filepath.Join(cfg.DataDir, tlsDir))
}

// CreateJoinToken records a new join token valid for ttl and returns its text.
func (n *Node) CreateJoinToken(ctx context.Context, ttl time.Duration) (string, error) {
	now := time.Now().UTC()
	jt := raftfsm.JoinToken{ID: randomHex(4), Secret: randomHex(16), CreatedAt: now, ExpiresAt: now.Add(ttl)}
	if _, err := n.Apply(ctx, &raftfsm.JoinTokenCreate{Token: jt}); err != nil {
		return "", fmt.Errorf("create a join token: %w", err)
	}
	return JoinTokenText(n.ep.Identity().CAHash, &jt), nil
}

type joinRequest struct {
	TokenID     string `json:"token_id"`
	Secret      string `json:"secret"`
	Name        string `json:"name"`
	PublicKey   []byte `json:"public_key"`
	AdvertiseIP string `json:"advertise_ip"`
}

type joinResponse struct {
	Mesh      string   `json:"mesh"`
	CA        []byte   `json:"ca"`
	Cert      []byte   `json:"cert"`
	GossipKey []byte   `json:"gossip_key"`
	Peers     []string `json:"peers"`
}

// JoinRefused is a join that the mesh turned down; its message says why and what to do.
type JoinRefused struct{ Message string }

func (e *JoinRefused) Error() string     { return e.Message }
func (e *JoinRefused) ErrorCode() string { return "join_refused" }

// handleJoin admits a new server: the token must exist, match and be unexpired; the name must not belong to a live
// member. It runs on the join ALPN, reachable without a mesh certificate, after the joiner checked our CA. The
// leader decides (admitViaLeader), so a join token revoked there is refused at once wherever the joiner knocks.
func (n *Node) handleJoin(ctx context.Context, _ string, body json.RawMessage) (any, error) {
	var req joinRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, &JoinRefused{"malformed join request"}
	}
	resp, err := n.admitViaLeader(ctx, req)
	if err != nil {
		n.log.Warn("join refused", "component", "join", "name", req.Name, "reason", err)
		return nil, err
	}
	n.log.Info("join admitted", "component", "join", "name", req.Name)
	return resp, nil
}

func (n *Node) admit(req joinRequest) (*joinResponse, error) {
	if err := raftfsm.ValidName("node", req.Name); err != nil {
		return nil, &JoinRefused{err.Error() + ": give this server another --name"}
	}
	var (
		mesh raftfsm.Mesh
		jt   raftfsm.JoinToken
		ok   bool
	)
	n.fsm.Read(func(s *raftfsm.State) {
		if s.Mesh == nil {
			return
		}
		mesh = *s.Mesh
		if t := s.JoinTokens[req.TokenID]; t != nil {
			jt, ok = *t, true
		}
	})
	switch {
	case mesh.CACert == "" || !ok && !n.Ready():
		return nil, &JoinRefused{"this node has not loaded the mesh state yet: retry in a moment, or join through another server"}
	case !ok:
		return nil, &JoinRefused{"join token is not known to this mesh (revoked, or never issued): ask an admin for a new one with `node token join`"}
	case subtle.ConstantTimeCompare([]byte(req.Secret), []byte(jt.Secret)) != 1:
		return nil, &JoinRefused{"join token secret is wrong: copy the whole token printed by `node init` or `node token join`"}
	case time.Now().After(jt.ExpiresAt):
		return nil, &JoinRefused{fmt.Sprintf("join token expired at %s: ask an admin for a new one with `node token join`", jt.ExpiresAt.Format(time.RFC3339))}
	}
	for _, m := range n.Members() {
		if m.Name == req.Name && (m.Status == StatusAlive || m.Status == StatusSuspect) {
			return nil, &JoinRefused{fmt.Sprintf("a live member is already named %q: give this server another --name", req.Name)}
		}
	}
	if n.departed()[req.Name] {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// Certificates carry whole seconds. The name's old certificates were issued before the next second
		// starts; the new one, signed below, after it: the floor tells them apart even when the name left and
		// joined again within one second.
		at := time.Now().UTC().Truncate(time.Second).Add(time.Second)
		if _, err := n.Apply(ctx, &raftfsm.MemberRejoin{Name: req.Name, At: at}); err != nil {
			return nil, fmt.Errorf("clear the departure record of %q: %w", req.Name, err)
		}
		time.Sleep(time.Until(at)) // at most a second, once per rejoin
	}
	ip := net.ParseIP(req.AdvertiseIP)
	if ip == nil {
		return nil, &JoinRefused{fmt.Sprintf("advertise address %q is not an IP address", req.AdvertiseIP)}
	}
	ca, err := transport.LoadCA([]byte(mesh.CACert), []byte(mesh.CAKey))
	if err != nil {
		return nil, fmt.Errorf("load mesh CA: %w", err)
	}
	cert, err := ca.SignNode(req.Name, req.PublicKey, []net.IP{ip}, n.cfg.CertLifetime)
	if err != nil {
		return nil, &JoinRefused{fmt.Sprintf("cannot issue a certificate: %v", err)}
	}
	var peers []string
	for _, m := range n.members.snapshot() {
		if m.Status == StatusAlive {
			peers = append(peers, m.Gossip)
		}
	}
	// The joiner trusts every CA the mesh trusts now (two during a CA rotation).
	return &joinResponse{Mesh: mesh.Name, CA: []byte(strings.Join(mesh.TrustedCAs(time.Now()), "")), Cert: cert, GossipKey: mesh.GossipKey, Peers: peers}, nil
}

// Join makes this data dir a member of the mesh that the server at addr belongs to, then runs the node. A data dir
// that already joined is simply started (running `node join` twice is harmless).
func Join(ctx context.Context, cfg Config, addr, token string) (*Node, error) {
	if Joined(cfg.DataDir) {
		return Open(cfg)
	}
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	caHash, id, secret, err := ParseJoinToken(token)
	if err != nil {
		return nil, err
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(addr, strconv.Itoa(DefaultQUICPort))
	}
	var resp joinResponse
	err = writeIdentity(cfg, func(pub []byte) ([]byte, []byte, error) {
		req := joinRequest{TokenID: id, Secret: secret, Name: cfg.Name, PublicKey: pub, AdvertiseIP: cfg.AdvertiseIP}
		if err := transport.CallJoin(ctx, addr, caHash, "join", req, &resp); err != nil {
			var re *transport.RemoteError
			if errors.As(err, &re) {
				return nil, nil, fmt.Errorf("join refused by %s: %s", addr, re.Message)
			}
			return nil, nil, fmt.Errorf("join %s: %w", addr, err)
		}
		return resp.Cert, resp.CA, nil
	})
	if err != nil {
		os.RemoveAll(filepath.Join(cfg.DataDir, tlsDir))
		return nil, err
	}
	if err := writeAtomic(filepath.Join(cfg.DataDir, tlsDir, gossipKeyFile), resp.GossipKey, 0o600); err != nil {
		return nil, err
	}
	if err := savePeers(cfg.DataDir, resp.Peers); err != nil {
		return nil, err
	}
	if err := saveStored(cfg.DataDir, cfg.stored(resp.Mesh, false)); err != nil {
		return nil, err
	}
	n, err := Open(cfg)
	if err != nil {
		return nil, err
	}
	if err := n.JoinGossip(resp.Peers); err != nil {
		n.log.Warn("gossip join failed; retrying in the background", "err", err)
	}
	return n, nil
}
