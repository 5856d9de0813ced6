package raftfsm

import (
	"fmt"
	"slices"
)

// Spec is everything about one command type, registered once below: its number and name, how to make its body,
// and who may have it committed when another node forwards it to the leader (node/authorize.go checks against
// the leader's own state). The zero authority is the strictest: only the leader itself writes the command.
// Adding a command is: its type number, its struct (with json tags and Type), its rule, and one line here that
// names them all; TestCommandFixtures then asks for its fixture.
type Spec struct {
	Type CommandType
	Name string
	New  func() Command
	// Role is the least API token role that may issue the command ("" when no API request issues it).
	Role string
	// Node: a node may write it on its own, without a caller's token (webhook and poll builds, a deployment's
	// progress, the pieces it holds, its own departure).
	Node bool
	// About, when set, names the node the command is about: a node alone may write it only about itself.
	About func(Command) string
	// Apply is the command's rule: it validates the command against the state and, only if it is valid, changes
	// the state (through the copy-on-write edit helpers, cow.go). A rejection leaves the state untouched.
	Apply func(s *State, index uint64, c Command) (any, *Error)
}

// specs is the one table of command types: Decode, DecodeStrict, Known and the leader's authorization read it.
var specs = map[CommandType]*Spec{}

func register(list ...Spec) {
	for _, s := range list {
		if specs[s.Type] != nil {
			panic(fmt.Sprintf("raftfsm: command type %d registered twice (%s, %s)", s.Type, specs[s.Type].Name, s.Name))
		}
		if s.Apply == nil {
			panic(fmt.Sprintf("raftfsm: command %s has no apply rule", s.Name))
		}
		if got := s.New().Type(); got != s.Type {
			panic(fmt.Sprintf("raftfsm: command %s is registered as type %d but its body says %d", s.Name, s.Type, got))
		}
		specs[s.Type] = &s
	}
}

// SpecOf returns the registration of a command type.
func SpecOf(t CommandType) (Spec, bool) {
	s, ok := specs[t]
	if !ok {
		return Spec{}, false
	}
	return *s, true
}

// Specs returns every registration, by type.
func Specs() []Spec {
	out := make([]Spec, 0, len(specs))
	for _, s := range specs {
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b Spec) int { return int(a.Type) - int(b.Type) })
	return out
}

