package raftfsm

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// EnvelopeVersion is the first byte of every log entry Shoal writes. A node that meets a newer version stops
// rather than guess at its meaning.
const EnvelopeVersion byte = 1

// CommandType is the second byte of a log entry. The numbers are append-only: never reuse or renumber one.
type CommandType uint8

// IgnoreUnknown marks a command type that older nodes may skip; without it an unknown type stops the node.
const IgnoreUnknown CommandType = 0x80

const (
	CmdMeshInit        CommandType = 1
	CmdTokenCreate     CommandType = 2
	CmdTokenDelete     CommandType = 3
	CmdJoinTokenCreate CommandType = 4
	CmdJoinTokenDelete CommandType = 5
	CmdAppPut          CommandType = 6
	CmdAppDelete       CommandType = 7
	CmdEnvPut          CommandType = 8
	CmdEnvDelete       CommandType = 9
	CmdLeaderEpoch     CommandType = 10
	CmdBuildQueue      CommandType = 11
	CmdBuildStart      CommandType = 12
	CmdBuildFinish     CommandType = 13
	CmdBuildCancel     CommandType = 14
	CmdReleaseHolders  CommandType = 15
	CmdDeployCreate    CommandType = 16
	CmdDeployUpdate    CommandType = 17
	CmdNodeStatus      CommandType = 18
	CmdEnvPin          CommandType = 19
	CmdMemberLeave     CommandType = 20
	CmdMemberRejoin    CommandType = 21
	CmdReleaseCreate   CommandType = 22
	CmdPipelinePut     CommandType = 23
	CmdReleaseDrop     CommandType = 28
	// 24-35 are other commands'; 36-39 belong to mesh trust (mesh_ca.go, mesh_keys.go).
	CmdCARotate        CommandType = 36
	CmdGossipKeyRotate CommandType = 37
)

// Command is implemented by every command body.
type Command interface{ Type() CommandType }

// Encode wraps a command in the versioned envelope: version byte, type byte, JSON body.
func Encode(c Command) ([]byte, error) {
	body, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", c, err)
	}
	out := make([]byte, 2+len(body))
	out[0] = EnvelopeVersion
	out[1] = byte(c.Type())
	copy(out[2:], body)
	return out, nil
}

// Decode unwraps an envelope. An unknown type returns (nil, nil) when it is marked IgnoreUnknown.
func Decode(data []byte) (Command, error) {
	if len(data) < 2 {
		return nil, fmt.Errorf("log entry of %d bytes is too short for a command envelope", len(data))
	}
	if data[0] != EnvelopeVersion {
		return nil, fmt.Errorf("log entry has envelope version %d, this node understands %d: upgrade this node", data[0], EnvelopeVersion)
	}
	t := CommandType(data[1])
	spec, ok := specs[t]
	if !ok {
		if t&IgnoreUnknown != 0 {
			return nil, nil
		}
		return nil, fmt.Errorf("log entry has unknown command type %d: upgrade this node", t)
	}
	c := spec.New()
	if err := json.Unmarshal(data[2:], c); err != nil {
		return nil, fmt.Errorf("decode command type %d: %w", t, err)
	}
	return c, nil
}

// MeshInit records the mesh identity; it succeeds once.
type MeshInit struct {
	Mesh Mesh `json:"Mesh"`
}

// TokenCreate adds an API token.
type TokenCreate struct {
	Token Token `json:"Token"`
}

// TokenDelete removes an API token by id.
type TokenDelete struct {
	ID string `json:"ID"`
}

// JoinTokenCreate adds a join token.
type JoinTokenCreate struct {
	Token JoinToken `json:"Token"`
}

// JoinTokenDelete revokes a join token.
type JoinTokenDelete struct {
	ID string `json:"ID"`
}

// AppPut creates (Create) or replaces an app. With CAS set, the write succeeds only if the app's ModifyIndex
// still equals CAS.
type AppPut struct {
	App    App    `json:"App"`
	Create bool   `json:"Create"`
	CAS    uint64 `json:"CAS"`
}

// AppDelete removes an app that has no environments.
type AppDelete struct {
	Name string `json:"Name"`
}

// EnvPut creates or replaces an environment, as AppPut does for apps. Desired, Stable and the pin are kept from
// the stored environment: they change only through deployments and EnvPin.
type EnvPut struct {
	Env    Env    `json:"Env"`
	Create bool   `json:"Create"`
	CAS    uint64 `json:"CAS"`
}

// EnvDelete removes an environment.
type EnvDelete struct {
	Name string `json:"Name"`
}

