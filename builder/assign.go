package builder

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/shoal-ci/shoal/node"
	"github.com/shoal-ci/shoal/raftfsm"
)

// Node tags that make a node a build server.
const (
	// TagBuild lists a build server's capabilities, comma-separated (`--tag build=linux,docker`).
	TagBuild = "build"
	// TagBuildSlots is how many builds a build server runs at once (default DefaultBuildSlots).
	TagBuildSlots = "build-slots"
	// DefaultBuildSlots is a build server's concurrency limit when its tags give none.
	DefaultBuildSlots = 2
)

// BuildServer is a node that accepts builds, as the leader sees it through gossip.
type BuildServer struct {
	Name  string
	Caps  []string
	Slots int
}

// BuildServers returns the alive members tagged as build servers, sorted by name.
func BuildServers(members []node.Member) []BuildServer {
	var out []BuildServer
	for _, m := range members {
		v, ok := m.Tags[TagBuild]
		if !ok || m.Status != node.StatusAlive {
			continue
		}
		out = append(out, BuildServer{Name: m.Name, Caps: splitCaps(v), Slots: slotsOf(m.Tags)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func splitCaps(v string) []string {
	var caps []string
	for c := range strings.SplitSeq(v, ",") {
		if c = strings.TrimSpace(c); c != "" {
			caps = append(caps, c)
		}
	}
	slices.Sort(caps)
	return slices.Compact(caps)
}

func slotsOf(tags map[string]string) int {
	if n, err := strconv.Atoi(tags[TagBuildSlots]); err == nil && n > 0 {
		return n
	}
	return DefaultBuildSlots
}

// Assignment gives a queued build to a build server.
type Assignment struct {
	Build string
	Node  string
}

// Plan is where the queued builds go at one moment.
type Plan struct {
	// Assign are the builds to give to build servers now, in queue order.
	Assign []Assignment
	// Local are the builds the leader may run itself (the mesh has no build servers), in queue order; the
	// leader's own concurrency limit applies to them.
	Local []string
	// Waiting says, in words, why each other queued build waits.
	Waiting map[string]string
}

// PlanBuilds places the queued builds of st. It is a pure function of the state and the build servers:
// builds are taken in queue (log) order; a build of an app and branch that already has one running or placed
// waits for it; a build goes to the least busy build server (fewest running builds, then name) that offers
// all the capabilities its app needs and has a free slot. Without any build server, builds whose app needs no
// capability run on the leader, as they always did; the others wait with a reason.
func PlanBuilds(st *raftfsm.State, servers []BuildServer) Plan {
	p := Plan{Waiting: map[string]string{}}
	var queued []*raftfsm.Build
	load := map[string]int{}
	busy := map[string]string{}         // app and branch → the build running or placed for them
	for _, b := range st.LiveBuilds() { // the index of queued and running builds: no scan of them all
		switch b.State {
		case raftfsm.BuildQueued:
			queued = append(queued, b)
		case raftfsm.BuildRunning:
			busy[b.App+"\x00"+b.Branch] = b.ID
			if b.Remote {
				load[b.Node]++
			}
		}
	}
	sort.Slice(queued, func(i, j int) bool { return queued[i].CreateIndex < queued[j].CreateIndex })
	for _, b := range queued {
		key := b.App + "\x00" + b.Branch
		if other := busy[key]; other != "" {
			p.Waiting[b.ID] = fmt.Sprintf("waits for build %s of the same app and branch", other)
			continue
		}
		var needs []string
		if a := st.Apps[b.App]; a != nil {
			needs = a.BuildCapabilities
		}
		if len(servers) == 0 {
			if len(needs) == 0 {
				p.Local = append(p.Local, b.ID)
				busy[key] = b.ID
				continue
			}
			p.Waiting[b.ID] = fmt.Sprintf("needs a build server with %s, and the mesh has none: start a node with --tag build=%s",
				capList(needs), strings.Join(needs, ","))
			continue
		}
		best, matching := "", 0
		for _, srv := range servers {
			if !hasAll(srv.Caps, needs) {
				continue
			}
			matching++
			if load[srv.Name] >= srv.Slots {
				continue
			}
			if best == "" || load[srv.Name] < load[best] {
				best = srv.Name
			}
		}
		switch {
		case matching == 0:
			p.Waiting[b.ID] = fmt.Sprintf("needs a build server with %s; no alive build server has it (%s)",
				capList(needs), describeServers(servers))
		case best == "":
			p.Waiting[b.ID] = fmt.Sprintf("all %d build servers with %s are busy", matching, capList(needs))
		default:
			p.Assign = append(p.Assign, Assignment{Build: b.ID, Node: best})
			load[best]++
			busy[key] = b.ID
		}
	}
	return p
}

func hasAll(have, need []string) bool {
	for _, n := range need {
		if !slices.Contains(have, n) {
			return false
		}
	}
	return true
}

func capList(needs []string) string {
	if len(needs) == 0 {
		return "any capability"
	}
	if len(needs) == 1 {
		return "capability " + needs[0]
	}
	return "capabilities " + strings.Join(needs, ", ")
}

func describeServers(servers []BuildServer) string {
	parts := make([]string, len(servers))
	for i, s := range servers {
		caps := strings.Join(s.Caps, ",")
		if caps == "" {
			caps = "no capabilities"
		}
		parts[i] = s.Name + ": " + caps
	}
	return strings.Join(parts, "; ")
}