func init() {
	register(
		Spec{Type: CmdMeshInit, Name: "mesh_init", New: func() Command { return new(MeshInit) }, Apply: rule(applyMeshInit)}, // the first node, on itself
		Spec{Type: CmdTokenCreate, Name: "token_create", New: func() Command { return new(TokenCreate) }, Apply: rule(applyTokenCreate), Role: RoleAdmin},
		Spec{Type: CmdTokenDelete, Name: "token_delete", New: func() Command { return new(TokenDelete) }, Apply: rule(applyTokenDelete), Role: RoleAdmin},
		Spec{Type: CmdJoinTokenCreate, Name: "join_token_create", New: func() Command { return new(JoinTokenCreate) }, Apply: rule(applyJoinTokenCreate), Role: RoleAdmin},
		Spec{Type: CmdJoinTokenDelete, Name: "join_token_delete", New: func() Command { return new(JoinTokenDelete) }, Apply: rule(applyJoinTokenDelete), Role: RoleAdmin},
		Spec{Type: CmdAppPut, Name: "app_put", New: func() Command { return new(AppPut) }, Apply: rule(applyAppPut), Role: RoleAdmin},
		Spec{Type: CmdAppDelete, Name: "app_delete", New: func() Command { return new(AppDelete) }, Apply: rule(applyAppDelete), Role: RoleAdmin},
		Spec{Type: CmdEnvPut, Name: "env_put", New: func() Command { return new(EnvPut) }, Apply: rule(applyEnvPut), Role: RoleAdmin},
		Spec{Type: CmdEnvDelete, Name: "env_delete", New: func() Command { return new(EnvDelete) }, Apply: rule(applyEnvDelete), Role: RoleAdmin},
		Spec{Type: CmdLeaderEpoch, Name: "leader_epoch", New: func() Command { return new(LeaderEpoch) }, Apply: rule(applyLeaderEpoch)},                             // a leader writes its own epoch
		Spec{Type: CmdBuildQueue, Name: "build_queue", New: func() Command { return new(BuildQueue) }, Apply: rule(applyBuildQueue), Role: RoleDeployer, Node: true}, // webhooks (signed) and polls too
		Spec{Type: CmdBuildStart, Name: "build_start", New: func() Command { return new(BuildStart) }, Apply: rule(applyBuildStart), Node: true},
		Spec{Type: CmdBuildFinish, Name: "build_finish", New: func() Command { return new(BuildFinish) }, Apply: rule(applyBuildFinish), Node: true},
		Spec{Type: CmdBuildCancel, Name: "build_cancel", New: func() Command { return new(BuildCancel) }, Apply: rule(applyBuildCancel), Role: RoleDeployer},
		Spec{Type: CmdReleaseHolders, Name: "release_holders", New: func() Command { return new(ReleaseHolders) }, Apply: rule(applyReleaseHolders), Node: true,
			About: func(c Command) string { return c.(*ReleaseHolders).Node }},
		Spec{Type: CmdDeployCreate, Name: "deploy_create", New: func() Command { return new(DeployCreate) }, Apply: rule(applyDeployCreate), Role: RoleDeployer, Node: true},
		Spec{Type: CmdDeployUpdate, Name: "deploy_update", New: func() Command { return new(DeployUpdate) }, Apply: rule(applyDeployUpdate), Role: RoleDeployer, Node: true},
		Spec{Type: CmdNodeStatus, Name: "node_status", New: func() Command { return new(NodeStatusSet) }, Apply: rule(applyNodeStatus), Node: true,
			About: func(c Command) string { return c.(*NodeStatusSet).Node }},
		Spec{Type: CmdEnvPin, Name: "env_pin", New: func() Command { return new(EnvPin) }, Apply: rule(applyEnvPin), Role: RoleDeployer, Node: true}, // the orchestrator pins after a failure
		Spec{Type: CmdMemberLeave, Name: "member_leave", New: func() Command { return new(MemberLeave) }, Apply: rule(applyMemberLeave), Role: RoleAdmin, Node: true,
			About: func(c Command) string { return c.(*MemberLeave).Name }},
		Spec{Type: CmdMemberRejoin, Name: "member_rejoin", New: func() Command { return new(MemberRejoin) }, Apply: rule(func(s *State, _ uint64, c *MemberRejoin) (any, *Error) { applyMemberRejoin(s, c); return nil, nil })}, // the leader, when it admits a joiner
		Spec{Type: CmdReleaseCreate, Name: "release_create", New: func() Command { return new(ReleaseCreate) }, Apply: rule(applyReleaseCreate), Role: RoleDeployer},
		Spec{Type: CmdPipelinePut, Name: "pipeline_put", New: func() Command { return new(PipelinePut) }, Apply: rule(applyPipelinePut), Role: RoleAdmin},
		Spec{Type: CmdReleaseDrop, Name: "release_drop", New: func() Command { return new(ReleaseDrop) }, Apply: rule(applyReleaseDrop), Node: true, // a store drops its own record
			About: func(c Command) string { return c.(*ReleaseDrop).Node }},
		Spec{Type: CmdRuntimeSet, Name: "runtime_set", New: func() Command { return new(RuntimeSet) }, Apply: rule(applyRuntimeSet), Node: true, // a server reports what it runs
			About: func(c Command) string { return c.(*RuntimeSet).Runtime.Node }},
		Spec{Type: CmdCARotate, Name: "ca_rotate", New: func() Command { return new(CARotate) }, Apply: rule(func(s *State, _ uint64, c *CARotate) (any, *Error) { return nil, applyCARotate(s, c) }), Role: RoleAdmin}, // its "issued" stage is the leader's own
		Spec{Type: CmdGossipKeyRotate, Name: "gossip_key_rotate", New: func() Command { return new(GossipKeyRotate) }, Apply: rule(func(s *State, _ uint64, c *GossipKeyRotate) (any, *Error) { return nil, applyGossipKeyRotate(s, c) }), Role: RoleAdmin},
		Spec{Type: CmdNotifySubscription, Name: "notify_subscription", New: func() Command { return new(NotifySubscription) }, Apply: rule(applyNotifySubscription), Role: RoleAdmin},
		Spec{Type: CmdNotifyForge, Name: "notify_forge", New: func() Command { return new(NotifyForge) }, Apply: rule(applyNotifyForge), Role: RoleAdmin},
		Spec{Type: CmdNotifyEvents, Name: "notify_events", New: func() Command { return new(NotifyEvents) }, Apply: rule(applyNotifyEvents)},     // the leader's derived events
		Spec{Type: CmdNotifyAttempt, Name: "notify_attempt", New: func() Command { return new(NotifyAttempt) }, Apply: rule(applyNotifyAttempt)}, // the leader's delivery attempts
		Spec{Type: CmdBuildAssign, Name: "build_assign", New: func() Command { return new(BuildAssign) }, Apply: rule(applyBuildAssign)},         // the leader assigns builds
		Spec{Type: CmdBuildLease, Name: "build_lease", New: func() Command { return new(BuildLease) }, Apply: rule(applyBuildLease), Node: true, // a build server renews its own lease
			About: func(c Command) string { return c.(*BuildLease).Node }},
		Spec{Type: CmdBuildRequeue, Name: "build_requeue", New: func() Command { return new(BuildRequeue) }, Apply: rule(applyBuildRequeue)}, // the leader takes a build back
		Spec{Type: CmdPrune, Name: "prune", New: func() Command { return new(Prune) }, Apply: rule(applyPrune)},                              // the leader's retention plan
		Spec{Type: CmdRetentionSet, Name: "retention_set", New: func() Command { return new(RetentionSet) }, Apply: rule(applyRetentionSet), Role: RoleAdmin},
	)
}
