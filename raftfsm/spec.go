package raftfsm

import (
	"fmt"
	"slices"
)

// Spec is everything about one command type, registered once below: its number and name, how to make its body,
// and who may have it committed when another node forwards it to the leader (node/authorize.go checks against
// the leader's own state). The zero authority is the strictest: only the leader itself writes the command.
// Adding a command is: its type number, its struct (with json tags and Type), its apply rule, and one line here;
// TestCommandFixtures then asks for its fixture.
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
}

// specs is the one table of command types: Decode, DecodeStrict, Known and the leader's authorization read it.
var specs = map[CommandType]*Spec{}

func register(list ...Spec) {
	for _, s := range list {
		if specs[s.Type] != nil {
			panic(fmt.Sprintf("raftfsm: command type %d registered twice (%s, %s)", s.Type, specs[s.Type].Name, s.Name))
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
		Spec{Type: CmdMeshInit, Name: "mesh_init", New: func() Command { return new(MeshInit) }}, // the first node, on itself
		Spec{Type: CmdTokenCreate, Name: "token_create", New: func() Command { return new(TokenCreate) }, Role: RoleAdmin},
		Spec{Type: CmdTokenDelete, Name: "token_delete", New: func() Command { return new(TokenDelete) }, Role: RoleAdmin},
		Spec{Type: CmdJoinTokenCreate, Name: "join_token_create", New: func() Command { return new(JoinTokenCreate) }, Role: RoleAdmin},
		Spec{Type: CmdJoinTokenDelete, Name: "join_token_delete", New: func() Command { return new(JoinTokenDelete) }, Role: RoleAdmin},
		Spec{Type: CmdAppPut, Name: "app_put", New: func() Command { return new(AppPut) }, Role: RoleAdmin},
		Spec{Type: CmdAppDelete, Name: "app_delete", New: func() Command { return new(AppDelete) }, Role: RoleAdmin},
		Spec{Type: CmdEnvPut, Name: "env_put", New: func() Command { return new(EnvPut) }, Role: RoleAdmin},
		Spec{Type: CmdEnvDelete, Name: "env_delete", New: func() Command { return new(EnvDelete) }, Role: RoleAdmin},
		Spec{Type: CmdLeaderEpoch, Name: "leader_epoch", New: func() Command { return new(LeaderEpoch) }},                              // a leader writes its own epoch
		Spec{Type: CmdBuildQueue, Name: "build_queue", New: func() Command { return new(BuildQueue) }, Role: RoleDeployer, Node: true}, // webhooks (signed) and polls too
		Spec{Type: CmdBuildStart, Name: "build_start", New: func() Command { return new(BuildStart) }, Node: true},
		Spec{Type: CmdBuildFinish, Name: "build_finish", New: func() Command { return new(BuildFinish) }, Node: true},
		Spec{Type: CmdBuildCancel, Name: "build_cancel", New: func() Command { return new(BuildCancel) }, Role: RoleDeployer},
		Spec{Type: CmdReleaseHolders, Name: "release_holders", New: func() Command { return new(ReleaseHolders) }, Node: true,
			About: func(c Command) string { return c.(*ReleaseHolders).Node }},
		Spec{Type: CmdDeployCreate, Name: "deploy_create", New: func() Command { return new(DeployCreate) }, Role: RoleDeployer, Node: true},
		Spec{Type: CmdDeployUpdate, Name: "deploy_update", New: func() Command { return new(DeployUpdate) }, Role: RoleDeployer, Node: true},
		Spec{Type: CmdNodeStatus, Name: "node_status", New: func() Command { return new(NodeStatusSet) }, Node: true,
			About: func(c Command) string { return c.(*NodeStatusSet).Node }},
		Spec{Type: CmdEnvPin, Name: "env_pin", New: func() Command { return new(EnvPin) }, Role: RoleDeployer, Node: true}, // the orchestrator pins after a failure
		Spec{Type: CmdMemberLeave, Name: "member_leave", New: func() Command { return new(MemberLeave) }, Role: RoleAdmin, Node: true,
			About: func(c Command) string { return c.(*MemberLeave).Name }},
		Spec{Type: CmdMemberRejoin, Name: "member_rejoin", New: func() Command { return new(MemberRejoin) }}, // the leader, when it admits a joiner
		Spec{Type: CmdReleaseCreate, Name: "release_create", New: func() Command { return new(ReleaseCreate) }, Role: RoleDeployer},
		Spec{Type: CmdPipelinePut, Name: "pipeline_put", New: func() Command { return new(PipelinePut) }, Role: RoleAdmin},
		Spec{Type: CmdReleaseDrop, Name: "release_drop", New: func() Command { return new(ReleaseDrop) }, Node: true, // a store drops its own record
			About: func(c Command) string { return c.(*ReleaseDrop).Node }},
		Spec{Type: CmdRuntimeSet, Name: "runtime_set", New: func() Command { return new(RuntimeSet) }, Node: true, // a server reports what it runs
			About: func(c Command) string { return c.(*RuntimeSet).Runtime.Node }},
		Spec{Type: CmdCARotate, Name: "ca_rotate", New: func() Command { return new(CARotate) }, Role: RoleAdmin}, // its "issued" stage is the leader's own
		Spec{Type: CmdGossipKeyRotate, Name: "gossip_key_rotate", New: func() Command { return new(GossipKeyRotate) }, Role: RoleAdmin},
		Spec{Type: CmdNotifySubscription, Name: "notify_subscription", New: func() Command { return new(NotifySubscription) }, Role: RoleAdmin},
		Spec{Type: CmdNotifyForge, Name: "notify_forge", New: func() Command { return new(NotifyForge) }, Role: RoleAdmin},
		Spec{Type: CmdNotifyEvents, Name: "notify_events", New: func() Command { return new(NotifyEvents) }},    // the leader's derived events
		Spec{Type: CmdNotifyAttempt, Name: "notify_attempt", New: func() Command { return new(NotifyAttempt) }}, // the leader's delivery attempts
		Spec{Type: CmdBuildAssign, Name: "build_assign", New: func() Command { return new(BuildAssign) }},       // the leader assigns builds
		Spec{Type: CmdBuildLease, Name: "build_lease", New: func() Command { return new(BuildLease) }, Node: true, // a build server renews its own lease
			About: func(c Command) string { return c.(*BuildLease).Node }},
		Spec{Type: CmdBuildRequeue, Name: "build_requeue", New: func() Command { return new(BuildRequeue) }}, // the leader takes a build back
		Spec{Type: CmdPrune, Name: "prune", New: func() Command { return new(Prune) }},                       // the leader's retention plan
		Spec{Type: CmdRetentionSet, Name: "retention_set", New: func() Command { return new(RetentionSet) }, Role: RoleAdmin},
	)
}
