package deployer

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// keepLogs is how many deployment logs stay in an environment's logs/ directory.
const keepLogs = 50

// deployLog is this node's log of one deployment of one environment: the agent's own notes, then each
// phase's output, appended as the next phase begins. The API serves it (GET
// /v1/deployments/{id}/nodes/{node}/log). Phase logs stay beside the release too (RunDir/logs).
type deployLog struct {
	f     *os.File
	phase string
}

// logName is the file a deployment's log is kept in; work outside any deployment (a server converging
// by itself) goes to converge-<release>.log.
func logName(deployment, release string) string {
	if deployment != "" {
		return deployment + ".log"
	}
	return "converge-" + dirName(release) + ".log"
}

// validLogID keeps an id from naming a path.
func validLogID(id string) bool {
	return id != "" && !strings.ContainsAny(id, "/\\\x00") && id != "." && id != ".." && len(id) < 200
}

// DeploymentLogPath is where this node keeps its log of deployment id in an environment.
func (d *Deployer) DeploymentLogPath(app, env, id string) (string, error) {
	if !validLogID(id) {
		return "", fmt.Errorf("deployment id %q is not valid", id)
	}
	return filepath.Join(d.EnvDir(app, env), "logs", logName(id, "")), nil
}

func (w *envWorker) openLog(deployment, release string) *deployLog {
	dir := filepath.Join(w.dir, "logs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		w.log.Warn("create deployment log directory", "err", err)
		return &deployLog{}
	}
	name := logName(deployment, release)
	if deployment != "" && !validLogID(deployment) {
		name = logName("", release)
	}
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		w.log.Warn("open deployment log", "err", err)
		return &deployLog{}
	}
	pruneLogs(dir, keepLogs)
	return &deployLog{f: f}
}

// Notef writes one line of the agent's own, time-stamped.
func (l *deployLog) Notef(format string, a ...any) {
	if l.f == nil {
		return
	}
	fmt.Fprintf(l.f, "%s %s\n", time.Now().UTC().Format("15:04:05.000"), fmt.Sprintf(format, a...))
}

// Phase is the lifecycle's OnPhase: the previous phase's output goes in, then the new phase's header.
func (l *deployLog) Phase(phase string, lc *Lifecycle) {
	l.EndPhase(lc)
	l.phase = phase
	switch phase {
	case PhaseExec:
		l.Notef("=== %s (supervised; its output goes to %s)", phase, lc.ExecSpec().LogPath)
	default:
		l.Notef("=== %s", phase)
	}
}

// EndPhase appends the output of the phase that ran last.
func (l *deployLog) EndPhase(lc *Lifecycle) {
	if l.f == nil || l.phase == "" {
		return
	}
	phase := l.phase
	l.phase = ""
	src, err := os.Open(lc.LogPath(phase))
	if err != nil {
		return // Extract, Stop, Flip and Exec have no phase log
	}
	defer src.Close()
	_, _ = io.Copy(l.f, src)
}

func (l *deployLog) Close() {
	if l.f != nil {
		_ = l.f.Close()
	}
}

// pruneLogs keeps the newest keep files of dir.
func pruneLogs(dir string, keep int) {
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) <= keep {
		return
	}
	type file struct {
		name string
		mod  time.Time
	}
	var files []file
	for _, e := range entries {
		if info, err := e.Info(); err == nil && !e.IsDir() {
			files = append(files, file{e.Name(), info.ModTime()})
		}
	}
	sort.Slice(files, func(i, j int) bool { return files[i].mod.After(files[j].mod) })
	for _, f := range files[min(keep, len(files)):] {
		_ = os.Remove(filepath.Join(dir, f.name))
	}
}
