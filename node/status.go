package node

// Status is the answer of GET /v1/status.
type Status struct {
	Node         string `json:"node"`
	Mesh         string `json:"mesh"`
	State        string `json:"state"`
	Leader       string `json:"leader"`
	LeaderAddr   string `json:"leader_addr"`
	Term         uint64 `json:"term"`
	AppliedIndex uint64 `json:"applied_index"`
	CommitIndex  uint64 `json:"commit_index"`
	Voters       int    `json:"voters"`
	NonVoters    int    `json:"nonvoters"`
	Members      int    `json:"members"`
	Version      string `json:"version"`
}

// Version is the build's version, set by the linker (-X) in release builds.
var Version = "dev"

// Status describes this node and the mesh as it sees them.
func (n *Node) Status() Status {
	leader, addr := n.Leader()
	st := Status{Node: n.cfg.Name, Mesh: n.stored.Mesh, State: stateName(n.raft.State()), Leader: leader, LeaderAddr: addr,
		Term: n.raft.CurrentTerm(), AppliedIndex: n.raft.AppliedIndex(), CommitIndex: n.raft.CommitIndex(), Version: Version}
	for _, m := range n.Members() {
		if m.Status == StatusAlive || m.Status == StatusSuspect {
			st.Members++
		}
		switch m.Role {
		case "voter":
			st.Voters++
		case "nonvoter":
			st.NonVoters++
		}
	}
	return st
}
