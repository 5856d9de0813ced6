package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/shoal-ci/shoal/raftfsm"
)

// waitDeployment follows a deployment with blocking reads, printing each server's state as it changes, until
// its final state: a deployment that rolled back is followed through its rollback deployment, and
// "rolled_back" is printed only once that one has put the servers back on the old release. It fails unless the
// deployment succeeded, and when timeout (if not 0) passes first; the deployment goes on either way.
func (c *cli) waitDeployment(id string, timeout time.Duration) error {
	ctx := context.Background()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	d, err := c.follow(ctx, id)
	if err != nil {
		return c.gaveUp(ctx, d, timeout, err)
	}
	var rb raftfsm.Deployment
	if d.State == raftfsm.DeployRolledBack && d.Rollback != "" {
		if !c.json {
			fmt.Fprintf(c.out, "deployment %s failed: %s\n", d.ID, oneLine(d.Error))
			fmt.Fprintf(c.out, "rolling back to %s: following deployment %s\n", d.Previous, d.Rollback)
		}
		rb, err = c.follow(ctx, d.Rollback)
		if err != nil {
			return c.gaveUp(ctx, rb, timeout, err)
		}
	}
	if c.json {
		if err := c.print(d, nil); err != nil {
			return err
		}
	} else {
		healthy, total := counts(d)
		switch {
		case rb.ID != "" && rb.State == raftfsm.DeploySucceeded:
			fmt.Fprintf(c.out, "deployment %s rolled_back: the servers serve %s again (rollback %s took %s); the environment is pinned: `node unpin %s` resumes auto deploy\n",
				d.ID, rb.Release, rb.ID, deployTook(rb), d.Env)
		case rb.ID != "":
			fmt.Fprintf(c.out, "deployment %s failed, and its rollback %s to %s ended %s: servers may still run %s: `node deployment %s` shows them\n",
				d.ID, rb.ID, rb.Release, rb.State, d.Release, rb.ID)
			if rb.Error != "" {
				fmt.Fprintf(c.out, "  %s\n", rb.Error)
			}
		default:
			fmt.Fprintf(c.out, "deployment %s %s: %d of %d servers healthy, took %s\n", d.ID, d.State, healthy, total, deployTook(d))
			if d.Error != "" {
				fmt.Fprintf(c.out, "  %s\n", d.Error)
			}
		}
	}
	switch {
	case d.State == raftfsm.DeploySucceeded:
		return nil
	case rb.ID != "" && rb.State != raftfsm.DeploySucceeded:
		return fmt.Errorf("deployment %s failed and its rollback %s %s", d.ID, rb.ID, rb.State)
	}
	return fmt.Errorf("deployment %s %s", d.ID, d.State)
}

// gaveUp explains why following stopped before the final state.
func (c *cli) gaveUp(ctx context.Context, d raftfsm.Deployment, timeout time.Duration, err error) error {
	if ctx.Err() == nil || !errors.Is(err, context.DeadlineExceeded) && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return explain(err)
	}
	return fmt.Errorf("deployment %s is still %s after --timeout %s; it goes on: `node deployment %s --wait` follows it again, `node deployment cancel %s` stops it",
		d.ID, dash(d.State), timeout, d.ID, d.ID)
}

// follow reads deployment id until it is finished (or ctx ends), printing its changes.
func (c *cli) follow(ctx context.Context, id string) (raftfsm.Deployment, error) {
	var (
		idx       uint64
		lastState string
		lastBatch = -2
		printed   = map[string]string{}
		d         raftfsm.Deployment
	)
	d.ID = id
	api := c.api()
	for {
		path := "/v1/deployments/" + url.PathEscape(id)
		if idx > 0 {
			wait := 30 * time.Second
			if dl, ok := ctx.Deadline(); ok {
				wait = min(wait, max(time.Until(dl), time.Millisecond))
			}
			path += fmt.Sprintf("?index=%d&wait=%dms", idx, wait.Milliseconds())
		}
		var got raftfsm.Deployment
		i, err := api.Get(ctx, path, &got)
		if err != nil {
			if ctx.Err() != nil {
				return d, ctx.Err()
			}
			return d, err
		}
		d, idx = got, i
		if !c.json {
			c.printProgress(d, &lastState, &lastBatch, printed)
		}
		if d.Finished() {
			return d, nil
		}
		if ctx.Err() != nil {
			return d, ctx.Err()
		}
	}
}

// printProgress prints what changed in d since the last call.
func (c *cli) printProgress(d raftfsm.Deployment, lastState *string, lastBatch *int, printed map[string]string) {
	if d.State != *lastState || d.Batch != *lastBatch {
		fmt.Fprintf(c.out, "%s  %s, batch %s\n", time.Now().Format("15:04:05"), d.State, batchText(d))
		*lastState, *lastBatch = d.State, d.Batch
	}
	for _, name := range sortedKeys(d.Nodes) {
		st := d.Nodes[name]
		line := st.State
		if st.Phase != "" && st.State != raftfsm.NodeHealthy {
			line += " (" + st.Phase + ")"
		}
		if st.State == raftfsm.NodeDownloading {
			line += " " + progressBar(st.Progress)
		}
		if st.Error != "" {
			line += ": " + oneLine(st.Error)
		}
		if printed[name] != line {
			fmt.Fprintf(c.out, "%s    %-16s %s\n", time.Now().Format("15:04:05"), name, line)
			printed[name] = line
		}
	}
}