// EnvPin pins or unpins an environment (a pinned environment takes no auto deploys).
type EnvPin struct {
	Name   string `json:"Name"`
	Pinned bool   `json:"Pinned"`
	Reason string `json:"Reason"`
}

// ReleaseCreate records a release that was built elsewhere and uploaded (`node release push`, like
// `distelli push`): no build, so no term fence.
type ReleaseCreate struct {
	Release Release `json:"Release"`
}

// MemberLeave records that a server is leaving the mesh for good (`node leave`). The leader removes it from
// Raft at once, and every node lists it as left rather than dead. Gossip alone cannot carry this reliably:
// memberlist's leave message can overtake a metadata update, and its callbacks do not tell a leave from a death.
type MemberLeave struct {
	Name string    `json:"Name"`
	At   time.Time `json:"At"`
}

// MemberRejoin clears a departure record when a server of that name is admitted again. The certificates the
// name held before (issued before At) stay refused: only the one issued at this admission counts.
type MemberRejoin struct {
	Name string    `json:"Name"`
	At   time.Time `json:",omitzero"`
}

// LeaderEpoch is the first write of every new leader. Apply records the term and hands the builds that an older
// leader left running back to the queue, so a new leader runs them and a deposed one can no longer finish them.
type LeaderEpoch struct {
	Term uint64 `json:"Term"`
	Node string `json:"Node"`
}

// BuildQueue queues a build of an app. A non-empty Delivery is a webhook delivery id: a repeated one is ignored
// (the result's value is the existing build).
type BuildQueue struct {
	App      string    `json:"App"`
	Commit   string    `json:"Commit"`
	Ref      string    `json:"Ref"`
	Branch   string    `json:"Branch"`
	Message  string    `json:"Message"`
	Trigger  string    `json:"Trigger"`
	Delivery string    `json:"Delivery"`
	At       time.Time `json:"At"`
	// PullRequest is the request's number for trigger pull_request (and only for it).
	PullRequest int `json:",omitempty"`
}

// BuildStart marks a queued build running under the given leader term.
type BuildStart struct {
	ID   string    `json:"ID"`
	Term uint64    `json:"Term"`
	Node string    `json:"Node"`
	At   time.Time `json:"At"`
}

// BuildFinish ends a running build and, when it succeeded, records its release in the same entry. It is applied
// only if Term is still the current leader term: a deposed leader cannot publish.
type BuildFinish struct {
	ID      string    `json:"ID"`
	Term    uint64    `json:"Term"`
	State   string    `json:"State"`
	Error   string    `json:"Error"`
	Release *Release  `json:"Release"`
	At      time.Time `json:"At"`
	// Message is the commit's subject line as the builder read it; it fills in a build that has none (a poll or
	// a manual build; a push's webhook gives its own). Older nodes ignore it.
	Message string `json:",omitempty"`
	// Node and Attempt name the build server and attempt of a build run under a lease (BuildAssign): the
	// result is refused unless that lease is still held.
	Node    string `json:",omitempty"`
	Attempt int    `json:",omitempty"`
}

// BuildCancel cancels a queued build, or asks the builder to stop a running one.
type BuildCancel struct {
	ID string    `json:"ID"`
	At time.Time `json:"At"`
}

// ReleaseHolders records that a node holds a release's archive whole.
type ReleaseHolders struct {
	App     string `json:"App"`
	Version string `json:"Version"`
	Node    string `json:"Node"`
}

// ReleaseDrop records that a node no longer holds a release's archive (its cleanup removed it, or its store
// lost it), so `held by` stays true. With App and Version empty it drops Node from every release: the leader
// writes that for a server that left the mesh for good. IfUnused refuses the drop (conflict) while the release
// is in use (State.ReleaseUse).
type ReleaseDrop struct {
	App      string `json:"App"`
	Version  string `json:"Version"`
	Node     string `json:"Node"`
	IfUnused bool   `json:",omitempty"`
}

// DeployCreate starts a deployment. ID comes from the proposer.
type DeployCreate struct {
	Deployment Deployment `json:"Deployment"`
}

// DeployUpdate moves a deployment's state, batch or error; when SetDesired is set it also sets the
// environment's desired release (and Stable when the deployment succeeded).
type DeployUpdate struct {
	ID         string    `json:"ID"`
	State      string    `json:"State"`
	Batch      int       `json:"Batch"`
	Error      string    `json:"Error"`
	SetDesired string    `json:"SetDesired"`
	At         time.Time `json:"At"`
	// From, when not empty, lists the states the deployment must be in for the update to apply (conflict
	// otherwise), so approve, cancel and the orchestrator's moves cannot undo each other.
	From []string `json:",omitempty"`
	// By records who approved or cancelled (a token name).
	By string `json:",omitempty"`
	// Rollback, with State rolled_back, is the deployment that takes the environment back to its stable
	// release: it is created in the same entry, so no leader can end a deployment rolled_back and die before
	// the rollback exists.
	Rollback *Deployment `json:",omitempty"`
}

