package deployer

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-ci/shoal/client"
	"github.com/shoal-ci/shoal/raftfsm"
)

// TestUnfetchableReleaseRefusedAndWaitedFor: a deploy or rollback to a release whose archive no server has is
// refused at once, in words, and writes nothing; a deployment of it made anyway (bypassing the API) shows the
// cause in the server's status and proceeds as soon as the archive is back.
func TestUnfetchableReleaseRefusedAndWaitedFor(t *testing.T) {
	dc := newDeployCluster(t, 2, nil)
	dc.createApp("web", "prod", []string{"n1"}, nil, raftfsm.Strategy{Kind: "all"}, false)
	dc.release("web", "v1", releaseOpts{})
	first := dc.deploy("n1", "prod", CreateRequest{Release: "v1"})
	dc.waitDeployment(first.Deployment.ID, 60*time.Second, raftfsm.DeploySucceeded)
	v2 := dc.release("web", "v2", releaseOpts{})
	rc, err := dc.origin.Open(v2.Digest)
	if err != nil {
		t.Fatal(err)
	}
	archive, _ := io.ReadAll(rc)
	rc.Close()
	if err := dc.origin.Remove(v2.Digest); err != nil {
		t.Fatal(err)
	}

	before, envBefore := len(dc.deploymentsOf("prod")), dc.env("prod")
	ctx := context.Background()
	_, err = dc.api("n2").Post(ctx, "/v1/envs/prod/deployments", CreateRequest{Release: "v2"}, nil)
	if !client.IsStatus(err, http.StatusConflict) || !strings.Contains(err.Error(), "release v2 of app web") {
		t.Fatalf("deploy of an archive nobody has: %v", err)
	}
	_, err = dc.api("n2").Post(ctx, "/v1/envs/prod/rollback", RollbackRequest{To: "v2"}, nil)
	if !client.IsStatus(err, http.StatusConflict) || !strings.Contains(err.Error(), "release v2 of app web") {
		t.Fatalf("rollback to an archive nobody has: %v", err)
	}
	if after, e := len(dc.deploymentsOf("prod")), dc.env("prod"); after != before || e.Pinned || e.Desired != envBefore.Desired || e.ModifyIndex != envBefore.ModifyIndex {
		t.Fatalf("a refused deploy changed the state: %d deployments (was %d), env %+v", after, before, e)
	}

	// Made anyway: the server says why it waits, in words, and carries on when the archive is back.
	e := dc.env("prod")
	dep := NewDeployment(&e, dc.node("n1").Members(), raftfsm.DeployKindDeploy, "v2", "test", false, nil, time.Now())
	dc.apply(&raftfsm.DeployCreate{Deployment: dep})
	dc.eventually(30*time.Second, "n1 to say why it cannot fetch v2", func() (bool, string) {
		st := dc.deployment(dep.ID).Nodes["n1"]
		return st != nil && st.State == raftfsm.NodeDownloading && strings.Contains(st.Error, "release v2 of app web"), describe(dc.deployment(dep.ID))
	})
	if _, err := dc.origin.Import(bytes.NewReader(archive), v2.PieceSize); err != nil {
		t.Fatal(err)
	}
	dc.waitDeployment(dep.ID, 60*time.Second, raftfsm.DeploySucceeded)
	dc.waitServing(10*time.Second, "v2", "n1")
}

// TestExecLogsThroughAnyNode: the app's output on n1 is read through n2, as its last lines and followed.
func TestExecLogsThroughAnyNode(t *testing.T) {
	dc := newDeployCluster(t, 2, nil)
	dc.createApp("web", "prod", []string{"n1"}, nil, raftfsm.Strategy{Kind: "all"}, false)
	dc.release("web", "v1", releaseOpts{})
	res := dc.deploy("n1", "prod", CreateRequest{Release: "v1"})
	dc.waitDeployment(res.Deployment.ID, 60*time.Second, raftfsm.DeploySucceeded)
	get := func(query string) (string, error) {
		req, _ := http.NewRequest("GET", "http://"+dc.node("n2").HTTPAddr()+"/v1/envs/prod/logs"+query, nil)
		req.Header.Set("Authorization", "Bearer "+dc.c.AdminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return "", &httpError{resp.StatusCode, string(b)}
		}
		return string(b), nil
	}
	out, err := get("")
	if err != nil || !strings.Contains(out, "--- shoal: starting exec copy 0") {
		t.Fatalf("the app's output through n2: %q %v", out, err)
	}
	path := filepath.Join(dc.deps["n1"].EnvDir("web", "prod"), execLogName)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteString("first\nsecond\nthird\n")
	if out, err := get("?tail=2"); err != nil || out != "second\nthird\n" {
		t.Fatalf("tail 2: %q %v", out, err)
	}
	if _, err := get("?tail=x"); err == nil || !strings.Contains(err.Error(), "400") {
		t.Fatalf("a bad tail: %v", err)
	}
	if _, err := get("?server=n9"); err == nil || !strings.Contains(err.Error(), "n9") {
		t.Fatalf("an unknown server: %v", err)
	}
	if _, err := get("?server=n2"); err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "never ran there") {
		t.Fatalf("a server the app never ran on: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+dc.node("n2").HTTPAddr()+"/v1/envs/prod/logs?follow=1&tail=1", nil)
	req.Header.Set("Authorization", "Bearer "+dc.c.AdminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	next := func() string {
		if !lines.Scan() {
			t.Fatalf("the follow ended: %v", lines.Err())
		}
		return lines.Text()
	}
	if got := next(); got != "third" {
		t.Fatalf("follow starts with %q, want the last line", got)
	}
	f.WriteString("written while followed\n")
	if got := next(); got != "written while followed" {
		t.Fatalf("followed %q", got)
	}
}

type httpError struct {
	code int
	body string
}

func (e *httpError) Error() string { return fmt.Sprintf("%d: %s", e.code, e.body) }
