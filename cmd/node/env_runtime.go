package main

import (
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shoal-ci/shoal/deployer"
	"github.com/shoal-ci/shoal/raftfsm"
)

// envView is an environment as `GET /v1/envs/{env}` answers: the record and what its servers run.
type envView struct {
	raftfsm.Env
	Runtime []deployer.ServerRuntime `json:"runtime,omitempty"`
}

// runtimeTable prints what each server of an environment runs, and its drift, below the environment.
func runtimeTable(w *tabwriter.Writer, servers []deployer.ServerRuntime) {
	if len(servers) == 0 {
		return
	}
	fmt.Fprintln(w, "\nSERVER\tUP\tRELEASE\tHEALTH\tPIDS\tSINCE\tRESTARTS\tLAST EXIT\tDRIFT")
	for _, s := range servers {
		rel, health, pids, since, restarts, exit := "-", "no report", "-", "-", "-", "-"
		if r := s.Report; r != nil {
			rel, health, restarts = dash(r.Release), r.Health, strconv.FormatUint(r.Restarts, 10)
			if r.Detail != "" && r.Health != raftfsm.RuntimeStarting {
				health += ": " + r.Detail
			}
			var ps []string
			var oldest time.Time
			for _, p := range r.Procs {
				ps = append(ps, strconv.Itoa(p.PID))
				if oldest.IsZero() || p.StartedAt.Before(oldest) {
					oldest = p.StartedAt
				}
			}
			if len(ps) > 0 {
				pids = strings.Join(ps, ",")
				since = oldest.Local().Format(time.DateTime)
			}
			if x := r.LastExit; x != nil {
				exit = fmt.Sprintf("%s after %s at %s", x.Status, time.Duration(x.Ran), x.At.Local().Format(time.TimeOnly))
			}
		}
		drift := "-"
		switch {
		case s.Drift != "":
			drift = s.Drift
		case s.Deploying != "":
			drift = "deploying (" + s.Deploying + ")"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Node, s.Up, rel, health, pids, since, restarts, exit, drift)
	}
	// Lines without a tab end the table's column block, so these do not widen its columns.
	for _, s := range servers {
		if r := s.Report; r != nil && r.LastDrift != "" && s.Drift == "" {
			fmt.Fprintf(w, "%s: repaired drift: %s (seen %s)\n", s.Node, r.LastDrift, r.LastDriftAt.Local().Format(time.DateTime))
		}
	}
}
