package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/daemon"
	"github.com/shoal-ci/shoal/internal/meshtest"
)

// daemonMesh is a mesh of in-process servers, each a daemon.Main: the node and its services assembled and
// started exactly as `node init` and `node join` do. Its embedded meshtest.Cluster gives the mesh helpers (Leader,
// Eventually, ...) over the same nodes; the Mains are closed, services before nodes, when the test ends, before
// anything the test registered earlier is cleaned up.
type daemonMesh struct {
	*meshtest.Cluster
	Mains []*daemon.Main
	// afterStop runs once the servers have stopped and before their data dirs are removed (OnStop).
	afterStop []func()
}

// OnStop runs f when the test ends, after the servers have stopped (no deployer runs) and before their data
// dirs are removed: the place to stop the apps a test deployed, which outlive their agents by design.
func (m *daemonMesh) OnStop(f func()) { m.afterStop = append(m.afterStop, f) }

// startDaemonMesh starts size servers: n1 inits the mesh, the others join through it, one at a time. tweak, if
// set, adjusts each Main (its node.Config, service options or service selection) before it runs.
func startDaemonMesh(t testing.TB, size int, tweak func(*daemon.Main)) *daemonMesh {
	t.Helper()
	m := &daemonMesh{Cluster: &meshtest.Cluster{T: t, Dir: t.TempDir()}}
	t.Cleanup(m.close)
	for i := 1; i <= size; i++ {
		d := &daemon.Main{Config: meshtest.Config(t, m.Dir, fmt.Sprintf("n%d", i)), Start: daemon.Init, MeshName: "test", JoinTTL: time.Hour}
		if i > 1 {
			d.Start, d.JoinAddr, d.JoinToken = daemon.Join, m.Nodes[0].RaftAddr(), m.JoinToken
		}
		if tweak != nil {
			tweak(d)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err := d.Run(ctx)
		cancel()
		if err != nil {
			t.Fatalf("start n%d: %v", i, err)
		}
		if i == 1 {
			m.AdminToken, m.JoinToken = d.InitResult.AdminToken, d.InitResult.JoinToken
		}
		m.Mains = append(m.Mains, d)
		m.Nodes, m.APIs = append(m.Nodes, d.Node), append(m.APIs, d.APIServer)
	}
	m.WaitRaftMembers(size)
	m.WaitReady()
	return m
}

// close stops every server, in reverse order of start, then runs the OnStop functions.
func (m *daemonMesh) close() {
	for i := len(m.Mains) - 1; i >= 0; i-- {
		m.Mains[i].Close()
	}
	for _, f := range m.afterStop {
		f()
	}
}
