package node

import (
	"context"
	"log"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// Component names used in log records (the `component` attribute): transport, raft, raft-net, gossip, api,
// reconcile, join, builder, deployer.

// hclogFor bridges hashicorp/raft's hclog to the node's slog logger, keeping hclog's level.
func hclogFor(l *slog.Logger, component string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:        component,
		Level:       hclog.Info,
		Output:      &slogWriter{l: l.With("component", component)},
		DisableTime: true,
	})
}

// memberlistLogger bridges memberlist's *log.Logger, whose lines carry "[LEVEL]" prefixes.
// StdLogger is a standard library logger that writes to l the way memberlist's does (the HTTP server's ErrorLog).
func StdLogger(l *slog.Logger) *log.Logger { return memberlistLogger(l) }

func memberlistLogger(l *slog.Logger) *log.Logger {
	return log.New(&slogWriter{l: l.With("component", "gossip")}, "", 0)
}

// slogWriter turns text lines that start with an "[LEVEL]" tag into slog records at that level.
type slogWriter struct{ l *slog.Logger }

func (w *slogWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		level, msg := slog.LevelInfo, strings.TrimSpace(line)
		if strings.HasPrefix(msg, "[") {
			if i := strings.Index(msg, "]"); i > 0 {
				switch strings.TrimSpace(msg[1:i]) {
				case "TRACE", "DEBUG":
					level = slog.LevelDebug
				case "WARN", "WARNING":
					level = slog.LevelWarn
				case "ERR", "ERROR":
					level = slog.LevelError
				}
				msg = strings.TrimSpace(msg[i+1:])
			}
		}
		if level > slog.LevelInfo && routine(msg) {
			level = slog.LevelInfo
		}
		w.l.Log(context.Background(), level, msg)
	}
	return len(p), nil
}

// routineMessages are warnings hashicorp/raft gives for what every join does: a new member has no log yet, so
// the leader's first AppendEntries is refused and older entries (or a snapshot) are sent; and a new mesh elects
// its first leader. They are logged at info: an operator who adds a server should not see a warning for it.
var routineMessages = []string{
	"raft: failed to get previous log",
	"raft: appendEntries rejected, sending older logs",
	// A node that has never had a leader (a new mesh's first node, or every node of a mesh starting together).
	"raft: heartbeat timeout reached, starting election: last-leader-addr= last-leader-id=",
}

func routine(msg string) bool {
	for _, m := range routineMessages {
		if strings.HasPrefix(msg, m) {
			return true
		}
	}
	return false
}
