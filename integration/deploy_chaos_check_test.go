package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/shoal-ci/shoal/deployer"
	"github.com/shoal-ci/shoal/raftfsm"
)

// The invariants of TestDeployChaos, checked after every step once the mesh has settled.

// settle waits for every node to be up and every deployment to end, then checks the invariants.
func (c *chaos) settle() {
	c.m.waitHealthy(c.m.nodes...)
	for _, e := range c.envs {
		c.waitDeploymentsEnd(e)
		for _, d := range c.deployments(e) {
			if e.before[d.ID] {
				continue
			}
			took := d.EndedAt.Sub(d.CreatedAt)
			c.t.Logf("    %s ended in %s: %s", d.ID, took.Round(10*time.Millisecond), describeDeployment(d))
			if took > 10*time.Second {
				c.showLogs(d) // not a violation (no time is asserted), but worth a look
			}
		}
	}
	for _, e := range c.envs {
		c.checkRunsDesired(e)
		c.checkPIDs(e)
		c.checkFinishedUnchanged(e)
		c.checkCrashLoopsNamed(e)
		c.checkLogsOwnDeployment(e)
	}
	c.checkHolders()
}

// get reads path into out from a live node, trying the next one on an error for up to 30 s: a node that has
// just started may not serve every route yet (noted once: it answers 404 "no API route" meanwhile).
func (c *chaos) get(path string, out any) {
	// Linearizable: a follower's local state may not yet hold the deployment the step just created.
	if strings.Contains(path, "?") {
		path += "&consistent"
	} else {
		path += "?consistent"
	}
	var last error
	ok, _ := poll(30*time.Second, func() (bool, string) {
		cl := c.client()
		_, err := cl.Get(context.Background(), path, out)
		if err != nil && strings.Contains(err.Error(), "no API route") {
			c.note("no-route-"+path, "a live node answered GET %s with %q: a node serves its API before its services (deployer, spread, builder) attach their routes, and says 404 rather than 503 meanwhile", path, err)
		}
		last = err
		return err == nil, ""
	})
	if !ok {
		c.t.Fatalf("GET %s: %v", path, last)
	}
}

// deployments lists every deployment of e, newest first.
func (c *chaos) deployments(e *chaosEnv) []raftfsm.Deployment {
	var ds []raftfsm.Deployment
	c.get("/v1/envs/"+e.app.env+"/deployments?limit=0", &ds)
	return ds
}

// releases lists e's app's releases, newest first.
func (c *chaos) releases(e *chaosEnv) []raftfsm.Release {
	var rels []raftfsm.Release
	c.get("/v1/apps/"+e.app.name+"/releases", &rels)
	return rels
}

// storeHolds reports whether n's artifact store holds the archive whole (what a holder record claims).
func storeHolds(n *pnode, digest string) bool {
	_, err := os.Stat(filepath.Join(n.dir, "blobs", digest+".tar.gz"))
	return err == nil
}

// waitDeploymentsEnd waits until every deployment of e has ended. One that does not end within the deadline is
// a violation (a deployment must fail with a reason rather than hang); it is cancelled so the run goes on.
func (c *chaos) waitDeploymentsEnd(e *chaosEnv) {
	const deadline = 120 * time.Second
	ok, detail := poll(deadline, func() (bool, string) {
		var open []string
		for _, d := range c.deployments(e) {
			if !d.Finished() {
				open = append(open, describeDeployment(d))
			}
		}
		return len(open) == 0, strings.Join(open, " | ")
	})
	if ok {
		return
	}
	c.violate("hang/"+e.app.env, "%s: a deployment did not end within %s: %s", e.app.env, deadline, detail)
	for _, d := range c.deployments(e) {
		if !d.Finished() {
			_ = c.cancel(d.ID)
		}
	}
	if ok, detail := poll(30*time.Second, func() (bool, string) {
		for _, d := range c.deployments(e) {
			if !d.Finished() {
				return false, describeDeployment(d)
			}
		}
		return true, ""
	}); !ok {
		c.violate("cancel-hang/"+e.app.env, "%s: cancelled, a deployment still did not end within 30s: %s", e.app.env, detail)
	}
}