// PipelinePut sets an app's pipeline; empty Stages removes it. With CAS set, the write succeeds only if the
// pipeline's ModifyIndex still equals CAS.
type PipelinePut struct {
	Pipeline Pipeline `json:"Pipeline"`
	CAS      uint64   `json:"CAS"`
}

// NodeStatusSet reports one server's progress in a deployment. It is refused (a result, not a panic) unless the
// deployment is running, the server is in one of its started batches, and the server has not failed in it: a
// finished deployment's record never changes, and a failure stands. Its result is the row written, not the whole
// deployment: every node applies every status write, and encoding a deployment of N servers each time cost the
// mesh O(N) per write, O(N³) per deployment to all N (docs/scale.md).
type NodeStatusSet struct {
	ID     string     `json:"ID"`
	Node   string     `json:"Node"`
	Status NodeStatus `json:"Status"`
}

func (*MeshInit) Type() CommandType        { return CmdMeshInit }
func (*TokenCreate) Type() CommandType     { return CmdTokenCreate }
func (*TokenDelete) Type() CommandType     { return CmdTokenDelete }
func (*JoinTokenCreate) Type() CommandType { return CmdJoinTokenCreate }
func (*JoinTokenDelete) Type() CommandType { return CmdJoinTokenDelete }
func (*AppPut) Type() CommandType          { return CmdAppPut }
func (*AppDelete) Type() CommandType       { return CmdAppDelete }
func (*EnvPut) Type() CommandType          { return CmdEnvPut }
func (*EnvDelete) Type() CommandType       { return CmdEnvDelete }
func (*EnvPin) Type() CommandType          { return CmdEnvPin }
func (*LeaderEpoch) Type() CommandType     { return CmdLeaderEpoch }
func (*BuildQueue) Type() CommandType      { return CmdBuildQueue }
func (*BuildStart) Type() CommandType      { return CmdBuildStart }
func (*BuildFinish) Type() CommandType     { return CmdBuildFinish }
func (*BuildCancel) Type() CommandType     { return CmdBuildCancel }
func (*ReleaseHolders) Type() CommandType  { return CmdReleaseHolders }
func (*DeployCreate) Type() CommandType    { return CmdDeployCreate }
func (*DeployUpdate) Type() CommandType    { return CmdDeployUpdate }
func (*NodeStatusSet) Type() CommandType   { return CmdNodeStatus }
func (*MemberLeave) Type() CommandType     { return CmdMemberLeave }
func (*MemberRejoin) Type() CommandType    { return CmdMemberRejoin }
func (*ReleaseCreate) Type() CommandType   { return CmdReleaseCreate }
func (*PipelinePut) Type() CommandType     { return CmdPipelinePut }
func (*ReleaseDrop) Type() CommandType     { return CmdReleaseDrop }

// Known returns the command types this code decodes, in order. Each node advertises them in gossip, and the
// leader commits a command only when every Raft member knows its type (node/commands.go): during a rolling
// upgrade, a command that only the upgraded nodes understand waits for the rest, instead of stopping them.
func Known() []CommandType {
	out := make([]CommandType, 0, len(specs))
	for t := range specs {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

// Baseline is what a node that advertises no command types knows: Shoal before members advertised them
// knew exactly these. Never add to this list; new command types are advertised.
var Baseline = []CommandType{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 28,
	36, 37, 44, 45, 46, 47, 48, 49, 50, 52, 53, CmdRuntimeSet}

// CommandSet is a set of command types, as a bitmap.
type CommandSet [32]byte

// SetOf makes a set of types.
func SetOf(types []CommandType) CommandSet {
	var s CommandSet
	for _, t := range types {
		s[t/8] |= 1 << (t % 8)
	}
	return s
}

// Has reports whether t is in the set.
func (s CommandSet) Has(t CommandType) bool { return s[t/8]&(1<<(t%8)) != 0 }

// String is the set's compact text form: base64 (URL alphabet, no padding) of the bitmap, 43 characters.
func (s CommandSet) String() string { return base64.RawURLEncoding.EncodeToString(s[:]) }

// ParseCommandSet reads the text form.
func ParseCommandSet(text string) (CommandSet, error) {
	var s CommandSet
	b, err := base64.RawURLEncoding.DecodeString(text)
	if err != nil || len(b) != len(s) {
		return s, fmt.Errorf("not a command set: %q", text)
	}
	copy(s[:], b)
	return s, nil
}
