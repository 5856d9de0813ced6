package builder

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/raftfsm"
)

func TestLogFollowedFromAnyNode(t *testing.T) {
	gates := gateDir(t)
	repo, _ := newAppRepo(t, `
build:
  build:
    - echo "first line before the gate"
    - `+waitGate("go")+`
    - for i in 1 2 3; do echo "line $i after the gate"; done
`, nil)
	m := newMesh(t, 3, Options{})
	m.createApp("web", map[string]any{"repo": repo.dir, "build_vars": map[string]any{"GATES": map[string]any{"value": gates}}})
	leader := m.c.Leader()
	follower := 0
	for i, n := range m.c.Nodes {
		if n != leader {
			follower = i
			break
		}
	}
	b := m.startBuild(follower, "web", "")
	m.waitRunning(b.ID)

	// Follow through a node that did not run the build: it reads the leader's log over the build_log RPC.
	resp, err := m.rawGet(follower, "/v1/builds/"+b.ID+"/log?follow=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("follow: %s %v", resp.Status, resp.Header)
	}
	lines := make(chan string, 100)
	readDone := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		readDone <- sc.Err()
	}()
	waitLine := func(want string) {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("the stream ended before %q", want)
				}
				if strings.Contains(l, want) {
					return
				}
			case <-timeout:
				t.Fatalf("no %q in the followed log", want)
			}
		}
	}
	// Output arrives while the build still runs.
	waitLine("first line before the gate")
	if cur, _ := m.getBuild(0, b.ID); cur.State != raftfsm.BuildRunning {
		t.Fatalf("build is %s: the line should have streamed while it ran", cur.State)
	}
	openGate(t, gates, "go")
	waitLine("line 3 after the gate")
	waitLine("build succeeded: release v1")
	// The stream ends by itself once the build has ended.
	for range lines {
	}
	if err := <-readDone; err != nil {
		t.Errorf("follow stream: %v", err)
	}

	// Without follow, any node answers the log, in pages from an offset.
	full := m.buildLog(b.ID)
	for i := range m.c.Nodes {
		resp, err := m.rawGet(i, "/v1/builds/"+b.ID+"/log?offset=10")
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		next, _ := strconv.Atoi(resp.Header.Get("X-Shoal-Log-Next"))
		if string(data) != full[10:] || next != len(full) || resp.Header.Get("X-Shoal-Log-Node") != leader.Name() {
			t.Errorf("node %d: log from offset 10 is %d bytes, next %d, node %q; want %d bytes from %s",
				i, len(data), next, resp.Header.Get("X-Shoal-Log-Node"), len(full)-10, leader.Name())
		}
	}
	if resp, err := m.rawGet(follower, "/v1/builds/"+b.ID+"/log?offset=-1"); err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("negative offset: %v %v", resp.Status, err)
	}
}

func TestLogOfQueuedBuildIsEmpty(t *testing.T) {
	gates := gateDir(t)
	repo, _ := newAppRepo(t, "build:\n  build: ['"+waitGate("go")+"']\n", nil)
	m := newMesh(t, 1, Options{})
	m.createApp("web", map[string]any{"repo": repo.dir, "build_vars": map[string]any{"GATES": map[string]any{"value": gates}}})
	first := m.startBuild(0, "web", "")
	second := m.startBuild(0, "web", "")
	m.waitRunning(first.ID)
	resp, err := m.rawGet(0, "/v1/builds/"+second.ID+"/log")
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || len(data) != 0 || resp.Header.Get("X-Shoal-Build-State") != raftfsm.BuildQueued {
		t.Errorf("log of a queued build: %s %q %v", resp.Status, data, resp.Header)
	}
	// A follower of a queued build waits for it to start, and then streams it.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+m.c.Nodes[0].HTTPAddr()+"/v1/builds/"+second.ID+"/log?follow=1", nil)
	req.Header.Set("Authorization", "Bearer "+m.c.AdminToken)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	openGate(t, gates, "go")
	data, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !strings.Contains(string(data), "build succeeded: release v2") {
		t.Errorf("followed log of a queued build: %v\n%s", err, data)
	}
}