// serverView is what one server runs for an environment, read from its disk and from the app itself.
type serverView struct {
	current string // the release `current` points at ("" when none)
	pids    []int  // the supervisor's recorded processes that are alive
	serving string // the app's answer, "v3 pid=123", or ""
}

func (v serverView) String() string {
	return fmt.Sprintf("current=%q supervised=%v app=%q", v.current, v.pids, v.serving)
}

func (c *chaos) view(e *chaosEnv, server string) serverView {
	n := c.m.byName(server)
	dir := e.app.envDir(n.dir)
	var v serverView
	if cur, err := deployer.Current(dir); err == nil {
		b, _ := os.ReadFile(filepath.Join(cur, "version.txt"))
		v.current = strings.TrimSpace(string(b))
	}
	var st struct {
		Instances []struct {
			PID int `json:"pid"`
		} `json:"instances"`
	}
	if b, err := os.ReadFile(filepath.Join(dir, "supervisor", "exec-state.json")); err == nil && json.Unmarshal(b, &st) == nil {
		for _, in := range st.Instances {
			if processAlive(in.PID) {
				v.pids = append(v.pids, in.PID)
			}
		}
	}
	v.serving = e.app.serving(server)
	return v
}

// processAlive reports whether pid runs and is not a zombie.
func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses, which may itself hold spaces.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z'
}

// runs reports whether the view shows release version running: current on it, the app answering with it, from
// a process the supervisor records.
func (v serverView) runs(version string) bool {
	return v.current == version && versionOf(v.serving) == version && slices.Contains(v.pids, servingPID(v.serving))
}

// checkRunsDesired: every server of e runs the environment's desired release, or reports why not. The wait is
// shorter for an environment already found off its release at the step before (it is a known defect).
func (c *chaos) checkRunsDesired(e *chaosEnv) {
	var env envWithRuntime
	views := map[string]serverView{}
	wait := 45 * time.Second
	if e.stuck {
		wait = 10 * time.Second
	}
	e.stuck = false
	ok, _ := poll(wait, func() (bool, string) {
		env = c.envView(e)
		all := true
		for _, s := range e.servers {
			views[s] = c.view(e, s)
			all = all && (env.Desired == "" || views[s].runs(env.Desired))
		}
		return all, ""
	})
	if ok {
		c.checkRuntimeTrue(e, views)
		return
	}
	deps := c.deployments(e)
	for _, s := range e.servers {
		v := views[s]
		if v.runs(env.Desired) {
			continue
		}
		if why := c.reportedWhy(env, deps, s); why != "" {
			c.t.Logf("step %d: %s on %s does not run desired %s (%s) but reports why: %s", c.step, e.app.env, s, env.Desired, v, why)
			continue
		}
		e.stuck = true
		drift := "none reported"
		for _, r := range env.Runtime {
			if r.Node == s {
				drift = fmt.Sprintf("%q", r.Drift)
			}
		}
		c.violate("desired/"+e.app.env+"/"+s, "%s on %s: desired %s (stable %s) but %s, and nothing reports why (drift %s; last deployment: %s)",
			e.app.env, s, env.Desired, env.Stable, v, drift, lastDeployment(deps))
	}
}

// envWithRuntime is GET /v1/envs/{env}: the record and, where the build has them (issue 11 item 2), its
// servers' runtime reports and drift.
type envWithRuntime struct {
	raftfsm.Env
	Runtime []struct {
		Node   string `json:"node"`
		Drift  string `json:"drift"`
		Report *struct {
			Release string `json:"release"`
			Health  string `json:"health"`
			Procs   []struct {
				PID int `json:"pid"`
			} `json:"procs"`
		} `json:"report"`
	} `json:"runtime"`
}

