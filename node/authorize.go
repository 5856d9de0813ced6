package node

import (
	"context"
	"fmt"

	"github.com/shoal-ci/shoal/errs"
	"github.com/shoal-ci/shoal/raftfsm"
)

// authority says who may have a command committed when another node forwards it to the leader. The leader
// decides against its own state: a token revoked there is refused at once, whatever the forwarding node
// believed, and a node's certificate alone never carries an admin's power.
type authority struct {
	// role is the least API token role that may issue the command ("" when no API request issues it).
	role string
	// node: a node may write it on its own, without a caller's token (webhook and poll builds, a deployment's
	// progress, the pieces it holds, its own departure).
	node bool
	// self, when set, names the node a command is about: a node alone may write it only about itself.
	self func(raftfsm.Command) string
}

// authorities is the table the leader checks forwarded commands against. A command missing from it is allowed
// from any member (as every write was before this table); TestEveryCommandHasAnAuthority makes adding a command
// decide its line here.
var authorities = map[raftfsm.CommandType]authority{
	raftfsm.CmdMeshInit:        {}, // written once, by the first node, on itself
	raftfsm.CmdTokenCreate:     {role: raftfsm.RoleAdmin},
	raftfsm.CmdTokenDelete:     {role: raftfsm.RoleAdmin},
	raftfsm.CmdJoinTokenCreate: {role: raftfsm.RoleAdmin},
	raftfsm.CmdJoinTokenDelete: {role: raftfsm.RoleAdmin},
	raftfsm.CmdAppPut:          {role: raftfsm.RoleAdmin},
	raftfsm.CmdAppDelete:       {role: raftfsm.RoleAdmin},
	raftfsm.CmdEnvPut:          {role: raftfsm.RoleAdmin},
	raftfsm.CmdEnvDelete:       {role: raftfsm.RoleAdmin},
	raftfsm.CmdPipelinePut:     {role: raftfsm.RoleAdmin},
	raftfsm.CmdEnvPin:          {role: raftfsm.RoleDeployer, node: true}, // the orchestrator pins after a failure
	raftfsm.CmdLeaderEpoch:     {},                                       // a leader writes its own epoch
	raftfsm.CmdBuildQueue:      {role: raftfsm.RoleDeployer, node: true}, // webhooks (signed) and polls too
	raftfsm.CmdBuildStart:      {node: true},
	raftfsm.CmdBuildFinish:     {node: true},
	raftfsm.CmdBuildCancel:     {role: raftfsm.RoleDeployer},
	raftfsm.CmdReleaseCreate:   {role: raftfsm.RoleDeployer},
	raftfsm.CmdReleaseHolders: {node: true, self: func(c raftfsm.Command) string {
		return c.(*raftfsm.ReleaseHolders).Node
	}},
	raftfsm.CmdDeployCreate: {role: raftfsm.RoleDeployer, node: true},
	raftfsm.CmdDeployUpdate: {role: raftfsm.RoleDeployer, node: true},
	raftfsm.CmdNodeStatus: {node: true, self: func(c raftfsm.Command) string {
		return c.(*raftfsm.NodeStatusSet).Node
	}},
	raftfsm.CmdMemberLeave: {role: raftfsm.RoleAdmin, node: true, self: func(c raftfsm.Command) string {
		return c.(*raftfsm.MemberLeave).Name
	}},
	raftfsm.CmdReleaseDrop: {node: true, self: func(c raftfsm.Command) string { // a store drops its own record
		return c.(*raftfsm.ReleaseDrop).Node
	}},
	raftfsm.CmdRuntimeSet: {node: true, self: func(c raftfsm.Command) string { // a server reports what it runs
		return c.(*raftfsm.RuntimeSet).Runtime.Node
	}},
	raftfsm.CmdNotifySubscription: {role: raftfsm.RoleAdmin},
	raftfsm.CmdNotifyForge:        {role: raftfsm.RoleAdmin},
	raftfsm.CmdNotifyEvents:       {}, // the leader records the events it derived
	raftfsm.CmdNotifyAttempt:      {}, // the leader records its own delivery attempts
	raftfsm.CmdBuildAssign:        {}, // the leader assigns builds
	raftfsm.CmdBuildRequeue:       {}, // the leader takes a build back from a build server
	raftfsm.CmdBuildLease: {node: true, self: func(c raftfsm.Command) string { // a build server renews its own lease
		return c.(*raftfsm.BuildLease).Node
	}},
	raftfsm.CmdPrune:           {},                        // the leader's retention plan
	raftfsm.CmdRetentionSet:    {role: raftfsm.RoleAdmin}, // PUT /v1/retention
	raftfsm.CmdMemberRejoin:    {},                        // the leader writes it when it admits a joiner
	raftfsm.CmdGossipKeyRotate: {role: raftfsm.RoleAdmin},
	raftfsm.CmdCARotate:        {role: raftfsm.RoleAdmin}, // its "issued" stage is the leader's own write
}

// Codes of forwarded writes the leader refuses for who asked.
const (
	CodeUnauthorized = errs.Unauthorized
	CodeForbidden    = errs.Forbidden
)

// authorizeForwarded decides whether a command that peer forwarded, on behalf of the API token tokenID (""
// when the node writes on its own), may be committed. It reads the leader's state, so it must run on the leader.
func (n *Node) authorizeForwarded(peer, tokenID string, c raftfsm.Command) *errs.Error {
	a, listed := authorities[c.Type()]
	if !listed {
		return nil
	}
	what := fmt.Sprintf("%T", c)
	if tokenID != "" && a.role != "" {
		var tok *raftfsm.Token
		n.fsm.Read(func(s *raftfsm.State) {
			if t := s.Tokens[tokenID]; t != nil {
				c := *t
				tok = &c
			}
		})
		if tok == nil {
			return errs.New(CodeUnauthorized, "the API token was revoked (the leader does not know token %q): ask an admin for a new one", tokenID)
		}
		if roleRank[tok.Role] < roleRank[a.role] {
			return errs.New(CodeForbidden, "token %q has role %s; %s needs %s", tok.Name, tok.Role, what, a.role)
		}
		return nil
	}
	if !a.node {
		if a.role == "" {
			return errs.New(CodeForbidden, "%s is written only by the leader itself; node %q may not forward it", what, peer)
		}
		return errs.New(CodeForbidden, "%s needs an API token of role %s; node %q sent none, and a node certificate alone is not enough", what, a.role, peer)
	}
	if a.self != nil {
		if about := a.self(c); about != peer {
			return errs.New(CodeForbidden, "node %q may write %s only about itself, not about %q", peer, what, about)
		}
	}
	return nil
}

// tokenIDFrom is the id of the API token that authorised the request ctx belongs to ("" for a node's own work).
func tokenIDFrom(ctx context.Context) string {
	if t, _ := ctx.Value(tokenKey).(*raftfsm.Token); t != nil {
		return t.ID
	}
	return ""
}

// WithTokenID makes the writes made under ctx act for the API token with that id, as the writes of a request
// authenticated with it do: the leader then authorizes them against that token. In-process callers that write on
// an admin's behalf, tests among them, use it; without it a write is the node's own.
func WithTokenID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, tokenKey, &raftfsm.Token{ID: id})
}