func (c *chaos) envView(e *chaosEnv) envWithRuntime {
	var env envWithRuntime
	c.get("/v1/envs/"+e.app.env, &env)
	if env.Runtime == nil {
		c.note("no-runtime-report", "SKIP: GET /v1/envs/{env} has no runtime reports (issue 11 item 2) in this build: a server off its desired release is excused only by a failed row in a deployment of that release, and reports are not checked against the disk")
	}
	return env
}

// checkRuntimeTrue: once every server runs its release, what each reports it runs is what runs: the release
// `current` names and the live supervised pids, with no drift.
func (c *chaos) checkRuntimeTrue(e *chaosEnv, views map[string]serverView) {
	var env envWithRuntime
	bad := map[string]string{}
	ok, _ := poll(20*time.Second, func() (bool, string) {
		env = c.envView(e)
		if env.Runtime == nil {
			return true, ""
		}
		clear(bad)
		for _, s := range e.servers {
			v := views[s]
			got := "no report"
			for _, r := range env.Runtime {
				if r.Node != s {
					continue
				}
				got = fmt.Sprintf("drift %q", r.Drift)
				if r.Report != nil {
					var pids []int
					for _, p := range r.Report.Procs {
						pids = append(pids, p.PID)
					}
					slices.Sort(pids)
					got = fmt.Sprintf("release %q pids %v health %s, drift %q", r.Report.Release, pids, r.Report.Health, r.Drift)
					if r.Drift == "" && r.Report.Release == v.current && slices.Equal(pids, sortedInts(v.pids)) {
						got = ""
					}
				}
			}
			if got != "" {
				bad[s] = got
			}
		}
		return len(bad) == 0, ""
	})
	if ok {
		return
	}
	for s, got := range bad {
		c.violate("runtime/"+e.app.env+"/"+s, "%s on %s runs %s but reports %s", e.app.env, s, views[s], got)
	}
}

func sortedInts(a []int) []int {
	b := slices.Clone(a)
	slices.Sort(b)
	return b
}

func lastDeployment(deps []raftfsm.Deployment) string {
	if len(deps) == 0 {
		return "none"
	}
	return describeDeployment(deps[0])
}

// reportedWhy is the reason the mesh gives for server s not running e's desired release, or "": its failed row
// in a deployment of the desired release (a row of another release explains why the server does not run that
// one, not why it left desired), or a runtime report (issue 11 item 2) of a crash loop, the app's own fault. A
// drift the report merely describes is no reason: the agent must repair it.
func (c *chaos) reportedWhy(env envWithRuntime, deps []raftfsm.Deployment, s string) string {
	for _, r := range env.Runtime {
		if r.Node == s && r.Report != nil && r.Report.Health == "crash_loop" {
			return "runtime report: crash loop: " + r.Drift
		}
	}
	for _, d := range deps {
		st := d.Nodes[s]
		if st == nil {
			continue
		}
		if d.Release == env.Desired && st.State == raftfsm.NodeFailed && st.Error != "" {
			return fmt.Sprintf("deployment %s: %s", d.ID, firstLineOf(st.Error))
		}
		return ""
	}
	return ""
}

func firstLineOf(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// checkPIDs: a server's app pid changes only when its release or its process does: a release change seen on
// disk, a deployment of this step that reached the server with a release that replaces the app (or --force),
// or the step killing the app.
func (c *chaos) checkPIDs(e *chaosEnv) {
	var mine []raftfsm.Deployment
	for _, d := range c.deployments(e) {
		if !e.before[d.ID] {
			mine = append(mine, d)
		}
	}
	for _, s := range e.servers {
		v := c.view(e, s)
		pid, rel := servingPID(v.serving), versionOf(v.serving)
		prevPID, prevRel := e.lastPID[s], e.lastRel[s]
		e.lastPID[s], e.lastRel[s] = pid, rel
		if prevPID == 0 || pid == 0 || pid == prevPID || rel != prevRel || e.appKilled[s] {
			continue
		}
		var why []string
		for _, d := range mine {
			reached := d.Kind == raftfsm.DeployKindRestart || (d.Kind == raftfsm.DeployKindDeploy && (d.Force || (d.Release != prevRel && e.kinds[d.Release].restartsApp())))
			if reached && inStartedBatch(d, s) {
				why = append(why, d.ID)
			}
		}
		if len(why) > 0 {
			continue
		}
		c.violate("pid/"+e.app.env+"/"+s, "%s on %s: the app was restarted (pid %d → %d) though its release %s did not change and nothing asked for it",
			e.app.env, s, prevPID, pid, rel)
	}
}

// inStartedBatch reports whether s is in one of d's batches up to the one it reached.
func inStartedBatch(d raftfsm.Deployment, s string) bool {
	for i, b := range d.Batches {
		if i <= d.Batch && slices.Contains(b, s) {
			return true
		}
	}
	return false
}

// checkFinishedUnchanged: a finished deployment's record, its servers' rows included, never changes.
func (c *chaos) checkFinishedUnchanged(e *chaosEnv) {
	for _, d := range c.deployments(e) {
		if !d.Finished() {
			continue
		}
		b, err := json.Marshal(d)
		if err != nil {
			c.t.Fatal(err)
		}
		was, ok := c.finished[d.ID]
		if !ok {
			c.finished[d.ID] = string(b)
			continue
		}
		if was != string(b) {
			var old raftfsm.Deployment
			_ = json.Unmarshal([]byte(was), &old)
			c.violate("history/"+d.ID, "%s: finished deployment %s changed after it ended: %s\n  was %s\n  now %s",
				e.app.env, d.ID, jsonDiff(was, string(b)), describeDeployment(old), describeDeployment(d))
			c.finished[d.ID] = string(b)
		}
	}
}

// checkHolders: each release's holder records name exactly the nodes whose store holds it whole.
func (c *chaos) checkHolders() {
	seenApps := map[string]bool{}
	for _, e := range c.envs {
		if seenApps[e.app.name] {
			continue
		}
		seenApps[e.app.name] = true
		var diff []string
		wait := 30 * time.Second
		if c.holdersStuck[e.app.name] {
			wait = 5 * time.Second // a known defect: do not wait it out at every step
		}
		ok, _ := poll(wait, func() (bool, string) {
			diff = nil
			for _, r := range c.releases(e) {
				var stores []string
				for _, n := range c.m.nodes {
					if storeHolds(n, r.Digest) {
						stores = append(stores, n.name)
					}
				}
				holders := slices.Clone(r.Holders)
				sort.Strings(holders)
				if !slices.Equal(holders, stores) {
					diff = append(diff, fmt.Sprintf("%s: held by %v, stores hold it on %v", r.Version, holders, stores))
				}
			}
			return len(diff) == 0, ""
		})
		c.holdersStuck[e.app.name] = !ok
		if !ok {
			for _, d := range diff {
				v, _, _ := strings.Cut(d, ":")
				c.violate("holders/"+e.app.name+"/"+v, "%s %s", e.app.name, d)
			}
		}
	}
}

// jsonDiff lists the fields that differ between two JSON documents: "nodes.n2.updated_at: A → B".
func jsonDiff(a, b string) string {
	var x, y any
	_ = json.Unmarshal([]byte(a), &x)
	_ = json.Unmarshal([]byte(b), &y)
	fa, fb := map[string]string{}, map[string]string{}
	flattenJSON("", x, fa)
	flattenJSON("", y, fb)
	var out []string
	for k, v := range fa {
		if w, ok := fb[k]; !ok || w != v {
			out = append(out, fmt.Sprintf("%s: %s → %s", k, v, orNone(w, ok)))
		}
	}
	for k, w := range fb {
		if _, ok := fa[k]; !ok {
			out = append(out, fmt.Sprintf("%s: (none) → %s", k, w))
		}
	}
	sort.Strings(out)
	return strings.Join(out, "; ")
}

func orNone(s string, ok bool) string {
	if !ok {
		return "(none)"
	}
	return s
}

func flattenJSON(prefix string, v any, out map[string]string) {
	join := func(k string) string {
		if prefix == "" {
			return k
		}
		return prefix + "." + k
	}
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			flattenJSON(join(k), x, out)
		}
	case []any:
		for i, x := range t {
			flattenJSON(join(fmt.Sprint(i)), x, out)
		}
	default:
		b, _ := json.Marshal(t)
		out[prefix] = string(b)
	}
}

// checkCrashLoopsNamed: a deployment of this step whose release's Exec crash-loops does not succeed, and a server
// it failed on says why in words: the exit ("exit status 1 after 2ms, 5 restarts"), not just a timeout.
func (c *chaos) checkCrashLoopsNamed(e *chaosEnv) {
	for _, d := range c.deployments(e) {
		if e.before[d.ID] || d.Kind != raftfsm.DeployKindDeploy || e.kinds[d.Release] != releaseCrashLoop || !d.Finished() {
			continue
		}
		if d.State == raftfsm.DeploySucceeded {
			c.violate("crashloop-ok/"+d.ID, "%s: deployment %s of a release whose Exec exits at once succeeded: %s", e.app.env, d.ID, describeDeployment(d))
			continue
		}
		for name, st := range d.Nodes {
			if st.State == raftfsm.NodeFailed && !strings.Contains(st.Error, "exit status") {
				c.violate("crashloop-unnamed/"+e.app.env, "%s: deployment %s: %s failed on a crash-looping Exec with %q, which does not name the exit",
					e.app.env, d.ID, name, st.Error)
			}
		}
	}
}

// checkLogsOwnDeployment: a server's log of a deployment (apps/APP/ENV/logs/ID.log) holds that deployment's
// install only: every "deploying APP release V" line in it names the deployment's release.
func (c *chaos) checkLogsOwnDeployment(e *chaosEnv) {
	prefix := "deploying " + e.app.name + " release "
	for _, d := range c.deployments(e) {
		if d.Kind != raftfsm.DeployKindDeploy {
			continue
		}
		for _, n := range c.m.nodes {
			b, err := os.ReadFile(filepath.Join(e.app.envDir(n.dir), "logs", d.ID+".log"))
			if err != nil {
				continue
			}
			for _, line := range strings.Split(string(b), "\n") {
				_, rest, ok := strings.Cut(line, prefix)
				if !ok {
					continue
				}
				if v, _, _ := strings.Cut(rest, " "); v != d.Release {
					c.violate("log/"+d.ID+"/"+n.name, "%s: %s's log of deployment %s (release %s) holds an install of %s: %q",
						e.app.env, n.name, d.ID, d.Release, v, line)
					break
				}
			}
		}
	}
}

// showLogs prints each server's log of a deployment that took long, read through the API as a user would.
func (c *chaos) showLogs(d raftfsm.Deployment) {
	for name := range d.Nodes {
		resp, err := c.m.http.Do(c.logRequest(d.ID, name))
		if err != nil {
			c.t.Logf("      log of %s on %s: %v", d.ID, name, err)
			continue
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<10))
		resp.Body.Close()
		c.t.Logf("      log of %s on %s (%s):\n%s", d.ID, name, resp.Status, indent(string(b), "        "))
	}
}

func (c *chaos) logRequest(id, node string) *http.Request {
	live := c.m.live()
	req, _ := http.NewRequest("GET", "http://"+live[0].api()+"/v1/deployments/"+id+"/nodes/"+node+"/log", nil)
	req.Header.Set("Authorization", "Bearer "+c.m.admin)
	return req
}

func indent(s, by string) string {
	return by + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n"+by)
}
